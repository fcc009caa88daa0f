"""Save / load a pre-trained encoder: orbax parameters and a meta.json."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from cryptorl_jax.config import EncoderConfig
from cryptorl_jax.encoder.mae import MAEEncoder
from cryptorl_jax.encoder.results import PretrainResult

_META = "meta.json"
_PARAMS = "params"


def save_encoder(path: str | Path, result: PretrainResult) -> Path:
    """Save the encoder's parameters (orbax) and a meta.json (shapes, config, history, report)."""
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path / _PARAMS, result.encoder_state.to_pure_dict(), force=True)
    checkpointer.wait_until_finished()
    checkpointer.close()
    meta = {"n_features": result.n_features, "window": result.window,
            "encoder": dataclasses.asdict(result.enc_cfg), "best_epoch": result.best_epoch,
            "history": result.history, "report": result.report.to_dict(),
            "ranges": dataclasses.asdict(result.ranges)}
    fd, tmp = tempfile.mkstemp(dir=path, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, path / _META)
    return path


_ARCH_KEYS = ("patch_size", "d_model", "depth", "n_heads", "mlp_ratio", "pooling")


def load_encoder(path: str | Path, n_features: int, window: int,
                 enc_cfg: EncoderConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """Restore a saved encoder as (graphdef, state); raises if its shapes do not match."""
    path = Path(path).absolute()
    if not (path / _PARAMS).exists():
        raise FileNotFoundError(f"no saved encoder at {path} (missing '{_PARAMS}')")
    meta_file = path / _META
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        expected = {"n_features": n_features, "window": window,
                    **{f"encoder.{k}": getattr(enc_cfg, k) for k in _ARCH_KEYS}}
        saved = {"n_features": meta["n_features"], "window": meta["window"],
                 **{f"encoder.{k}": meta["encoder"][k] for k in _ARCH_KEYS}}
        for k, v in expected.items():
            if saved[k] != v:
                raise ValueError(f"saved encoder at {path} has {k}={saved[k]!r}, but "
                                 f"{v!r} was requested")
    abstract = nnx.eval_shape(
        lambda: MAEEncoder(n_features, window, enc_cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          state.to_pure_dict())
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(path / _PARAMS, target)
    nnx.replace_by_pure_dict(state, restored)
    return graphdef, state
