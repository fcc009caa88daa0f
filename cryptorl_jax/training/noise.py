"""Observation noise (`train.obs_noise`): Gaussian noise on the market part of the training
observations, in units of each column's sd over the rows training reads."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cryptorl_jax.env.trading import Observation
from cryptorl_jax.training.data import TrainData


def column_scale(data: TrainData, uses_embeddings: bool, window: int) -> jnp.ndarray:
    """Each column's sd of the observation's market part over the rows training reads: the
    decision rows [first_start, last_row] of the embeddings, or those rows' windows of the
    features ([first_start - window + 1, last_row]); [D] or [F]. No row after last_row enters
    (train.obs_noise's unit)."""
    x = data.embeddings if uses_embeddings else data.market.features
    sr = data.start_range
    lo = sr.first_start if uses_embeddings else sr.first_start - (window - 1)
    rows = jnp.arange(x.shape[0])
    mask = ((rows >= lo) & (rows <= sr.last_row))[:, None]
    n = jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
    mean = jnp.sum(jnp.where(mask, x, 0.0), axis=0) / n
    var = jnp.sum(jnp.where(mask, jnp.square(x - mean), 0.0), axis=0) / n
    return jnp.sqrt(var)


def add_obs_noise(obs: Observation, key: jax.Array, sd, scale: jnp.ndarray) -> Observation:
    """obs with N(0, (sd * scale)^2) noise on its market part (`window`: an embedding [.., D]
    or a feature window [.., W, F]; scale broadcasts over the last axis); the agent-state part
    stays exact. sd 0 returns the same values."""
    part = obs.window
    eps = jax.random.normal(key, part.shape, part.dtype)
    return obs.replace(window=part + (sd * scale).astype(part.dtype) * eps)
