"""Paper trading's hour: a finished segment's agents on each new closed bar, booked through the
backtest's own code.

For every hour n after the book's last one, in order (`PaperTrader.on_market`):
  1. the features of the market snapshot are rebuilt with the segment's fitted FFD order,
     scaler, regime model and encoder (`walkforward.data.load_segment_transforms`,
     `walkforward.stages.encoder_stage`: what `cryptorl evaluate` does);
  2. realise: each seed's books move from the close of n - 1 to the close of n with the action
     chosen at n - 1 and the return r_n: the agent's float32 book through
     `trading.market_step` (the OOS rollout's step) and the float64 ledger through
     `accounting.advance` (`backtest.simulate`'s one state update): exposure, turnover, cost,
     financing and NAV of the hour;
  3. decide: each seed's action at the close of n (`training.rollout.policy_action`, the
     rollout's own decision), and the exposure it trades there (`accounting.traded_exposure`,
     the no-trade band and a held bar included): the target file's content;
  4. one SQLite transaction books the hour (`paper.book`).
Because every piece is the backtest's, replaying recorded bars hour by hour gives `cryptorl
evaluate`'s exposures and NAV over the same window (tests/paper).

The first decision is taken at the close of the hour before the book's first hour, from flat
books with NAV 1, as the backtest of a window [start, end] does; the position is then held
exactly as the backtest holds it (a bar the loader filled, `<ASSET>_fresh` == 0, trades
nothing). With `from_run_state` (a replay inside the segment's test hours, by default) the
books at that close are instead the run's own: every hour from the segment's first test hour
is stepped through the same code without being booked (`walkforward.window`), so the booked
hours equal the run's OOS rows; the seeds' NAVs at the start are kept in the book's meta
(`start_navs`) and the ledger's `nav` starts at 1 all the same.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from cryptorl_jax.backtest import portfolio
from cryptorl_jax.backtest.diagnostics import turnover_attribution
from cryptorl_jax.backtest.oos import FUND_COLUMNS
from cryptorl_jax.config import Config, load_config, with_overrides
from cryptorl_jax.core.io import write_json, write_parquet
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.env import accounting
from cryptorl_jax.paper.book import BookState, PaperBook, PaperBookError, SeedBooks
from cryptorl_jax.walkforward.data import (
    RunData,
    SegmentMatrix,
    load_segment_transforms,
    observation_dims,
    signals_only,
    slice_data,
)
from cryptorl_jax.walkforward.evaluate import segment_meta, to_utc
from cryptorl_jax.walkforward.layout import lookback_rows
from cryptorl_jax.walkforward.runner import load_baseline_signals
from cryptorl_jax.walkforward.stages import (
    EncoderStage,
    encoder_stage,
    get_trainer,
    load_agents,
    load_encoder_model,
)
from cryptorl_jax.walkforward.window import FLAT, RUN_STATE

log = logging.getLogger("cryptorl_jax.paper")

LEDGER_KEYS = ("action", "exposure", "weight", "turnover", "cost", "financing", "gross",
               "returns", "nav", "leverage")


@dataclass
class Snapshot:
    """The model inputs of one market snapshot (all rows up to its newest closed bar)."""

    market: pd.DataFrame
    run: RunData
    sm: SegmentMatrix
    enc: EncoderStage
    signals: np.ndarray | None = None  # [T, S] the agents' baseline inputs, if they read any


class SegmentAgent:
    """A finished segment's fitted state (config, transforms, encoder, agents), loaded once.

    The run's config is read with `data.end` lifted (the newest bars are read, as `cryptorl
    evaluate` does) and the market cache off (a live data file changes every hour);
    `overrides` are further `key=value` settings (e.g. data.data_dir).
    """

    def __init__(self, run_dir: str | Path, segment: int | None = None,
                 overrides: tuple[str, ...] = ()):
        self.run_dir = Path(run_dir)
        rd = RunDir(self.run_dir)
        if not rd.config.is_file():
            raise FileNotFoundError(f"{self.run_dir}: not a walk-forward run directory "
                                    f"(no config.yaml)")
        self.run_digest = rd.config_digest.read_text().strip() \
            if rd.config_digest.is_file() else ""
        cfg = load_config(rd.config)
        self.cfg: Config = with_overrides(cfg, ["data.end=null", "data.cache_dir=null",
                                                *overrides])
        self.index, self.meta = segment_meta(rd, segment)
        self.seg_dir = rd.segment(self.index)
        self.lookback = lookback_rows(self.cfg)
        self.train_period = (to_utc(self.meta["train_period"][0]),
                             to_utc(self.meta["train_period"][1]))
        self.test_period = (to_utc(self.meta["test_period"][0]),
                            to_utc(self.meta["test_period"][1]))
        self._encoder: Any = None
        self._loaded = False
        self.trainer: Any = None
        self.agents: Any = None
        self._steps: tuple[Callable, Callable] | None = None

    def snapshot(self, market: pd.DataFrame) -> Snapshot:
        cfg = self.cfg
        run = RunData.build(cfg, market, with_segments=False)
        sm = load_segment_transforms(cfg, run, self.seg_dir)
        if not self._loaded:
            self._encoder = load_encoder_model(cfg, sm.matrix.shape[1], self.seg_dir)
        enc = encoder_stage(cfg, self._encoder, sm.matrix)
        signals = load_baseline_signals(cfg, run, sm, self.seg_dir)
        if not self._loaded:
            from cryptorl_jax.training.rollout import make_stepper

            self.trainer, _ = get_trainer(cfg, *observation_dims(
                sm.matrix, enc.embeddings, signals, only_signals=signals_only(cfg)))
            self.agents = load_agents(self.seg_dir.agents, self.trainer)
            self._steps = make_stepper(self.trainer)
            self._loaded = True
        return Snapshot(market=market, run=run, sm=sm, enc=enc, signals=signals)

    @property
    def n_seeds(self) -> int:
        return int(jax.tree.leaves(self.agents)[0].shape[0])

    def window(self, snap: Snapshot, n: int):
        """The market arrays of rows [n - L, n + 1) on the device: the observation window and
        the vol lookback of rows n - 1 and n (relative rows L - 1 and L)."""
        lo = n - self.lookback
        if n + 1 < snap.run.offset:
            raise ValueError(f"hour {snap.market.index[n]} is inside the features' warm-up: "
                             f"paper trading can start at {snap.market.index[snap.run.offset]} "
                             f"at the earliest")
        data = slice_data(self.cfg, snap.sm.matrix, snap.run.close, lo, n + 1, n - 1,
                          snap.enc.embeddings, snap.run.tradable, snap.signals)
        return self.trainer.put_data(data)

    def decide(self, data, books: accounting.Book) -> np.ndarray:
        assert self._steps is not None
        return np.asarray(jax.device_get(self._steps[0](self.agents, data, books)))

    def realise(self, data, books: accounting.Book, actions: np.ndarray) -> accounting.Book:
        assert self._steps is not None
        return self._steps[1](data, books, jnp.asarray(actions, jnp.float32))


def _agent_books(books: SeedBooks, t: int) -> accounting.Book:
    s = len(books.agent_nav)
    return accounting.Book(t=jnp.full((s,), t, jnp.int32),
                           prev_action=jnp.asarray(books.agent_prev_action, jnp.float32),
                           weight=jnp.asarray(books.agent_weight, jnp.float32),
                           nav=jnp.asarray(books.agent_nav, jnp.float32),
                           peak_nav=jnp.asarray(books.agent_peak_nav, jnp.float32))


_HOUR = pd.Timedelta(hours=1)


def _flat_books(s: int) -> SeedBooks:
    zero, one = np.zeros(s), np.ones(s)
    return SeedBooks(zero.astype(np.float32), zero.astype(np.float32), one.astype(np.float32),
                     one.astype(np.float32), zero, zero, one, one)


@dataclass
class Booked:
    """What one call of `on_market` booked."""

    hours: list[pd.Timestamp] = field(default_factory=list)
    first_decision: pd.Timestamp | None = None
    warnings: list[str] = field(default_factory=list)


class PaperTrader:
    """Books the hours of market snapshots into a `PaperBook` with a `SegmentAgent`."""

    def __init__(self, agent: SegmentAgent, book: PaperBook, *, mode: str,
                 start: pd.Timestamp | None = None, from_run_state: bool = False):
        """`from_run_state`: the first decision from the run's own books at that close (the
        segment's OOS roll-out stepped from its first test hour), not from flat books."""
        self.agent = agent
        self.book = book
        held = book.meta()
        if start is None and not held:
            raise PaperBookError(f"{book.path}: a new book needs its first hour")
        meta = {"run_dir": str(agent.run_dir.resolve()), "run_digest": agent.run_digest,
                "segment": agent.index, "mode": mode,
                "data_dir": str(Path(agent.cfg.data.data_dir).resolve()),
                "start": held["start"] if start is None else to_utc(start).isoformat(),
                "start_state": (held.get("start_state", FLAT) if start is None
                                else RUN_STATE if from_run_state else FLAT)}
        self.meta = book.create(meta)  # refuses a book of another run, segment, start or mode
        self.start = to_utc(self.meta["start"])
        self.from_run_state = self.meta.get("start_state", FLAT) == RUN_STATE
        self.cfg = agent.cfg
        env = self.cfg.env
        self._cost = accounting.total_cost_rate(env.fee_bps, env.slippage_bps)
        self._borrow = accounting.hourly_borrow_rate(env.borrow_rate_annual)

    # ---- the hour --------------------------------------------------------------------------

    def _leverage64(self, close: np.ndarray) -> np.ndarray:
        """L_t in float64 over a close slice (`simulate`'s, from the finite-window vol)."""
        env = self.cfg.env
        vol = accounting.realised_vol_np(accounting.log_returns_np(close), env.vol_window,
                                         env.vol_horizon_hours, env.vol_halflife_hours)
        with jax.enable_x64(True):
            return np.asarray(accounting.leverage(jnp.asarray(vol, jnp.float64),
                                                  env.target_volatility, env.vol_floor,
                                                  env.max_leverage), np.float64)

    def _target(self, books: SeedBooks, actions: np.ndarray, lev: float,
                tradable: bool, time: pd.Timestamp, close: float) -> dict[str, Any]:
        """The exposures traded at the close of `time` (target.json): per seed and the fund's
        (NAV-weighted, as `backtest.portfolio`)."""
        with jax.enable_x64(True):
            e = np.asarray(accounting.traded_exposure(
                jnp.asarray(books.ledger_weight, jnp.float64),
                jnp.asarray(np.asarray(actions, np.float64), jnp.float64),
                jnp.float64(lev), bool(tradable), jnp.float64(self.cfg.env.no_trade_band)),
                np.float64)
        v = books.ledger_nav / books.ledger_nav.sum()
        nav = float(books.ledger_nav.mean())
        return {"time": time.isoformat(), "asset": self.cfg.data.traded_asset,
                "close": float(close), "exposure": float(np.sum(v * e)),
                "seed_exposures": [float(x) for x in e],
                "actions": [float(a) for a in np.asarray(actions, np.float64)],
                "leverage": float(lev), "tradable": bool(tradable), "nav": nav,
                "units_per_unit_nav": float(np.sum(v * e) / close),
                "segment": self.agent.index, "note": "paper trading: no order was sent"}

    def _first_state(self, snap: Snapshot, n: int, books: SeedBooks) -> BookState:
        """The decision at the close of row n from `books` (no hour realised yet)."""
        agent = self.agent
        data = agent.window(snap, n)
        L = agent.lookback
        actions = agent.decide(data, _agent_books(books, L))
        close = snap.run.close[n - L:n + 1]
        lev = self._leverage64(close)[L]
        time = snap.market.index[n]
        target = self._target(books, actions, lev, bool(snap.run.tradable[n]), time,
                              float(close[-1]))
        return BookState(time=time, close=float(close[-1]), books=books, actions=actions,
                         target=target, hours=0)

    def _run_state(self, snap: Snapshot, n: int) -> BookState:
        """The decision at the close of row n from the run's own books there: the segment's OOS
        roll-out, flat at the close before its first test hour, stepped hour by hour to n
        through `_advance` (the booked hour's code; nothing is booked)."""
        index = snap.market.index
        t0 = self.agent.test_period[0]
        m = int(index.searchsorted(t0 - _HOUR))
        if m >= len(index) or index[m] != t0 - _HOUR or m > n:
            raise PaperBookError(f"the run's book: the hour before segment {self.agent.index}'s "
                                 f"first test hour {t0} is not in the data before "
                                 f"{index[n]}: start flat")
        state = self._first_state(snap, m, _flat_books(self.agent.n_seeds))
        for k in range(m + 1, n + 1):
            state = self._advance(snap, k, state)[0]
        log.info("paper: the run's book at the close of %s: %d hour(s) of segment %d's roll-out "
                 "from its first test hour %s", index[n], n - m, self.agent.index, t0)
        return dataclasses.replace(state, hours=0)

    def _decide_first(self, snap: Snapshot, n: int) -> None:
        if self.from_run_state:
            state = self._run_state(snap, n)
            start_navs = [float(x) for x in np.asarray(state.books.ledger_nav, np.float64)]
            self.book.commit_hour(state, None, None, expect_previous=None,
                                  meta={"start_navs": start_navs})
        else:
            state = self._first_state(snap, n, _flat_books(self.agent.n_seeds))
            self.book.commit_hour(state, None, None, expect_previous=None)

    def _advance(self, snap: Snapshot, n: int, state: BookState
                 ) -> tuple[BookState, dict[str, Any], dict[str, float]]:
        """The hour ending at the close of row n from `state`: the books realised over it, the
        decision at its close, and the hour's ledger row and bar (not booked here)."""
        agent = self.agent
        L = agent.lookback
        data = agent.window(snap, n)
        close = snap.run.close[n - L:n + 1]
        tradable = snap.run.tradable[n - L:n + 1]
        time = snap.market.index[n]
        if abs(close[L - 1] / state.close - 1.0) > 1e-12:
            log.warning("paper: the close at %s was %r when booked, the data now hold %r "
                        "(a revised bar); the hour %s realises from the new one", state.time,
                        state.close, close[L - 1], time)
        # realise: the agents' float32 books (the rollout's step) ...
        nxt = agent.realise(data, _agent_books(state.books, L - 1), state.actions)
        # ... and the float64 ledger (`simulate`'s state update) over the hour ending at n
        lev = self._leverage64(close)
        r = accounting.log_returns_np(close)
        b = state.books
        with jax.enable_x64(True):
            f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
            ledger = accounting.Book(t=jnp.zeros_like(f64(b.ledger_nav), jnp.int32),
                                     prev_action=f64(b.ledger_prev_action),
                                     weight=f64(b.ledger_weight), nav=f64(b.ledger_nav),
                                     peak_nav=f64(b.ledger_peak_nav))
            action = f64(np.clip(np.asarray(state.actions, np.float64), -1.0, 1.0))
            acc, book64 = accounting.advance(ledger, action, f64(lev[L - 1]), f64(r[L]),
                                             f64(self._cost), f64(self._borrow),
                                             jnp.asarray(bool(tradable[L - 1])),
                                             f64(self.cfg.env.no_trade_band))
            seeds = {"action": action, "exposure": acc.exposure, "weight": ledger.weight,
                     "turnover": acc.turnover, "cost": acc.cost, "financing": acc.financing,
                     "gross": acc.gross, "returns": acc.net_return, "nav": acc.next_nav,
                     "leverage": jnp.broadcast_to(f64(lev[L - 1]), ledger.nav.shape)}
            seeds = {k: [float(x) for x in np.asarray(v, np.float64)] for k, v in seeds.items()}
            book64 = jax.tree.map(lambda x: np.asarray(x), book64)
        f32 = jax.tree.map(lambda x: np.asarray(x), nxt)
        books = SeedBooks(f32.prev_action, f32.weight, f32.nav, f32.peak_nav,
                          book64.prev_action, book64.weight, book64.nav, book64.peak_nav)
        # decide at the close of n
        actions = agent.decide(data, _agent_books(books, L))
        target = self._target(books, actions, lev[L], bool(tradable[L]), time, float(close[L]))
        new = BookState(time=time, close=float(close[L]), books=books, actions=actions,
                        target=target, hours=state.hours + 1)
        bar = {"time": time.isoformat(), "fresh": float(tradable[L])}
        for f in ("open", "high", "low", "close", "volume"):
            bar[f] = float(snap.market[f"{snap.run.traded}_{f}"].iloc[n])
        hour = {"time": time.isoformat(), "close": float(close[L]),
                "prev_close": float(close[L - 1]), "tradable": bool(tradable[L - 1]),
                "seeds": seeds}
        return new, hour, bar

    def _book_hour(self, snap: Snapshot, n: int, state: BookState) -> BookState:
        new, hour, bar = self._advance(snap, n, state)
        self.book.commit_hour(new, hour, bar, expect_previous=state.time)
        return new

    # ---- a snapshot ------------------------------------------------------------------------

    def on_market(self, market: pd.DataFrame, *,
                  after_hour: Callable[[pd.Timestamp], None] | None = None) -> Booked:
        """Book every closed hour of `market` after the book's last one, in order (a missed
        hour is caught up, a bar seen before is never booked again); `after_hour` runs after
        each committed hour (tests)."""
        out = Booked()
        index = market.index
        state = self.book.state()
        if state is not None and index[-1] <= state.time:
            return out  # nothing new (a repeated or older bar)
        if state is None and index[-1] < self.start - pd.Timedelta(hours=1):
            return out  # the first decision is at the close before the first hour
        snap = self.agent.snapshot(market)
        if state is None:
            n0 = int(index.searchsorted(self.start - pd.Timedelta(hours=1)))
            if n0 >= len(index) or index[n0] != self.start - pd.Timedelta(hours=1):
                raise PaperBookError(f"the hour before the book's first hour {self.start} is "
                                     f"not in the data ({index[0]} .. {index[-1]})")
            self._decide_first(snap, n0)
            out.first_decision = index[n0]
            state = self.book.state()
            assert state is not None
        first = index.searchsorted(state.time)
        if first >= len(index) or index[first] != state.time:
            raise PaperBookError(f"{self.book.path}: the book's last hour {state.time} is not in "
                                 f"the data ({index[0]} .. {index[-1]}): was data.start or the "
                                 f"data directory changed?")
        self._warn(snap, first + 1, out)
        for n in range(first + 1, len(index)):
            state = self._book_hour(snap, n, state)
            out.hours.append(index[n])
            if after_hour is not None:
                after_hour(index[n])
        if out.hours or out.first_decision is not None:
            self.export()
        return out

    def _warn(self, snap: Snapshot, n: int, out: Booked) -> None:
        """Warn when the hours booked leave the segment's test window (the agent is older than
        the hours it trades) or the features leave the ranges seen in its train rows."""
        if n >= len(snap.market.index):
            return
        index = snap.market.index
        last = index[-1]
        if last > self.agent.test_period[1]:
            days = (last - self.agent.test_period[1]) / pd.Timedelta(days=1)
            msg = (f"segment {self.agent.index}'s agent was trained for the test window "
                   f"{self.agent.test_period[0]:%Y-%m-%d} .. {self.agent.test_period[1]:%Y-%m-%d}"
                   f"; {last:%Y-%m-%d %H:%M} is {days:.0f} days after it: retrain (a newer "
                   f"walk-forward segment) before trusting it")
            out.warnings.append(msg)
            log.warning("paper: %s", msg)
        feats = snap.sm.features
        train = feats.loc[self.agent.train_period[0]:self.agent.train_period[1]]
        lo, hi = train.min(), train.max()
        new = feats.iloc[n:]
        outside = ((new < lo) | (new > hi)).any()
        cols = [str(c) for c in outside.index[outside.to_numpy()]]
        if cols:
            msg = (f"features outside the ranges seen in segment {self.agent.index}'s train "
                   f"rows: {', '.join(cols[:8])}{' ...' if len(cols) > 8 else ''}")
            out.warnings.append(msg)
            log.warning("paper: %s (hours %s .. %s)", msg, new.index[0], new.index[-1])

    # ---- outputs ---------------------------------------------------------------------------

    def export(self) -> pd.DataFrame:
        """ledger.parquet (the booked hours in the backtest frame's columns) and target.json,
        both written atomically; rebuilt from the SQLite book on every call."""
        frame = ledger_frame(self.book)
        if len(frame):
            write_parquet(self.book.dir / "ledger.parquet", frame)
        state = self.book.state()
        if state is not None:
            write_json(self.book.dir / "target.json", state.target)
        return frame


def ledger_frame(book: PaperBook) -> pd.DataFrame:
    """The booked hours as the backtest's frame: the fund's `strategy` return, `nav` (from 1
    before the first booked hour),
    exposure, turnover (chosen / mechanical), cost and financing; each seed's `seed_<s>` and
    `action_<s>`; leverage, tradable and the `benchmark` (the traded asset's return)."""
    hours = book.hours()
    if len(hours) == 0:
        return hours
    n_seeds = sum(1 for c in hours.columns if c.startswith("nav_"))
    # each seed's NAV before the first booked hour: 1, or the run's (a book from its state)
    start_navs = book.meta().get("start_navs") or [1.0] * n_seeds
    sims = []
    for s in range(n_seeds):
        sim = {k: hours[f"{k}_{s}"].to_numpy(np.float64) for k in LEDGER_KEYS}
        sim["nav"] = np.concatenate([[float(start_navs[s])], sim["nav"]])
        sim["turnover_chosen"], sim["turnover_mechanical"] = turnover_attribution(
            sim["action"], sim["leverage"], sim["weight"], sim["turnover"])
        sims.append(sim)
    fund = portfolio.equal_weight(sims, keys=("returns", *FUND_COLUMNS))
    out = {"strategy": fund["returns"], "nav": fund["nav"][1:] / fund["nav"][0]}
    out.update({f"seed_{s}": sims[s]["returns"] for s in range(n_seeds)})
    out.update({k: fund[k] for k in FUND_COLUMNS})
    out["leverage"] = sims[0]["leverage"]
    out.update({f"action_{s}": sims[s]["action"] for s in range(n_seeds)})
    out["tradable"] = hours["tradable"].to_numpy(bool)
    out["benchmark"] = (hours["close"] / hours["prev_close"] - 1.0).to_numpy()
    frame = pd.DataFrame(out, index=pd.DatetimeIndex(hours.index, name="timestamp"))
    return frame
