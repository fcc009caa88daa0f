"""cost: XLA's own counts of the fused training step, compiled but not run.

Builds the step exactly as `bench train` does (`benches.train.build_step`: the config with the
bench's settings, synthetic data of the same shapes), lowers and compiles `train_chunk` on
abstract state (`jax.eval_shape`: no replay buffer is allocated, nothing runs), and prints per
member-iteration (one iteration = train.n_envs env steps + tqc.gradient_steps updates of one
member; the loop body holds all P members, so its figures are divided by P):

- FLOPs and bytes accessed from XLA's `compiled.cost_analysis()` (which counts a while body
  once, checked on this backend: `training.cost.xla_counts_loop_body_once`), and the FLOPs of
  one TQC update alone (`bench train`'s figure);
- bytes counted op by op from the optimized HLO (`training.cost.loop_cost`): every top-level
  kernel of the loop body, operands + outputs, in-place buffer updates at the update's size;
- kernels per iteration (launches: a nested loop's kernels times its trip count; and
  instructions, nested loop bodies once), conditionals and host transfers in the loop body;
- the roofline: the time one member-iteration needs at each device's peak FLOP/s and memory
  bandwidth, which bound dominates, and the env steps/s per device that bound allows (n_envs /
  the bound, whatever P is: latency and launch overheads are not in it); and against this
  machine's measured float32 matmul peak (the one timed thing; its bandwidth is not measured).

On a GPU host the same code path reports the GPU compiler's counts (jax's default backend).
On a CPU host the step is built in the form a GPU gets, so the counts are of that program:
the threefry hash lowered with jax's GPU rule (`training.lowering.threefry_as_on_gpu`: the
same random bits, without the 5-trip while loop per draw that jax emits for XLA:CPU only,
1,023 of full.yaml's 1,369 launches per iteration at P = 32), the critics' layers as one
batched matmul each (`agent.networks.critic_form`: the same parameters and numbers to float
rounding) and the parameters carried flat through the chunk's loops
(`training.trainer.step_params_form`: one optimiser kernel per network). `--native` counts the
CPU's own program; `--critics` and `--params` pick one choice.
The step is built with train.devices=1: the figures are per device.

Device table (dense peaks; NVIDIA quotes tensor-core figures "with sparsity", twice these):
NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022), table "NVIDIA H100 SXM5": TF32
tensor 494.7 TFLOP/s, BF16 tensor 989.4 TFLOP/s, HBM3 3.35 TB/s (also the H100 datasheet,
nvidia.com/en-us/data-center/h100). NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200,
H200 SXM): TF32 989 / BF16 1,979 TFLOP/s with sparsity (494.7 / 989.4 dense: the same Hopper
GH100 compute), HBM3e 4.8 TB/s. jax runs float32 matmuls on these GPUs as TF32 by default
(precision DEFAULT), so the bound of today's float32 step uses the TF32 peak; BF16 is what an
opt-in bfloat16 compute dtype could reach.

    cryptorl bench cost --config configs/full.yaml --population 32
    cryptorl bench cost --match-peers --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import time
from functools import partial

DEVICES = {  # name: (TF32 dense FLOP/s, BF16 dense FLOP/s, HBM bytes/s); sources in the doc
    "H100 SXM": (494.7e12, 989.4e12, 3.35e12),
    "H200 SXM": (494.7e12, 989.4e12, 4.8e12),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from benches.train import add_step_arguments

    add_step_arguments(parser)
    parser.add_argument("--population", type=int, default=None, metavar="P",
                        help="P members in the step (default: the config's train.n_seeds)")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--top", type=int, default=10, metavar="N",
                        help="list the N kernels that move the most bytes (default 10)")
    parser.add_argument("--no-peak", action="store_true",
                        help="skip the timed matmul peak of this machine")
    parser.add_argument("--native", action="store_true",
                        help="on a CPU host, count the CPU's own program: XLA:CPU's threefry "
                             "loops, per-critic matmuls and parameter trees (default: the "
                             "GPU's form of all three, the same numbers; see the doc)")


def step_config(args: argparse.Namespace):
    """The config of the step (bench train's settings, one device, P = --population)."""
    from benches.train import base_settings
    from cryptorl_jax.config import load_config

    pop = [] if args.population is None else [f"train.n_seeds={args.population}"]
    return load_config(args.config, [*base_settings(args), *args.overrides, "train.devices=1",
                                     *pop])


def compile_step(cfg, n_features: int, rows: int, critics: str | None = None,
                 params: str | None = None):
    """`train_chunk` of bench train's step, lowered and compiled on abstract state (nothing
    allocated but the synthetic market). Returns (compiled, trainer, host data)."""
    import jax

    from benches.train import build_step
    from cryptorl_jax.training.trainer import needs_obs_noise

    trainer, data, key, enc_params, hyper, seeds = build_step(cfg, n_features, rows,
                                                              critics=critics, params=params)
    abstract = jax.eval_shape(lambda *x: x, data, hyper)
    state = jax.eval_shape(lambda k, d, e, h: trainer.init(k, d, e, hyper=h, seeds=seeds),
                           key, data, enc_params, hyper)
    # the step a run of this config compiles: with observation noise only if a member has any
    # (decided from the concrete values; traced, train_chunk would assume noise)
    noisy = needs_obs_noise(hyper)
    chunk = jax.jit(partial(trainer.train_chunk, noisy=noisy),
                    donate_argnums=(0,))  # donated as train_chunk's own
    return chunk.lower(state, *abstract).compile(), trainer, data


def roofline(flops: float, nbytes: float, n_envs: int, peak: float | None) -> list[dict]:
    """Per member-iteration time bounds at each device (and at the measured peak)."""
    rows = []
    for name, (tf32, bf16, bw) in DEVICES.items():
        t_c, t_m = flops / tf32, nbytes / bw
        bound = max(t_c, t_m)
        rows.append({"device": name, "tf32_flops": tf32, "bf16_flops": bf16, "bandwidth": bw,
                     "compute_s": t_c, "compute_bf16_s": flops / bf16, "memory_s": t_m,
                     "bound": "bandwidth" if t_m >= t_c else "compute",
                     "max_env_steps_per_s": n_envs / bound})
    if peak:
        rows.append({"device": "this machine (measured f32 matmul)", "tf32_flops": peak,
                     "bf16_flops": None, "bandwidth": None, "compute_s": flops / peak,
                     "compute_bf16_s": None, "memory_s": None,
                     "bound": "compute (bandwidth not measured)",
                     "max_env_steps_per_s": n_envs * peak / flops})
    return rows


def measure(args: argparse.Namespace) -> dict:
    """The counts of the step `args` say (see the module doc), as a dict."""
    import jax

    from benches.train import _matmul_peak, _update_flops
    from cryptorl_jax.training.cost import loop_cost, xla_counts_loop_body_once, xla_totals
    from cryptorl_jax.training.lowering import threefry_as_on_gpu

    cfg = step_config(args)
    gpu_form = jax.default_backend() == "cpu" and not args.native
    critics = args.critics or ("batched" if gpu_form else None)
    params = args.params or ("flat" if gpu_form else None)
    t0 = time.perf_counter()
    with threefry_as_on_gpu() if gpu_form else contextlib.nullcontext():
        compiled, trainer, data = compile_step(cfg, args.n_features, args.rows, critics,
                                               params)
    compile_s = time.perf_counter() - t0
    p, iters = trainer.population, cfg.train.steps_per_chunk
    loop = loop_cost(compiled.as_text(), trip_count=iters)
    totals = xla_totals(compiled)
    once = xla_counts_loop_body_once()
    per = p if once else p * iters
    flops = totals["flops"] / per
    op_bytes = loop.bytes / p
    peak = None
    if not args.no_peak:
        peak = 1e9 * max(_matmul_peak(1024, 5), _matmul_peak(2048, 3))
    device = jax.devices()[0]
    return {
        "config": args.config, "population": p, "n_envs": cfg.train.n_envs,
        "batch": cfg.tqc.batch_size, "updates_per_iteration": cfg.tqc.gradient_steps,
        "chunk_iterations": iters, "backend": device.platform, "device": device.device_kind,
        "machine": platform.processor() or platform.machine(), "jax": jax.__version__,
        "compile_s": compile_s,
        "rng_lowering": "gpu" if gpu_form else "native",
        "critic_form": trainer.critic_form, "params_form": trainer.params_form,
        "flops_per_member_iteration": flops,
        "update_flops": _update_flops(trainer, data) * cfg.tqc.gradient_steps,
        "xla_bytes_per_member_iteration": totals["bytes_accessed"] / per,
        "op_bytes_per_member_iteration": op_bytes,
        "op_bytes_nested_loops_once": loop.static_bytes / p,
        "kernels_per_iteration": loop.kernels,
        "kernel_instructions_per_iteration": loop.static_kernels,
        "copy_instructions_per_iteration": loop.copies,
        "conditionals_per_iteration": loop.conditionals,
        "host_transfers_per_iteration": loop.host_transfers,
        "nested_loops": loop.whiles, "unknown_trip_counts": loop.unknown_trip_counts,
        "xla_counts_loop_body_once": once,
        "matmul_peak_flops": peak,
        "roofline": roofline(flops, op_bytes, cfg.train.n_envs, peak),
        "top": [{"bytes_per_member": b / p, "name": n, "opcode": o, "op_name": op}
                for b, n, o, op in loop.top(max(args.top, 20))],
    }


def _print(res: dict, top: int) -> None:
    p = res["population"]
    print(f"step: {res['config'] or 'built-in config'}, P = {p}, {res['n_envs']} envs, batch "
          f"{res['batch']}, {res['chunk_iterations']} iterations a chunk; {res['backend']} "
          f"({res['device']}), jax {res['jax']}; compiled in {res['compile_s']:.1f} s")
    if res["backend"] == "cpu":
        rng = ("threefry as GPUs lower it (straight-line)" if res["rng_lowering"] == "gpu"
               else "XLA:CPU's threefry loops")
        print(f"program counted: {rng}, critics {res['critic_form']}, parameters "
              f"{res['params_form']} (the same numbers; --native: the CPU's own program; "
              "--critics, --params: one choice)")
    print(f"per member-iteration ({res['n_envs']} env steps + {res['updates_per_iteration']} "
          "update):")
    print(f"  FLOPs (XLA cost analysis)        {res['flops_per_member_iteration'] / 1e9:10.3f} "
          f"GFLOP (one update alone: {res['update_flops'] / 1e9:.3f})")
    print(f"  bytes accessed (XLA)             {res['xla_bytes_per_member_iteration'] / 1e6:10.1f}"
          " MB")
    print(f"  bytes counted op by op           {res['op_bytes_per_member_iteration'] / 1e6:10.1f}"
          f" MB ({res['op_bytes_nested_loops_once'] / 1e6:.1f} with nested loops once; in-place "
          "updates at the update's size)")
    print(f"per iteration (all {p} members, one loop body):")
    k, c = res["kernel_instructions_per_iteration"], res["copy_instructions_per_iteration"]
    print(f"  kernels launched                 {res['kernels_per_iteration']:10.0f} "
          f"({res['kernel_instructions_per_iteration']:.0f} instructions with nested loops once: "
          f"{k - c:.0f} fusions and ops + {c:.0f} copies; {res['nested_loops']:.0f} nested loops)")
    print(f"  conditionals                     {res['conditionals_per_iteration']:10.0f}")
    print(f"  host transfers                   {res['host_transfers_per_iteration']:10.0f}")
    print("roofline per member-iteration (bound = the larger; env steps/s per device at it):")
    print(f"  {'device':36s} {'compute TF32':>12s} {'(BF16)':>9s} {'memory':>9s}  bound"
          f"{'':6s} {'max env steps/s':>15s}")
    for r in res["roofline"]:
        mem = "-" if r["memory_s"] is None else f"{r['memory_s'] * 1e6:7.1f}us"
        bf = "-" if r["compute_bf16_s"] is None else f"{r['compute_bf16_s'] * 1e6:7.1f}us"
        print(f"  {r['device']:36s} {r['compute_s'] * 1e6:10.1f}us {bf:>9s} {mem:>9s}  "
              f"{r['bound']:10s} {r['max_env_steps_per_s']:15,.0f}")
    if res["matmul_peak_flops"]:
        print(f"  (this machine's float32 matmul peak: {res['matmul_peak_flops'] / 1e9:.1f} "
              "GFLOP/s, best of 1024^3 and 2048^3)")
    if top:
        print(f"the {top} kernels that move the most bytes (per member-iteration):")
        for t in res["top"][:top]:
            where = re.sub(r"^.*?/while/body/(closed_call/)?", "", t["op_name"]) or t["name"]
            print(f"  {t['bytes_per_member'] / 1e6:9.2f} MB  {t['opcode']:12s} {where[-100:]}")


def main(args: argparse.Namespace) -> None:
    res = measure(args)
    if args.json:
        print(json.dumps(res))
    else:
        _print(res, args.top)
