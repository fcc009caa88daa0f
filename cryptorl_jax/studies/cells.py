"""Which walk-forward runs a study makes, named and configured, without running anything (and
without JAX): the power study's cells (`cells`, `parse_repeats`, `parse_sets`, `Cell`,
`run_config`, `market_dir`) and a study's runs (`study_configs`). `studies.power` and
`studies.study` run them; the dry runs (`studies.plan`) list them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptorl_jax.config import Config, ConfigError, with_overrides
from cryptorl_jax.market.heldout import SETS, check_set, market_seed
from cryptorl_jax.market.planted import FAMILIES


@dataclass(frozen=True)
class Cell:
    family: str
    strength: float
    repeat: int
    set: str = "selection"  # the market set (market/heldout.py): selection or heldout

    @property
    def tag(self) -> str:
        """`trend-s4-r0` (selection, the names before issue 40), `heldout-trend-s4-r0`."""
        prefix = "" if self.set == "selection" else f"{self.set}-"
        return f"{prefix}{self.family}-s{self.strength:g}-r{self.repeat}"

    @property
    def seed(self) -> int:
        """The market's seed: the repeat (selection) or the held-out seed of the repeat."""
        return market_seed(self.set, self.repeat)


def parse_sets(text: str) -> tuple[str, ...]:
    """--market-set: selection, heldout or both."""
    if text == "both":
        return SETS
    if text not in SETS:
        raise ValueError(f"--market-set: expected selection, heldout or both, got {text!r}")
    return (text,)


def parse_repeats(text: str) -> int | dict[str, int]:
    """--repeats: one count for every family ("3") or one per family ("trend=3,lead=1")."""
    text = text.strip()
    if "=" not in text:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--repeats: expected a count or FAMILY=COUNT pairs, got "
                             f"{text!r}") from None
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        family, _, count = part.partition("=")
        try:
            out[family.strip()] = int(count)
        except ValueError:
            raise ValueError(f"--repeats: {part!r} is not FAMILY=COUNT") from None
    return out


def cells(families: Sequence[str], strengths: Sequence[float],
          repeats: int | Mapping[str, int], sets: Sequence[str] = ("selection",)) -> list[Cell]:
    """The runs of a power study, set by set; `none` runs once per repeat at strength 0
    whatever the strengths asked for (its edge has no strength). `repeats`: one count for
    every family, or a count per family (every family asked for needs one), in each set."""
    out: list[Cell] = []
    for market_set in sets:
        check_set(market_set)
        out += [dataclasses.replace(c, set=market_set)
                for c in _cells(families, strengths, repeats)]
    for c in out:  # refuses a selection repeat in the held-out seed range
        market_seed(c.set, c.repeat)
    return out


def _cells(families: Sequence[str], strengths: Sequence[float],
           repeats: int | Mapping[str, int]) -> list[Cell]:
    out: list[Cell] = []
    for f in families:
        if f not in FAMILIES:
            raise ValueError(f"--edge: unknown family {f!r} (known: {', '.join(FAMILIES)})")
        if isinstance(repeats, Mapping):
            if f not in repeats:
                raise ValueError(f"--repeats names no count for family {f!r}")
            n = repeats[f]
        else:
            n = repeats
        if n < 1:
            raise ValueError(f"--repeats must be >= 1, got {n} for {f}")
        levels = [0.0] if f == "none" else [float(s) for s in strengths]
        for s in levels:
            if not s >= 0:
                raise ValueError(f"--strength must be >= 0, got {s}")
            out += [Cell(f, s, r) for r in range(n)]
    return out


def market_dir(out_dir: Path, cfg: Config, cell: Cell) -> Path:
    """Where the power study writes the planted market of `cell`."""
    return out_dir / f"{cfg.run_name}-markets" / cell.tag


def run_config(cfg: Config, cell: Cell, data_dir: Path) -> Config:
    """The config of the power study's run on `cell`'s market (in `data_dir`)."""
    return with_overrides(cfg, [f"data.data_dir={data_dir}",
                                f"run_name={cfg.run_name}-{cell.tag}"])


def study_configs(cfg: Config) -> list[tuple[str, Config]]:
    """(name, config) of every run of the study."""
    if not cfg.study.runs:
        raise ConfigError("study.runs", "a study needs at least one run", cfg.source)
    out = []
    for r in cfg.study.runs:
        run_cfg = with_overrides(cfg, [*r.set, f"run_name={cfg.run_name}-{r.name}"])
        out.append((r.name, run_cfg))
    return out
