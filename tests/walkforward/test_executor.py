"""The executor interface: executors run the callables they are given and import nothing of
the drivers that give them; the walk-forward driver cuts its segments into fixed batches."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cryptorl_jax.config import load_config
from cryptorl_jax.walkforward.driver import segment_batches
from cryptorl_jax.walkforward.executor import LocalExecutor
from cryptorl_jax.walkforward.segments import Segment

ROOT = Path(__file__).resolve().parents[2]


def test_the_local_executor_calls_when_the_result_is_asked_for():
    calls = []

    def fn(a, b=0):
        calls.append((a, b))
        return a + b

    ex = LocalExecutor()
    assert ex.put(obj := object()) is obj
    first, second = ex.submit(fn, 1, b=2), ex.submit(fn, 10)
    assert calls == []  # nothing runs before its result is asked for
    assert ex.wait([first, second]) is first
    assert ex.result(first, "first") == 3 and calls == [(1, 2)]
    ex.cancel([second])
    assert ex.result(second, "second") == 10


def test_the_local_executor_raises_the_calls_own_error():
    def boom():
        raise KeyboardInterrupt("killed")

    ex = LocalExecutor()
    with pytest.raises(KeyboardInterrupt, match="killed"):
        ex.result(ex.submit(boom), "boom")


@pytest.mark.parametrize("path", ["cryptorl_jax/walkforward/executor.py",
                                  "cryptorl_jax/cluster.py"])
def test_executors_import_no_driver(path):
    """An executor knows nothing of what it runs: no import of walkforward or tuning, and no
    import of the package inside a function (the circle it would hide)."""
    tree = ast.parse((ROOT / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert not node.module.startswith(("cryptorl_jax.walkforward",
                                               "cryptorl_jax.tuning")), node.module
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("cryptorl_jax"), (fn.name,
                                                                            node.module)


def test_segment_batches_are_fixed_and_skip_finished_batches():
    segs = [Segment(k, 0, 1, 1, 2) for k in range(5)]
    cfg = load_config(None, ["wfo.segments_per_batch=2"])
    got = segment_batches(cfg, segs, [segs[1], segs[4]])
    assert [([s.index for s in b], [s.index for s in t]) for b, t in got] == [
        ([0, 1], [1]), ([4], [4])]
    every = load_config(None, ["wfo.segments_per_batch=all"])
    (batch, todo), = segment_batches(every, segs, segs[2:])
    assert len(batch) == 5 and [s.index for s in todo] == [2, 3, 4]
