"""train: end-to-end throughput of the fused training step (env + replay + TQC [+ MAE]).

Times `train_chunk` (one jitted lax.scan of policy -> env step -> replay insert -> G updates)
after a first, separately timed call that includes compilation. Reports env steps/s, gradient
updates/s, the compile time, the update's FLOPs (XLA's cost analysis) and the achieved GFLOP/s
next to a jitted float32 matmul peak measured in the same run.

    cryptorl bench train --match-peers          # the peers' stock-TQC settings
    cryptorl bench train --compare-finetune     # frozen embeddings vs fine-tuning
    cryptorl bench train --segments 4           # 4 segments in one step vs one
    cryptorl bench train --match-peers --peers-python /tmp/peers-venv/bin/python \\
        --peers-dir ../shared/peers             # sb3-contrib and sbx side by side

--match-peers: a 64 x 16 feature window flattened plus the agent state (1,027 inputs: the
peers' 1,025 plus previous exposure and drawdown), no encoder, [256, 256], 25 quantiles x 2
critics, drop 2 per net, batch 256, lr 3e-4, buffer 100k, learning_starts 1,000, 8 envs and one
gradient update per vectorised step of the 8 envs (SB3's train_freq 1, gradient_steps 1).
Our env and buffer run inside the jitted step; the peers pay a Python/numpy env loop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import numpy as np

PEERS_SETTINGS = [
    "encoder.mode=none", "env.window=64", "tqc.net_arch=[256, 256]", "tqc.n_quantiles=25",
    "tqc.n_critics=2", "tqc.top_quantiles_to_drop_per_net=2", "tqc.batch_size=256",
    "tqc.learning_rate=3e-4", "tqc.buffer_size=100000", "tqc.learning_starts=1000",
    "tqc.gradient_steps=1", "tqc.max_grad_norm=null", "train.n_envs=8", "train.n_seeds=1",
    "train.devices=1",
]


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say which step is built (shared with `bench cost`)."""
    parser.add_argument("--match-peers", action="store_true",
                        help="exactly the peers' stock-TQC settings (see bench train's doc)")
    parser.add_argument("--config", default=None, help="base config (default: built-in)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="dotted config overrides")
    parser.add_argument("--n-features", type=int, default=16,
                        help="features per row of the synthetic market (default 16)")
    parser.add_argument("--rows", type=int, default=13_000,
                        help="rows of the synthetic market (default 13,000)")
    parser.add_argument("--chunk", type=int, default=250, help="iterations per train_chunk")
    parser.add_argument("--critics", choices=("per-critic", "batched"), default=None,
                        help="how the critics' layers multiply (default: the device's own, "
                             "per-critic on a CPU, batched on a GPU; bench cost on a CPU host: "
                             "the GPU's)")
    parser.add_argument("--params", choices=("tree", "flat"), default=None,
                        help="how the chunk's loops carry the parameters (default: the "
                             "device's own, tree on a CPU, flat on a GPU; bench cost on a CPU "
                             "host: the GPU's)")


def base_settings(args: argparse.Namespace) -> list[str]:
    """The overrides every step of this bench is built with, before the user's --set."""
    base = list(PEERS_SETTINGS) if args.match_peers else []
    return base + [f"train.steps_per_chunk={args.chunk}", "output.progress=false",
                   "train.total_env_steps=1000000000"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_step_arguments(parser)
    parser.add_argument("--compare-finetune", action="store_true",
                        help="time pretrained-frozen against pretrained-finetune")
    parser.add_argument("--chunks", type=int, default=4, help="timed chunks")
    parser.add_argument("--population", default=None, metavar="P[,P...]",
                        help="P members in one compiled step, against P = 1 in the same run "
                             "(a comma list gives the curve, e.g. 1,2,4,8,16,32)")
    parser.add_argument("--segments", type=int, default=None, metavar="K",
                        help="K walk-forward segments x train.n_seeds in one compiled step "
                             "against one segment at a time, in the same run")
    parser.add_argument("--peers-python", default=None,
                        help="python of a venv with sb3-contrib and sbx (the `bench` extra)")
    parser.add_argument("--peers-dir", default=None, help="the peers harness directory")
    parser.add_argument("--peers-steps", type=int, default=None,
                        help="timed transitions for each peer (default: the harness's)")


def _matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a jitted float32 [n, n] @ [n, n] (best of `reps`)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def stock_tqc_update_flops(obs_dim: int, action_dim: int, net_arch, n_critics: int,
                           n_quantiles: int, batch: int) -> float:
    """Matmul FLOPs of ONE sb3-contrib TQC update (TQC.train), counted layer by layer.

    The issue's "about 2.7 GFLOP per update" at the peers' settings. A dense layer in -> out on
    B rows costs 2 B in out for its forward, its weight gradient and its input gradient each.
    sb3-contrib per update: actor forward on s' (no grad) and on s; target critics on (s', a');
    critics on (s, a) forward + weight grads + input grads of all but the first layer (the
    replay input needs none); the actor loss runs the critics on (s, a_pi) forward and
    backward, where torch forms the critics' weight gradients too (they require grad) and the
    input gradient of the whole concatenated [s, a] input; then the actor's weight grads and
    input grads of all but its first layer. Our update skips the actor loss's critic weight
    gradients and the obs part of its input gradient, so it executes fewer FLOPs (XLA's count).
    """
    def mlp(dims):
        return [2 * batch * a * b for a, b in zip(dims[:-1], dims[1:])]

    actor = mlp([obs_dim, *net_arch]) + [2 * 2 * batch * net_arch[-1] * action_dim]  # mu, log_std
    critic = [n_critics * f for f in mlp([obs_dim + action_dim, *net_arch, n_quantiles])]
    a_fwd, c_fwd = sum(actor), sum(critic)
    a_first, c_first = actor[0], critic[0]
    return (a_fwd                                # actor on s' (target)
            + c_fwd                              # target critics on (s', a')
            + a_fwd                              # actor on s (actor and alpha losses)
            + c_fwd + c_fwd + (c_fwd - c_first)  # critic loss: forward, dW, dX (not input)
            + c_fwd + c_fwd + c_fwd              # actor loss through the critics: fwd, dW, dX
            + a_fwd + (a_fwd - a_first))         # actor backward: dW, dX (not input)


def _update_flops(trainer, data) -> float:
    """XLA's FLOP count of one TQC update on one device-batch (cost analysis of the update)."""
    import jax

    from cryptorl_jax.agent.tqc import Batch, make_tqc

    n = trainer.batch_local
    t0 = int(data.start_range.first_start)
    example = trainer.observe(data, t0, np.zeros(3, np.float32))
    tqc = make_tqc(trainer.spec.tqc, example, 1)  # the same update, outside shard_map
    agent = tqc.init(jax.random.key(0))
    t = np.full(n, t0, np.int32)
    obs = jax.vmap(trainer.observe, in_axes=(None, 0, 0))(data, t, np.zeros((n, 3), np.float32))
    batch = Batch(obs=obs, action=np.zeros((n, 1), np.float32), reward=np.zeros(n, np.float32),
                  next_obs=obs, terminated=np.zeros(n, bool))
    lowered = jax.jit(tqc.update).lower(agent, batch, jax.random.key(1))
    cost = lowered.compile().cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def _synthetic(cfg, rows: int, n_features: int, embedding_dim: int | None, seed: int = 0):
    import jax.numpy as jnp

    from cryptorl_jax.env.trading import MarketData, make_start_range
    from cryptorl_jax.training.data import TrainData

    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.005, rows)))
    features = rng.normal(size=(rows, n_features)).astype(np.float32)
    market = MarketData.from_arrays(features, close, cfg.env)
    emb = None
    if embedding_dim is not None:
        emb = jnp.asarray(rng.normal(size=(rows, embedding_dim)).astype(np.float32))
    return TrainData(market=market, start_range=make_start_range(0, rows - 1, cfg.env, rows),
                     embeddings=emb)


def build_step(cfg, n_features: int, rows: int, segments: int = 1,
               critics: str | None = None, params: str | None = None):
    """The step `bench train` times and `bench cost` compiles: the config's trainer, its
    synthetic data (host arrays; K > 1 `segments`: K markets, same shapes, stacked), the init
    key, the fine-tuned encoders' parameters (pretrained-finetune only) and the members'
    Hyper and seeds; `critics` and `params` as `make_train`'s. Returns (trainer, data, key,
    enc_params, hyper, seeds)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from cryptorl_jax.encoder.mae import MAEEncoder
    from cryptorl_jax.training.data import stack_segments
    from cryptorl_jax.training.trainer import trainer_for

    mode = cfg.encoder.mode
    emb_dim = cfg.encoder.d_model if mode in ("random", "pretrained-frozen") else None
    trainer = trainer_for(cfg, n_features, emb_dim, segments=segments, critics=critics,
                          params=params)
    key = jax.random.key(0)
    if segments == 1:
        data = _synthetic(cfg, rows, n_features, emb_dim)
    else:
        data = stack_segments(
            [_synthetic(cfg, rows, n_features, emb_dim, seed=k) for k in range(segments)])
        key = jnp.stack([jax.random.key(k) for k in range(segments)])
    enc_params = None
    if mode == "pretrained-finetune":
        enc = MAEEncoder(n_features, cfg.env.window, cfg.encoder, rngs=nnx.Rngs(0))
        enc_params = nnx.split(enc, nnx.Param, ...)[1]
        if segments > 1:
            enc_params = jax.tree.map(lambda x: jnp.stack([x] * segments), enc_params)
    return (trainer, data, key, enc_params, trainer.default_hyper,
            [m.seed for m in trainer.default_members])


def measure(cfg, n_features: int, rows: int, chunks: int, flops: bool = True,
            segments: int = 1, critics: str | None = None, params: str | None = None) -> dict:
    """Compile, then time `chunks` calls of train_chunk; learning is on from the first step.
    `segments` K > 1: K synthetic segments (other markets, same shapes) in one step."""
    import jax

    trainer, data, key, enc_params, hyper, seeds = build_step(cfg, n_features, rows, segments,
                                                              critics, params)
    data = trainer.put_data(data)
    state = trainer.init(key, data, enc_params, hyper=hyper, seeds=seeds)
    # fill the buffer past learning_starts with one untimed chunk, then compile-time the next
    t0 = time.perf_counter()
    state, metrics = trainer.train_chunk(state, data, hyper)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    state, metrics = trainer.train_chunk(state, data, hyper)  # learning is on by now (see check)
    jax.block_until_ready(metrics)
    if float(np.mean(metrics["updates"])) < cfg.train.steps_per_chunk * cfg.tqc.gradient_steps:
        raise SystemExit("bench train: learning had not started in the warm-up chunk; lower "
                         "tqc.learning_starts or raise --chunk")
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(chunks):
        state, metrics = trainer.train_chunk(state, data, hyper)
    jax.block_until_ready(metrics)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    iters = chunks * cfg.train.steps_per_chunk
    out = {
        "env_steps_per_s": iters * cfg.train.n_envs / wall,
        "updates_per_s": iters * cfg.tqc.gradient_steps * trainer.population / wall,
        "aggregate_env_steps_per_s": iters * cfg.train.n_envs * trainer.population / wall,
        "compile_s": compile_s, "wall_s": wall, "cpu_util": cpu / wall,
        "trace_count": trainer.trace_counts["train_chunk"],
    }
    stats = jax.devices()[0].memory_stats() or {}  # None on the CPU
    if "peak_bytes_in_use" in stats:
        out["device_peak_gib"] = stats["peak_bytes_in_use"] / 2**30
    if flops:
        out["flops_per_update"] = _update_flops(trainer, data)
    return out


def _settings(cfg, n_features: int) -> dict:
    obs = (cfg.env.window * n_features + 3 if cfg.encoder.mode in ("none",
                                                                   "pretrained-finetune")
           else cfg.encoder.d_model + 3)
    return {"n_envs": cfg.train.n_envs, "batch": cfg.tqc.batch_size,
            "net_arch": list(cfg.tqc.net_arch), "n_quantiles": cfg.tqc.n_quantiles,
            "n_critics": cfg.tqc.n_critics, "updates_per_step": cfg.tqc.gradient_steps,
            "obs_window": [cfg.env.window, n_features], "policy_input": obs,
            "encoder_mode": cfg.encoder.mode, "n_seeds": cfg.train.n_seeds,
            "steps_per_chunk": cfg.train.steps_per_chunk, "buffer": cfg.tqc.buffer_size,
            "learning_starts": cfg.tqc.learning_starts}


def _run_peer(py: str, peers_dir: str, impl: str, steps: int | None) -> dict | None:
    script = os.path.join(peers_dir, f"bench_{impl}_tqc.py")
    cmd = [py, script, "--env", "trading", "--n-envs", "8"]
    if steps:
        cmd += ["--measure-steps", str(steps)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                             env=dict(os.environ, JAX_PLATFORMS="cpu"))
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"peer {impl}: failed to run ({exc})")
        return None
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        print(f"peer {impl}: failed (rc {out.returncode}): {out.stderr[-500:]}")
        return None
    return json.loads(lines[-1])


def population_main(args: argparse.Namespace, base: list[str]) -> None:
    """P = 1 and each P of args.population members of the same config, timed in one run."""
    from cryptorl_jax.config import load_config

    sizes = sorted({1, *(int(p) for p in str(args.population).split(","))})
    rows = {}
    for p in sizes:
        cfg = load_config(args.config, [*base, *args.overrides, f"train.n_seeds={p}"])
        res = measure(cfg, args.n_features, args.rows, args.chunks, flops=False,
                      critics=args.critics, params=args.params)
        res["aggregate_env_steps_per_s"] = res["env_steps_per_s"] * p
        rows[p] = res
        print(f"P = {p:3d}: aggregate env steps/s {res['aggregate_env_steps_per_s']:12.1f}, "
              f"per member {res['env_steps_per_s']:12.1f}, updates/s "
              f"{res['updates_per_s']:10.1f}, compile {res['compile_s']:.1f} s, peak memory "
              f"{res.get('device_peak_gib', float('nan')):.1f} GiB, x"
              f"{res['aggregate_env_steps_per_s'] / rows[1]['aggregate_env_steps_per_s']:.2f}"
              " of one agent")
    p = sizes[-1]
    single, pop = rows[1], rows[p]
    curve = [{"population": k, "aggregate_env_steps_per_s": r["aggregate_env_steps_per_s"],
              "per_member_env_steps_per_s": r["env_steps_per_s"],
              "updates_per_s": r["updates_per_s"], "compile_s": r["compile_s"],
              "device_peak_gib": r.get("device_peak_gib")}
             for k, r in rows.items()]
    print(json.dumps({"population": p,
                      "aggregate_env_steps_per_s": pop["aggregate_env_steps_per_s"],
                      "per_member_env_steps_per_s": pop["env_steps_per_s"],
                      "single_env_steps_per_s": single["env_steps_per_s"],
                      "compile_s": pop["compile_s"], "curve": curve}))


def segments_main(args: argparse.Namespace, base: list[str]) -> None:
    """K segments x S seeds in one compiled step against one segment (S seeds) at a time, in
    the same run: the ratio of aggregate env steps/s (K segments one after the other take K
    times one segment's time, so one segment's aggregate rate is the sequential rate)."""
    from cryptorl_jax.config import load_config

    k = int(args.segments)
    cfg = load_config(args.config, [*base, *args.overrides])
    one = measure(cfg, args.n_features, args.rows, args.chunks, flops=False,
                  critics=args.critics, params=args.params)
    batch = measure(cfg, args.n_features, args.rows, args.chunks, flops=False, segments=k,
                    critics=args.critics, params=args.params)
    ratio = batch["aggregate_env_steps_per_s"] / one["aggregate_env_steps_per_s"]
    for name, r in (("one segment", one), (f"{k} segments", batch)):
        print(f"{name:12s}: aggregate env steps/s {r['aggregate_env_steps_per_s']:12.1f}, per "
              f"member {r['env_steps_per_s']:10.1f}, compile {r['compile_s']:.1f} s, traced "
              f"{r['trace_count']}x")
    print(f"batched / sequential ({k} segments x {cfg.train.n_seeds} seeds): {ratio:.2f}x")
    print(json.dumps({"segments": k, "n_seeds": cfg.train.n_seeds, "ratio": ratio,
                      "sequential": one, "batched": batch,
                      "settings": _settings(cfg, args.n_features)}))


def main(args: argparse.Namespace) -> None:
    import jax

    from cryptorl_jax.config import load_config

    base = base_settings(args)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")
    peak = _matmul_peak()
    print(f"jitted float32 matmul peak (2048^3): {peak:.1f} GFLOP/s")
    if args.compare_finetune:
        common = ["env.window=64", "encoder.d_model=64", "encoder.depth=2", "encoder.n_heads=4",
                  "tqc.net_arch=[256, 256]", "tqc.batch_size=256", "train.n_envs=64",
                  "tqc.learning_starts=0", "train.n_seeds=1", "train.devices=1"]
        rows = {}
        for mode in ("pretrained-frozen", "pretrained-finetune"):
            cfg = load_config(args.config, [*base, *common, f"encoder.mode={mode}",
                                            *args.overrides])
            rows[mode] = measure(cfg, args.n_features, args.rows, args.chunks, flops=False,
                                 critics=args.critics, params=args.params)
            print(f"{mode:22s} env steps/s {rows[mode]['env_steps_per_s']:10.1f}  updates/s "
                  f"{rows[mode]['updates_per_s']:8.1f}  compile {rows[mode]['compile_s']:.1f} s")
        ratio = (rows["pretrained-frozen"]["env_steps_per_s"]
                 / rows["pretrained-finetune"]["env_steps_per_s"])
        print(f"frozen / finetune end-to-end speed-up: {ratio:.1f}x (target >= 20x)")
        print(json.dumps({"frozen": rows["pretrained-frozen"],
                          "finetune": rows["pretrained-finetune"], "speedup": ratio,
                          "settings": _settings(cfg, args.n_features)}))
        return
    if args.population:
        return population_main(args, base)
    if args.segments:
        return segments_main(args, base)
    cfg = load_config(args.config, [*base, *args.overrides])
    if cfg.tqc.learning_starts >= args.chunk * cfg.train.n_envs:
        print(f"note: learning_starts {cfg.tqc.learning_starts} is inside the first chunk of "
              f"{args.chunk * cfg.train.n_envs} env steps; the warm-up chunk absorbs it")
    res = measure(cfg, args.n_features, args.rows, args.chunks, critics=args.critics,
                  params=args.params)
    gflops = res["flops_per_update"] * res["updates_per_s"] / 1e9
    res["update_gflop"] = res["flops_per_update"] / 1e9
    res["achieved_gflops"] = gflops
    res["matmul_peak_gflops"] = peak
    res["roofline_fraction"] = gflops / peak
    settings = _settings(cfg, args.n_features)
    if cfg.encoder.mode == "none":
        stock = stock_tqc_update_flops(settings["policy_input"], 1, cfg.tqc.net_arch,
                                       cfg.tqc.n_critics, cfg.tqc.n_quantiles,
                                       cfg.tqc.batch_size)
        res["stock_tqc_update_gflop"] = stock / 1e9
        res["stock_equivalent_gflops"] = stock * res["updates_per_s"] / 1e9
        res["stock_roofline_fraction"] = res["stock_equivalent_gflops"] / peak
    print(f"{'implementation':28s} {'env steps/s':>12s} {'updates/s':>10s}")
    print(f"{'cryptorl_jax (fused, jit)':28s} {res['env_steps_per_s']:12.1f} "
          f"{res['updates_per_s']:10.1f}")
    if args.peers_python and args.peers_dir:
        for impl in ("sb3", "sbx"):
            peer = _run_peer(args.peers_python, args.peers_dir, impl, args.peers_steps)
            if peer is not None:
                res[f"peer_{impl}_env_steps_per_s"] = peer["env_steps_per_s"]
                print(f"{impl + ' TQC (peer harness)':28s} {peer['env_steps_per_s']:12.1f} "
                      f"{peer['updates_per_s']:10.1f}")
                res[f"ratio_vs_{impl}"] = res["env_steps_per_s"] / peer["env_steps_per_s"]
                print(f"  ratio cryptorl_jax / {impl}: {res[f'ratio_vs_{impl}']:.2f}x")
    print(f"update: {res['update_gflop']:.2f} GFLOP executed (XLA cost analysis); achieved "
          f"{gflops:.1f} GFLOP/s = {100 * res['roofline_fraction']:.0f}% of the matmul peak "
          f"{peak:.1f} GFLOP/s")
    if "stock_tqc_update_gflop" in res:
        print(f"stock sb3-contrib TQC update on this input: {res['stock_tqc_update_gflop']:.2f} "
              f"GFLOP (the issue's ~2.7 GFLOP convention); at our update rate that is "
              f"{res['stock_equivalent_gflops']:.1f} GFLOP/s = "
              f"{100 * res['stock_roofline_fraction']:.0f}% of the matmul peak")
    print(f"compile (first chunk, incl. its run): {res['compile_s']:.1f} s; train_chunk traced "
          f"{res['trace_count']} time(s)")
    print(json.dumps({"env_steps_per_s": res["env_steps_per_s"],
                      "updates_per_s": res["updates_per_s"], "compile_s": res["compile_s"],
                      "settings": settings,
                      **{k: v for k, v in res.items() if k not in ("env_steps_per_s",
                                                                    "updates_per_s",
                                                                    "compile_s")}}))
