"""Training logs: TensorBoard scalars, Python logging, and a progress bar with rates and ETA."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

log = logging.getLogger("cryptorl_jax.training")


class ScalarLogger:
    """Write scalar dicts to TensorBoard (tensorboardX) when a directory is given."""

    def __init__(self, directory: str | Path | None):
        self._writer = None
        if directory is not None:
            from tensorboardX import SummaryWriter

            Path(directory).mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(directory))

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if self._writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._writer.add_scalar(f"{prefix}{k}", v, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Progress:
    """A tqdm bar over env steps that shows env steps/s, updates/s and the ETA."""

    def __init__(self, total: int, initial: int = 0, desc: str = "train", enabled: bool = True):
        self._bar = None
        self._t0 = time.perf_counter()
        self._steps0 = initial
        self._updates = 0
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step",
                             unit_scale=True, dynamic_ncols=True, leave=False)

    def update(self, env_steps: int, updates: int, postfix: dict[str, float] | None = None
               ) -> dict[str, float]:
        """Advance to `env_steps` (absolute); returns the rates since the bar started."""
        self._updates += updates
        dt = max(time.perf_counter() - self._t0, 1e-9)
        rates = {"env_steps_per_s": (env_steps - self._steps0) / dt,
                 "updates_per_s": self._updates / dt}
        if self._bar is not None:
            self._bar.n = env_steps
            shown = {"upd/s": f"{rates['updates_per_s']:.0f}"}
            for k, v in (postfix or {}).items():
                shown[k] = f"{v:.3g}"
            self._bar.set_postfix(shown, refresh=False)
            self._bar.refresh()
        return rates

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def configure_cli_logging(level: int = logging.INFO) -> None:
    """Log lines with a time stamp for the entry scripts; quiet the libraries' INFO chatter.

    A library that logs before this runs may have called a bare `logging.basicConfig()`
    (absl does, when orbax is imported: a stderr handler, the root at WARNING), which would
    make this one a no-op and hide every INFO line of the run. Such a default handler is
    replaced; a handler configured otherwise (an application's, pytest's) is left alone."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if (type(handler) is logging.StreamHandler and handler.formatter is not None
                and handler.formatter._fmt == logging.BASIC_FORMAT):
            root.removeHandler(handler)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("absl", "jax", "orbax", "matplotlib"):  # orbax logs every save at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # quantstats asks for Arial on every tearsheet figure; the fallback font is fine
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
