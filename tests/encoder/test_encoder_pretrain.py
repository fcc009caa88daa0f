"""MAE pre-training: window ranges, quality vs baselines, causality, compile-once, save/load,
precomputed embeddings and frozen-mode actions."""

from __future__ import annotations

import dataclasses
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

import cryptorl_jax.encoder.pretrain as pt
from cryptorl_jax.config import Config, EncoderConfig, EnvConfig
from cryptorl_jax.encoder import (
    MAEEncoder,
    gather_windows,
    load_encoder,
    make_encoder,
    precompute_embeddings,
    save_encoder,
    window_ranges,
)
from cryptorl_jax.encoder.epoch import _decay_mask, _epoch_ends
from cryptorl_jax.encoder.tracing import TRACE_COUNTS

W = 16
ENC = EncoderConfig(d_model=32, depth=1, n_heads=2, mlp_ratio=2, decoder_dim=16,
                    decoder_depth=1, mask_ratio=0.5, epochs=25, batch_size=64,
                    batches_per_epoch=30, learning_rate=3e-3, warmup_epochs=1, patience=5)
CFG = Config(encoder=ENC, env=EnvConfig(window=W))
T, F = 3400, 4
TRAIN_START, TRAIN_END = 200, 3000


def synthetic_features(n_rows: int, n_features: int, seed: int = 0) -> np.ndarray:
    """Per feature: a sinusoid (period 12-48 h) + AR(1) (phi 0.9) + a slow random-walk level
    + white noise, standardised. Neither baseline is trivial: the level makes the window mean
    informative, the AR/seasonal persistence makes the last value informative."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows)[:, None]
    seasonal = np.sin(2 * np.pi * t / rng.uniform(12, 48, n_features)
                      + rng.uniform(0, 2 * np.pi, n_features))
    shocks = rng.normal(0, 0.3, (n_rows, n_features))
    ar = np.zeros((n_rows, n_features))
    for i in range(1, n_rows):
        ar[i] = 0.9 * ar[i - 1] + shocks[i]
    level = np.cumsum(rng.normal(0, 0.02, (n_rows, n_features)), axis=0)
    x = seasonal + ar + level + rng.normal(0, 0.2, (n_rows, n_features))
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Window ranges
# --------------------------------------------------------------------------------------------


def test_window_ranges_by_hand():
    r = window_ranges(100, 1100, 16, 0.1)
    # val rows [1000, 1100): windows end in [1015, 1099]; train windows end in [115, 983]
    assert (r.train_first_end, r.train_last_end, r.val_first_end, r.val_last_end) == (
        115, 983, 1015, 1099)
    assert r.first_row == 100 and r.last_row == 1099
    assert r.n_train == 869 and r.n_val == 85
    # W rows (984..999) are read by neither train nor validation windows
    assert (r.val_first_end - W + 1) - r.train_last_end - 1 == W
    lb = window_ranges(100, 1100, 16, 0.1, lookback_ok=True)
    assert lb.train_first_end == 100 and lb.first_row == 85
    assert window_ranges(3, 1003, 16, 0.1, lookback_ok=True).train_first_end == 15


def test_window_ranges_errors_name_the_numbers():
    with pytest.raises(ValueError, match=r"validation range \[95, 100\).*W = 16"):
        window_ranges(50, 100, 16, 0.1)
    with pytest.raises(ValueError, match=r"train rows \[0, 50\) \(50 rows\).*W = 16"):
        window_ranges(0, 50, 16, 0.4)
    with pytest.raises(ValueError, match="train_start"):
        window_ranges(10, 10, 16, 0.1)


def test_epoch_ends_are_shuffled_permutations_in_range():
    ends = np.asarray(_epoch_ends(jax.random.key(0), jnp.int32(40), 50, 3, 32))
    assert ends.shape == (3, 32)
    flat = ends.reshape(-1)
    assert flat.min() >= 40 and flat.max() <= 89
    assert sorted(flat[:50]) == list(range(40, 90))  # every window once before any repeats
    assert not (np.diff(flat[:50]) == 1).all()


def test_non_finite_rows_in_range_are_rejected_with_the_row():
    x = synthetic_features(600, 3)
    x[250, 1] = np.nan
    with pytest.raises(ValueError, match=r"features row 250 \(column 1\)"):
        pt.pretrain(x, 0, 600, CFG, jax.random.key(0))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"features row 250 \(column 'b'\)"):
        pt.pretrain(frame, 0, 600, CFG, jax.random.key(0))
    with pytest.raises(ValueError, match="too few rows"):
        pt.pretrain(x, 0, 40, CFG, jax.random.key(0))
    with pytest.raises(ValueError, match="beyond the feature matrix"):
        pt.pretrain(x, 0, 700, CFG, jax.random.key(0))


# --------------------------------------------------------------------------------------------
# One pre-training, reused: clean data, garbage outside the segment, and a shifted segment
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    clean = synthetic_features(T, F)
    garbage = clean.copy()
    garbage[TRAIN_END:] = np.nan  # rows at/after train_end: NaN and huge values
    garbage[TRAIN_END + 5::7] = 1e6
    garbage[:TRAIN_START] = -1e6  # before train_start (lookback not allowed)
    shift = 100  # the same segment, 100 rows later in a matrix of the same shape
    shifted = np.concatenate([np.full((shift, F), np.nan, np.float32), clean[:-shift]])
    logged: list[tuple[int, dict]] = []
    before = dict(TRACE_COUNTS)
    workdir = tmp_path_factory.mktemp("segment_0")
    key = jax.random.key(42)
    res_clean = pt.pretrain(clean, TRAIN_START, TRAIN_END, CFG, key, workdir=workdir,
                            log_fn=lambda s, d: logged.append((s, d)), progress=True)
    res_garbage = pt.pretrain(garbage, TRAIN_START, TRAIN_END, CFG, key)
    res_shifted = pt.pretrain(shifted, TRAIN_START + shift, TRAIN_END + shift, CFG, key)
    traces = {k: TRACE_COUNTS[k] - before.get(k, 0)
              for k in ("train_epoch", "evaluate", "optimizer_init")}
    return dict(clean=clean, res=res_clean, garbage=res_garbage, shifted=res_shifted,
                logged=logged, traces=traces, workdir=workdir)


def test_validation_masked_mse_beats_both_baselines(runs):
    rep = runs["res"].report
    # the baselines are informative (well below the unit variance of the features) ...
    assert rep.window_mean_mse < 0.9 and rep.last_value_mse < 0.6
    # ... and the MAE beats both clearly
    assert rep.val_mse < 0.8 * min(rep.window_mean_mse, rep.last_value_mse), rep
    assert rep.beats_baselines
    assert rep.n_val_windows == runs["res"].ranges.n_val == 280 - W + 1
    assert rep.n_masked_tokens == W // 2


def test_history_best_epoch_and_early_stopping(runs):
    res = runs["res"]
    vals = [h["val_loss"] for h in res.history]
    assert 1 <= len(vals) <= ENC.epochs
    assert res.best_epoch == int(np.argmin(vals))
    assert res.report.val_mse == pytest.approx(min(vals), rel=1e-6)
    assert vals[-1] < vals[0] and res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    if len(vals) < ENC.epochs:  # stopped early: exactly `patience` epochs without improvement
        assert len(vals) - 1 - res.best_epoch == ENC.patience
    else:
        assert len(vals) - 1 - res.best_epoch < ENC.patience
    assert res.seconds_per_epoch > 0
    per_epoch = [s for s, d in runs["logged"] if "encoder/val_loss" in d]
    assert per_epoch == list(range(len(vals)))
    assert runs["logged"][-1][1]["encoder/best_val_mse"] == pytest.approx(res.report.val_mse)


def test_weight_decay_applies_to_kernels_only(runs):
    mask = _decay_mask(runs["res"].mae_state)
    flags = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert flags and all(v == ("['kernel']" in k) for k, v in flags.items())
    assert any(flags.values())


def test_windows_never_read_rows_outside_the_segment(runs):
    res = runs["res"]
    assert res.ranges.first_row == TRAIN_START and res.ranges.last_row == TRAIN_END - 1
    # NaN/garbage in every row < train_start and >= train_end changes nothing, bit for bit
    same = jax.tree.map(np.array_equal, res.mae_state, runs["garbage"].mae_state)
    assert all(jax.tree.leaves(same))
    assert res.history == [dict(h, seconds=r["seconds"]) for h, r in
                           zip(runs["garbage"].history, res.history)]


def test_same_segment_elsewhere_gives_same_numbers_and_compiles_once(runs):
    res, shifted = runs["res"], runs["shifted"]
    same = jax.tree.map(np.array_equal, res.encoder_state, shifted.encoder_state)
    assert all(jax.tree.leaves(same))
    assert shifted.report == res.report
    # three pre-trainings (all their epochs) shared one trace of the epoch and eval functions
    # three segments, one compilation of each jitted piece (the optimiser init included)
    assert runs["traces"] == {"train_epoch": 1, "evaluate": 1, "optimizer_init": 1}


def test_save_load_roundtrip(runs, tmp_path):
    res = runs["res"]
    x = jnp.asarray(runs["clean"][TRAIN_START:TRAIN_START + 5 * W].reshape(5, W, F))
    expected = res.encoder(x)
    for path in (runs["workdir"] / "encoder", save_encoder(tmp_path / "enc", res)):
        graphdef, state = load_encoder(path, F, W, ENC)
        np.testing.assert_array_equal(nnx.merge(graphdef, state)(x), expected)
        meta = json.loads((path / "meta.json").read_text())
        assert meta["report"]["val_mse"] == res.report.val_mse
        assert len(meta["history"]) == len(res.history)
    # a saved encoder does not load into another architecture or feature count
    with pytest.raises(ValueError, match="n_features"):
        load_encoder(tmp_path / "enc", F + 1, W, ENC)
    with pytest.raises(ValueError, match="encoder.d_model"):
        load_encoder(tmp_path / "enc", F, W, dataclasses.replace(ENC, d_model=16, n_heads=2))
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "nothing", F, W, ENC)
    # and the loaded pair feeds make_encoder
    enc = make_encoder("pretrained-frozen", F, W, ENC, nnx.Rngs(0),
                       pretrained=load_encoder(tmp_path / "enc", F, W, ENC))
    np.testing.assert_array_equal(enc(x), expected)


# --------------------------------------------------------------------------------------------
# Precomputed embeddings
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(runs):
    return runs["res"].encoder


def test_precomputed_embeddings_match_the_encoder(runs, encoder):
    x = runs["clean"][:700].copy()
    x[300, 2] = np.nan
    emb = precompute_embeddings(encoder, x, W, batch=256)
    assert emb.shape == (700, ENC.d_model) and emb.dtype == np.float32
    assert np.isnan(emb[: W - 1]).all()  # no full window yet
    assert np.isnan(emb[300:300 + W]).all()  # windows containing the NaN row
    assert np.isfinite(emb[W - 1:300]).all() and np.isfinite(emb[300 + W:]).all()
    rows = np.array([W - 1, 100, 299, 300 + W, 699])
    direct = encoder(jnp.stack([x[t - W + 1:t + 1] for t in rows]))
    np.testing.assert_allclose(emb[rows], direct, atol=1e-5)
    # the (graphdef, state) form gives the same numbers
    np.testing.assert_array_equal(precompute_embeddings(nnx.split(encoder), x, W, batch=256), emb)


def test_embedding_at_t_ignores_rows_after_t(runs, encoder):
    x = runs["clean"]
    t_cut = 1000
    base = precompute_embeddings(encoder, x[:t_cut], W, batch=256)  # rows up to t_cut - 1
    appended = precompute_embeddings(encoder, x[:1800], W, batch=256)
    altered = x[:1800].copy()
    altered[t_cut:] = np.random.default_rng(1).normal(0, 5, altered[t_cut:].shape)
    altered[t_cut + 3] = np.nan
    changed = precompute_embeddings(encoder, altered, W, batch=256)
    np.testing.assert_allclose(appended[:t_cut], base, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(changed[:t_cut], base, atol=1e-6, equal_nan=True)
    assert not np.allclose(changed[t_cut:t_cut + 2], appended[t_cut:t_cut + 2])


class TinyActor(nnx.Module):
    """An actor-like head: [embedding, previous action] -> deterministic action in [-1, 1]."""

    def __init__(self, in_dim: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(in_dim + 1, 32, rngs=rngs)
        self.out = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, embedding: jax.Array, prev_action: jax.Array) -> jax.Array:
        h = nnx.relu(self.hidden(jnp.concatenate([embedding, prev_action[:, None]], axis=-1)))
        return jnp.tanh(self.out(h))[:, 0]


def test_frozen_mode_actions_from_precomputed_equal_inline(runs, encoder):
    x = runs["clean"]
    frozen = make_encoder("pretrained-frozen", F, W, ENC, nnx.Rngs(0), pretrained=runs["res"])
    actor = TinyActor(frozen.out_dim, rngs=nnx.Rngs(3))
    table = jnp.asarray(precompute_embeddings(frozen, x, W))  # once per segment, [T, D]
    t_idx = jax.random.randint(jax.random.key(0), (256,), W - 1, T)
    prev = jax.random.uniform(jax.random.key(1), (256,), minval=-1, maxval=1)
    enc_def, enc_state = nnx.split(frozen)
    act_def, act_state = nnx.split(actor)

    @jax.jit
    def from_table(act_state, table, t_idx, prev):
        return nnx.merge(act_def, act_state)(table[t_idx], prev)

    @jax.jit
    def inline(act_state, enc_state, features, t_idx, prev):
        windows = gather_windows(features, t_idx, W)  # [B, W, F]
        emb = nnx.merge(enc_def, enc_state)(windows)
        return nnx.merge(act_def, act_state)(emb, prev)

    a_table = from_table(act_state, table, t_idx, prev)
    a_inline = inline(act_state, enc_state, jnp.asarray(x), t_idx, prev)
    assert float(jnp.abs(a_table).max()) > 0.05  # actions are not all ~0
    np.testing.assert_allclose(a_table, a_inline, atol=1e-5)
    assert isinstance(frozen, MAEEncoder)


@pytest.mark.slow
def test_early_stopping_stops_after_patience_epochs():
    cfg = dataclasses.replace(CFG, encoder=dataclasses.replace(ENC, epochs=60, patience=2))
    res = pt.pretrain(np.random.default_rng(0).normal(size=(1200, 3)).astype(np.float32), 0,
                      1200, cfg, jax.random.key(0))  # white noise: nothing to learn
    assert len(res.history) < 60
    assert len(res.history) - 1 - res.best_epoch == 2


def test_segments_pretrained_as_one_vmapped_step_match_one_at_a_time(runs, caplog):
    """pretrain_many (issue 25: the MAE stage of a batch of segments) gives each segment what
    `pretrain` gives it alone: the same best epoch, history length and report, and the same
    parameters up to the float rounding of a vmapped step."""
    clean = runs["clean"]
    garbage = clean.copy()
    garbage[TRAIN_END:] = np.nan
    garbage[TRAIN_END + 5::7] = 1e6
    garbage[:TRAIN_START] = -1e6
    shift = 100
    shifted = np.concatenate([np.full((shift, F), np.nan, np.float32), clean[:-shift]])
    key = jax.random.key(42)
    before = dict(TRACE_COUNTS)
    batch = pt.pretrain_many([clean, garbage, shifted],
                             [(TRAIN_START, TRAIN_END), (TRAIN_START, TRAIN_END),
                              (TRAIN_START + shift, TRAIN_END + shift)], CFG, [key] * 3)
    for got, want in zip(batch, (runs["res"], runs["garbage"], runs["shifted"]), strict=True):
        assert got.best_epoch == want.best_epoch
        assert len(got.history) == len(want.history)
        assert got.report.val_mse == pytest.approx(want.report.val_mse, rel=1e-3)
        # 750 AdamW steps amplify the vmapped step's rounding on near-zero weights (up to
        # ~1e-3 absolute there); each tensor as a whole agrees to within 2 % (measured: <1 %)
        for x, y in zip(jax.tree.leaves(got.encoder_state), jax.tree.leaves(want.encoder_state),
                        strict=True):
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
            assert np.linalg.norm(x - y) <= 2e-2 * max(np.linalg.norm(y), 1e-6)
    assert TRACE_COUNTS["train_epoch"] == before.get("train_epoch", 0)  # no retrace
    # a second batch of the same shapes compiles nothing (the MAE stage compiles once per run),
    # and another key per segment gives other encoders: the batch does not share one
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING, logger="jax"):
            other = pt.pretrain_many([clean] * 3, [(TRAIN_START, TRAIN_END)] * 3, CFG,
                                     [jax.random.key(i) for i in (1, 2, 3)])
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()
                and "jit(" in r.getMessage()]
    assert not [m for m in compiled if "_train_epoch" in m or "_evaluate" in m], compiled
    a, b = (np.asarray(jax.tree.leaves(r.encoder_state)[0]) for r in other[:2])
    assert not np.allclose(a, b)
