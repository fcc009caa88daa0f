"""The encoder module for `encoder.mode`: flatten, random or a copy of a pre-trained one."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cryptorl_jax.config import EncoderConfig
from cryptorl_jax.encoder.mae import FlattenWindow, MAEEncoder
from cryptorl_jax.encoder.results import PretrainResult


def make_encoder(mode: str, n_features: int, window: int, enc_cfg: EncoderConfig,
                 rngs: nnx.Rngs, pretrained: Any = None) -> nnx.Module:
    """The encoder module for `encoder.mode`, mapping [B, W, F] -> [B, out_dim].

    none: FlattenWindow (no parameters); random: an untrained MAEEncoder drawn from `rngs`;
    pretrained-frozen / pretrained-finetune: a fresh MAEEncoder holding `pretrained`'s
    weights (a PretrainResult, a (graphdef, state) pair or an MAEEncoder); the copy is
    independent, so fine-tuning it does not touch `pretrained`.
    """
    if mode == "none":
        return FlattenWindow(n_features, window)
    if mode == "random":
        return MAEEncoder(n_features, window, enc_cfg, rngs=rngs)
    if mode in ("pretrained-frozen", "pretrained-finetune"):
        if pretrained is None:
            raise ValueError(f"encoder.mode '{mode}' needs a pretrained encoder (pretrain() "
                             "result or load_encoder() output), got None")
        if isinstance(pretrained, PretrainResult):
            graphdef, state = pretrained.encoder_graphdef, pretrained.encoder_state
        elif isinstance(pretrained, tuple):
            graphdef, state = pretrained
        elif isinstance(pretrained, MAEEncoder):
            graphdef, state = nnx.split(pretrained)
        else:
            raise TypeError(f"pretrained must be a PretrainResult, (graphdef, state) or "
                            f"MAEEncoder, got {type(pretrained).__name__}")
        encoder = nnx.merge(graphdef, jax.tree.map(jnp.array, state))  # copy the arrays
        if (encoder.n_features, encoder.window) != (n_features, window):
            raise ValueError(f"pretrained encoder is for (n_features, window) = "
                             f"({encoder.n_features}, {encoder.window}), requested "
                             f"({n_features}, {window})")
        return encoder
    raise ValueError(f"encoder.mode must be one of none, random, pretrained-frozen, "
                     f"pretrained-finetune; got '{mode}'")
