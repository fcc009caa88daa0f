"""A units-and-cash ledger: the trading accounting read as a broker's books (float64 loops).

Independent of `cryptorl_jax.env.accounting` and of `numpy_env`: no weights, no growth factors.
The book holds q units of the traded asset and cash. At each close c_t the NAV is marked,
NAV_t = q_{t-1} c_t + cash, and the position is traded to q_t = e_t NAV_t / c_t (held, q_t =
q_{t-1}, where the bar cannot trade); the trade costs cost_rate * |q_t - q_{t-1}| * c_t, paid
from cash. Over the hour to t + 1 the borrowed notional is financed at `borrow_rate` (hourly)
from cash: the borrowed cash of a long above NAV, max(q_t c_t - NAV_t, 0), and the market value
of the shorted units, max(-q_t c_t, 0). No interest is paid on positive cash (risk-free 0).
"""

from __future__ import annotations


def ledger(close, exposures, cost_rate: float, borrow_rate: float = 0.0, start: int = 0,
           tradable=None, band: float = 0.0) -> dict:
    """Run the ledger from a flat book with NAV 1 at the close of row `start`.

    exposures[t] is e_t, the target exposure (fraction of NAV) chosen at the close of t. The
    book trades to it only when it differs from what the book holds, q c_t / NAV_t, by more
    than `band` (a no-trade band; 0 trades every difference).
    Returns lists: nav (T - start values, NAV at each close from `start`), and per step
    (T - start - 1 values): units, turnover (|q_t - q_{t-1}| c_t / NAV_t), cost, financing
    (both in cash), exposure (q_t c_t / NAV_t).
    """
    q, cash = 0.0, 1.0
    out = {"nav": [1.0], "units": [], "turnover": [], "cost": [], "financing": [],
           "exposure": []}
    for t in range(start, len(close) - 1):
        c = float(close[t])
        nav = q * c + cash
        can_trade = True if tradable is None else bool(tradable[t])
        held = q * c / nav
        outside = abs(float(exposures[t]) - held) > band
        q_new = float(exposures[t]) * nav / c if can_trade and outside else q
        traded = abs(q_new - q) * c
        cost = cost_rate * traded
        cash -= (q_new - q) * c + cost
        q = q_new
        value = q * c
        borrowed = max(value - nav, 0.0) + max(-value, 0.0)
        financing = borrow_rate * borrowed
        cash -= financing
        out["units"].append(q)
        out["turnover"].append(traded / nav)
        out["cost"].append(cost)
        out["financing"].append(financing)
        out["exposure"].append(value / nav)
        out["nav"].append(q * float(close[t + 1]) + cash)
    return out
