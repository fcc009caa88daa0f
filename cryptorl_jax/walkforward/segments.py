"""Row-based walk-forward segments (docs/reference.md, "Walk-forward segments")."""

from __future__ import annotations

from dataclasses import dataclass

from cryptorl_jax.config import ConfigError, WFOConfig


@dataclass(frozen=True)
class Segment:
    """Half-open row ranges: train [train_start, train_end), test [test_start, test_end)."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    @property
    def train_rows(self) -> slice:
        return slice(self.train_start, self.train_end)

    @property
    def test_rows(self) -> slice:
        return slice(self.test_start, self.test_end)


def make_segments(n_rows: int, wfo_config: WFOConfig, *, offset: int = 0,
                  source: str | None = None) -> list[Segment]:
    """All full segments that fit into rows [offset, n_rows), then wfo.max_segments / segments.

    Segment k trains on rows [offset + k*step, offset + k*step + train) and tests on the `test`
    rows that follow an optional embargo of `embargo_hours` rows. Only segments whose test window
    ends inside the data are made.
    """
    w = wfo_config
    train = w.train_months * w.hours_per_month
    test = w.test_months * w.hours_per_month
    step = w.step_months * w.hours_per_month
    usable = n_rows - offset
    if train + w.embargo_hours + test > usable:
        raise ConfigError(
            "wfo.train_months",
            f"train ({train} rows) + embargo ({w.embargo_hours}) + test ({test} rows) do not fit "
            f"into the {usable} usable rows of the data", source)
    out = []
    k = 0
    while True:
        train_start = offset + k * step
        train_end = train_start + train
        test_start = train_end + w.embargo_hours
        test_end = test_start + test
        if test_end > n_rows:
            break
        out.append(Segment(k, train_start, train_end, test_start, test_end))
        k += 1
    if w.segments is not None:
        bad = [i for i in w.segments if i >= len(out)]
        if bad:
            raise ConfigError("wfo.segments", f"segment(s) {bad} do not exist: the data holds "
                              f"segments 0..{len(out) - 1}", source)
        out = [out[i] for i in sorted(set(w.segments))]
    if w.max_segments is not None:
        out = out[: w.max_segments]
    return out
