"""The held-out planted markets: variants of every family that no decision looks at (issue 40).

The power study (`cryptorl power --market-set selection|heldout|both`) has two sets of
planted markets:

- **selection**: market/planted.py's markets (`PlantedParams()`, seeds = the repeats 0, 1, ...);
  the settings of the learner, the baselines and the study may be chosen on them;
- **heldout**: the same families, files, oracle and strength definition, from OTHER processes
  and parameters and from seeds no selection market uses; no decision may look at them
  (`studies.protocol.DECISIONS` says which set each default was chosen on, and refuses a
  held-out one).

What differs per family (`VARIANTS`; each family's `PlantedParams` also changes the Student-t
dof, ETH's loading and the intrabar range):

- `trend` (and `none`, its strength-0 twin): the signal is a ONE-stage EMA (an AR(1), half-life
  `trend_halflife_hours` = 96 h, divided by its stationary std) of BTC's own shocks instead of
  planted.py's two-stage 48 h EMA, and the vol is a GARCH(1, 1) on the planted BTC's OWN past
  returns (`GARCH`: persistence 0.97, level `const_vol` = 0.65 % an hour) instead of the real
  BTC's EWMA: a different process, not only other numbers;
- `lead`: the two-stage EMA of an independent noise at half-life 16 h (not 36 h), ETH's level
  scale 0.15 (not 0.1), and a CONSTANT vol (0.65 % an hour) instead of the real BTC's;
- `regime`: the same hidden-chain structure (so the forward filter stays the oracle) with other
  mean durations (360 h calm, 72 h turbulent), multipliers (0.5, 2.2) and a 1,440 h base vol.

The oracle is defined as in market/planted.py (s_i unit variance, known at the close of bar i;
mu_{i+1} = k sigma_{i+1} s_i with k = strength / (E|s| sqrt(8760)); action = sign(s_i); the
regime's filtered expectation), so `strength` means the same gross Sharpe of the sign oracle
and the oracle column stays comparable across the sets.

Seeds: a held-out market's seed is `HELDOUT_SEED_OFFSET` + the repeat (a selection market's is
the repeat), drawn on its own stream key (`KEY`), so no held-out market shares a random number
with a selection market; `heldout_seed` refuses a seed below the offset. Causal as planted.py:
every path at bar i uses shocks and template returns of bars <= i only (the GARCH recursion
reads r_{i-1}); tests/market/test_heldout.py poisons the future and checks the past.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from cryptorl_jax.core.units import HOURS_PER_YEAR
from cryptorl_jax.market import planted as P

HELDOUT_VERSION = "1"
SETS = ("selection", "heldout")
HELDOUT_SEED_OFFSET = 1_000_000  # held-out seeds start here; selection seeds are the repeats
KEY = 40  # the held-out markets' stream key (planted.py's Shocks use 28)
MAX_REPEATS = HELDOUT_SEED_OFFSET  # a selection repeat at or above the offset is refused


@dataclass(frozen=True)
class Garch:
    """GARCH(1, 1) variance on the planted returns: v_i = w + a r_{i-1}^2 + b v_{i-1}, with
    w = level^2 (1 - a - b) (the stationary hourly variance is level^2)."""

    alpha: float = 0.06
    beta: float = 0.91


GARCH = Garch()


@dataclass(frozen=True)
class Variant:
    """One family's held-out generator: its params, its signal process and its vol."""

    family: str
    params: P.PlantedParams
    signal: str  # "ema1" (AR(1)) or "ema2" (planted.py's two-stage EMA)
    vol: str  # "garch", "constant" or "template" (planted.py's EWMA of the real BTC)
    const_vol: float = 0.0065  # hourly vol of "constant" and GARCH's level
    key: int = KEY

    def generate(self, family: str, strength: float, real_returns: np.ndarray,
                 shocks: P.Shocks, params: P.PlantedParams) -> dict[str, np.ndarray]:
        return generate_heldout(family, strength, real_returns, shocks, self)

    def meta(self) -> dict:
        """planted.json's fields of a held-out market."""
        return {"set": "heldout", "generator": f"cryptorl_jax.market.heldout/{HELDOUT_VERSION}",
                "params": P.json_plain(dataclasses.asdict(self.params)),
                "heldout": {"signal": self.signal, "vol": self.vol, "const_vol": self.const_vol,
                            "garch": dataclasses.asdict(GARCH) if self.vol == "garch" else None,
                            "stream_key": self.key, "seed_offset": HELDOUT_SEED_OFFSET}}


_TREND = Variant("trend", P.PlantedParams(t_dof=6.0, trend_halflife_hours=96.0, eth_beta=0.9,
                                          eth_idio=1.0, intrabar_scale=1.3),
                 signal="ema1", vol="garch")
VARIANTS: dict[str, Variant] = {
    "trend": _TREND,
    "none": dataclasses.replace(_TREND, family="none"),
    "lead": Variant("lead", P.PlantedParams(t_dof=4.0, lead_halflife_hours=16.0,
                                            lead_scale=0.15, intrabar_scale=1.3),
                    signal="ema2", vol="constant"),
    "regime": Variant("regime", P.PlantedParams(
        t_dof=4.0, regime_multipliers=(0.5, 2.2), regime_durations_hours=(360.0, 72.0),
        regime_base_halflife_hours=1440.0, eth_beta=0.9, eth_idio=1.0, intrabar_scale=1.3),
        signal="chain", vol="template"),
}


def heldout_seed(repeat: int) -> int:
    """The held-out market seed of a repeat (disjoint from every selection seed)."""
    if isinstance(repeat, bool) or not isinstance(repeat, (int, np.integer)) or repeat < 0:
        raise ValueError(f"repeat: must be an int >= 0, got {repeat!r}")
    return HELDOUT_SEED_OFFSET + int(repeat)


def market_seed(market_set: str, repeat: int) -> int:
    """The seed of a market of this set: the repeat (selection) or `heldout_seed`."""
    check_set(market_set)
    if market_set == "heldout":
        return heldout_seed(repeat)
    if repeat >= MAX_REPEATS:
        raise ValueError(f"repeat: a selection repeat must be < {MAX_REPEATS} (held-out seeds "
                         f"start there), got {repeat}")
    return int(repeat)


def check_set(market_set: str) -> str:
    if market_set not in SETS:
        raise ValueError(f"market set: unknown set {market_set!r}; choose one of {list(SETS)}")
    return market_set


def ema1_signal(shocks: np.ndarray, halflife: float) -> np.ndarray:
    """One-stage EMA (an AR(1)) of unit-variance iid shocks divided by its stationary std
    (Var = (1 - a) / (1 + a)): unit variance, causal."""
    from scipy.signal import lfilter

    a = P._decay(halflife)
    y = lfilter([1.0 - a], [1.0, -a], shocks)
    return y / math.sqrt((1.0 - a) / (1.0 + a))


def garch_paths(eps: np.ndarray, signal: np.ndarray, k: float, level: float,
                garch: Garch = GARCH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sigma, mu, r) with a GARCH(1, 1) vol on the planted returns themselves: sigma_i from
    r_{< i}, mu_{i+1} = k sigma_{i+1} s_i, r_i = mu_i - sigma_i^2 / 2 + sigma_i eps_i."""
    n = len(eps)
    a, b = garch.alpha, garch.beta
    w = level * level * (1.0 - a - b)
    sigma, mu, r = np.empty(n), np.zeros(n), np.empty(n)
    v, prev_r = level * level, None
    eps_l, sig_l = eps.tolist(), signal.tolist()
    for i in range(n):
        if prev_r is not None:
            v = w + a * prev_r * prev_r + b * v
        s = math.sqrt(v)
        sigma[i] = s
        if i > 0:
            mu[i] = k * s * sig_l[i - 1]
        prev_r = mu[i] - 0.5 * v + s * eps_l[i]
        r[i] = prev_r
    return sigma, mu, r


def generate_heldout(family: str, strength: float, real_returns: np.ndarray,
                     shocks: P.Shocks, variant: Variant | None = None) -> dict[str, np.ndarray]:
    """The held-out latent paths (the keys of `market.planted.generate`), causal in i."""
    family = P._check_family(family)
    strength = P._check_strength(family, strength)
    v = variant or VARIANTS[family]
    if v.family != family:
        raise ValueError(f"variant: the {v.family!r} variant cannot generate {family!r}")
    p = v.params
    if family == "regime":  # the same chain and filter as planted.py, other parameters
        return P.generate("regime", strength, real_returns, shocks, p)
    n = len(real_returns)
    eps = shocks.eps[:n]
    k = strength / (P._E_ABS_GAUSS * math.sqrt(HOURS_PER_YEAR))
    source = shocks.lead[:n] if family == "lead" else eps
    halflife = p.lead_halflife_hours if family == "lead" else p.trend_halflife_hours
    signal = (ema1_signal(source, halflife) if v.signal == "ema1"
              else P.slow_signal(source, halflife))
    if v.vol == "garch":
        sigma, mu, r = garch_paths(eps, signal, k, v.const_vol)
    else:
        sigma = (np.full(n, v.const_vol) if v.vol == "constant" else
                 np.sqrt(P.ewma_var_lagged(real_returns, p.vol_halflife_hours, p.initial_var)))
        mu, r = P.signal_drift(sigma, signal, eps, k)
    out = {"r": r, "sigma": sigma, "mu": mu, "signal": signal, "action": np.sign(signal),
           "next_drift": np.append(mu[1:], np.nan)}
    out["eth"] = (p.lead_scale * signal if family == "lead"
                  else p.eth_beta * r + p.eth_idio * sigma * shocks.eth[:n])
    return out


def write_heldout_files(out_dir, family: str, strength: float, seed: int, **kw
                        ) -> P.PlantedFiles:
    """`market.planted.write_planted_files` with the family's held-out variant; `seed` must be
    a held-out seed (>= HELDOUT_SEED_OFFSET, `heldout_seed`)."""
    family = P._check_family(family)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or \
            seed < HELDOUT_SEED_OFFSET:
        raise ValueError(f"seed: a held-out market's seed must be >= {HELDOUT_SEED_OFFSET} "
                         f"(heldout_seed(repeat)), got {seed!r}")
    if kw.get("params") is not None:
        raise ValueError("params: a held-out market takes its variant's params")
    v = VARIANTS[family]
    return P.write_planted_files(out_dir, family, strength, seed,
                                 **{**kw, "params": v.params}, variant=v)
