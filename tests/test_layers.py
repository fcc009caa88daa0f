"""The package's layers point down (docs/architecture.md): an AST read of every module, no
import executed. A module imports only from its own package or from packages in lower layers,
and no set of modules imports itself round a circle (an import placed inside a function
counts: it is still an arrow). docs/architecture.md's layer list is checked against LAYERS."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cryptorl_jax"

# Bottom to top. Packages on one line are peers: they import none of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("config",),
    ("market",),
    ("features",),
    ("regimes",),
    ("encoder", "env", "agent"),
    ("training",),
    ("backtest",),
    ("report",),
    ("walkforward",),
    ("tuning", "studies", "paper"),
    ("cluster",),
    ("cli",),
)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    return {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted(root.rglob("*.py"))}


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports, anywhere in its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    known = modules(root)
    return {m: imports(m, p, known) for m, p in known.items()}


def layer_of(module: str) -> int | None:
    """The layer of a module (None for the top-level package's own __init__)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for i, group in enumerate(LAYERS):
        if parts[1] in group:
            return i
    raise AssertionError(f"{module}: its package is in no layer of LAYERS (tests/test_layers.py)")


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every arrow from a module to a package of its own layer or above (other than its own)."""
    bad = []
    for m, targets in sorted(edges.items()):
        lm = layer_of(m)
        for t in sorted(targets):
            lt = layer_of(t)
            if lm is None or lt is None or m.split(".")[1] == t.split(".")[1]:
                continue
            if lt >= lm:
                bad.append(f"{m} -> {t}")
    return bad


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def layer_lines() -> list[str]:
    """LAYERS as docs/architecture.md lists them (top first)."""
    return [f"{len(LAYERS) - i:2d}. " + ", ".join(g) for i, g in enumerate(reversed(LAYERS))]


def test_no_upward_import():
    assert upward(graph()) == []


def test_no_import_circle():
    assert circles(graph()) == []


def test_every_package_has_a_layer():
    for m in modules():
        layer_of(m)


def test_architecture_lists_the_layers():
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = "\n".join(layer_lines())
    assert block in text, f"docs/architecture.md must list the layers as:\n{block}"


def test_the_check_sees_an_upward_import(tmp_path):
    """The checker itself: an upward arrow and a circle planted in a copy are found."""
    pkg = tmp_path / "cryptorl_jax"
    for sub in ("core", "config"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from cryptorl_jax.config import b\n")
    (pkg / "config" / "b.py").write_text("def f():\n    from cryptorl_jax.core import a\n")
    edges = graph(pkg)
    assert "cryptorl_jax.core.a -> cryptorl_jax.config.b" in upward(edges)
    assert ["cryptorl_jax.config.b", "cryptorl_jax.core.a"] in circles(edges)
    (pkg / "core" / "a.py").write_text("import numpy\n")
    assert upward(graph(pkg)) == [] and circles(graph(pkg)) == []


if __name__ == "__main__":  # pragma: no cover - prints the block for docs/architecture.md
    print("\n".join(layer_lines()))
    pytest.main([__file__])
