"""Precomputed embeddings: the encoder's output for the window ending at every row."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cryptorl_jax.encoder.mae import gather_windows
from cryptorl_jax.encoder.tracing import TRACE_COUNTS


@partial(jax.jit, static_argnames=("graphdef", "window"))
def _embed_chunk(graphdef: nnx.GraphDef, state: nnx.State, features: jax.Array,
                 ends: jax.Array, *, window: int) -> jax.Array:
    TRACE_COUNTS["embed_chunk"] += 1
    return nnx.merge(graphdef, state)(gather_windows(features, ends, window))


def precompute_embeddings(encoder: nnx.Module | tuple[nnx.GraphDef, nnx.State],
                          features: Any, window: int, batch: int = 1024) -> np.ndarray:
    """Embedding of the window ending at every row: [T, F] -> [T, D] float32.

    Row t embeds rows t-W+1..t. Rows t < W-1 and windows that contain a non-finite value
    get NaN (the caller never uses them). Runs under jit in chunks of `batch` windows.
    """
    graphdef, state = encoder if isinstance(encoder, tuple) else nnx.split(encoder)
    features = np.asarray(features, dtype=np.float32)
    n_rows = features.shape[0]
    finite = np.isfinite(features).all(axis=1)
    # valid[t]: rows t-W+1..t exist and are all finite (running count of bad rows).
    bad_before = np.concatenate([[0], np.cumsum(~finite)])
    ends = np.arange(n_rows)
    valid = (ends >= window - 1) & (
        bad_before[ends + 1] - bad_before[np.maximum(ends - window + 1, 0)] == 0)
    features_dev = jnp.asarray(np.where(finite[:, None], features, 0.0))
    out_dim = nnx.merge(graphdef, state).out_dim
    out = np.full((n_rows, out_dim), np.nan, np.float32)
    valid_ends = ends[valid]
    for lo in range(0, len(valid_ends), batch):
        chunk = valid_ends[lo:lo + batch]
        padded = np.pad(chunk, (0, batch - len(chunk)), mode="edge")
        emb = _embed_chunk(graphdef, state, features_dev, jnp.asarray(padded, jnp.int32),
                           window=window)
        out[chunk] = np.asarray(emb)[: len(chunk)]
    return out
