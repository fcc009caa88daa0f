"""MAE module: shapes, masking, masked loss, baselines vs a numpy loop, encoder factory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cryptorl_jax.config import EncoderConfig
from cryptorl_jax.encoder import (
    MAE,
    FlattenWindow,
    MAEEncoder,
    baseline_errors,
    encode,
    gather_windows,
    make_encode_fn,
    make_encoder,
)

ENC = EncoderConfig(d_model=16, depth=1, n_heads=2, mlp_ratio=2, decoder_dim=8, decoder_depth=1,
                    mask_ratio=0.5)
W, F = 8, 3


def _windows(batch: int, seed: int = 0, window: int = W) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (batch, window, F))


def _baselines_numpy(windows, ids_visible, ids_masked, patch_size):
    """Plain loop reference of the two baselines (see encoder.baselines.baseline_errors)."""
    windows = np.asarray(windows, np.float64)
    batch, window, n_features = windows.shape
    n_tokens = window // patch_size
    out_mean, out_last = [], []
    for b in range(batch):
        tokens = windows[b].reshape(n_tokens, patch_size, n_features)
        vis = sorted(int(i) for i in ids_visible[b])
        mean = np.mean([tokens[j][p] for j in vis for p in range(patch_size)], axis=0)
        err_mean, err_last = [], []
        for n in (int(i) for i in ids_masked[b]):
            before = [j for j in vis if j < n]
            after = [j for j in vis if j > n]
            pred_last = tokens[before[-1]][-1] if before else tokens[after[0]][0]
            for p in range(patch_size):
                err_mean.append((tokens[n][p] - mean) ** 2)
                err_last.append((tokens[n][p] - pred_last) ** 2)
        out_mean.append(np.mean(err_mean))
        out_last.append(np.mean(err_last))
    return np.array(out_mean), np.array(out_last)


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("patch_size", [1, 2])
def test_encoder_shapes_and_params_only(pooling, patch_size):
    cfg = EncoderConfig(**{**ENC.__dict__, "pooling": pooling, "patch_size": patch_size})
    enc = MAEEncoder(F, W, cfg, rngs=nnx.Rngs(0))
    assert enc.n_tokens == W // patch_size and enc.out_dim == cfg.d_model
    out = enc(_windows(4))
    assert out.shape == (4, cfg.d_model) and bool(jnp.isfinite(out).all())
    # extra leading dims and a single window
    x = _windows(4).reshape(2, 2, W, F)
    np.testing.assert_allclose(enc(x).reshape(4, -1), enc(x.reshape(4, W, F)), atol=1e-6)
    assert enc(x[0, 0]).shape == (cfg.d_model,)
    _, state = nnx.split(enc)
    kinds = {type(v) for v in jax.tree.leaves(state, is_leaf=lambda v: isinstance(v, nnx.Variable))}
    assert kinds == {nnx.Param}  # no RNG state or batch stats: deterministic, pure params


def test_pooling_last_is_last_token_and_mean_is_mean():
    enc = MAEEncoder(F, W, ENC, rngs=nnx.Rngs(1))
    x = _windows(4)
    tokens = enc.encode_tokens(enc.patchify(x))  # [B, N, D]
    np.testing.assert_allclose(enc(x), tokens.mean(axis=1), atol=1e-6)
    last = MAEEncoder(F, W, EncoderConfig(**{**ENC.__dict__, "pooling": "last"}), rngs=nnx.Rngs(1))
    np.testing.assert_allclose(last(x), tokens[:, -1], atol=1e-6)  # same weights (same seed)
    positions = jnp.broadcast_to(jnp.arange(W), (4, W))
    np.testing.assert_allclose(enc.encode_tokens(enc.patchify(x), positions), tokens, atol=1e-6)


def test_config_errors():
    with pytest.raises(ValueError, match="patch_size"):
        MAEEncoder(F, 9, EncoderConfig(patch_size=2), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="mask"):
        MAE(F, 2, EncoderConfig(d_model=16, n_heads=2, mask_ratio=0.2), rngs=nnx.Rngs(0))


def test_sample_mask_is_a_random_partition():
    mae = MAE(F, W, ENC, rngs=nnx.Rngs(0))
    assert mae.n_masked == round(0.5 * W) and mae.n_visible == W - mae.n_masked
    ids_visible, ids_masked = mae.sample_mask(jax.random.key(3), 64)
    assert ids_visible.shape == (64, mae.n_visible) and ids_masked.shape == (64, mae.n_masked)
    both = np.sort(np.concatenate([ids_visible, ids_masked], axis=1), axis=1)
    np.testing.assert_array_equal(both, np.broadcast_to(np.arange(W), (64, W)))
    assert (np.diff(np.asarray(ids_masked), axis=1) > 0).all()
    assert len({tuple(r) for r in np.asarray(ids_masked)}) > 30  # per-window masks differ
    again, _ = mae.sample_mask(jax.random.key(3), 64)
    np.testing.assert_array_equal(again, ids_visible)  # the key decides


def test_masked_loss_is_mse_on_masked_tokens_only():
    mae = MAE(F, W, EncoderConfig(**{**ENC.__dict__, "patch_size": 2}), rngs=nnx.Rngs(0))
    x = _windows(4)
    ids_visible, ids_masked = mae.sample_mask(jax.random.key(1), 4)
    loss, aux = mae.masked_loss(x, ids_visible, ids_masked)
    pred = np.asarray(mae.reconstruct(mae.encoder.patchify(x), ids_visible), np.float64)
    tokens = np.asarray(x, np.float64).reshape(4, W // 2, 2 * F)
    ref = [np.mean([(pred[b, n] - tokens[b, n]) ** 2 for n in np.asarray(ids_masked[b])])
           for b in range(4)]
    np.testing.assert_allclose(aux["per_window"], ref, rtol=1e-5)
    np.testing.assert_allclose(loss, np.mean(ref), rtol=1e-5)
    # loss(windows, key) draws the same mask from the same key
    np.testing.assert_allclose(mae.loss(x, jax.random.key(1))[0], loss, rtol=1e-6)


def test_encoder_sees_only_visible_tokens():
    mae = MAE(F, W, ENC, rngs=nnx.Rngs(0))
    x = _windows(4)
    ids_visible, ids_masked = mae.sample_mask(jax.random.key(2), 4)
    tokens = mae.encoder.patchify(x)
    pred = mae.reconstruct(tokens, ids_visible)
    garbage = jax.vmap(lambda t, ids: t.at[ids].set(1e3))(tokens, ids_masked)
    np.testing.assert_array_equal(mae.reconstruct(garbage, ids_visible), pred)
    changed = jax.vmap(lambda t, ids: t.at[ids[0]].add(1.0))(tokens, ids_visible)
    assert not np.allclose(mae.reconstruct(changed, ids_visible), pred)


@pytest.mark.parametrize("patch_size", [1, 2])
def test_baselines_match_numpy_loop(patch_size):
    window, batch = 12, 40
    n_tokens = window // patch_size
    n_visible = n_tokens // 2
    rng = np.random.default_rng(patch_size)
    order = np.stack([rng.permutation(n_tokens) for _ in range(batch)])
    ids_visible = np.sort(order[:, :n_visible], axis=1)
    ids_masked = np.sort(order[:, n_visible:], axis=1)
    assert (ids_masked[:, 0] == 0).any()  # the "first visible after" branch is hit
    x = _windows(batch, seed=5, window=window)
    err_mean, err_last = jax.jit(baseline_errors, static_argnums=3)(
        x, jnp.asarray(ids_visible), jnp.asarray(ids_masked), patch_size)
    ref_mean, ref_last = _baselines_numpy(x, ids_visible, ids_masked, patch_size)
    np.testing.assert_allclose(err_mean, ref_mean, rtol=1e-5)
    np.testing.assert_allclose(err_last, ref_last, rtol=1e-5)


def test_gather_windows_matches_slicing():
    feats = jax.random.normal(jax.random.key(0), (50, F))
    ends = jnp.array([W - 1, 20, 49])
    out = jax.jit(gather_windows, static_argnums=2)(feats, ends, W)
    for i, e in enumerate(np.asarray(ends)):
        np.testing.assert_array_equal(out[i], feats[e - W + 1:e + 1])


def test_functional_encode_matches_module_under_jit():
    enc = MAEEncoder(F, W, ENC, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(enc)
    x = _windows(4)
    expected = enc(x)
    np.testing.assert_allclose(jax.jit(encode, static_argnums=0)(graphdef, state, x), expected,
                               atol=1e-6)
    encode_fn = jax.jit(make_encode_fn(graphdef))
    np.testing.assert_allclose(encode_fn(state, x), expected, atol=1e-6)


def test_make_encoder_modes():
    flat = make_encoder("none", F, W, ENC, nnx.Rngs(0))
    assert isinstance(flat, FlattenWindow) and flat.out_dim == W * F
    np.testing.assert_array_equal(flat(_windows(4)), _windows(4).reshape(4, W * F))

    r1 = make_encoder("random", F, W, ENC, nnx.Rngs(0))
    r2 = make_encoder("random", F, W, ENC, nnx.Rngs(0))
    r3 = make_encoder("random", F, W, ENC, nnx.Rngs(1))
    x = _windows(4)
    np.testing.assert_array_equal(r1(x), r2(x))  # fixed seed -> same untrained encoder
    assert not np.allclose(r1(x), r3(x))

    with pytest.raises(ValueError, match="needs a pretrained encoder"):
        make_encoder("pretrained-frozen", F, W, ENC, nnx.Rngs(0))
    with pytest.raises(ValueError, match="encoder.mode"):
        make_encoder("frozen", F, W, ENC, nnx.Rngs(0))
    with pytest.raises(ValueError, match="n_features, window"):
        make_encoder("pretrained-frozen", F + 1, W, ENC, nnx.Rngs(0), pretrained=r1)

    for mode in ("pretrained-frozen", "pretrained-finetune"):
        for given in (r1, nnx.split(r1)):
            enc = make_encoder(mode, F, W, ENC, nnx.Rngs(5), pretrained=given)
            assert isinstance(enc, MAEEncoder)
            np.testing.assert_array_equal(enc(x), r1(x))
    # the copy is independent: changing it leaves the source untouched
    copy = make_encoder("pretrained-finetune", F, W, ENC, nnx.Rngs(0), pretrained=r1)
    before = r1(x)
    copy.embed.kernel.value = copy.embed.kernel.value * 2.0 + 0.1
    np.testing.assert_array_equal(r1(x), before)
    assert not np.allclose(copy(x), before)
