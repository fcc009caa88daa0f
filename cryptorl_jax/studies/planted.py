"""The planted markets' oracle: its sign policy replayed through the backtest, and the planted
directory written with its figures (planted.json).

The data files and oracle.parquet come from `market.planted.write_planted_files` (the
generator: no backtest in it); `write_planted_market` writes them, replays the oracle's
`action` through `backtest.simulate` under an env config (its costs, vol targeting and
no-trade band) over the whole span and over the four files' common window, and writes
planted.json: the generator's fields, the env and the oracle's figures.

    python -m cryptorl_jax.studies.planted --family trend --strength 4 --seed 0 --out DIR
    python -m cryptorl_jax.studies.planted --family lead --market-set heldout \
        --seed 1000000 --out DIR   # a held-out market (market/heldout.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cryptorl_jax.backtest.metrics import sharpe
from cryptorl_jax.backtest.replay import simulate
from cryptorl_jax.config import AssetSpec, DataConfig, EnvConfig
from cryptorl_jax.core.io import write_atomic
from cryptorl_jax.core.names import BUNDLED_FILES
from cryptorl_jax.core.units import HOURS_PER_YEAR
from cryptorl_jax.market.heldout import SETS, check_set, write_heldout_files
from cryptorl_jax.market.loader import load_market
from cryptorl_jax.market.planted import (
    DEFAULT_STRENGTH,
    FAMILIES,
    META_FILE,
    ORACLE_FILE,
    TRADED,
    PlantedParams,
    json_plain,
    utc_timestamp,
    write_planted_files,
)


@dataclass(frozen=True)
class PlantedMarket:
    """A written planted-edge directory and its oracle's figures."""

    out_dir: Path
    family: str
    strength: float
    seed: int
    files: dict[str, Path] = field(hash=False)
    oracle_path: Path
    meta_path: Path
    oracle_sharpe: float  # after costs over the planted BTC's whole span
    oracle_sharpe_common: float  # after costs over the four files' common window
    by_year: dict[str, float] = field(hash=False)


# --------------------------------------------------------------------------------------------
# The oracle's figures
# --------------------------------------------------------------------------------------------


def _load_traded(out_dir: Path) -> pd.DataFrame:
    cfg = DataConfig(data_dir=str(out_dir), traded_asset=TRADED,
                     assets=(AssetSpec(TRADED, BUNDLED_FILES[TRADED], "crypto"),), cache_dir=None,
                     max_fill_hours=10**6)  # the template's early gaps (34 h in 2018) too
    return load_market(cfg)


def _oracle_frame(source) -> pd.DataFrame:
    """[close, tradable, action] on the loader's hourly grid."""
    if isinstance(source, pd.DataFrame):
        traded = source.attrs.get("traded_asset", TRADED)
        if f"{traded}_close" not in source.columns or "action" not in source.columns:
            raise ValueError(f"source: a frame needs the columns '{traded}_close' and 'action'")
        market, oracle = source, source
    else:
        out_dir = Path(source)
        if not (out_dir / ORACLE_FILE).is_file():
            raise FileNotFoundError(f"source: {out_dir / ORACLE_FILE} not found (not a planted "
                                    f"directory?)")
        traded, market = TRADED, _load_traded(out_dir)
        oracle = pd.read_parquet(out_dir / ORACLE_FILE)
    action = oracle["action"].reindex(market.index)
    if action.isna().any():
        row = market.index[int(np.argmax(action.isna().to_numpy()))]
        raise ValueError(f"source: the oracle has no action at row {row.isoformat()}")
    fresh = market.get(f"{traded}_fresh")
    tradable = np.ones(len(market), bool) if fresh is None else fresh.to_numpy() > 0
    return pd.DataFrame({"close": market[f"{traded}_close"].to_numpy(),
                         "tradable": tradable, "action": action.to_numpy()},
                        index=market.index)


def _window(frame: pd.DataFrame, start, end) -> tuple[int, int]:
    idx = frame.index
    i0 = 0 if start is None else int(idx.searchsorted(utc_timestamp(start, "start")))
    i1 = len(idx) - 1 if end is None else int(idx.searchsorted(utc_timestamp(end, "end"),
                                                               side="right")) - 1
    if i1 - i0 < 2:
        raise ValueError(f"start/end: fewer than 3 rows between {start} and {end} "
                         f"(data {idx[0].isoformat()} .. {idx[-1].isoformat()})")
    return i0, i1


def _replay(frame: pd.DataFrame, env_config: EnvConfig, start, end, cost_multiplier: float):
    """simulate over rows [i0, i1] with up to vol_window lookback rows (flat before i0)."""
    i0, i1 = _window(frame, start, end)
    lb = min(env_config.vol_window, i0)
    part = frame.iloc[i0 - lb:i1 + 1]
    res = simulate(part["close"].to_numpy(), part["action"].to_numpy(), env_config,
                   start=lb, tradable=part["tradable"].to_numpy(),
                   cost_multiplier=cost_multiplier)
    return res, frame.index[i0 + 1:i1 + 1]  # returns realised at these rows


def _sharpe(r: np.ndarray) -> float:
    return sharpe(np.asarray(r, float), HOURS_PER_YEAR)


def oracle_sharpe(source, env_config: EnvConfig | None = None, *, start=None, end=None,
                  cost_multiplier: float = 1.0) -> float:
    """The oracle's annualised (8,760) Sharpe after costs through `backtest.simulate`.

    source: a planted directory (its BTC file through the loader and its oracle.parquet) or a
    frame on the loader's grid with `<traded>_close`, `action` and optionally `<traded>_fresh`.
    The book is flat before `start` (vol estimated from up to vol_window earlier rows) and the
    returns are those realised at rows (start, end]; None = the first / last row.
    """
    frame = _oracle_frame(source)
    res, _ = _replay(frame, env_config or EnvConfig(), start, end, cost_multiplier)
    return _sharpe(res["returns"])


def oracle_figures(source, env_config: EnvConfig | None = None, *, start=None, end=None
                   ) -> dict:
    """Sharpe after costs and gross, turnover and mean |exposure| per year, and the after-cost
    Sharpe per calendar year (of the one replay over the window)."""
    cfg = env_config or EnvConfig()
    frame = _oracle_frame(source)
    res, rows = _replay(frame, cfg, start, end, 1.0)
    gross, _ = _replay(frame, cfg, start, end, 0.0)
    ret = pd.Series(res["returns"], index=rows)
    years = len(ret) / HOURS_PER_YEAR
    return {
        "start": rows[0].isoformat(), "end": rows[-1].isoformat(),
        "sharpe": _sharpe(ret.to_numpy()),
        "sharpe_gross": _sharpe(gross["returns"]),
        "turnover_per_year": float(res["turnover"].sum() / years),
        "mean_abs_exposure": float(np.abs(res["exposure"]).mean()),
        "by_year": {str(y): _sharpe(g.to_numpy()) for y, g in ret.groupby(ret.index.year)
                    if len(g) > 1},
    }


# --------------------------------------------------------------------------------------------
# The writer
# --------------------------------------------------------------------------------------------


def write_planted_market(out_dir, family: str, strength: float, seed: int, *,
                         template_dir="data", start=None, end=None,
                         params: PlantedParams | None = None,
                         env_config: EnvConfig | None = None,
                         market_set: str = "selection") -> PlantedMarket:
    """Write a planted-edge market directory (`market.planted.write_planted_files`, or
    `market.heldout.write_heldout_files` for market_set "heldout": seed >= its offset) and
    measure its oracle into planted.json (which records the set).

    start / end (optional, UTC): keep only the template bars opening in [start, end] (short
    markets for tests). params: the generator's parameters (defaults: `PlantedParams`).
    env_config: the accounting of the oracle's figures (default EnvConfig()).
    """
    writer = write_heldout_files if check_set(market_set) == "heldout" else write_planted_files
    written = writer(out_dir, family, strength, seed, template_dir=template_dir,
                     start=start, end=end, params=params)
    out = written.out_dir
    cfg = env_config or EnvConfig()
    whole = oracle_figures(out, cfg)
    common = _common_window(written.files)
    in_common = oracle_figures(out, cfg, start=common[0], end=common[1])
    figures = {"whole_span": whole, "common_window": in_common}
    if written.family == "regime":
        informed = _oracle_frame(out)
        informed["action"] = written.oracle["state_action"].reindex(informed.index).to_numpy()
        figures["informed_state_oracle_common_window"] = oracle_sharpe(
            informed.rename(columns={"close": f"{TRADED}_close"}), cfg,
            start=common[0], end=common[1])
    meta = {**written.meta, "env": json_plain(dataclasses.asdict(cfg)), "oracle": figures}
    meta_path = out / META_FILE
    write_atomic(meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return PlantedMarket(out_dir=out, family=written.family, strength=written.strength,
                         seed=written.seed, files=written.files,
                         oracle_path=written.oracle_path, meta_path=meta_path,
                         oracle_sharpe=whole["sharpe"], oracle_sharpe_common=in_common["sharpe"],
                         by_year=whole["by_year"])


def _common_window(files: dict[str, Path]) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The bar-close span every written file covers (the loader's common window, lag ignored)."""
    spans = []
    for path in files.values():
        ts = pd.read_csv(path, usecols=["timestamp"])["timestamp"]
        spans.append((pd.Timestamp(ts.iloc[0]), pd.Timestamp(ts.iloc[-1])))
    hour = pd.Timedelta(hours=1)
    return max(s for s, _ in spans) + hour, min(e for _, e in spans) + hour


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cryptorl_jax.studies.planted",
                                 description="Write a planted-edge market directory.")
    ap.add_argument("--family", required=True, choices=FAMILIES)
    ap.add_argument("--strength", type=float, default=DEFAULT_STRENGTH)
    ap.add_argument("--seed", type=int, default=0,
                    help="the market's seed (held-out seeds start at 1,000,000)")
    ap.add_argument("--market-set", choices=SETS, default="selection",
                    help="selection (market/planted.py) or heldout (market/heldout.py)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--template-dir", default="data")
    ap.add_argument("--start", default=None)
    ap.add_argument("--end", default=None)
    a = ap.parse_args(argv)
    strength = 0.0 if a.family == "none" else a.strength
    try:
        m = write_planted_market(a.out, a.family, strength, a.seed, template_dir=a.template_dir,
                                 start=a.start, end=a.end, market_set=a.market_set)
    except (ValueError, FileNotFoundError) as exc:
        ap.error(str(exc))
    meta = json.loads(m.meta_path.read_text())
    for name, f in meta["oracle"].items():
        if isinstance(f, dict):
            print(f"{name} {f['start']} .. {f['end']}: sharpe {f['sharpe']:.2f} after costs, "
                  f"{f['sharpe_gross']:.2f} gross, turnover {f['turnover_per_year']:.0f}/yr")
            print("  by year: " + ", ".join(f"{y} {s:.2f}" for y, s in f["by_year"].items()))
        else:
            print(f"{name}: sharpe {f:.2f}")
    print(f"wrote {m.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
