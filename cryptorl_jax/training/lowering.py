"""The threefry hash lowered straight-line on the CPU too, as JAX lowers it for GPUs
(`unrolled_threefry`): the same bits, no loop per random draw.

JAX lowers `threefry2x32` (every `jax.random` split, fold_in and draw under the default key
implementation) two ways: on GPUs (and TPUs) as 20 rounds written out, which XLA fuses into
the kernel that uses the bits; on the CPU as a `lax.fori_loop` of 5 trips (a smaller program
that compiles faster). The loop is what the compiled training step spends its kernels on: in
configs/full.yaml's step, 11 such loops per iteration of the chunk, each a while loop with its
own carried copies, 1,369 kernel launches per iteration at P = 32 of which 1,023 are the hash
loops' (`cryptorl bench cost`, docs/benchmarks.md). The two lowerings are the same integer
arithmetic in the same order, so the random numbers, and every number trained from them, are
equal bit for bit (tests/test_lowering.py); only the program's shape differs, and with it the
CPU step's speed and the kernel counts `bench cost` reads, which are then the GPU's.

No library exposes this choice (jax.config has a switch for the GPU's kernel, not for the CPU's
loop), so it is made here by registering, for the CPU, the rule JAX itself registers for other
platforms: `jax._src.random.threefry2x32._threefry2x32_lowering_rule`. If a JAX version moves
it, nothing is registered, a warning says so, and the step keeps JAX's CPU loop (the same
numbers). `CRYPTORL_ROLLED_THREEFRY=1` in the environment keeps JAX's loop on purpose (to
compare the two).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("cryptorl_jax.training")

_STATE: dict[str, bool | None] = {"registered": None}


def register_threefry(unrolled: bool) -> None:
    """Register the CPU's threefry lowering: JAX's straight-line rule (True) or its own CPU
    loop (False). Raises ImportError / AttributeError where this JAX does not have them.
    Functions already compiled keep theirs (`jax.clear_caches()` drops them)."""
    from jax._src.random import threefry2x32 as threefry
    from jax.interpreters import mlir

    rule = threefry._threefry2x32_lowering_rule if unrolled \
        else threefry._threefry2x32_cpu_lowering_rule
    mlir.register_lowering(threefry.threefry2x32_p, rule, platform="cpu")


def unrolled_threefry() -> bool:
    """Register JAX's straight-line threefry lowering for the CPU (once per process; every
    later lowering uses it) unless CRYPTORL_ROLLED_THREEFRY is set. Returns whether it is in
    force."""
    if _STATE["registered"] is not None:
        return bool(_STATE["registered"])
    if os.environ.get("CRYPTORL_ROLLED_THREEFRY", "") not in ("", "0"):
        _STATE["registered"] = False
        return False
    try:
        register_threefry(True)
    except (ImportError, AttributeError) as exc:  # a JAX that moved its internals
        log.warning("the straight-line threefry lowering is not available in this JAX (%s): "
                    "the CPU step keeps JAX's loop (the same numbers, more kernels)", exc)
        _STATE["registered"] = False
        return False
    _STATE["registered"] = True
    return True
