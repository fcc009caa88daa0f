"""XLA's own counts of a compiled step, read from its optimized HLO (`cryptorl bench cost`).

`loop_cost(compiled.as_text())` finds the step's training loop (the `while` of the chunk's
`lax.scan`) in the optimized HLO module and counts, for ONE iteration of it:

- bytes, op by op: for each top-level instruction of the loop body (a fusion or an unfused
  op) the bytes of its operands plus the bytes of its outputs, as if each kernel read its
  inputs from and wrote its outputs to memory once. Where a kernel touches only part of a
  buffer the part is counted: an in-place update (a `dynamic-update-slice` or `scatter` into a
  buffer, or a fusion whose root is one) at the size of the update (read the update, write
  that many bytes), not of the whole buffer; a read through `slice`, `dynamic-slice` or
  `gather` (also inside a fusion, of one of its parameters) at the size read.
- kernels: the top-level fusions and non-trivial ops (all but parameter, get-tuple-element,
  tuple, constant and bitcast); the count of launches per iteration.
- conditionals (`conditional`: a `lax.cond` that XLA kept) and host transfers (send, recv,
  infeed, outfeed, and custom calls that move data to or from the host: host callbacks,
  memory-space moves).

Nested control flow is followed: a `while` inside the body counts its body (and condition)
times its known trip count (XLA's `known_trip_count`; 1 where XLA does not know it, and then
`unknown_trip_counts` says so), a `conditional` counts its heaviest branch (the learning
branch of a warm-up-or-learn choice), a `call` its callee.

Why it is written here: XLA's `compiled.cost_analysis()` gives only the module's totals
(FLOPs, "bytes accessed", with a while body counted once; see `xla_counts_loop_body_once`), and
no library reads the optimized HLO op by op to give per-kernel traffic, kernel and conditional
counts of one loop iteration (jax exposes the text; XLA's own HloCostAnalysis per-op figures
are not exposed to Python). The parser reads the text format of `HloModule::ToString`, which
is stable in the parts used here (computations, `%name = type opcode(operands), attrs`).
It needs no JAX except `xla_counts_loop_body_once`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

TRIVIAL = frozenset({"parameter", "get-tuple-element", "tuple", "constant", "bitcast"})
SLICING = frozenset({"slice", "dynamic-slice", "gather"})
IN_PLACE = frozenset({"dynamic-update-slice", "scatter"})
HOST_OPS = frozenset({"send", "recv", "infeed", "outfeed"})
HOST_CALL = re.compile(r"host|callback", re.IGNORECASE)

_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*")
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([^\]]*)\]")
_CALLED = re.compile(r"\b(calls|to_apply|body|condition|true_computation|false_computation)"
                     r"=%([\w.\-]+)")
_BRANCHES = re.compile(r"\b(?:branch_computations|calls)=\{([^}]*)\}")
_TRIP = re.compile(r'known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')
_TARGET = re.compile(r'custom_call_target="([^"]*)"')
_OP_NAME = re.compile(r'op_name="([^"]*)"')


class HloParseError(ValueError):
    """The text is not an optimized HLO module this reader understands."""


@dataclass
class Instr:
    name: str
    type: str  # the result type as printed: f32[4,16]{1,0} or a tuple (..., ...)
    opcode: str
    operands: list[str]
    attrs: str
    root: bool

    def called(self) -> dict[str, list[str]]:
        """Called computations by role (calls, body, condition, branches, ...)."""
        out: dict[str, list[str]] = {}
        for role, name in _CALLED.findall(self.attrs):
            out.setdefault(role, []).append(name)
        for group in _BRANCHES.findall(self.attrs):
            out.setdefault("branches", []).extend(
                n.strip().lstrip("%") for n in group.split(",") if n.strip())
        if "true_computation" in out:  # the old two-branch spelling of a conditional
            out["branches"] = out.pop("false_computation", []) + out.pop("true_computation")
        return out

    @property
    def op_name(self) -> str:
        m = _OP_NAME.search(self.attrs)
        return m.group(1) if m else ""


@dataclass
class Computation:
    name: str
    instrs: list[Instr]
    entry: bool = False

    def __post_init__(self) -> None:
        self.by_name = {i.name: i for i in self.instrs}
        roots = [i for i in self.instrs if i.root]
        self.root = roots[-1] if roots else self.instrs[-1]


def _balanced(text: str, start: int) -> int:
    """Index just past the bracket group opening at text[start]."""
    depth = 0
    for k in range(start, len(text)):
        c = text[k]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return k + 1
    raise HloParseError(f"unbalanced brackets in: {text[:200]}")


def _parse_instr(line: str) -> Instr | None:
    m = _INSTR.match(line)
    if m is None:
        return None
    pos = m.end()
    if line[pos] == "(":
        end = _balanced(line, pos)
    else:
        end = line.index(" ", pos)
    type_ = line[pos:end]
    rest = line[end:].lstrip()
    om = re.match(r"([\w\-]+)\(", rest)
    if om is None:
        raise HloParseError(f"no opcode in: {line[:200]}")
    close = _balanced(rest, om.end() - 1)
    inside = rest[om.end():close - 1]
    operands = [] if om.group(1) == "constant" else re.findall(r"%([\w.\-]+)", inside)
    return Instr(name=m.group(2), type=type_, opcode=om.group(1), operands=operands,
                 attrs=rest[close:], root=bool(m.group(1)))


def parse_module(text: str) -> dict[str, Computation]:
    """The computations of an HLO module's text, by name (the entry's `.entry` is True)."""
    comps: dict[str, Computation] = {}
    current: tuple[str, bool] | None = None
    instrs: list[Instr] = []
    for line in text.splitlines():
        if current is None:
            h = _HEADER.match(line)
            if h:
                current, instrs = (h.group(2), bool(h.group(1))), []
            continue
        if line.strip() == "}":
            if instrs:
                comps[current[0]] = Computation(current[0], instrs, entry=current[1])
            current = None
            continue
        ins = _parse_instr(line)
        if ins is not None:
            instrs.append(ins)
    if not any(c.entry for c in comps.values()):
        raise HloParseError("no ENTRY computation: not the text of an HLO module")
    return comps


def _dtype_bytes(dtype: str) -> float:
    if dtype == "pred":
        return 1.0
    m = re.search(r"(\d+)", dtype)
    return int(m.group(1)) / 8 if m else 0.0  # token[] and opaque types carry no bytes


def type_bytes(type_: str) -> float:
    """Bytes of a printed HLO type (an array or a tuple of arrays)."""
    total = 0.0
    for dtype, dims in _ARRAY.findall(type_):
        n = 1
        for d in dims.replace("<=", "").split(","):
            if d.strip():
                n *= int(d)
        total += n * _dtype_bytes(dtype)
    return total


@dataclass
class Cost:
    """One loop iteration's counts (see the module doc)."""

    bytes: float = 0.0  # a nested loop's bytes times its trip count
    static_bytes: float = 0.0  # a nested loop's body counted once
    kernels: float = 0.0  # launches: a nested loop's kernels times its trip count
    static_kernels: float = 0.0  # instructions: a nested loop's body counted once
    copies: float = 0.0  # of those instructions, copies (XLA's copy insertion, layouts)
    conditionals: float = 0.0
    host_transfers: float = 0.0
    whiles: float = 0.0  # nested loops in the body (instructions)
    unknown_trip_counts: int = 0
    trip_count: int | None = None  # the training loop's own trip count
    # (bytes, name, opcode, op_name) of each kernel
    items: list[tuple[float, str, str, str]] = field(default_factory=list)

    def add(self, other: Cost, times: float = 1.0) -> None:
        self.bytes += times * other.bytes
        self.static_bytes += other.static_bytes
        self.kernels += times * other.kernels
        self.static_kernels += other.static_kernels
        self.copies += other.copies
        self.conditionals += times * other.conditionals
        self.host_transfers += times * other.host_transfers
        self.whiles += other.whiles
        self.unknown_trip_counts += other.unknown_trip_counts
        self.items += [(times * b, n, o, p) for b, n, o, p in other.items]

    def top(self, n: int = 10) -> list[tuple[float, str, str, str]]:
        """The n instructions that move the most bytes (bytes, name, opcode, op_name)."""
        return sorted(self.items, key=lambda t: -t[0])[:n]


def _buffers(node: Instr) -> list[str]:
    """The operands an in-place update writes into (scatter: inputs..., indices, updates...)."""
    if node.opcode == "dynamic-update-slice":
        return node.operands[:1]
    return node.operands[:(len(node.operands) - 1) // 2]


class _Reader:
    def __init__(self, comps: dict[str, Computation]):
        self.comps = comps
        self.types = {i.name: i.type for c in comps.values() for i in c.instrs}

    def size(self, name: str) -> float:
        return type_bytes(self.types.get(name, ""))

    # ---- one instruction's bytes
    def instr_bytes(self, ins: Instr) -> float:
        op, ops = ins.opcode, ins.operands
        if op in IN_PLACE:  # read the update and the indices, write the update's bytes
            k = len(_buffers(ins))
            return sum(self.size(o) for o in ops[k:]) + self._update_bytes(ins)
        if op in SLICING:
            return 2 * type_bytes(ins.type) + sum(self.size(o) for o in ops[1:])
        if op == "fusion":
            return self.fusion_bytes(ins)
        return sum(self.size(o) for o in ops) + type_bytes(ins.type)

    def fusion_bytes(self, ins: Instr) -> float:
        comp = self.comps[ins.called()["calls"][0]]
        users: dict[str, list[Instr]] = {}
        for i in comp.instrs:
            for o in i.operands:
                users.setdefault(o, []).append(i)
        outs = comp.root.operands if comp.root.opcode == "tuple" else [comp.root.name]
        in_place: set[str] = set()  # names of the root's in-place updates
        written = 0.0
        for name in outs:
            node = comp.by_name[name]
            while node.opcode == "bitcast":
                node = comp.by_name[node.operands[0]]
            if node.opcode in IN_PLACE:  # written: the update's bytes, not the buffer's
                in_place.add(node.name)
                written += self._update_bytes(node)
            else:
                written += type_bytes(node.type)

        def read(name: str, full: float) -> float:
            total = 0.0
            for u in users.get(name, []):
                if u.opcode == "bitcast":
                    total += read(u.name, full)
                elif u.name in in_place and name in _buffers(u):
                    continue  # the buffer updated in place: only the update moves
                elif u.operands[0] == name and u.opcode in SLICING:
                    total += type_bytes(u.type)
                else:
                    return full
            return min(total, full)

        params = [i for i in comp.instrs if i.opcode == "parameter"]
        return written + sum(read(p.name, type_bytes(p.type)) for p in params)

    def _update_bytes(self, node: Instr) -> float:
        """The bytes an in-place update writes: its update operand(s)."""
        if node.opcode == "dynamic-update-slice":
            return self.size(node.operands[1])
        k = len(_buffers(node))
        return sum(self.size(o) for o in node.operands[k + 1:])

    # ---- a computation's counts, control flow followed
    def cost(self, comp_name: str, depth: int = 0) -> Cost:
        if depth > 50:
            raise HloParseError(f"computations nested too deep at {comp_name}")
        out = Cost()
        for ins in self.comps[comp_name].instrs:
            op, called = ins.opcode, ins.called()
            if op in TRIVIAL or op.endswith("-done") or op == "async-update":
                continue  # the second half of an async pair: its start is the op
            if op == "while":
                m = _TRIP.search(ins.attrs)
                n = int(m.group(1)) if m else 1
                inner = self.cost(called["body"][0], depth + 1)
                inner.add(self.cost(called["condition"][0], depth + 1))
                out.add(inner, n)
                out.whiles += 1
                out.unknown_trip_counts += 0 if m else 1
            elif op == "conditional":
                branches = [self.cost(b, depth + 1) for b in called["branches"]]
                out.add(max(branches, key=lambda c: (c.bytes, c.kernels)))
                out.conditionals += 1
            elif op == "call" or (op == "async-start" and "calls" in called):
                for c in called.get("calls", []) + called.get("to_apply", []):
                    out.add(self.cost(c, depth + 1))
            else:
                b = self.instr_bytes(ins)
                out.bytes += b
                out.static_bytes += b
                out.kernels += 1
                out.static_kernels += 1
                out.copies += op == "copy"
                out.items.append((b, ins.name, op, ins.op_name))
                target = _TARGET.search(ins.attrs)
                if op in HOST_OPS or (op == "custom-call" and target is not None
                                      and HOST_CALL.search(target.group(1))):
                    out.host_transfers += 1
        return out


def _reachable_whiles(comps: dict[str, Computation], name: str, seen: set) -> list[Instr]:
    """The while instructions reachable from a computation without entering a while body."""
    if name in seen:
        return []
    seen.add(name)
    found = []
    for ins in comps[name].instrs:
        if ins.opcode == "while":
            found.append(ins)
        elif ins.opcode in ("call", "conditional", "async-start"):
            for names in ins.called().values():
                for c in names:
                    found += _reachable_whiles(comps, c, seen)
    return found


def loop_cost(hlo_text: str, trip_count: int | None = None) -> Cost:
    """One iteration's counts of the module's training loop (see the module doc).

    The loop is the outermost `while` with XLA's known trip count `trip_count` (any outermost
    `while` if None or if no loop is annotated with it); of several, the one with the most
    instructions in its body.
    """
    comps = parse_module(hlo_text)
    entry = next(c for c in comps.values() if c.entry)
    whiles = _reachable_whiles(comps, entry.name, set())
    if trip_count is not None:  # where XLA annotates none with it, any outermost while
        whiles = [w for w in whiles if (m := _TRIP.search(w.attrs))
                  and int(m.group(1)) == trip_count] or whiles
    if not whiles:
        raise HloParseError("no while loop in the module: is it a compiled lax.scan?")
    loop = max(whiles, key=lambda w: len(comps[w.called()["body"][0]].instrs))
    reader = _Reader(comps)
    out = reader.cost(loop.called()["body"][0])
    m = _TRIP.search(loop.attrs)
    out.trip_count = int(m.group(1)) if m else None
    return out


@functools.cache
def xla_counts_loop_body_once() -> bool:
    """Whether this backend's `cost_analysis()` counts a while body once (not times its trip
    count): a 3-iteration scan of one [64, 64] matmul, compiled and asked (XLA:CPU in jax
    0.10: once)."""
    import jax
    import jax.numpy as jnp

    def f(x):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ c), None), x, None, length=3)[0]

    cost = jax.jit(f).lower(jax.ShapeDtypeStruct((64, 64), jnp.float32)).compile()
    flops = xla_totals(cost)["flops"]
    return flops < 2 * (2 * 64**3)


def xla_totals(compiled) -> dict[str, float]:
    """FLOPs and bytes accessed of a compiled module, from XLA's cost analysis."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older jax: one dict per module
        cost = cost[0]
    cost = cost or {}
    return {"flops": float(cost.get("flops", 0.0)),
            "bytes_accessed": float(cost.get("bytes accessed", 0.0))}
