"""MAE foundation encoder: transformer over feature windows, masked pre-training, embeddings.

The pre-training entry point is `cryptorl_jax.encoder.pretrain.pretrain` (not re-exported here,
so that `cryptorl_jax.encoder.pretrain` stays the module).
"""

from cryptorl_jax.encoder.mae import (
    MAE,
    FlattenWindow,
    MAEEncoder,
    encode,
    gather_windows,
    make_encode_fn,
)
from cryptorl_jax.encoder.pretrain import (
    PretrainResult,
    QualityReport,
    WindowRanges,
    baseline_errors,
    load_encoder,
    make_encoder,
    precompute_embeddings,
    save_encoder,
    window_ranges,
)

__all__ = [
    "MAE",
    "FlattenWindow",
    "MAEEncoder",
    "PretrainResult",
    "QualityReport",
    "WindowRanges",
    "baseline_errors",
    "encode",
    "gather_windows",
    "load_encoder",
    "make_encode_fn",
    "make_encoder",
    "precompute_embeddings",
    "save_encoder",
    "window_ranges",
]
