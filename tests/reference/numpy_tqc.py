"""Plain-numpy (float64) TQC formulas, written from sb3-contrib's TQC.train and the TQC paper.

Reference only: straightforward broadcasting, no tricks, so tests can compare the JAX code
against it on fixed random tensors.
"""

from __future__ import annotations

import numpy as np


def truncated_target(next_quantiles, next_log_prob, reward, terminated, alpha, gamma,
                     drop_per_net):
    """Sort the pooled [B, N*M] target atoms, keep N*M - drop_per_net*N, add the soft TD part."""
    next_quantiles = np.asarray(next_quantiles, np.float64)
    batch, n_critics, n_quantiles = next_quantiles.shape
    n_keep = n_critics * n_quantiles - drop_per_net * n_critics
    pooled = np.sort(next_quantiles.reshape(batch, -1), axis=1)[:, :n_keep]
    soft = pooled - alpha * np.asarray(next_log_prob, np.float64).reshape(-1, 1)
    done = np.asarray(terminated, np.float64).reshape(-1, 1)
    return np.asarray(reward, np.float64).reshape(-1, 1) + (1.0 - done) * gamma * soft


def quantile_huber_loss(current, target):
    """sb3_contrib.common.utils.quantile_huber_loss(current [B,N,M], target [B,1,K], False)."""
    current = np.asarray(current, np.float64)
    target = np.asarray(target, np.float64)
    n_quantiles = current.shape[-1]
    cum_prob = ((np.arange(n_quantiles) + 0.5) / n_quantiles).reshape(1, 1, -1, 1)
    delta = target[:, None, None, :] - current[..., None]  # [B, N, M, K]
    abs_delta = np.abs(delta)
    huber = np.where(abs_delta > 1.0, abs_delta - 0.5, 0.5 * delta**2)
    return float(np.mean(np.abs(cum_prob - (delta < 0)) * huber))


def quantile_huber_grad(current, target):
    """d quantile_huber_loss / d current, by hand: -mean-weight * |tau - 1{d<0}| * clip(d)."""
    current = np.asarray(current, np.float64)
    target = np.asarray(target, np.float64)
    n_quantiles = current.shape[-1]
    cum_prob = ((np.arange(n_quantiles) + 0.5) / n_quantiles).reshape(1, 1, -1, 1)
    delta = target[:, None, None, :] - current[..., None]
    per_element = -np.abs(cum_prob - (delta < 0)) * np.clip(delta, -1.0, 1.0)
    return per_element.sum(axis=-1) / delta.size


def actor_loss(alpha, log_prob, quantiles):
    """(alpha * log_prob - critic(obs, pi(obs)).mean(dim=2).mean(dim=1)).mean(), sb3-contrib."""
    quantiles = np.asarray(quantiles, np.float64)
    q = quantiles.mean(axis=2).mean(axis=1)
    return float(np.mean(alpha * np.asarray(log_prob, np.float64) - q))


def entropy_coef_loss(log_alpha, log_prob, target_entropy):
    """-(log_ent_coef * (log_prob + target_entropy)).mean() and its derivative in log_alpha."""
    log_prob = np.asarray(log_prob, np.float64)
    loss = -float(np.mean(log_alpha * (log_prob + target_entropy)))
    grad = -float(np.mean(log_prob + target_entropy))
    return loss, grad


def squashed_gaussian_log_prob(pre_tanh, mean, log_std):
    """log N(u; mean, std) - log(1 - tanh(u)^2), summed over action dims (exact, no epsilon)."""
    pre_tanh, mean, log_std = (np.asarray(a, np.float64) for a in (pre_tanh, mean, log_std))
    std = np.exp(log_std)
    gaussian = -0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    correction = np.log1p(-np.tanh(pre_tanh) ** 2)
    return (gaussian - correction).sum(axis=-1)


def layer_norm(h, scale, bias, eps=1e-6):
    """(h - mean) / sqrt(var + eps) * scale + bias over the last axis (biased variance)."""
    h = np.asarray(h, np.float64)
    mean = h.mean(axis=-1, keepdims=True)
    var = ((h - mean) ** 2).mean(axis=-1, keepdims=True)
    return (h - mean) / np.sqrt(var + eps) * np.asarray(scale, np.float64) \
        + np.asarray(bias, np.float64)


def mlp(x, layers, norms=None):
    """ReLU MLP: layers = [(kernel [in, out], bias [out]), ...], no activation after the last;
    norms[i] = (scale, bias) of a LayerNorm after layer i (before its ReLU), or None."""
    h = np.asarray(x, np.float64)
    for i, (kernel, bias) in enumerate(layers):
        h = h @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
        if norms is not None and norms[i] is not None:
            h = layer_norm(h, *norms[i])
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def adam_step(param, grad, m, v, count, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    """One Adam step (Kingma & Ba 2015, algorithm 1; optax/torch eps placement); with
    weight_decay, AdamW's decoupled decay (Loshchilov & Hutter 2019): - lr * wd * param."""
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad**2
    m_hat = m / (1 - b1**count)
    v_hat = v / (1 - b2**count)
    return param - lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * param), m, v
