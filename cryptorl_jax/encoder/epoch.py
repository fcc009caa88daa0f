"""The compiled pieces of pre-training: the optimiser, one scanned train epoch, validation.

One jitted epoch = `lax.scan` over shuffled batches; windows are gathered on device from the
feature matrix by `dynamic_slice`. The feature matrix and the range starts are arguments, so
the epoch function is traced once for every epoch and every segment with the same shapes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cryptorl_jax.config import EncoderConfig
from cryptorl_jax.encoder.baselines import baseline_errors
from cryptorl_jax.encoder.mae import gather_windows
from cryptorl_jax.encoder.tracing import TRACE_COUNTS


def _decay_mask(params: Any) -> Any:
    """Weight decay on kernels only (not biases, LayerNorm, embeddings of positions/mask)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(getattr(k, "key", None) == "kernel" for k in path), params)


def make_optimizer(enc_cfg: EncoderConfig, n_batches: int) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay over epochs x batches, global-norm clip 1."""
    total = enc_cfg.epochs * n_batches
    warmup = min(enc_cfg.warmup_epochs * n_batches, total - 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, enc_cfg.learning_rate, warmup, total)
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, weight_decay=enc_cfg.weight_decay, mask=_decay_mask),
    )


def _epoch_ends(key: jax.Array, first_end: jax.Array, n_train: int, n_batches: int,
                batch_size: int) -> jax.Array:
    """Shuffled window ends for one epoch: [n_batches, batch_size] in first_end + [0, n_train).

    Concatenated permutations: every window once before any repeats.
    """
    n_draw = n_batches * batch_size
    n_perms = -(-n_draw // n_train)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n_train))(
        jax.random.split(key, n_perms))  # [n_perms, n_train]
    return first_end + perms.reshape(-1)[:n_draw].reshape(n_batches, batch_size)


def _loss_fn(params: nnx.State, graphdef: nnx.GraphDef, windows: jax.Array,
             key: jax.Array) -> tuple[jax.Array, dict]:
    return nnx.merge(graphdef, params).loss(windows, key)


@functools.lru_cache(maxsize=8)
def _optimizer_init(enc_cfg: EncoderConfig, n_batches: int) -> Callable[[nnx.State], Any]:
    """The optimiser's jitted init, one per (config, batches per epoch): every segment of a run
    reuses it instead of compiling a new one (with `_train_epoch`, `_evaluate` and
    `embed._embed_chunk`, the MAE stage compiles once per run)."""

    def init(params: nnx.State) -> Any:
        TRACE_COUNTS["optimizer_init"] += 1
        return make_optimizer(enc_cfg, n_batches).init(params)

    return jax.jit(init)


@partial(jax.jit, static_argnames=("graphdef", "enc_cfg", "window", "n_train", "n_batches"))
def _train_epoch(graphdef: nnx.GraphDef, params: nnx.State, opt_state: Any,
                 features: jax.Array, first_end: jax.Array, key: jax.Array, *,
                 enc_cfg: EncoderConfig, window: int, n_train: int,
                 n_batches: int) -> tuple[nnx.State, Any, jax.Array]:
    """One epoch of AdamW steps over shuffled train windows; returns the mean batch loss."""
    TRACE_COUNTS["train_epoch"] += 1
    tx = make_optimizer(enc_cfg, n_batches)
    key_perm, key_steps = jax.random.split(key)
    ends = _epoch_ends(key_perm, first_end, n_train, n_batches, enc_cfg.batch_size)
    step_keys = jax.random.split(key_steps, n_batches)

    def step(carry, xs):
        params, opt_state = carry
        batch_ends, step_key = xs
        windows = gather_windows(features, batch_ends, window)  # [B, W, F]
        (loss, _), grads = jax.value_and_grad(_loss_fn, has_aux=True)(
            params, graphdef, windows, step_key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (ends, step_keys))
    return params, opt_state, losses.mean()


@partial(jax.jit, static_argnames=("graphdef", "window", "n_val", "batch_size"))
def _evaluate(graphdef: nnx.GraphDef, params: nnx.State, features: jax.Array,
              first_end: jax.Array, key: jax.Array, *, window: int, n_val: int,
              batch_size: int) -> dict[str, jax.Array]:
    """Masked MSE of the model and the two baselines on all validation windows, same masks.

    The masks depend only on `key` and the window's position in the range, so every epoch
    (and the final report) scores the same masked tokens.
    """
    TRACE_COUNTS["evaluate"] += 1
    model = nnx.merge(graphdef, params)
    patch_size = model.encoder.patch_size
    n_chunks = -(-n_val // batch_size)
    offsets = jnp.arange(n_chunks * batch_size).reshape(n_chunks, batch_size)
    weights = (offsets < n_val).astype(jnp.float32)
    ends = first_end + jnp.minimum(offsets, n_val - 1)

    def chunk(xs):
        chunk_ends, chunk_weights, index = xs
        windows = gather_windows(features, chunk_ends, window)
        ids_visible, ids_masked = model.sample_mask(jax.random.fold_in(key, index), batch_size)
        _, aux = model.masked_loss(windows, ids_visible, ids_masked)
        err_mean, err_last = baseline_errors(windows, ids_visible, ids_masked, patch_size)
        return jnp.stack([aux["per_window"], err_mean, err_last]) @ chunk_weights  # [3]

    sums = jax.lax.map(chunk, (ends, weights, jnp.arange(n_chunks))).sum(axis=0) / n_val
    return {"mae": sums[0], "window_mean": sums[1], "last_value": sums[2]}
