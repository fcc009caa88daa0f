"""Small synthetic training setups shared by the training tests."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from cryptorl_jax.config import load_config
from cryptorl_jax.env.trading import MarketData, make_start_range
from cryptorl_jax.training.data import TrainData

TINY = [
    "encoder.mode=none", "env.window=8", "env.episode_length=64", "env.vol_window=48",
    "env.vol_halflife_hours=12", "tqc.net_arch=[16, 16]",
    "tqc.batch_size=32", "tqc.buffer_size=2048", "tqc.learning_starts=64",
    "tqc.n_quantiles=5", "tqc.top_quantiles_to_drop_per_net=1", "train.n_envs=4",
    "train.steps_per_chunk=16", "train.total_env_steps=320", "train.n_seeds=2",
    "train.devices=1", "train.checkpoint_every_chunks=1", "train.keep_checkpoints=2",
    "output.progress=false",
]


def tiny_config(*extra: str):
    return load_config(None, [*TINY, *extra])


def synthetic_data(cfg, n_rows: int = 600, n_features: int = 4, seed: int = 0,
                   oracle: bool = False) -> TrainData:
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.01, n_rows)
    close = 100.0 * np.exp(np.cumsum(r))
    features = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    if oracle:  # column 0 holds the sign of the NEXT hour's return: only for learning tests
        nxt = np.concatenate([np.log(close[1:] / close[:-1]), [0.0]])
        features[:, 0] = np.sign(nxt)
    market = MarketData.from_arrays(features, close, cfg.env)
    start_range = make_start_range(0, n_rows - 1, cfg.env, n_rows)
    return TrainData(market=market, start_range=start_range)


def run_on_two_cpu_devices(script: str, repo_root) -> str:
    """Run `script` in a fresh Python process whose CPU backend has two devices (XLA's
    device-count flag only takes effect before JAX starts); assert it exits 0 and prints OK;
    return its stdout."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(repo_root))
    out = subprocess.run([sys.executable, "-c", script], cwd=repo_root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout
    return out.stdout


def train_chunks(trainer, data, chunks: int, seeds=(0, 1), key: int = 3):
    """`chunks` chunks of a fresh population (seeds) with the trainer's default members, as
    host arrays: (the final TrainState, each chunk's metrics)."""
    import jax

    hyper = trainer.default_hyper
    state = trainer.init(jax.random.key(key), data, hyper=hyper, seeds=list(seeds))
    history = []
    for _ in range(chunks):
        state, metrics = trainer.train_chunk(state, data, hyper)
        history.append(metrics)
    return jax.device_get((state, history))
