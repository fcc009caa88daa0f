"""MAE pre-training on a segment's train rows with early stopping; K segments vmapped.

Train and validation windows: `encoder.windows`; the jitted epoch and validation:
`encoder.epoch`; the result: `encoder.results`; saving: `encoder.checkpoint`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from cryptorl_jax.config import Config
from cryptorl_jax.encoder.checkpoint import save_encoder
from cryptorl_jax.encoder.epoch import _evaluate, _optimizer_init, _train_epoch
from cryptorl_jax.encoder.mae import MAE
from cryptorl_jax.encoder.results import PretrainResult, QualityReport
from cryptorl_jax.encoder.windows import WindowRanges, window_ranges

LogFn = Callable[[int, dict[str, float]], None]


def _check_finite(features: np.ndarray, first_row: int, train_end: int,
                  columns: list[str] | None) -> None:
    block = features[first_row:train_end]
    bad = ~np.isfinite(block)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        name = f"'{columns[col]}'" if columns is not None else str(col)
        raise ValueError(
            f"features row {first_row + row} (column {name}) is {block[row, col]}: encoder "
            f"pre-training reads rows [{first_row}, {train_end}) and they must all be finite")


def pretrain(features: Any, train_start: int, train_end: int, cfg: Config, key: jax.Array, *,
             workdir: str | Path | None = None, log_fn: LogFn | None = None,
             progress: bool = False, lookback_ok: bool = False) -> PretrainResult:
    """Pre-train the MAE on windows inside train rows [train_start, train_end) (windows:
    `encoder.windows`).

    features: [T, F] array (or a DataFrame) of scaled features; rows outside the windows'
    range are never read (they may hold NaN). lookback_ok: let train windows start before
    train_start (rows >= W-1 earlier). Keeps the parameters of the best validation epoch;
    stops after `encoder.patience` epochs without improvement or at `encoder.epochs`.
    log_fn(epoch, {"encoder/train_loss", "encoder/val_loss"}) is called after every epoch and
    once at the end with the quality report. With `workdir`, the encoder is saved to
    `workdir/encoder` (save_encoder).
    """
    enc_cfg = cfg.encoder
    window = cfg.env.window
    columns = [str(c) for c in features.columns] if hasattr(features, "columns") else None
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be [T, F], got shape {features.shape}")
    if train_end > features.shape[0]:
        raise ValueError(f"train_end ({train_end}) is beyond the feature matrix "
                         f"({features.shape[0]} rows)")
    ranges = window_ranges(train_start, train_end, window, enc_cfg.val_fraction, lookback_ok)
    _check_finite(features, ranges.first_row, train_end, columns)
    n_features = features.shape[1]
    n_batches = enc_cfg.batches_per_epoch or -(-ranges.n_train // enc_cfg.batch_size)

    key_init, key_val, key_train = jax.random.split(key, 3)
    mae = MAE(n_features, window, enc_cfg, rngs=nnx.Rngs(key_init))
    graphdef, params = nnx.split(mae)
    opt_state = _optimizer_init(enc_cfg, n_batches)(params)
    features_dev = jnp.asarray(features)
    train_first = jnp.asarray(ranges.train_first_end, jnp.int32)
    val_first = jnp.asarray(ranges.val_first_end, jnp.int32)
    evaluate = partial(_evaluate, graphdef, features=features_dev, first_end=val_first,
                       key=key_val, window=window, n_val=ranges.n_val,
                       batch_size=enc_cfg.batch_size)

    history: list[dict[str, float]] = []
    best_val, best_epoch, best_params, best_eval = np.inf, -1, params, None
    bar = tqdm(range(enc_cfg.epochs), desc="MAE pre-training", disable=not progress,
               leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        params, opt_state, train_loss = _train_epoch(
            graphdef, params, opt_state, features_dev, train_first,
            jax.random.fold_in(key_train, epoch), enc_cfg=enc_cfg, window=window,
            n_train=ranges.n_train, n_batches=n_batches)
        scores = evaluate(params=params)
        val_loss = float(scores["mae"])
        row = {"epoch": epoch, "train_loss": float(train_loss), "val_loss": val_loss,
               "seconds": time.perf_counter() - t0}
        history.append(row)
        if not np.isfinite(row["train_loss"]) or not np.isfinite(val_loss):
            raise FloatingPointError(f"MAE pre-training diverged at epoch {epoch}: {row}")
        if val_loss < best_val:
            best_val, best_epoch, best_params, best_eval = val_loss, epoch, params, scores
        bar.set_postfix(train=f"{row['train_loss']:.4f}", val=f"{val_loss:.4f}",
                        best=f"{best_val:.4f}")
        if log_fn is not None:
            log_fn(epoch, {"encoder/train_loss": row["train_loss"],
                           "encoder/val_loss": val_loss})
        if epoch - best_epoch >= enc_cfg.patience:
            break
    bar.close()

    result = _result(graphdef, best_params, best_eval, history, ranges, best_epoch,
                     mae.n_masked, n_features, cfg, log_fn)
    if workdir is not None:
        save_encoder(Path(workdir) / "encoder", result)
    return result


def _result(graphdef: nnx.GraphDef, best_params: nnx.State, best_eval: dict[str, Any],
            history: list[dict[str, float]], ranges: WindowRanges, best_epoch: int,
            n_masked: int, n_features: int, cfg: Config,
            log_fn: LogFn | None) -> PretrainResult:
    """A pre-training's result from its best epoch (its quality report logged last)."""
    report = QualityReport(
        val_mse=float(best_eval["mae"]), window_mean_mse=float(best_eval["window_mean"]),
        last_value_mse=float(best_eval["last_value"]), n_val_windows=ranges.n_val,
        n_masked_tokens=n_masked)
    if log_fn is not None:
        log_fn(len(history), {"encoder/best_val_mse": report.val_mse,
                              "encoder/baseline_window_mean_mse": report.window_mean_mse,
                              "encoder/baseline_last_value_mse": report.last_value_mse})
    best = nnx.merge(graphdef, best_params)
    enc_graphdef, enc_state = nnx.split(best.encoder)
    return PretrainResult(enc_graphdef, enc_state, graphdef, best_params, history, report,
                          ranges, best_epoch, n_features, cfg.env.window, cfg.encoder)


def pretrain_many(features: Sequence[Any], spans: Sequence[tuple[int, int]], cfg: Config,
                  keys: Sequence[jax.Array], *, log_fns: Sequence[LogFn | None] | None = None,
                  progress: bool = False, lookback_ok: bool = False) -> list[PretrainResult]:
    """`pretrain` of K segments at once: the K MAEs train as ONE vmapped step per epoch.

    features[i] is segment i's [T, F] matrix and spans[i] its train rows [start, end); all
    matrices must have one shape and all spans one length (a walk-forward's segments do),
    else the segments are pre-trained one after the other. Each segment keeps its own key,
    masks, best epoch and early stopping: the batch runs until every segment has stopped; a
    segment's history ends at the epoch where it stopped and its parameters are those of its
    best epoch, as `pretrain` gives them (to float rounding: the step is vmapped).
    """
    k = len(features)
    log_fns = list(log_fns) if log_fns is not None else [None] * k
    if not (k == len(spans) == len(keys) == len(log_fns)) or k == 0:
        raise ValueError("pretrain_many needs one span, key and log function per matrix")
    enc_cfg, window = cfg.encoder, cfg.env.window
    mats = [np.asarray(f, dtype=np.float32) for f in features]
    ranges = [window_ranges(a, b, window, enc_cfg.val_fraction, lookback_ok) for a, b in spans]
    same = (len({m.shape for m in mats}) == 1 and len({(r.n_train, r.n_val) for r in ranges}) == 1
            and mats[0].ndim == 2)
    if k == 1 or not same:
        return [pretrain(f, a, b, cfg, key, log_fn=fn, progress=progress,
                         lookback_ok=lookback_ok)
                for f, (a, b), key, fn in zip(features, spans, keys, log_fns, strict=True)]
    for f, m, r, (_, b) in zip(features, mats, ranges, spans, strict=True):
        if b > m.shape[0]:
            raise ValueError(f"train_end ({b}) is beyond the feature matrix ({m.shape[0]} rows)")
        _check_finite(m, r.first_row, b,
                      [str(c) for c in f.columns] if hasattr(f, "columns") else None)
    n_features = mats[0].shape[1]
    n_train, n_val = ranges[0].n_train, ranges[0].n_val
    n_batches = enc_cfg.batches_per_epoch or -(-n_train // enc_cfg.batch_size)
    split = [jax.random.split(key, 3) for key in keys]
    maes = [MAE(n_features, window, enc_cfg, rngs=nnx.Rngs(sk[0])) for sk in split]
    graphdef = nnx.split(maes[0])[0]
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)  # noqa: E731
    params = stack([nnx.split(m)[1] for m in maes])
    opt_state = jax.vmap(_optimizer_init(enc_cfg, n_batches))(params)
    features_dev = jnp.asarray(np.stack(mats))
    train_first = jnp.asarray([r.train_first_end for r in ranges], jnp.int32)
    val_first = jnp.asarray([r.val_first_end for r in ranges], jnp.int32)
    key_val = jnp.stack([sk[1] for sk in split])
    key_train = jnp.stack([sk[2] for sk in split])
    epoch_fn = jax.vmap(partial(_train_epoch, graphdef, enc_cfg=enc_cfg, window=window,
                                n_train=n_train, n_batches=n_batches))
    eval_fn = jax.vmap(partial(_evaluate, graphdef, window=window, n_val=n_val,
                               batch_size=enc_cfg.batch_size))
    histories: list[list[dict[str, float]]] = [[] for _ in range(k)]
    best_val = [np.inf] * k
    best_epoch = [-1] * k
    best_params: list[Any] = [None] * k
    best_eval: list[Any] = [None] * k
    stopped = [False] * k
    bar = tqdm(range(enc_cfg.epochs), desc=f"MAE pre-training x{k}", disable=not progress,
               leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        params, opt_state, train_loss = epoch_fn(
            params, opt_state, features_dev, train_first,
            jax.vmap(jax.random.fold_in, in_axes=(0, None))(key_train, epoch))
        scores = jax.device_get(eval_fn(params, features_dev, val_first, key_val))
        train_loss = np.asarray(train_loss)
        seconds = time.perf_counter() - t0
        for i in range(k):
            if stopped[i]:
                continue
            val_loss = float(scores["mae"][i])
            row = {"epoch": epoch, "train_loss": float(train_loss[i]), "val_loss": val_loss,
                   "seconds": seconds}
            histories[i].append(row)
            if not np.isfinite(row["train_loss"]) or not np.isfinite(val_loss):
                raise FloatingPointError(f"MAE pre-training of segment {i} of the batch "
                                         f"diverged at epoch {epoch}: {row}")
            if val_loss < best_val[i]:
                best_val[i], best_epoch[i] = val_loss, epoch
                best_params[i] = jax.tree.map(lambda x, j=i: x[j], params)
                best_eval[i] = {key: float(v[i]) for key, v in scores.items()}
            if log_fns[i] is not None:
                log_fns[i](epoch, {"encoder/train_loss": row["train_loss"],
                                   "encoder/val_loss": val_loss})
            if epoch - best_epoch[i] >= enc_cfg.patience:
                stopped[i] = True
        if all(stopped):
            break
    bar.close()
    return [_result(graphdef, best_params[i], best_eval[i], histories[i], ranges[i],
                    best_epoch[i], maes[i].n_masked, n_features, cfg, log_fns[i])
            for i in range(k)]
