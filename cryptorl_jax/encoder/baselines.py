"""The two baselines of the MAE's quality report: window mean and last visible value."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def baseline_errors(windows: jax.Array, ids_visible: jax.Array, ids_masked: jax.Array,
                    patch_size: int) -> tuple[jax.Array, jax.Array]:
    """Per-window MSE on the masked tokens of two baselines: (window_mean [B], last_value [B]).

    window_mean: every masked hour predicted by the mean (per feature) of the window's visible
    hours. last_value: every masked hour predicted by the most recent visible hour before it
    (the last hour of the nearest visible token before), or, when no token before it is
    visible, by the first visible hour after it. Errors are averaged over the same masked
    tokens, hours and features as the MAE loss, so the three numbers are comparable.
    """
    batch, window, n_features = windows.shape
    n_tokens = window // patch_size
    tokens = windows.reshape(batch, n_tokens, patch_size, n_features)
    visible = jnp.zeros((batch, n_tokens), bool)
    visible = jax.vmap(lambda v, ids: v.at[ids].set(True))(visible, ids_visible)  # [B, N]

    vis_tokens = jnp.take_along_axis(tokens, ids_visible[..., None, None], axis=1)
    window_mean = vis_tokens.mean(axis=(1, 2))  # [B, F]

    positions = jnp.arange(n_tokens)
    prev = jax.lax.cummax(jnp.where(visible, positions, -1), axis=1)  # [B, N]
    nxt = jax.lax.cummin(jnp.where(visible, positions, n_tokens), axis=1, reverse=True)
    last_hour = jnp.take_along_axis(tokens[:, :, -1], jnp.maximum(prev, 0)[..., None], axis=1)
    first_hour = jnp.take_along_axis(tokens[:, :, 0], jnp.minimum(nxt, n_tokens - 1)[..., None],
                                     axis=1)
    last_value = jnp.where((prev >= 0)[..., None], last_hour, first_hour)  # [B, N, F]

    masked = jnp.take_along_axis(tokens, ids_masked[..., None, None], axis=1)  # [B, M, P, F]
    last_masked = jnp.take_along_axis(last_value, ids_masked[..., None], axis=1)  # [B, M, F]
    err_mean = jnp.mean((masked - window_mean[:, None, None, :]) ** 2, axis=(1, 2, 3))
    err_last = jnp.mean((masked - last_masked[:, :, None, :]) ** 2, axis=(1, 2, 3))
    return err_mean, err_last
