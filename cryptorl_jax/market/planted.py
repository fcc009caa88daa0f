"""Planted-edge markets: a data directory in the bundled files' format with a causal edge of
known strength in the traded asset (BTC) and the oracle's exposure path beside it.

`write_planted_files(out_dir, family, strength, seed)` writes `BTC_1h.csv.gz`,
`ETH_1h.csv.gz`, `SPY_1h.csv.gz`, `DXY_1h.csv.gz` (the names configs/quick.yaml and
study.yaml read, so `--set data.data_dir=DIR` runs the whole pipeline on them unchanged) and
`oracle.parquet`; `studies.planted.write_planted_market` writes them, measures the oracle
through the backtest and writes `planted.json` (this module's generator fields and the
oracle's figures). docs/architecture.md, "Planted-edge markets", has the measured oracle
figures.

What is kept from the template (the bundled `data/` by default): every file's timestamps
(bar open times, UTC; the real gaps and sessions), the real volume column (verbatim), SPY and
DXY (copied byte for byte, or their rows cut to `start`/`end`), and BTC's volatility structure.

The traded asset. On the full hourly grid from BTC's first to last bar (bar i opens at hour i;
a template gap's bars are generated but not written, so the loader fills them as it fills the
real gaps), with eps_i iid Student-t (`t_dof` = 5) scaled to unit variance:

    r_i = mu_i - sigma_i^2 / 2 + sigma_i * eps_i          (log return of bar i, close / open)
    mu_{i+1} = k * sigma_{i+1} * s_i                       (trend, lead)

- sigma_i (the base vol) = sqrt of an EWMA (half-life `vol_halflife_hours`, 12 h) of the real
  BTC's squared bar log returns ln(close / open) up to bar i - 1: the real vol clustering and
  level, known one bar ahead. The -sigma^2 / 2 makes the price a martingale (E[exp(r)] = 1 at
  mu = 0 for Gaussian shocks): without an edge, buy & hold earns nothing on average.
- s_i is a unit-variance signal known at the close of bar i; k = strength / (E|s| sqrt(8760))
  with E|s| = sqrt(2 / pi) (s is Gaussian or nearly so).

`strength` (>= 0; 0 = no edge, the effect is monotone): the annualised GROSS Sharpe ratio of
the sign oracle a_i = sign(s_i) held with ideal vol targeting (exposure / sigma constant) and
no costs: per hour it earns k * |s_i| / 1 in Sharpe units, E = k sqrt(2 / pi), times
sqrt(8760) = strength. `backtest.simulate` then applies the env's real vol targeting (a 20-day
EWMA estimate, capped leverage, the 0.1 no-trade band) and charges 7 bps per unit of turnover
plus financing, so the measured after-cost Sharpe is lower (planted.json, docs).
`DEFAULT_STRENGTH` = 4, the power study's default: the sign oracle then earns 3.2-4.0 after
costs over 2019-12 .. 2025-07 (seed 0; 2.6-4.1 over seeds 0-3; docs/architecture.md).

Families (`FAMILIES`):

- `trend`: s_i = a two-stage EMA (each stage half-life `trend_halflife_hours`, 48 h) of BTC's
  OWN standardised shocks eps, divided by its stationary std: a slow causal average of the
  asset's own past shocks, visible to the agent through its own past returns.
- `lead`: s_i = the same two-stage EMA of an independent Gaussian noise (half-life
  `lead_halflife_hours`, 36 h); BTC's own returns carry only its effect. It is visible in ETH's
  price LEVEL: ETH's log close at bar i = ln(ETH's first real open) + `lead_scale` * s_i,
  exactly (no noise on the close; intrabar noise on high / low only). ETH is 24/7, has the
  same bars as BTC and no availability lag, so the row of bar i's close shows s_i to the
  pipeline: the oracle uses nothing the pipeline cannot see at that row.
- `regime`: a hidden 2-state Markov chain z_i (0 calm, 1 turbulent; mean durations
  `regime_durations_hours` = 240 h and 120 h) multiplies a SLOW base vol b_i (an EWMA with
  half-life `regime_base_halflife_hours` = 720 h of the real BTC's squared returns, lagged one
  bar): sigma_i = b_i * m_{z_i}, m = `regime_multipliers` (0.6, 1.8) rescaled so that
  E[m^2] = 1 under the chain's stationary law (the vol level stays the real one). The drift is
  mu_i = k * d_{z_i} * sigma_i with d = (+1, -1): up in calm, down in turbulent hours; with
  this family s = d_z (|s| = 1) and k = strength / sqrt(8760). The slow base leaves the hidden
  state as the main hour-to-day vol driver, so a forward-filtered HMM on the 1 h log return
  and realised vol can infer it (a 4-state `RegimeModel` on the 1 h log return and a 24 h
  rolling std, fitted on one year of 2021-22 and filtered over the next, puts P(two most
  volatile states) > 0.5 on the true turbulent hours with 92 % accuracy; the oracle's
  true-parameter filter: 97 %).
- `none`: `trend` at strength 0 (the same BTC bytes for the same seed): the real vol
  structure and the same costs, no edge. Its oracle is the sign of the (now useless) trend
  signal: a false-positive reference. `strength` must be 0.

High and low come from a drawn intrabar path of N_SUB = 6 sub-steps with vol
`intrabar_scale` (1.4) x the bar's vol, pinned to the open and the close: mean (high - low)
/ mean |r| is ~1.9 (real BTC 2019-12 .. 2025-07: 2.2).

ETH in `trend`, `regime` and `none`: a noisy loading on the planted BTC,
r_ETH,i = `eth_beta` * r_i + `eth_idio` * sigma_i * z_i (correlation ~0.8, as the real pair).

The oracle (`oracle.parquet`): index = the hourly UTC bar-CLOSE times of BTC's full grid, as
`load_market` labels rows (bar i closes at its open + 1 h). Row t = close of bar i:

- `signal`: the predictive signal known at that close: s_i (trend, lead, none); for `regime`
  E[d_z m_z of bar i+1 | BTC returns of bars <= i], the expected next drift per unit of
  k * b_{i+1}, from a forward filter (P(z_i | r_0..r_i), our own recursion) with the TRUE
  parameters and base vol: the best causal policy stated here (the agent must learn them);
- `action`: the sign oracle, sign(signal) in {-1, 0, 1}: chosen at the close of row t, it
  realises r_{t+1}, the return of bar i + 1 (env/accounting.py's and backtest/replay.py's
  convention);
- `next_drift`: mu_{i+1}, the drift of the return the action realises (for trend / lead it is
  known at t and sign(next_drift) == action; for regime it depends on the hidden z_{i+1});
- regime only: `state` (z_i, the true state of the bar closing at t), `p_turbulent` (the
  filtered P(z_i = 1)) and `state_action` (d_{z_i}: the informed oracle that sees the hidden
  state, an upper bound).

Rows of bars missing from the template also hold values; the loader fills those bars
(`BTC_fresh` 0) and `simulate` cannot trade there.

Causality: s_i, sigma_{i+1}, the chain and the filter use only bars <= i (recursive filters
on arrays of shocks; tests/market/test_planted.py poisons the shocks after an hour and checks
that everything before it is unchanged). Determinism: one seed -> byte-identical files
(independent random streams spawned from the seed per component, prices written with 10
significant digits, gzip mtime 0, sorted JSON).

(The module runs past 500 lines for this docstring: the generator is defined here in full.)
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from cryptorl_jax.core.io import write_atomic, write_parquet
from cryptorl_jax.core.names import BUNDLED_FILES
from cryptorl_jax.core.units import HOURS_PER_YEAR

GENERATOR_VERSION = "1"
FAMILIES = ("trend", "lead", "regime", "none")
DEFAULT_STRENGTH = 4.0  # the power study's default: the sign oracle earns ~3-5 after costs
TRADED = "BTC"
CARRIER = "ETH"  # the lead family's signal asset
ORACLE_FILE = "oracle.parquet"
META_FILE = "planted.json"
N_SUB = 6  # intrabar sub-steps drawn for high / low
_PRICE_FORMAT = "%.10g"
_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_E_ABS_GAUSS = math.sqrt(2.0 / math.pi)  # E|s| for a unit Gaussian


@dataclass(frozen=True)
class PlantedParams:
    """The generator's fixed parameters (documented in the module docstring)."""

    vol_halflife_hours: float = 12.0
    t_dof: float = 5.0
    trend_halflife_hours: float = 48.0
    lead_halflife_hours: float = 36.0
    lead_scale: float = 0.1
    regime_multipliers: tuple[float, float] = (0.6, 1.8)
    regime_durations_hours: tuple[float, float] = (240.0, 120.0)
    regime_base_halflife_hours: float = 720.0
    eth_beta: float = 1.1
    eth_idio: float = 0.8
    initial_var: float = 1e-4  # the vol EWMAs' value before the first bar (1 % hourly)
    intrabar_scale: float = 1.4  # intrabar path vol / bar vol: high-low ranges near the real



@dataclass(frozen=True)
class PlantedFiles:
    """A written planted-edge directory, before its oracle is measured (`studies.planted`)."""

    out_dir: Path
    family: str
    strength: float
    seed: int
    files: dict[str, Path] = field(hash=False)
    oracle: pd.DataFrame = field(hash=False)  # what oracle.parquet holds
    oracle_path: Path
    meta: dict = field(hash=False)  # planted.json's generator fields (no oracle figures)


# --------------------------------------------------------------------------------------------
# Causal building blocks (pure numpy; bar index i = hour i of the full grid)
# --------------------------------------------------------------------------------------------


def _decay(halflife: float) -> float:
    return 0.5 ** (1.0 / float(halflife))


def ewma_var_lagged(returns: np.ndarray, halflife: float, initial_var: float) -> np.ndarray:
    """v[i] = EWMA of returns[j]^2 over j <= i - 1 (NaN returns skipped: the EWMA holds);
    v[0] = initial_var. A vol known one bar ahead."""
    a = _decay(halflife)
    out = np.empty(len(returns))
    v = float(initial_var)
    for i, x in enumerate(returns.tolist()):
        out[i] = v
        if x == x:  # not NaN
            v = a * v + (1.0 - a) * x * x
    return out


def slow_signal(shocks: np.ndarray, halflife: float) -> np.ndarray:
    """Two-stage EMA of unit-variance iid shocks (each stage with this half-life), started at 0
    and divided by its stationary std: unit variance, causal (s[i] uses shocks[:i + 1])."""
    from scipy.signal import lfilter

    a = _decay(halflife)
    y = lfilter([1.0 - a], [1.0, -a], shocks)
    y = lfilter([1.0 - a], [1.0, -a], y)
    x = a * a  # Var = (1-a)^4 sum (j+1)^2 a^{2j} = (1-a)^4 (1 + x) / (1 - x)^3
    var = (1.0 - a) ** 4 * (1.0 + x) / (1.0 - x) ** 3
    return y / math.sqrt(var)


def _t_logpdf(z: np.ndarray, dof: float) -> np.ndarray:
    """Log density of the unit-VARIANCE Student-t at z."""
    scale = math.sqrt(dof / (dof - 2.0))
    u = z * scale
    const = (special.gammaln((dof + 1) / 2) - special.gammaln(dof / 2)
             - 0.5 * math.log(dof * math.pi) + math.log(scale))
    return const - (dof + 1) / 2 * np.log1p(u * u / dof)


def regime_params(p: PlantedParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transition matrix P, stationary law pi, vol multipliers m with E_pi[m^2] = 1)."""
    d0, d1 = p.regime_durations_hours
    stay = np.array([1.0 - 1.0 / d0, 1.0 - 1.0 / d1])
    trans = np.array([[stay[0], 1.0 - stay[0]], [1.0 - stay[1], stay[1]]])
    pi = np.array([d0, d1]) / (d0 + d1)
    m = np.asarray(p.regime_multipliers, float)
    m = m / math.sqrt(float(pi @ m**2))
    return trans, pi, m


REGIME_DRIFT_SIGN = np.array([1.0, -1.0])  # calm up, turbulent down


def _regime_states(u: np.ndarray, trans: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """The hidden chain from uniforms: z_0 ~ pi, then z_i switches when u_i > P[z, z]."""
    z = np.empty(len(u), dtype=np.int64)
    s = 0 if u[0] < pi[0] else 1
    z[0] = s
    for i in range(1, len(u)):
        if u[i] > trans[s, s]:
            s = 1 - s
        z[i] = s
    return z


def _forward_filter(r: np.ndarray, base: np.ndarray, k: float, m: np.ndarray,
                    trans: np.ndarray, pi: np.ndarray, dof: float) -> np.ndarray:
    """P(z_i = 1 | r_0..r_i) with the true parameters: causal, recursive."""
    n = len(r)
    loglik = np.empty((n, 2))
    for j in range(2):
        sig = base * m[j]
        mu = k * REGIME_DRIFT_SIGN[j] * sig - 0.5 * sig * sig
        loglik[:, j] = _t_logpdf((r - mu) / sig, dof) - np.log(sig)
    lik = np.exp(loglik - loglik.max(axis=1, keepdims=True)).tolist()
    p00, p01, p10, p11 = trans[0, 0], trans[0, 1], trans[1, 0], trans[1, 1]
    out = np.empty(n)
    prior0, prior1 = float(pi[0]), float(pi[1])
    for i, (l0, l1) in enumerate(lik):
        a0, a1 = prior0 * l0, prior1 * l1
        tot = a0 + a1
        q1 = a1 / tot if tot > 0 else 1.0 - prior0
        out[i] = q1
        q0 = 1.0 - q1
        prior0, prior1 = q0 * p00 + q1 * p10, q0 * p01 + q1 * p11
    return out


def signal_drift(sigma: np.ndarray, signal: np.ndarray, eps: np.ndarray, k: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(mu, r): mu_{i+1} = k sigma_{i+1} s_i (mu_0 = 0), r_i = mu_i - sigma_i^2 / 2 +
    sigma_i eps_i (the trend / lead families' returns)."""
    mu = np.zeros(len(sigma))
    mu[1:] = k * sigma[1:] * signal[:-1]
    return mu, mu - 0.5 * sigma**2 + sigma * eps


@dataclass(frozen=True)
class Shocks:
    """The random inputs of one market, one independent stream each (length n, the grid)."""

    eps: np.ndarray  # BTC's unit-variance Student-t shocks
    lead: np.ndarray  # the lead signal's Gaussian innovations
    state_u: np.ndarray  # uniforms of the regime chain
    eth: np.ndarray  # ETH's idiosyncratic Gaussian noise
    intrabar_btc: np.ndarray  # [n, N_SUB] Gaussian sub-steps
    intrabar_eth: np.ndarray

    @classmethod
    def draw(cls, seed: int, n: int, t_dof: float, key: int = 28) -> Shocks:
        """key: the stream's second entropy word (28 here; market/heldout.py uses its own)."""
        streams = [np.random.default_rng(s)
                   for s in np.random.SeedSequence([int(seed), int(key)]).spawn(6)]
        eps = streams[0].standard_t(t_dof, n) / math.sqrt(t_dof / (t_dof - 2.0))
        return cls(eps=eps, lead=streams[1].standard_normal(n), state_u=streams[2].random(n),
                   eth=streams[3].standard_normal(n),
                   intrabar_btc=streams[4].standard_normal((n, N_SUB)),
                   intrabar_eth=streams[5].standard_normal((n, N_SUB)))


def generate(family: str, strength: float, real_returns: np.ndarray, shocks: Shocks,
             params: PlantedParams = PlantedParams()) -> dict[str, np.ndarray]:
    """The planted latent paths on the full hourly grid (bar i), causal in i.

    real_returns: the template BTC's ln(close / open) per grid bar (NaN where the template has
    no bar). Returns r (BTC log returns), sigma, mu (drift of bar i), signal, action,
    next_drift (mu of bar i + 1, the return the action at the close of bar i realises),
    eth_log_level_or_ret (lead: ETH's log level minus its start; else ETH's log return) and,
    for `regime`, state, p_turbulent, state_action.
    """
    family = _check_family(family)
    strength = _check_strength(family, strength)
    p = params
    n = len(real_returns)
    eps = shocks.eps[:n]
    out: dict[str, np.ndarray] = {}
    if family == "regime":
        trans, pi, m = regime_params(p)
        base = np.sqrt(ewma_var_lagged(real_returns, p.regime_base_halflife_hours,
                                       p.initial_var))
        z = _regime_states(shocks.state_u[:n], trans, pi)
        k = strength / math.sqrt(HOURS_PER_YEAR)
        sigma = base * m[z]
        mu = k * REGIME_DRIFT_SIGN[z] * sigma
        r = mu - 0.5 * sigma**2 + sigma * eps
        q1 = _forward_filter(r, base, k, m, trans, pi, p.t_dof)
        pred1 = (1.0 - q1) * trans[0, 1] + q1 * trans[1, 1]  # P(z_{i+1} = 1 | r_0..r_i)
        signal = (1.0 - pred1) * REGIME_DRIFT_SIGN[0] * m[0] + pred1 * REGIME_DRIFT_SIGN[1] * m[1]
        out.update(state=z.astype(np.float64), p_turbulent=q1,
                   state_action=REGIME_DRIFT_SIGN[z])
    else:
        sigma = np.sqrt(ewma_var_lagged(real_returns, p.vol_halflife_hours, p.initial_var))
        k = strength / (_E_ABS_GAUSS * math.sqrt(HOURS_PER_YEAR))
        if family == "lead":
            signal = slow_signal(shocks.lead[:n], p.lead_halflife_hours)
        else:  # trend, none
            signal = slow_signal(eps, p.trend_halflife_hours)
        mu, r = signal_drift(sigma, signal, eps, k)
    next_drift = np.append(mu[1:], np.nan)
    out.update(r=r, sigma=sigma, mu=mu, signal=signal, action=np.sign(signal),
               next_drift=next_drift)
    if family == "lead":
        out["eth"] = p.lead_scale * signal
    else:
        out["eth"] = p.eth_beta * r + p.eth_idio * sigma * shocks.eth[:n]
    return out


# --------------------------------------------------------------------------------------------
# Bars and files
# --------------------------------------------------------------------------------------------


def _ohlc(log_close: np.ndarray, log_ret: np.ndarray, vol: np.ndarray,
          sub_normals: np.ndarray, scale: float) -> dict[str, np.ndarray]:
    """OHLC whose close-to-open log return is log_ret, with a drawn intrabar path for high and
    low (high >= max(open, close), low <= min(open, close) by construction)."""
    sub = sub_normals * (scale * vol[:, None] / math.sqrt(N_SUB))
    sub = sub - sub.mean(axis=1, keepdims=True) + log_ret[:, None] / N_SUB
    path = np.cumsum(sub, axis=1)
    log_open = log_close - log_ret
    hi = np.maximum(log_open + path.max(axis=1), np.maximum(log_open, log_close))
    lo = np.minimum(log_open + path.min(axis=1), np.minimum(log_open, log_close))
    return {"open": np.exp(log_open), "high": np.exp(hi), "low": np.exp(lo),
            "close": np.exp(log_close)}


def _read_template(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["ts"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame


def _cut(frame: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None
         ) -> pd.DataFrame:
    keep = np.ones(len(frame), bool)
    if start is not None:
        keep &= (frame["ts"] >= start).to_numpy()
    if end is not None:
        keep &= (frame["ts"] <= end).to_numpy()
    return frame[keep].reset_index(drop=True)


def _csv_gz(timestamps: pd.Series, prices: dict[str, np.ndarray], volume: pd.Series) -> bytes:
    """The bundled files' format: timestamp (bar open, ISO UTC), OHLC at 10 significant
    digits, the template's volume strings verbatim; gzip with mtime 0."""
    table = pd.DataFrame({"timestamp": timestamps.to_numpy()})
    for f in ("open", "high", "low", "close"):
        table[f] = np.char.mod(_PRICE_FORMAT, prices[f])
    table["volume"] = volume.to_numpy()
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    return gzip.compress(buf.getvalue().encode(), compresslevel=6, mtime=0)


def _copy_context(src: Path, dst: Path, start: pd.Timestamp | None, end: pd.Timestamp | None
                  ) -> None:
    if start is None and end is None:
        shutil.copyfile(src, dst)
        return
    frame = _cut(_read_template(src), start, end)
    if len(frame) == 0:
        raise ValueError(f"start/end: no {src.name} bars between {start} and {end}")
    text = frame.drop(columns="ts").to_csv(index=False, lineterminator="\n")
    write_atomic(dst, gzip.compress(text.encode(), compresslevel=6, mtime=0))


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"family: unknown family {family!r}; choose one of {list(FAMILIES)}")
    return family


def _check_strength(family: str, strength: float) -> float:
    try:
        s = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"strength: must be a number >= 0, got {strength!r}") from None
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"strength: must be a finite number >= 0, got {strength!r}")
    if family == "none" and s != 0:
        raise ValueError(f"strength: family 'none' has no edge, so strength must be 0, got "
                         f"{strength!r}")
    return s


def utc_timestamp(value, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: not a date/time: {value!r}") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# The writer
# --------------------------------------------------------------------------------------------


def write_planted_files(out_dir, family: str, strength: float, seed: int, *,
                        template_dir="data", start=None, end=None,
                        params: PlantedParams | None = None, variant=None) -> PlantedFiles:
    """Write a planted-edge market's data files and its oracle.parquet (module docstring).

    start / end (optional, UTC): keep only the template bars opening in [start, end] (short
    markets for tests). params: the generator's parameters (defaults documented above).
    variant: another generator over the same files and oracle (`market.heldout.Variant`: its
    `generate`, stream `key` and planted.json fields); None = this module's (the selection set).
    """
    family = _check_family(family)
    strength = _check_strength(family, strength)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: must be an int >= 0, got {seed!r}")
    params = params or PlantedParams()
    t0, t1 = utc_timestamp(start, "start"), utc_timestamp(end, "end")
    template = Path(template_dir)
    for name in BUNDLED_FILES.values():
        if not (template / name).is_file():
            raise FileNotFoundError(f"template_dir: {template / name} not found (a template "
                                    f"needs {sorted(BUNDLED_FILES.values())})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    btc = _cut(_read_template(template / BUNDLED_FILES[TRADED]), t0, t1)
    eth = _cut(_read_template(template / BUNDLED_FILES[CARRIER]), t0, t1)
    if len(btc) < 2:
        raise ValueError(f"start/end: fewer than 2 {BUNDLED_FILES[TRADED]} bars between {start} "
                         f"and {end}")
    first = btc["ts"].iloc[0]
    n = int((btc["ts"].iloc[-1] - first) / pd.Timedelta(hours=1)) + 1
    grid = pd.date_range(first, periods=n, freq="h", tz="UTC")
    pos = ((btc["ts"] - first) / pd.Timedelta(hours=1)).to_numpy()
    if not np.all(pos == np.round(pos)):
        raise ValueError(f"template_dir: {BUNDLED_FILES[TRADED]} has bars off the full hour")
    pos = pos.astype(np.int64)
    real = np.full(n, np.nan)
    real[pos] = np.log(btc["close"].astype(float).to_numpy() / btc["open"].astype(float)
                       .to_numpy())

    if variant is None:
        shocks = Shocks.draw(int(seed), n, params.t_dof)
        lat = generate(family, strength, real, shocks, params)
    else:
        shocks = Shocks.draw(int(seed), n, params.t_dof, variant.key)
        lat = variant.generate(family, strength, real, shocks, params)

    # BTC: a path from the real first open
    log_close = math.log(float(btc["open"].iloc[0])) + np.cumsum(lat["r"])
    bars = _ohlc(log_close, lat["r"], lat["sigma"], shocks.intrabar_btc, params.intrabar_scale)
    files = {}
    path = out / BUNDLED_FILES[TRADED]
    write_atomic(path, _csv_gz(btc["timestamp"], {f: v[pos] for f, v in bars.items()},
                               btc["volume"]))
    files[TRADED] = path

    # ETH on its own bars inside the grid
    eth = eth[(eth["ts"] >= grid[0]) & (eth["ts"] <= grid[-1])].reset_index(drop=True)
    epos = ((eth["ts"] - first) / pd.Timedelta(hours=1)).to_numpy().astype(np.int64)
    eth0 = math.log(float(eth["open"].iloc[0])) if len(eth) else 0.0
    if family == "lead":
        eth_log_close = eth0 + lat["eth"]
        eth_ret = np.diff(lat["eth"], prepend=0.0)
        eth_vol = np.full(n, params.lead_scale * 0.05)
    else:
        eth_ret = lat["eth"]
        eth_log_close = eth0 + np.cumsum(eth_ret)
        eth_vol = math.hypot(params.eth_beta, params.eth_idio) * lat["sigma"]
    ebars = _ohlc(eth_log_close, eth_ret, eth_vol, shocks.intrabar_eth, params.intrabar_scale)
    path = out / BUNDLED_FILES[CARRIER]
    write_atomic(path, _csv_gz(eth["timestamp"], {f: v[epos] for f, v in ebars.items()},
                               eth["volume"]))
    files[CARRIER] = path

    for name in ("SPY", "DXY"):
        path = out / BUNDLED_FILES[name]
        _copy_context(template / BUNDLED_FILES[name], path, t0, t1)
        files[name] = path

    # the oracle on bar-close rows
    cols = ["signal", "action", "next_drift"]
    if family == "regime":
        cols += ["state", "p_turbulent", "state_action"]
    oracle = pd.DataFrame({c: lat[c] for c in cols},
                          index=pd.DatetimeIndex(grid + pd.Timedelta(hours=1), name="timestamp")
                          .as_unit("ns"))
    oracle_path = out / ORACLE_FILE
    write_parquet(oracle_path, oracle)

    meta = {
        "family": family, "strength": strength, "seed": int(seed),
        "generator": f"cryptorl_jax.market.planted/{GENERATOR_VERSION}",
        "strength_definition": "annualised gross Sharpe of the sign oracle with ideal vol "
                               "targeting and no costs",
        "drift_per_hour_sharpe_k": (strength / math.sqrt(HOURS_PER_YEAR) if family == "regime"
                                    else strength / (_E_ABS_GAUSS * math.sqrt(HOURS_PER_YEAR))),
        "params": json_plain(dataclasses.asdict(params)),
        "signal_asset": CARRIER if family == "lead" else TRADED,
        "template_dir": str(template), "start": None if t0 is None else t0.isoformat(),
        "end": None if t1 is None else t1.isoformat(),
        "files": {BUNDLED_FILES[a]: _sha256(p) for a, p in files.items()},
        "oracle_file": ORACLE_FILE, "set": "selection",
    }
    if variant is not None:
        meta.update(variant.meta())
    return PlantedFiles(out_dir=out, family=family, strength=strength, seed=int(seed),
                        files=files, oracle=oracle, oracle_path=oracle_path, meta=meta)


def json_plain(obj):
    """Tuples as lists, recursively (what planted.json's fields hold)."""
    if isinstance(obj, dict):
        return {k: json_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_plain(v) for v in obj]
    return obj
