"""Masked-autoencoder (MAE) transformer over feature windows (Flax NNX).

The encoder turns a window of W hours x F features into one vector: one token per hour (or
per patch of P hours), a linear embedding, learned positional embeddings, pre-LayerNorm
transformer blocks, a final LayerNorm and mean or last-token pooling.

Pre-training follows He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"
(arXiv:2111.06377): a random per-window subset of round(mask_ratio * N) tokens is masked; the
encoder sees ONLY the visible tokens (gathered together with their positional embeddings);
a light decoder receives the encoded visible tokens scattered back into place, a learned mask
token at every masked position and its own positional embeddings, and reconstructs every
token; the loss is the MSE on the masked tokens only. At encode time the same encoder sees
all N tokens (as in the paper): there is no mask token in the encoder, so nothing in the
encoder differs between the two uses except how many tokens attend to each other.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from cryptorl_jax.config import EncoderConfig

_POS_INIT = nnx.initializers.normal(stddev=0.02)


def gather_windows(features: jax.Array, ends: jax.Array, window: int) -> jax.Array:
    """Windows ending at rows `ends` (each covers rows end-W+1..end): [T, F], [B] -> [B, W, F].

    The caller guarantees end >= W - 1 and end < T (dynamic_slice would clamp otherwise).
    """
    n_features = features.shape[1]

    def one(end: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(features, (end - window + 1, 0), (window, n_features))

    return jax.vmap(one)(ends)


class SelfAttention(nnx.Module):
    """Multi-head self-attention, softmax(Q K^T / sqrt(d_head)) V (Vaswani et al. 2017)."""

    def __init__(self, dim: int, n_heads: int, *, rngs: nnx.Rngs):
        self.n_heads = n_heads
        self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
        self.out = nnx.Linear(dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, N, dim] -> [B, N, dim]."""
        batch, n_tokens, dim = x.shape
        d_head = dim // self.n_heads
        qkv = self.qkv(x).reshape(batch, n_tokens, 3, self.n_heads, d_head)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, N, H, d_head]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d_head).astype(x.dtype)
        mixed = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        return self.out(mixed.reshape(batch, n_tokens, dim))


class TransformerBlock(nnx.Module):
    """Pre-LayerNorm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = SelfAttention(dim, n_heads, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, dim * mlp_ratio, rngs=rngs)
        self.fc2 = nnx.Linear(dim * mlp_ratio, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, N, dim] -> [B, N, dim]."""
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(nnx.gelu(self.fc1(self.norm2(x))))


class MAEEncoder(nnx.Module):
    """Transformer encoder: windows [..., W, F] -> embeddings [..., d_model]."""

    def __init__(self, n_features: int, window: int, enc_cfg: EncoderConfig, *,
                 rngs: nnx.Rngs):
        if window % enc_cfg.patch_size:
            raise ValueError(f"encoder.patch_size ({enc_cfg.patch_size}) must divide the "
                             f"window ({window})")
        if enc_cfg.d_model % enc_cfg.n_heads:
            raise ValueError(f"encoder.n_heads ({enc_cfg.n_heads}) must divide encoder.d_model "
                             f"({enc_cfg.d_model})")
        self.n_features = n_features
        self.window = window
        self.patch_size = enc_cfg.patch_size
        self.n_tokens = window // enc_cfg.patch_size
        self.token_dim = enc_cfg.patch_size * n_features
        self.pooling = enc_cfg.pooling
        self.out_dim = enc_cfg.d_model
        self.embed = nnx.Linear(self.token_dim, enc_cfg.d_model, rngs=rngs)
        self.pos_embed = nnx.Param(_POS_INIT(rngs.params(), (self.n_tokens, enc_cfg.d_model)))
        self.blocks = nnx.List([
            TransformerBlock(enc_cfg.d_model, enc_cfg.n_heads, enc_cfg.mlp_ratio, rngs=rngs)
            for _ in range(enc_cfg.depth)
        ])
        self.norm = nnx.LayerNorm(enc_cfg.d_model, rngs=rngs)

    def patchify(self, windows: jax.Array) -> jax.Array:
        """[..., W, F] -> tokens [..., N, P*F] (token n holds hours nP..nP+P-1, hour-major)."""
        lead = windows.shape[:-2]
        return windows.reshape(*lead, self.n_tokens, self.token_dim)

    def encode_tokens(self, tokens: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        """Encode a subset of tokens at given positions: [B, n, P*F], [B, n] -> [B, n, D].

        positions=None means all N tokens in order.
        """
        pos = self.pos_embed[...]  # [N, D]
        pos = pos[None] if positions is None else pos[positions]  # [1 or B, n, D]
        x = self.embed(tokens) + pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def __call__(self, windows: jax.Array) -> jax.Array:
        """[..., W, F] -> [..., D] (mean over tokens, or the token holding the last hour)."""
        lead = windows.shape[:-2]
        tokens = self.patchify(windows.reshape(-1, self.window, self.n_features))
        x = self.encode_tokens(tokens)  # [B, N, D]
        pooled = x.mean(axis=1) if self.pooling == "mean" else x[:, -1]
        return pooled.reshape(*lead, self.out_dim)


class FlattenWindow(nnx.Module):
    """The `none` encoder mode: the raw window flattened, [..., W, F] -> [..., W*F]."""

    def __init__(self, n_features: int, window: int):
        self.n_features = n_features
        self.window = window
        self.out_dim = n_features * window

    def __call__(self, windows: jax.Array) -> jax.Array:
        return windows.reshape(*windows.shape[:-2], self.out_dim)


class MAE(nnx.Module):
    """MAEEncoder + light decoder; `loss` is the masked-token reconstruction MSE (He et al.)."""

    def __init__(self, n_features: int, window: int, enc_cfg: EncoderConfig, *,
                 rngs: nnx.Rngs):
        self.encoder = MAEEncoder(n_features, window, enc_cfg, rngs=rngs)
        n_tokens = self.encoder.n_tokens
        self.n_masked = int(round(enc_cfg.mask_ratio * n_tokens))
        if not 1 <= self.n_masked < n_tokens:
            raise ValueError(f"encoder.mask_ratio ({enc_cfg.mask_ratio}) must mask at least one "
                             f"and not all of {n_tokens} tokens")
        self.n_visible = n_tokens - self.n_masked
        dec = enc_cfg.decoder_dim
        # The decoder uses the encoder's head count when it divides decoder_dim, else one head.
        dec_heads = enc_cfg.n_heads if dec % enc_cfg.n_heads == 0 else 1
        self.decoder_embed = nnx.Linear(enc_cfg.d_model, dec, rngs=rngs)
        self.mask_token = nnx.Param(_POS_INIT(rngs.params(), (dec,)))
        self.decoder_pos_embed = nnx.Param(_POS_INIT(rngs.params(), (n_tokens, dec)))
        self.decoder_blocks = nnx.List([
            TransformerBlock(dec, dec_heads, enc_cfg.mlp_ratio, rngs=rngs)
            for _ in range(enc_cfg.decoder_depth)
        ])
        self.decoder_norm = nnx.LayerNorm(dec, rngs=rngs)
        self.decoder_pred = nnx.Linear(dec, self.encoder.token_dim, rngs=rngs)

    def sample_mask(self, key: jax.Array, batch: int) -> tuple[jax.Array, jax.Array]:
        """Uniform random mask per window: (ids_visible [B, n_visible], ids_masked [B, n_masked]).

        Both index sets are sorted ascending; together they are a permutation of 0..N-1.
        """
        noise = jax.random.uniform(key, (batch, self.encoder.n_tokens))
        order = jnp.argsort(noise, axis=1)  # [B, N]
        ids_visible = jnp.sort(order[:, : self.n_visible], axis=1)
        ids_masked = jnp.sort(order[:, self.n_visible:], axis=1)
        return ids_visible, ids_masked

    def reconstruct(self, tokens: jax.Array, ids_visible: jax.Array) -> jax.Array:
        """Predict all tokens from the visible ones: [B, N, P*F], [B, n_visible] -> [B, N, P*F].

        The encoder only ever sees the gathered visible tokens, so the values at masked
        positions of `tokens` cannot influence the prediction.
        """
        batch, n_tokens = tokens.shape[:2]
        visible = jnp.take_along_axis(tokens, ids_visible[..., None], axis=1)  # [B, n_vis, P*F]
        latent = self.encoder.encode_tokens(visible, ids_visible)  # [B, n_vis, D]
        z = self.decoder_embed(latent)  # [B, n_vis, dec]
        full = jnp.broadcast_to(self.mask_token[...], (batch, n_tokens, z.shape[-1]))
        full = jax.vmap(lambda f, ids, v: f.at[ids].set(v))(full, ids_visible, z)  # [B, N, dec]
        x = full + self.decoder_pos_embed[...][None]
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))

    def masked_loss(self, windows: jax.Array, ids_visible: jax.Array,
                    ids_masked: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """MSE over the masked tokens only, for a given mask: scalar, aux (per_window [B], pred)."""
        tokens = self.encoder.patchify(windows)  # [B, N, P*F]
        pred = self.reconstruct(tokens, ids_visible)
        idx = ids_masked[..., None]
        err = jnp.take_along_axis(pred, idx, axis=1) - jnp.take_along_axis(tokens, idx, axis=1)
        per_window = jnp.mean(err**2, axis=(1, 2))  # [B]
        return per_window.mean(), {"per_window": per_window, "pred": pred}

    def loss(self, windows: jax.Array, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Masked reconstruction loss with a fresh random mask drawn from `key`: [B, W, F]."""
        ids_visible, ids_masked = self.sample_mask(key, windows.shape[0])
        return self.masked_loss(windows, ids_visible, ids_masked)


def encode(graphdef: nnx.GraphDef, state: nnx.State, windows: jax.Array) -> jax.Array:
    """Functional encoder call for use inside jit: [B, W, F] -> [B, D]."""
    return nnx.merge(graphdef, state)(windows)


def make_encode_fn(graphdef: nnx.GraphDef) -> Callable[[nnx.State, jax.Array], jax.Array]:
    """`encode_fn(params, windows) -> [B, D]` with the graphdef bound (the issue's signature)."""

    def encode_fn(params: nnx.State, windows: jax.Array) -> jax.Array:
        return encode(graphdef, params, windows)

    return encode_fn
