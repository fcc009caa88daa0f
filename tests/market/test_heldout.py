"""The held-out planted markets (market/heldout.py): seeds disjoint from the selection set's,
other parameters and processes for every family, determinism, causality, the oracle's strength
kept, and planted.json recording the set."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from cryptorl_jax.market import heldout as H
from cryptorl_jax.market import planted as P
from cryptorl_jax.studies.cells import cells
from cryptorl_jax.studies.planted import write_planted_market
from tests.market.planted_template import DATA, template_returns

SHORT = dict(template_dir=DATA, start="2024-01-01", end="2024-02-15")


@pytest.fixture(scope="module")
def template():
    return template_returns()


def _shocks(family: str, seed: int, n: int) -> P.Shocks:
    return P.Shocks.draw(seed, n, H.VARIANTS[family].params.t_dof, H.KEY)


def _strength(family: str) -> float:
    return 0.0 if family == "none" else P.DEFAULT_STRENGTH


def test_selection_and_heldout_seeds_never_overlap():
    both = cells(list(P.FAMILIES), [2.0, 4.0], 50, H.SETS)
    seeds = {s: {c.seed for c in both if c.set == s} for s in H.SETS}
    assert seeds["selection"] == set(range(50))
    assert min(seeds["heldout"]) == H.HELDOUT_SEED_OFFSET and not seeds["selection"] & \
        seeds["heldout"]
    with pytest.raises(ValueError, match="selection repeat must be < 1000000"):
        H.market_seed("selection", H.HELDOUT_SEED_OFFSET)
    with pytest.raises(ValueError, match="held-out market's seed must be >= 1000000"):
        H.write_heldout_files("unused", "trend", 4.0, 3, **SHORT)
    with pytest.raises(ValueError, match="unknown set 'test'"):
        H.market_seed("test", 0)
    # and even one integer draws other numbers on the held-out stream key
    a, b = P.Shocks.draw(7, 100, 5.0), P.Shocks.draw(7, 100, 5.0, H.KEY)
    assert not np.any(a.eps == b.eps) and not np.any(a.lead == b.lead)


@pytest.mark.parametrize("family", P.FAMILIES)
def test_heldout_params_and_process_differ_from_the_selection_sets(template, family):
    real, _ = template
    v = H.VARIANTS[family]
    base = P.PlantedParams()
    assert v.params != base and v.params.t_dof != base.t_dof
    differs = {"trend": ("trend_halflife_hours",), "none": ("trend_halflife_hours",),
               "lead": ("lead_halflife_hours", "lead_scale"),
               "regime": ("regime_multipliers", "regime_durations_hours",
                          "regime_base_halflife_hours")}[family]
    for name in differs:
        assert getattr(v.params, name) != getattr(base, name), name
    if family != "regime":  # another vol (constant or GARCH) and, for trend, another filter
        assert v.vol in ("constant", "garch")
    # the same random numbers through both generators: other paths
    shocks = P.Shocks.draw(3, len(real), 5.0)
    a = P.generate(family, _strength(family), real, shocks)
    b = H.generate_heldout(family, _strength(family), real, shocks)
    assert set(a) == set(b)
    assert not np.allclose(a["r"], b["r"]) and not np.allclose(a["sigma"], b["sigma"])


@pytest.mark.parametrize("family", ["trend", "lead", "regime"])
def test_heldout_is_causal(template, family):
    """tests/market/test_planted.py's check: poison every shock and the template's returns
    after an hour; nothing before it changes."""
    real, _ = template
    n, cut = len(real), 9000
    shocks = _shocks(family, H.heldout_seed(1), n)
    rng = np.random.default_rng(99)
    poisoned = dataclasses.replace(
        shocks, **{f.name: np.concatenate([getattr(shocks, f.name)[:cut],
                                           rng.permutation(getattr(shocks, f.name)[cut:])])
                   for f in dataclasses.fields(shocks)})
    real2 = real.copy()
    real2[cut:] = rng.permutation(real2[cut:]) * 2
    constant = {"sigma"} if H.VARIANTS[family].vol == "constant" else set()
    a = H.generate_heldout(family, P.DEFAULT_STRENGTH, real, shocks)
    b = H.generate_heldout(family, P.DEFAULT_STRENGTH, real2, poisoned)
    for key in a:
        stop = cut - 1 if key == "next_drift" and family == "regime" else cut
        np.testing.assert_array_equal(a[key][:stop], b[key][:stop], err_msg=key)
        if key not in constant:
            assert not np.array_equal(a[key][cut + 1:], b[key][cut + 1:]), key


@pytest.mark.parametrize("family", ["trend", "lead"])
def test_strength_keeps_its_meaning(template, family):
    """The sign oracle with ideal vol targeting and no costs earns ~strength (the definition
    market/planted.py uses), over three years of hours (SE ~0.6), and the signal has unit
    variance."""
    real, _ = template
    lat = H.generate_heldout(family, 4.0, real, _shocks(family, H.heldout_seed(0), len(real)))
    pnl = lat["action"][:-1] * lat["r"][1:] / lat["sigma"][1:]
    assert pnl.mean() / pnl.std() * math.sqrt(8760) == pytest.approx(4.0, abs=1.5)
    assert lat["signal"].std() == pytest.approx(1.0, abs=0.3)
    assert np.array_equal(np.sign(lat["next_drift"][:-1]), lat["action"][:-1])


def test_deterministic_per_set_family_strength_seed(tmp_path):
    seed = H.heldout_seed(2)
    a = H.write_heldout_files(tmp_path / "a", "trend", 4.0, seed, **SHORT)
    b = H.write_heldout_files(tmp_path / "b", "trend", 4.0, seed, **SHORT)
    for name in a.files:
        assert a.files[name].read_bytes() == b.files[name].read_bytes(), name
    assert a.oracle.equals(b.oracle)
    other = [H.write_heldout_files(tmp_path / "c", "trend", 2.0, seed, **SHORT),
             H.write_heldout_files(tmp_path / "d", "trend", 4.0, seed + 1, **SHORT),
             P.write_planted_files(tmp_path / "e", "trend", 4.0, 2, **SHORT)]
    for o in other:
        assert o.files["BTC"].read_bytes() != a.files["BTC"].read_bytes()
    with pytest.raises(ValueError, match="params: a held-out market takes its variant's"):
        H.write_heldout_files(tmp_path / "f", "trend", 4.0, seed, params=P.PlantedParams(),
                              **SHORT)


def test_planted_json_records_the_set_and_params(tmp_path):
    held = write_planted_market(tmp_path / "h", "lead", 2.0, H.heldout_seed(0),
                                market_set="heldout", **SHORT)
    meta = json.loads(held.meta_path.read_text())
    assert meta["set"] == "heldout" and meta["seed"] == H.HELDOUT_SEED_OFFSET
    assert meta["params"] == P.json_plain(dataclasses.asdict(H.VARIANTS["lead"].params))
    assert meta["heldout"]["vol"] == "constant" and meta["generator"].startswith(
        "cryptorl_jax.market.heldout/")
    assert math.isfinite(meta["oracle"]["whole_span"]["sharpe"])
    sel = write_planted_market(tmp_path / "s", "lead", 2.0, 0, **SHORT)
    assert json.loads(sel.meta_path.read_text())["set"] == "selection"
