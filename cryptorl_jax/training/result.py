"""What a training run returns (`TrainResult`), where its entropy tuning ended
(`entropy_summary`) and each segment's share of a batch's result (`segment_results`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from cryptorl_jax.training.state import TrainState


@dataclass
class TrainResult:
    state: TrainState
    history: list[dict[str, Any]]
    env_steps: int
    wall_s: float
    compile_s: float
    # entropy_summary(history, the members' target entropies): where the entropy coefficient
    # and the policy's entropy ended, and whether the entropy reached its target
    entropy: dict[str, Any] = field(default_factory=dict)


# nats above the target entropy still counted as "reached" (entropy_summary): SAC's alpha
# holds the entropy AT the target, and a chunk's mean of noisy minibatch estimates scatters
# around it; 0.1 nat is a chosen margin, not a measured one
ENTROPY_TOLERANCE = 0.1


def entropy_summary(history: Sequence[dict[str, Any]], target_entropy: float | Sequence[float],
                    tol: float = ENTROPY_TOLERANCE) -> dict[str, Any]:
    """Where the entropy tuning ended, from the last record of a training `history`.

    `final_alpha` is the entropy coefficient exp(log_alpha) at the end of the last chunk.
    `final_entropy` is the last chunk's mean policy entropy: the mean, over the chunk's
    iterations that learned, of the update's estimate -mean_B log pi(a|s), a ~ pi(.|s) on the
    replay minibatch (averaged over the iteration's actor updates; the "entropy" metric). None
    when the last chunk made no update (training had not started learning).
    SAC's entropy coefficient drives the entropy DOWN to `target_entropy` from above (a fresh
    policy's entropy is normally well above the default target); `entropy_reached_target` is
    final_entropy <= target + tol (`tol` nats, ENTROPY_TOLERANCE by default), false when there
    is no final entropy.

    `target_entropy` is one value, or one per member (`hyper.tqc.target_entropy`; "auto" is
    -action_dim = -1). For a population (records with "members") the top-level alpha, entropy
    and target are the members' means, `entropy_reached_target` is true only if EVERY member
    reached its own target, and "members" holds the per-member lists. An empty history gives
    None values and False.
    """
    targets = np.atleast_1d(np.asarray(target_entropy, np.float64)).tolist()
    last = history[-1] if len(history) else None
    members = None if last is None else last.get("members")
    n = len(targets) if members is None else len(members["updates"])
    if len(targets) == 1:
        targets = targets * n
    if len(targets) != n:
        raise ValueError(f"{len(targets)} target entropies for {n} members")

    def per_member(name: str) -> list[float | None]:
        if last is None:
            return [None] * n
        if members is None:
            return [float(last[name])] * n if name in last else [None] * n
        return [float(v) for v in members[name]] if name in members else [None] * n

    alphas = per_member("alpha")
    updates = per_member("updates")
    entropies = [e if u is not None and u > 0 else None
                 for e, u in zip(per_member("entropy"), updates, strict=True)]
    reached = [e is not None and e <= t + tol for e, t in zip(entropies, targets, strict=True)]

    def mean(xs: list[float | None]) -> float | None:
        known = [x for x in xs if x is not None]
        return float(np.mean(known)) if known else None

    out: dict[str, Any] = {
        "final_alpha": mean(alphas), "final_entropy": mean(entropies),
        "target_entropy": float(np.mean(targets)), "entropy_reached_target": all(reached),
        "tolerance": float(tol), "chunk": None if last is None else last.get("chunk")}
    if members is not None:
        out["members"] = {"final_alpha": alphas, "final_entropy": entropies,
                          "target_entropy": targets, "entropy_reached_target": reached}
    return out


def segment_results(result: TrainResult, segments: int) -> list[TrainResult]:
    """Each segment's share of a batch's `TrainResult` (K segments x S seeds, segment-major):
    its members' agents, a history whose records hold its members' means (and "members" when
    S > 1, as a population of S alone would), and its entropy summary."""
    if segments == 1:
        return [result]
    population = int(jax.tree.leaves(result.state.agent)[0].shape[0])
    s = population // segments
    targets = result.entropy["members"]["target_entropy"]  # K > 1: a population, per member
    out = []
    for k in range(segments):
        part = slice(k * s, (k + 1) * s)
        history = []
        for rec in result.history:
            members = rec["members"]
            r: dict[str, Any] = {name: float(np.mean(np.asarray(v[part], np.float32)))
                                 for name, v in members.items()}
            r.update({"chunk": rec["chunk"], "env_steps": rec["env_steps"]})
            if s > 1:
                r["members"] = {name: list(v[part]) for name, v in members.items()}
            history.append(r)
        agent = jax.tree.map(lambda x, p=part: x[p], result.state.agent)
        out.append(TrainResult(state=TrainState(agent=agent, local=None,
                                                iteration=result.state.iteration),
                               history=history, env_steps=result.env_steps,
                               wall_s=result.wall_s, compile_s=result.compile_s,
                               entropy=entropy_summary(history, targets[part])))
    return out
