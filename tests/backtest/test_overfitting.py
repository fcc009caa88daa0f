"""pbo_cscv, the Probability of Backtest Overfitting by CSCV (Bailey, Borwein, López de Prado,
Zhu 2014): against a plain-Python reference, hand-worked cases, its behaviour on noise and on a
real edge, to_dict and validation."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import warnings

import numpy as np
import pytest

from cryptorl_jax.backtest.overfitting import HIST_EDGES, PBOResult, _combinations, pbo_cscv

# ----------------------------------------------------------------------------------------------
# an independent plain-Python CSCV (lists, loops, statistics), the reference for the vectorised one


def _ref_sharpe(xs: list[float]) -> float:
    """Per-period Sharpe mean / stdev(ddof=1); undefined (zero spread, one value) is -inf."""
    if len(xs) < 2 or min(xs) == max(xs):
        return -math.inf
    return statistics.fmean(xs) / statistics.stdev(xs)


def _ref_cscv(returns: np.ndarray, n_blocks: int, metric=None) -> dict:
    rows = returns.tolist()
    t, n = len(rows), len(rows[0])
    # contiguous blocks: the first t % n_blocks blocks have one row more (np.array_split)
    base, extra = divmod(t, n_blocks)
    blocks, start = [], 0
    for b in range(n_blocks):
        size = base + (1 if b < extra else 0)
        blocks.append(list(range(start, start + size)))
        start += size

    def perf(block_set):
        idx = sorted(i for b in block_set for i in blocks[b])
        if metric is not None:
            v = [float(x) for x in metric(np.array([rows[i] for i in idx]))]
            return [-math.inf if math.isnan(x) else x for x in v]
        return [_ref_sharpe([rows[i][j] for i in idx]) for j in range(n)]

    logits, is_best, oos_best = [], [], []
    for is_set in itertools.combinations(range(n_blocks), n_blocks // 2):
        oos_set = [b for b in range(n_blocks) if b not in is_set]
        r_is, r_oos = perf(is_set), perf(oos_set)
        best = 0
        for j in range(1, n):
            if r_is[j] > r_is[best]:
                best = j
        below = sum(1 for j in range(n) if r_oos[j] < r_oos[best])
        equal = sum(1 for j in range(n) if r_oos[j] == r_oos[best])
        rank = below + (equal + 1) / 2
        w = rank / (n + 1)
        logits.append(math.log(w / (1 - w)))
        is_best.append(r_is[best])
        oos_best.append(r_oos[best])
    mx, my = statistics.fmean(is_best), statistics.fmean(oos_best)
    sxy = sum((x - mx) * (y - my) for x, y in zip(is_best, oos_best))
    sxx = sum((x - mx) ** 2 for x in is_best)
    return {
        "logits": logits,
        "pbo": sum(1 for v in logits if v <= 0) / len(logits),
        "is_best": is_best,
        "oos_best": oos_best,
        "slope": sxy / sxx,
        "intercept": my - sxy / sxx * mx,
        "prob_oos_loss": sum(1 for v in oos_best if v < 0) / len(oos_best),
    }


def _assert_matches_reference(res: PBOResult, ref: dict) -> None:
    np.testing.assert_allclose(res.logits, ref["logits"], rtol=0, atol=1e-12)
    assert res.pbo == ref["pbo"]
    np.testing.assert_allclose(res.is_best, ref["is_best"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.oos_best, ref["oos_best"], rtol=1e-12, atol=1e-12)
    assert res.degradation_slope == pytest.approx(ref["slope"], rel=1e-10, abs=1e-12)
    assert res.degradation_intercept == pytest.approx(ref["intercept"], rel=1e-10, abs=1e-12)
    assert res.prob_oos_loss == ref["prob_oos_loss"]
    assert res.is_best_mean == pytest.approx(statistics.fmean(ref["is_best"]), abs=1e-12)
    assert res.oos_best_mean == pytest.approx(statistics.fmean(ref["oos_best"]), abs=1e-12)


def test_matches_plain_python_reference():
    rng = np.random.default_rng(7)
    r = rng.normal(0.0005, 0.01, size=(40, 5))  # 40 rows in 8 blocks of 5
    res = pbo_cscv(r, n_blocks=8)
    assert res.n_combinations == math.comb(8, 4) == 70
    assert (res.n_trials, res.n_blocks, res.n_periods) == (5, 8, 40)
    _assert_matches_reference(res, _ref_cscv(r, 8))


def test_matches_reference_with_unequal_blocks_and_a_flat_trial():
    """43 rows in 6 blocks (sizes 8, 7, 7, 7, 7, 7), a trial flat in blocks 0-2 (rows 0-21): its
    Sharpe on the set {0, 1, 2} is undefined (-inf), and 0 is its OOS there when IS = {3, 4, 5}."""
    rng = np.random.default_rng(11)
    r = rng.normal(0.0, 0.01, size=(43, 4))
    r[:22, 2] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero / invalid-value warnings
        res = pbo_cscv(r, n_blocks=6)
    assert np.isfinite(res.logits).all()
    assert [len(b) for b in np.array_split(np.arange(43), 6)] == [8, 7, 7, 7, 7, 7]
    ref = _ref_cscv(r, 6)
    assert res.best_index[0] != 2  # IS = {0, 1, 2}: the flat trial is never the pick
    np.testing.assert_allclose(res.logits, ref["logits"], rtol=0, atol=1e-12)
    assert res.pbo == ref["pbo"]


def test_custom_metric_path_matches_reference_and_default():
    rng = np.random.default_rng(3)
    r = rng.normal(0.0, 0.01, size=(24, 3))

    def mean_return(x):
        return x.mean(axis=0)

    res = pbo_cscv(r, n_blocks=4, metric=mean_return)
    assert res.metric_name == "custom:mean_return"
    assert math.isnan(res.is_best_mean_annualised)  # a custom metric is never annualised
    _assert_matches_reference(res, _ref_cscv(r, 4, metric=mean_return))

    def sharpe(x):
        return x.mean(axis=0) / x.std(axis=0, ddof=1)

    looped, vectorised = pbo_cscv(r, n_blocks=4, metric=sharpe), pbo_cscv(r, n_blocks=4)
    np.testing.assert_array_equal(looped.best_index, vectorised.best_index)
    np.testing.assert_allclose(looped.logits, vectorised.logits, rtol=0, atol=1e-12)
    np.testing.assert_allclose(looped.oos_best, vectorised.oos_best, rtol=1e-12)


def test_custom_metric_must_return_one_value_per_trial():
    r = np.random.default_rng(0).normal(size=(8, 3))
    with pytest.raises(ValueError, match="one per trial"):
        pbo_cscv(r, n_blocks=2, metric=lambda x: x.mean())


# ----------------------------------------------------------------------------------------------
# hand-worked cases: T = 4 rows, N = 2 trials, n_blocks = 2 -> blocks {rows 0,1} and {rows 2,3},
# two combinations (IS = block 0, OOS = block 1; and the reverse). With N = 2 the OOS rank of n*
# is 1 (worse), 2 (better) or 1.5 (tie): ω = 1/3, 2/3 or 1/2, λ = -ln 2, +ln 2 or 0.
# The Sharpe of two values a, b is ((a + b) / 2) / (|a - b| / sqrt 2).


def test_hand_worked_reversal_is_fully_overfit():
    # trial 0 wins block 0 and loses block 1; trial 1 the opposite: the IS pick always loses OOS
    r = np.array([[0.02, -0.02],
                  [0.04, -0.01],
                  [-0.01, 0.03],
                  [-0.03, 0.01]])
    res = pbo_cscv(r, n_blocks=2)
    assert res.n_combinations == 2
    np.testing.assert_array_equal(res.best_index, [0, 1])
    np.testing.assert_allclose(res.logits, [-math.log(2), -math.log(2)], rtol=0, atol=1e-15)
    assert res.pbo == 1.0
    s2 = math.sqrt(2)
    # IS = block 0: trial 0 on (0.02, 0.04): 0.03 / (0.02/√2) = 1.5√2; OOS (-0.01, -0.03): -√2.
    # IS = block 1: trial 1 on (0.03, 0.01): √2; OOS (-0.02, -0.01): -0.015 / (0.01/√2) = -1.5√2
    np.testing.assert_allclose(res.is_best, [1.5 * s2, s2], rtol=1e-12)
    np.testing.assert_allclose(res.oos_best, [-s2, -1.5 * s2], rtol=1e-12)
    # the line through (1.5√2, -√2) and (√2, -1.5√2): slope 1, intercept -2.5√2
    assert res.degradation_slope == pytest.approx(1.0, rel=1e-12)
    assert res.degradation_intercept == pytest.approx(-2.5 * s2, rel=1e-12)
    assert res.prob_oos_loss == 1.0
    assert res.is_best_mean == pytest.approx(1.25 * s2, rel=1e-12)
    assert res.oos_best_mean == pytest.approx(-1.25 * s2, rel=1e-12)
    assert res.is_best_mean_annualised == pytest.approx(1.25 * s2 * math.sqrt(8760), rel=1e-12)
    assert res.oos_best_mean_annualised == pytest.approx(-1.25 * s2 * math.sqrt(8760), rel=1e-12)


def test_hand_worked_consistent_winner_is_not_overfit():
    # trial 0 is better than trial 1 in both blocks: picked IS, better OOS, λ = +ln 2 twice.
    # Block 0: trial 0 (0.02, 0.04) 1.5√2 > trial 1 (0, 0.01) 0.5√2; block 1: trial 0
    # (0.01, -0.01) exactly 0 > trial 1 (-0.01, -0.02) -1.5√2. An OOS Sharpe of exactly 0 is not
    # a loss.
    r = np.array([[0.02, 0.00],
                  [0.04, 0.01],
                  [0.01, -0.01],
                  [-0.01, -0.02]])
    res = pbo_cscv(r, n_blocks=2)
    np.testing.assert_array_equal(res.best_index, [0, 0])
    np.testing.assert_allclose(res.logits, [math.log(2), math.log(2)], rtol=0, atol=1e-15)
    assert res.pbo == 0.0
    np.testing.assert_allclose(res.is_best, [1.5 * math.sqrt(2), 0.0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(res.oos_best, [0.0, 1.5 * math.sqrt(2)], rtol=1e-12, atol=1e-15)
    assert res.prob_oos_loss == 0.0


def test_hand_worked_tie_counts_as_overfit():
    # two identical trials: the IS tie picks column 0, the OOS tie ranks it 1.5 of 2, ω = 1/2,
    # λ = 0, which this implementation counts as overfit (PBO = P(λ <= 0))
    col = np.array([0.02, 0.04, -0.01, 0.03])
    res = pbo_cscv(np.column_stack([col, col]), n_blocks=2)
    np.testing.assert_array_equal(res.best_index, [0, 0])
    np.testing.assert_array_equal(res.logits, [0.0, 0.0])
    assert res.pbo == 1.0


# ----------------------------------------------------------------------------------------------
# statistical behaviour


def test_pure_noise_gives_pbo_near_one_half():
    res = pbo_cscv(np.random.default_rng(0).normal(0.0, 0.01, size=(2000, 20)))
    assert res.n_combinations == 12870
    assert 0.3 < res.pbo < 0.7
    pbos = [pbo_cscv(np.random.default_rng(seed).normal(0.0, 0.01, size=(2000, 20))).pbo
            for seed in range(10)]
    assert 0.4 < float(np.mean(pbos)) < 0.6


def test_a_real_edge_gives_pbo_near_zero():
    rng = np.random.default_rng(1)
    r = rng.normal(0.0, 0.01, size=(2000, 20))
    r[:, 13] += 0.002  # per-period Sharpe about 0.2 against noise
    res = pbo_cscv(r)
    assert res.pbo < 0.05
    assert (res.best_index == 13).mean() > 0.95
    assert res.oos_best_mean > 0.1 and res.prob_oos_loss < 0.05


def test_zero_variance_trials_rank_worst_without_nan():
    rng = np.random.default_rng(5)
    r = rng.normal(0.0, 0.01, size=(64, 4))
    r[:, 0] = 0.001  # constant positive return: zero std, Sharpe undefined -> ranked worst
    r[:, 1] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = pbo_cscv(r, n_blocks=8)
    assert np.isfinite(res.logits).all()
    assert set(np.unique(res.best_index)) <= {2, 3}
    assert res.n_degradation_points == res.n_combinations
    json.dumps(res.to_dict(), allow_nan=False)


def test_all_trials_flat_is_handled():
    res = pbo_cscv(np.zeros((16, 3)), n_blocks=4)
    # every value ties at -inf: n* = 0, OOS rank (N + 1) / 2, λ = 0 everywhere
    np.testing.assert_array_equal(res.logits, np.zeros(6))
    assert res.pbo == 1.0
    assert res.n_degradation_points == 0 and res.prob_oos_loss == 0.0
    assert math.isnan(res.degradation_slope) and math.isnan(res.is_best_mean)
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["degradation_slope"] is None and d["is_best_mean"] is None


def test_every_combination_and_its_complement_appear():
    combos, complement = _combinations(16)
    assert len(combos) == 12870
    np.testing.assert_array_equal(complement[complement], np.arange(len(combos)))
    for c in (0, 1, 5000, 12869):
        assert set(combos[c]) | set(combos[complement[c]]) == set(range(16))
        assert not set(combos[c]) & set(combos[complement[c]])


# ----------------------------------------------------------------------------------------------
# to_dict


def test_to_dict_is_json_ready_with_summary():
    res = pbo_cscv(np.random.default_rng(2).normal(0.0, 0.01, size=(400, 6)), n_blocks=8)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["pbo"] == res.pbo and d["n_combinations"] == 70 and d["per_period"] is True
    s = d["logits_summary"]
    assert s["mean"] == pytest.approx(float(np.mean(res.logits)))
    assert s["median"] == pytest.approx(float(np.median(res.logits)))
    assert list(s["quantiles"]) == ["q05", "q25", "q50", "q75", "q95"]
    assert s["quantiles"]["q50"] == pytest.approx(s["median"])
    assert s["histogram"]["edges"] == pytest.approx(list(np.arange(-4.0, 4.01, 0.5)))
    assert sum(s["histogram"]["counts"]) == 70
    assert d["logits"] == pytest.approx(list(res.logits))
    assert d["is_best_mean_annualised"] == pytest.approx(res.is_best_mean * math.sqrt(8760))


def _result_with_logits(logits) -> PBOResult:
    logits = np.asarray(logits, dtype=np.float64)
    return PBOResult(pbo=float(np.mean(logits <= 0)), logits=logits,
                     n_combinations=len(logits), n_trials=2, n_blocks=2, n_periods=2,
                     degradation_slope=0.0, degradation_intercept=0.0, prob_oos_loss=0.0,
                     is_best_mean=0.0, oos_best_mean=0.0)


def test_histogram_puts_tails_in_end_bins():
    counts = _result_with_logits([-10.0, -4.0, -0.1, 0.0, 0.2, 3.9, 4.0, 12.0]).to_dict()[
        "logits_summary"]["histogram"]["counts"]
    assert len(counts) == len(HIST_EDGES) - 1 == 16
    expected = [0] * 16
    expected[0] = 2      # -10 and -4
    expected[7] = 1      # -0.1 in [-0.5, 0)
    expected[8] = 2      # 0 and 0.2 in [0, 0.5)
    expected[15] = 3     # 3.9, 4 and 12 in [3.5, 4]
    assert counts == expected


def test_raw_logits_only_up_to_twenty_thousand():
    assert "logits" in _result_with_logits(np.zeros(20000)).to_dict()
    assert "logits" not in _result_with_logits(np.zeros(20001)).to_dict()


# ----------------------------------------------------------------------------------------------
# validation


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="2-D"):
        pbo_cscv(np.zeros(10))
    with pytest.raises(ValueError, match="2-D"):
        pbo_cscv(np.zeros((4, 4, 2)), n_blocks=2)
    with pytest.raises(ValueError, match="at least 2 trials"):
        pbo_cscv(np.zeros((10, 1)), n_blocks=2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite_naming_row_and_column(bad):
    r = np.zeros((10, 4))
    r[5, 2] = bad
    r[7, 1] = np.nan  # a later one: the message names the first, in row-major order
    with pytest.raises(ValueError, match=r"row 5, column 2"):
        pbo_cscv(r, n_blocks=2)


@pytest.mark.parametrize("n_blocks", [3, 7, 0, -2, 1])
def test_rejects_odd_or_too_small_n_blocks(n_blocks):
    with pytest.raises(ValueError, match="even and >= 2"):
        pbo_cscv(np.zeros((20, 3)), n_blocks=n_blocks)


def test_rejects_non_integer_n_blocks():
    with pytest.raises(ValueError, match="integer"):
        pbo_cscv(np.zeros((20, 3)), n_blocks=4.5)


def test_rejects_fewer_rows_than_blocks():
    with pytest.raises(ValueError, match="7 periods .* fewer than n_blocks = 8"):
        pbo_cscv(np.zeros((7, 3)), n_blocks=8)
    pbo_cscv(np.random.default_rng(0).normal(size=(8, 3)), n_blocks=8)  # T == n_blocks is fine


def test_rejects_too_many_combinations():
    with pytest.raises(ValueError, match="fewer blocks"):
        pbo_cscv(np.zeros((30, 2)), n_blocks=26)


# --------------------------------------------------------------------------------------------
# selection_overfitting: {trial: returns} and N, no Optuna (issue 26)
# --------------------------------------------------------------------------------------------


def test_selection_overfitting_deflates_the_best_against_n_tried_by_hand():
    """The DSR against the hand formulas of tests/backtest/test_dsr.py, with N = the trials
    tried (pruned ones included), and the PBO of the finished trials' matrix in trial order."""
    from cryptorl_jax.backtest.overfitting import selection_overfitting
    from tests.backtest.test_dsr import _hand_expected_max, _hand_psr

    rng = np.random.default_rng(3)
    series = {k: rng.normal(0.001 * k, 0.01, 160) for k in (0, 2, 5)}
    stats = selection_overfitting(series, 5, 7, n_pruned=3, n_failed=1, pbo_blocks=8)
    sharpes = [float(np.mean(v) / np.std(v, ddof=1)) for v in series.values()]
    emax = _hand_expected_max(7, statistics.variance(sharpes))
    assert stats["expected_max_sharpe"] == pytest.approx(emax, rel=1e-9)
    assert stats["best_trial_dsr"] == pytest.approx(_hand_psr(list(series[5]), emax), rel=1e-9)
    assert stats["best_trial_psr"] == pytest.approx(_hand_psr(list(series[5]), 0.0), rel=1e-9)
    assert (stats["n_trials"], stats["n_completed"], stats["n_pruned"], stats["n_failed"]) == (
        7, 3, 3, 1)
    want = pbo_cscv(np.stack([series[0], series[2], series[5]], axis=1), n_blocks=8)
    assert stats["pbo"] == pytest.approx(want.pbo) and stats["pbo_trials"] == [0, 2, 5]
    assert any("3 pruned trial(s) count in N" in n for n in stats["notes"])
    json.dumps(stats)  # overfitting.json is plain JSON
    # more trials tried with the same finished ones: a harder benchmark, a lower DSR
    assert selection_overfitting(series, 5, 50, pbo_blocks=8)["best_trial_dsr"] < stats[
        "best_trial_dsr"]


def test_selection_overfitting_says_what_is_undefined():
    from cryptorl_jax.backtest.overfitting import selection_overfitting

    rng = np.random.default_rng(0)
    one = {0: rng.normal(0, 0.01, 200)}
    stats = selection_overfitting(one, 0, 3, n_pruned=1, n_failed=1)
    assert stats["best_trial_dsr"] is None and stats["best_trial_psr"] is not None
    assert stats["pbo"] is None
    assert any("DSR is undefined" in n for n in stats["notes"])
    assert any("CSCV needs >= 2" in n for n in stats["notes"])
    none = selection_overfitting({}, None, 2)
    assert none["best_trial"] is None and "no trial completed" in none["notes"]
    ragged = selection_overfitting({0: one[0], 1: rng.normal(0, 0.01, 150)}, 0, 2)
    assert ragged["pbo"] is None and any("differ in length" in n for n in ragged["notes"])
    short = selection_overfitting({0: one[0][:10], 1: one[0][10:20]}, 0, 2, pbo_blocks=16)
    assert short["pbo"] is None and any("fewer validation hours" in n for n in short["notes"])
    missing = selection_overfitting(one, 4, 2)
    assert missing["best_trial"] is None and any("no validation returns" in n
                                                 for n in missing["notes"])
