"""The package's layers point down (docs/architecture.md): an AST read of every module, no
import executed. A module imports only from its own package or from packages in lower layers,
and no set of modules imports itself round a circle (an import placed inside a function
counts: it is still an arrow). docs/architecture.md's layer list is checked against LAYERS.

The package root (`cryptorl_jax/__init__.py`) is the public facade above every layer: it names
modules of any layer in its `_PUBLIC` table and imports them on first use only (PEP 562), never
at import time; a module of the package imports nothing from the root but `__version__` (a
constant, not an arrow) and its subpackages. The facade's names count as the root's arrows in
the circle check."""

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


ROOT_CONSTANTS = ("__version__",)
"""What a module may import from the package root itself (constants: no arrow)."""


def _from_base(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom in module `name` (at `path`) imports from."""
    base = node.module or ""
    if node.level:
        parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    return base


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports, anywhere in its body (the root's
    constants, ROOT_CONSTANTS, are no arrow)."""
    found: set[str] = set()
    root = name.split(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(name, path, node)
            names = [a.name for a in node.names
                     if not (base == root and a.name in ROOT_CONSTANTS)]
            if base == root and not names:
                continue
            if base == root and any(f"{root}.{n}" not in known for n in names):
                found.add(root)  # a facade name: an arrow to the root itself
            targets = [base] + [f"{base}.{n}" for n in names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def facade(root: Path = PACKAGE) -> dict[str, str]:
    """The root's public names -> the module each is imported from on first use (its
    `_PUBLIC` table, read from the AST; {} without one)."""
    tree = ast.parse((root / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_PUBLIC" for t in node.targets):
            return {k: v[0] for k, v in ast.literal_eval(node.value).items()}
    return {}


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports; the root's arrows are its facade's."""
    known = modules(root)
    edges = {m: imports(m, p, known) for m, p in known.items()}
    edges[root.name] |= set(facade(root).values())
    return edges


def root_violations(root: Path = PACKAGE) -> list[str]:
    """Breaches of the facade's rules: the root importing a module of the package at import
    time (outside a function), a facade entry naming no module, and a module importing from
    the root anything but ROOT_CONSTANTS or a subpackage (or `import <root>` itself)."""
    known = modules(root)
    bad = []
    tree = ast.parse((root / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = [_from_base(root.name, root / "__init__.py", node)]
        else:
            continue
        bad += [f"{root.name} imports {t} at import time" for t in targets
                if t == root.name or t.startswith(root.name + ".")]
    bad += [f"{root.name}.{n}: {m} is no module of the package"
            for n, m in facade(root).items() if m not in known]
    for name, path in known.items():
        if name == root.name:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                bad += [f"{name}: import {root.name}" for a in node.names if a.name == root.name]
            elif isinstance(node, ast.ImportFrom) and _from_base(name, path, node) == root.name:
                bad += [f"{name}: from {root.name} import {a.name}" for a in node.names
                        if a.name not in ROOT_CONSTANTS and f"{root.name}.{a.name}" not in known]
    return bad


def layer_of(module: str) -> int | None:
    """The layer of a module (None for the package root: the facade above every layer,
    checked by `root_violations`)."""
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


def test_the_root_is_a_lazy_facade_above_the_layers():
    assert root_violations() == []
    assert set(facade()) >= {"Run", "compare_runs", "load_config", "run_walkforward",
                             "evaluate_window"}


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


def test_the_check_sees_a_breach_of_the_facade(tmp_path):
    """The facade's rules: an eager import in the root, a module importing a public name from
    the root, and the circle the root's lazy arrow closes are found; `__version__` is not."""
    pkg = tmp_path / "cryptorl_jax"
    (pkg / "core").mkdir(parents=True)
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from cryptorl_jax import __version__\n"
                                       "from cryptorl_jax import core\n")
    (pkg / "__init__.py").write_text(
        "__version__ = '0'\n_PUBLIC = {'A': ('cryptorl_jax.core.a', 'A')}\n")
    assert root_violations(pkg) == [] and circles(graph(pkg)) == []
    (pkg / "core" / "a.py").write_text("from cryptorl_jax import A\n")
    assert root_violations(pkg) == ["cryptorl_jax.core.a: from cryptorl_jax import A"]
    assert ["cryptorl_jax", "cryptorl_jax.core.a"] in circles(graph(pkg))
    (pkg / "__init__.py").write_text("from cryptorl_jax.core import a\n"
                                     "_PUBLIC = {'B': ('cryptorl_jax.core.b', 'B')}\n")
    (pkg / "core" / "a.py").write_text("")
    assert root_violations(pkg) == [
        "cryptorl_jax imports cryptorl_jax.core at import time",
        "cryptorl_jax.B: cryptorl_jax.core.b is no module of the package"]


if __name__ == "__main__":  # pragma: no cover - prints the block for docs/architecture.md
    print("\n".join(layer_lines()))
    pytest.main([__file__])
