"""MAE foundation encoder: transformer over feature windows, masked pre-training, embeddings.

Modules: `mae` (the model), `windows` (train/validation window ranges), `baselines`, `epoch`
(the jitted optimiser, train epoch and validation), `results`, `pretrain` (the training loop),
`checkpoint` (orbax save/load), `embed` (precomputed embeddings), `factory` (`make_encoder`),
`tracing` (trace counts). The pre-training entry point is
`cryptorl_jax.encoder.pretrain.pretrain` (not re-exported here, so that
`cryptorl_jax.encoder.pretrain` stays the module).
"""

from cryptorl_jax.encoder.baselines import baseline_errors
from cryptorl_jax.encoder.checkpoint import load_encoder, save_encoder
from cryptorl_jax.encoder.embed import precompute_embeddings
from cryptorl_jax.encoder.factory import make_encoder
from cryptorl_jax.encoder.mae import (
    MAE,
    FlattenWindow,
    MAEEncoder,
    encode,
    gather_windows,
    make_encode_fn,
)
from cryptorl_jax.encoder.results import PretrainResult, QualityReport
from cryptorl_jax.encoder.windows import WindowRanges, window_ranges

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
