"""core: the bottom layer. Units and names declared once (units.py, names.py), atomic file
writes (io.py), a run directory's file names (rundir.py), the test hooks that interrupt a run
(hooks.py), run provenance (provenance.py), machine-load measurement (machine.py) and where
the market cache lives (cache.py).

Nothing here imports another package of cryptorl_jax, and nothing imports JAX at module level.
"""
