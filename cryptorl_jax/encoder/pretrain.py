"""MAE pre-training on a segment's train rows, quality report, orbax save/load, embeddings.

Windows: a window "ending at t" covers rows t-W+1..t. Of the train rows [train_start,
train_end), the last `val_fraction` form the validation range [val_start, train_end);
validation windows lie fully inside it, train windows end at most at val_start - W - 1, so W
rows separate the last train window from the first validation window, and no window ever
touches a row >= train_end. Rows before train_start serve as lookback only when the caller
says so (`lookback_ok=True`).

One jitted epoch = `lax.scan` over shuffled batches; windows are gathered on device from the
feature matrix by `dynamic_slice`. The feature matrix and the range starts are arguments, so
the epoch function is traced once for every epoch and every segment with the same shapes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from cryptorl_jax.config import Config, EncoderConfig
from cryptorl_jax.encoder.mae import MAE, FlattenWindow, MAEEncoder, gather_windows

# How often each jitted function below was traced (tests assert it compiles once).
TRACE_COUNTS: Counter[str] = Counter()

LogFn = Callable[[int, dict[str, float]], None]


# --------------------------------------------------------------------------------------------
# Window index ranges
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WindowRanges:
    """Inclusive ranges of window END rows used for training and validation."""

    window: int
    train_first_end: int
    train_last_end: int
    val_first_end: int
    val_last_end: int

    @property
    def n_train(self) -> int:
        return self.train_last_end - self.train_first_end + 1

    @property
    def n_val(self) -> int:
        return self.val_last_end - self.val_first_end + 1

    @property
    def first_row(self) -> int:
        """The earliest row any window reads."""
        return self.train_first_end - self.window + 1

    @property
    def last_row(self) -> int:
        """The latest row any window reads."""
        return self.val_last_end


def window_ranges(train_start: int, train_end: int, window: int, val_fraction: float,
                  lookback_ok: bool = False) -> WindowRanges:
    """Train/validation window-end ranges for train rows [train_start, train_end) (see module)."""
    if not 0 <= train_start < train_end:
        raise ValueError(f"need 0 <= train_start < train_end, got train_start={train_start}, "
                         f"train_end={train_end}")
    n_rows = train_end - train_start
    n_val_rows = int(round(val_fraction * n_rows))
    val_start = train_end - n_val_rows
    val_first_end = val_start + window - 1
    first_end = max(train_start, window - 1) if lookback_ok else train_start + window - 1
    last_end = val_start - window - 1
    if val_first_end > train_end - 1:
        raise ValueError(
            f"too few rows for encoder pre-training: the validation range [{val_start}, "
            f"{train_end}) ({val_fraction:g} of {n_rows} train rows = {n_val_rows} rows) is "
            f"shorter than one window (W = {window})")
    if last_end < first_end:
        need = int(math.ceil((3 * window + 1) / (1 - val_fraction)))
        raise ValueError(
            f"too few rows for encoder pre-training: train rows [{train_start}, {train_end}) "
            f"({n_rows} rows) leave no train window of W = {window} rows before the "
            f"{window}-row gap and the {n_val_rows}-row validation range (about {need} rows "
            f"are needed)")
    return WindowRanges(window, first_end, last_end, val_first_end, train_end - 1)


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Jitted epoch and evaluation
# --------------------------------------------------------------------------------------------


def _decay_mask(params: Any) -> Any:
    """Weight decay on kernels only (not biases, LayerNorm, embeddings of positions/mask)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(getattr(k, "key", None) == "kernel" for k in path), params)


def make_optimizer(enc_cfg: EncoderConfig, n_batches: int) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay over epochs x batches, global-norm clip 1."""
    total = enc_cfg.epochs * n_batches
    warmup = min(enc_cfg.warmup_epochs * n_batches, total - 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, enc_cfg.learning_rate, warmup, total)
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, weight_decay=enc_cfg.weight_decay, mask=_decay_mask),
    )


def _epoch_ends(key: jax.Array, first_end: jax.Array, n_train: int, n_batches: int,
                batch_size: int) -> jax.Array:
    """Shuffled window ends for one epoch: [n_batches, batch_size] in first_end + [0, n_train).

    Concatenated permutations: every window once before any repeats.
    """
    n_draw = n_batches * batch_size
    n_perms = -(-n_draw // n_train)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n_train))(
        jax.random.split(key, n_perms))  # [n_perms, n_train]
    return first_end + perms.reshape(-1)[:n_draw].reshape(n_batches, batch_size)


def _loss_fn(params: nnx.State, graphdef: nnx.GraphDef, windows: jax.Array,
             key: jax.Array) -> tuple[jax.Array, dict]:
    return nnx.merge(graphdef, params).loss(windows, key)


@functools.lru_cache(maxsize=8)
def _optimizer_init(enc_cfg: EncoderConfig, n_batches: int) -> Callable[[nnx.State], Any]:
    """The optimiser's jitted init, one per (config, batches per epoch): every segment of a run
    reuses it instead of compiling a new one (with `_train_epoch`, `_evaluate` and
    `_embed_chunk`, the MAE stage compiles once per run)."""

    def init(params: nnx.State) -> Any:
        TRACE_COUNTS["optimizer_init"] += 1
        return make_optimizer(enc_cfg, n_batches).init(params)

    return jax.jit(init)


@partial(jax.jit, static_argnames=("graphdef", "enc_cfg", "window", "n_train", "n_batches"))
def _train_epoch(graphdef: nnx.GraphDef, params: nnx.State, opt_state: Any,
                 features: jax.Array, first_end: jax.Array, key: jax.Array, *,
                 enc_cfg: EncoderConfig, window: int, n_train: int,
                 n_batches: int) -> tuple[nnx.State, Any, jax.Array]:
    """One epoch of AdamW steps over shuffled train windows; returns the mean batch loss."""
    TRACE_COUNTS["train_epoch"] += 1
    tx = make_optimizer(enc_cfg, n_batches)
    key_perm, key_steps = jax.random.split(key)
    ends = _epoch_ends(key_perm, first_end, n_train, n_batches, enc_cfg.batch_size)
    step_keys = jax.random.split(key_steps, n_batches)

    def step(carry, xs):
        params, opt_state = carry
        batch_ends, step_key = xs
        windows = gather_windows(features, batch_ends, window)  # [B, W, F]
        (loss, _), grads = jax.value_and_grad(_loss_fn, has_aux=True)(
            params, graphdef, windows, step_key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (ends, step_keys))
    return params, opt_state, losses.mean()


@partial(jax.jit, static_argnames=("graphdef", "window", "n_val", "batch_size"))
def _evaluate(graphdef: nnx.GraphDef, params: nnx.State, features: jax.Array,
              first_end: jax.Array, key: jax.Array, *, window: int, n_val: int,
              batch_size: int) -> dict[str, jax.Array]:
    """Masked MSE of the model and the two baselines on all validation windows, same masks.

    The masks depend only on `key` and the window's position in the range, so every epoch
    (and the final report) scores the same masked tokens.
    """
    TRACE_COUNTS["evaluate"] += 1
    model = nnx.merge(graphdef, params)
    patch_size = model.encoder.patch_size
    n_chunks = -(-n_val // batch_size)
    offsets = jnp.arange(n_chunks * batch_size).reshape(n_chunks, batch_size)
    weights = (offsets < n_val).astype(jnp.float32)
    ends = first_end + jnp.minimum(offsets, n_val - 1)

    def chunk(xs):
        chunk_ends, chunk_weights, index = xs
        windows = gather_windows(features, chunk_ends, window)
        ids_visible, ids_masked = model.sample_mask(jax.random.fold_in(key, index), batch_size)
        _, aux = model.masked_loss(windows, ids_visible, ids_masked)
        err_mean, err_last = baseline_errors(windows, ids_visible, ids_masked, patch_size)
        return jnp.stack([aux["per_window"], err_mean, err_last]) @ chunk_weights  # [3]

    sums = jax.lax.map(chunk, (ends, weights, jnp.arange(n_chunks))).sum(axis=0) / n_val
    return {"mae": sums[0], "window_mean": sums[1], "last_value": sums[2]}


# --------------------------------------------------------------------------------------------
# Pre-training driver
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """Validation masked-token MSE of the MAE and of the two baselines, on the same masks."""

    val_mse: float
    window_mean_mse: float
    last_value_mse: float
    n_val_windows: int
    n_masked_tokens: int  # per window

    @property
    def beats_baselines(self) -> bool:
        return self.val_mse < min(self.window_mean_mse, self.last_value_mse)

    def to_dict(self) -> dict[str, float | int | bool]:
        return {**dataclasses.asdict(self), "beats_baselines": self.beats_baselines}


@dataclasses.dataclass
class PretrainResult:
    """Best-validation MAE, its encoder, loss history and quality report."""

    encoder_graphdef: nnx.GraphDef
    encoder_state: nnx.State
    mae_graphdef: nnx.GraphDef
    mae_state: nnx.State
    history: list[dict[str, float]]  # per epoch: epoch, train_loss, val_loss, seconds
    report: QualityReport
    ranges: WindowRanges
    best_epoch: int
    n_features: int
    window: int
    enc_cfg: EncoderConfig

    @property
    def encoder(self) -> MAEEncoder:
        """A fresh MAEEncoder module holding the best parameters."""
        return nnx.merge(self.encoder_graphdef, self.encoder_state)

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall time of the epochs after the first (the first includes compilation)."""
        times = [h["seconds"] for h in self.history]
        return float(np.mean(times[1:] if len(times) > 1 else times))


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
    """Pre-train the MAE on windows inside train rows [train_start, train_end) (see module).

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


# --------------------------------------------------------------------------------------------
# Save / load (orbax)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Embeddings and encoder factory
# --------------------------------------------------------------------------------------------


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
