"""The threefry hash lowered as JAX lowers it for GPUs, on the CPU (`threefry_as_on_gpu`):
the same bits, no loop per random draw; what `cryptorl bench cost` counts on a CPU host.

JAX lowers `threefry2x32` (every `jax.random` split, fold_in and draw under the default key
implementation) two ways: for GPUs (and TPUs) as its 20 rounds written out, which XLA fuses
into the kernel that uses the bits; for the CPU as a `lax.fori_loop` of 5 trips (a smaller
program that compiles faster). In configs/full.yaml's step the CPU's form is 11 such loops per
iteration of the chunk, each a while loop with its own carried copies: 1,023 of the 1,369
kernel launches per iteration XLA:CPU compiles at P = 32, which a GPU's program does not have.
The two lowerings are the same integer arithmetic, so the random numbers, and every number
trained from them, are equal bit for bit (tests/training/test_lowering.py); only the program's
shape differs.

Training keeps JAX's CPU rule: the straight-line form measured no faster on the 2-core CPU
(interleaved `bench train` A/B: 0.98x --match-peers, 1.05x built-in, noise) and compiled ~3 s
slower (docs/benchmarks.md). `bench cost` on a CPU host lowers the step with the GPU's rule
(`threefry_as_on_gpu`), so its kernel counts and bytes are those of the program a GPU gets
(`--native-rng` counts XLA:CPU's own loops).

No library exposes this choice (jax.config switches the GPU's custom kernel, not the CPU's
loop), so it is made by registering, for the CPU, the rule JAX registers for the other
platforms (`jax._src.random.threefry2x32._threefry2x32_lowering_rule`); a JAX that moved it
raises ImportError / AttributeError here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def register_threefry(unrolled: bool) -> None:
    """Register the CPU's threefry lowering: JAX's straight-line (GPU) rule if `unrolled`,
    else JAX's own CPU loop. Functions already compiled keep theirs (`jax.clear_caches()`
    drops them)."""
    from jax._src.random import threefry2x32 as threefry
    from jax.interpreters import mlir

    rule = threefry._threefry2x32_lowering_rule if unrolled \
        else threefry._threefry2x32_cpu_lowering_rule
    mlir.register_lowering(threefry.threefry2x32_p, rule, platform="cpu")


@contextlib.contextmanager
def threefry_as_on_gpu() -> Iterator[None]:
    """Within: the CPU lowers threefry as GPUs do (nothing compiled before is reused). After:
    JAX's CPU rule again, and the caches compiled within are dropped."""
    import jax

    jax.clear_caches()
    register_threefry(True)
    try:
        yield
    finally:
        register_threefry(False)
        jax.clear_caches()
