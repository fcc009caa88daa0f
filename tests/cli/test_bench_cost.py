"""`cryptorl bench cost`: XLA's counts of bench train's step on a tiny config, compiled and not
run. The counts are positive and the same in two calls (one through `main(argv)`), and a
doubled batch doubles the update's FLOPs; on a CPU host the program counted is the GPU's form
unless --native. Four compilations of the tiny step in all."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from cryptorl_jax.cli import main as cli_main

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
TINY = ["--set", "encoder.mode=none", "--set", "env.window=8", "--set", "env.episode_length=64",
        "--set", "env.vol_window=48", "--set", "env.vol_halflife_hours=12",
        "--set", "tqc.net_arch=[16, 16]", "--set", "tqc.buffer_size=2048",
        "--set", "tqc.n_quantiles=5", "--set", "tqc.top_quantiles_to_drop_per_net=1",
        "--set", "train.n_envs=4", "--chunk", "4", "--rows", "600", "--n-features", "4",
        "--population", "1", "--no-peak"]
POSITIVE = ("flops_per_member_iteration", "update_flops", "xla_bytes_per_member_iteration",
            "op_bytes_per_member_iteration", "kernels_per_iteration",
            "kernel_instructions_per_iteration")
COUNTS = (*POSITIVE, "conditionals_per_iteration", "host_transfers_per_iteration",
          "copy_instructions_per_iteration", "op_bytes_nested_loops_once")


@pytest.fixture(scope="module")
def cost():
    sys.path.insert(0, str(SCRIPTS))
    try:
        from benches import cost
        yield cost
    finally:
        sys.path.remove(str(SCRIPTS))


def _measure(cost, *extra: str) -> dict:
    parser = argparse.ArgumentParser()
    cost.add_arguments(parser)
    return cost.measure(parser.parse_args([*TINY, *extra]))


@pytest.fixture(scope="module")
def batch32(cost):
    return _measure(cost, "--set", "tqc.batch_size=32")


def test_counts_positive_and_deterministic_through_the_cli(batch32, capsys):
    assert all(batch32[k] > 0 for k in POSITIVE), {k: batch32[k] for k in POSITIVE}
    assert batch32["chunk_iterations"] == 4 and batch32["population"] == 1
    assert batch32["host_transfers_per_iteration"] == 0
    rc = cli_main(["bench", "cost", *TINY, "--set", "tqc.batch_size=32", "--json"])
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0
    assert {k: again[k] for k in COUNTS} == {k: batch32[k] for k in COUNTS}
    assert [r["device"] for r in again["roofline"]] == ["H100 SXM", "H200 SXM"]
    assert all(r["max_env_steps_per_s"] > 0 for r in again["roofline"])


def test_doubling_the_batch_doubles_the_update_flops(cost, batch32):
    """The update's FLOPs are linear in the batch but for the optimiser's per-parameter work:
    2x the batch gives 1.75x .. 2.0x the update's FLOPs (1.89x measured here), and more
    FLOPs and bytes per member-iteration."""
    batch64 = _measure(cost, "--set", "tqc.batch_size=64")
    ratio = batch64["update_flops"] / batch32["update_flops"]
    print(f"update FLOPs, batch 64 / batch 32: {ratio:.4f}")
    assert 1.75 <= ratio <= 2.0, ratio
    assert batch64["flops_per_member_iteration"] > 1.5 * batch32["flops_per_member_iteration"]
    assert batch64["op_bytes_per_member_iteration"] > batch32["op_bytes_per_member_iteration"]


def test_text_output(cost, batch32, capsys):
    cost._print(batch32, 3)
    out = capsys.readouterr().out
    for text in ("GFLOP", "bytes counted op by op", "kernels launched", "conditionals",
                 "H200 SXM", "bandwidth", "the 3 kernels that move the most bytes"):
        assert text in out, out


def test_bad_input_names_the_key(capsys):
    assert cli_main(["bench", "cost", "--set", "tqc.batch_siz=64", "--no-peak"]) == 2
    assert "tqc.batch_siz" in capsys.readouterr().err


def test_on_a_cpu_host_the_program_counted_is_the_gpus(cost, batch32):
    """The default counts the step with threefry lowered as jax lowers it for GPUs (no while
    loop per draw), the critics batched and the parameters flat; --native counts the CPU's own
    program: XLA:CPU's loops, per-critic matmuls, parameter trees, more launches, the update's
    FLOPs within 2 %."""
    if batch32["backend"] != "cpu":
        pytest.skip("a CPU host's choice")
    native = _measure(cost, "--set", "tqc.batch_size=32", "--native")
    assert (batch32["rng_lowering"], native["rng_lowering"]) == ("gpu", "native")
    assert (batch32["critic_form"], native["critic_form"]) == ("batched", "per-critic")
    assert (batch32["params_form"], native["params_form"]) == ("flat", "tree")
    assert batch32["nested_loops"] == 0 < native["nested_loops"]
    assert native["kernels_per_iteration"] > batch32["kernels_per_iteration"]
    assert native["update_flops"] == pytest.approx(batch32["update_flops"], rel=0.02)
