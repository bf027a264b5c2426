"""Checkers: a history (and what the nodes said at the end) in, a verdict out: ``valid``,
``invalid`` or ``unknown``, with the first offending ops or samples. Pure functions, stdlib
only; imports no budgetd module.

    no_lost_spend      I2 (and I3's bound): on every node, Σ ok spend+commit ≤ spent_total
                       ≤ Σ ok + Σ info, each idempotency key counted once
    convergence        I5: every node on the same (applied index, fresh digest)
    election_safety    never two different self-declared leaders for one term
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from jepsen_lite.history import Op, pairs

__all__ = [
    "Result",
    "Sample",
    "Validity",
    "compose",
    "convergence",
    "election_safety",
    "no_lost_spend",
    "write_results",
]

Validity = Literal["valid", "invalid", "unknown"]
#: Offending ops (or samples) named in a result.
EXAMPLES_MAX: Final = 10
#: Ops that record spend, and the value field holding the amount spent.
SPENDING: Final = {"spend": "amount_micros", "commit": "amount_micros"}


@dataclass(frozen=True)
class Result:
    valid: Validity
    detail: dict[str, Any] = field(default_factory=dict)
    #: The first offending ops (as dicts) or samples.
    offending: list[dict[str, Any]] = field(default_factory=list)


def compose(results: Mapping[str, Result]) -> Validity:
    """invalid beats unknown beats valid (Jepsen's merge-valid)."""
    verdicts = {r.valid for r in results.values()}
    for verdict in ("invalid", "unknown"):
        if verdict in verdicts:
            return verdict
    return "valid"


def write_results(path: Path, results: Mapping[str, Result], **extra: Any) -> None:
    """``results.json``: the composed verdict, one entry per checker, and ``extra``."""
    document = {
        "valid": compose(results),
        "checkers": {name: asdict(result) for name, result in results.items()},
        **extra,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _op_dict(op: Op) -> dict[str, Any]:
    return asdict(op)


def _under(campaign_id: str, ancestor: str) -> bool:
    return campaign_id == ancestor or campaign_id.startswith(ancestor + ":")


def no_lost_spend(ops: Sequence[Op], final: Mapping[str, Mapping[str, int | None]]) -> Result:
    """I2: ``final`` is {reader (e.g. a node): {campaign id: spent_total_micros or None}}.
    For each campaign, the ok spends and commits on it or below it must all be there, and
    nothing beyond them and the info ones. A missing read makes the verdict unknown (unless
    another read is already invalid)."""
    ok: dict[str, Op] = {}
    info: dict[str, Op] = {}
    for invoked, completion in pairs(list(ops)):
        if invoked.f not in SPENDING:
            continue
        key = str(invoked.value["key"])
        if completion is None or completion.type == "info":
            info.setdefault(key, completion or invoked)
        elif completion.type == "ok":
            ok.setdefault(key, completion)
    for key in ok:
        info.pop(key, None)  # an ok retry of the same key settles it
    offending: list[dict[str, Any]] = []
    bounds: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for reader, spent_by_campaign in sorted(final.items()):
        for campaign_id, spent in sorted(spent_by_campaign.items()):
            ok_ops = [op for op in ok.values() if _under(op.value["campaign_id"], campaign_id)]
            info_ops = [op for op in info.values() if _under(op.value["campaign_id"], campaign_id)]
            lower = sum(int(op.value[SPENDING[op.f]]) for op in ok_ops)
            upper = lower + sum(int(op.value[SPENDING[op.f]]) for op in info_ops)
            where = f"{reader}/{campaign_id}"
            bounds[where] = {"spent": spent, "ok_micros": lower, "ok_plus_info_micros": upper}
            if spent is None:
                missing.append(where)
            elif spent < lower:
                deficit = lower - spent
                # Totals cannot name the lost op; an ok op of exactly the deficit comes first.
                ranked = sorted(
                    ok_ops, key=lambda op: (op.value[SPENDING[op.f]] != deficit, op.index)
                )
                offending.append({"where": where, "lost_micros": deficit})
                offending += [_op_dict(op) for op in ranked[:EXAMPLES_MAX]]
            elif spent > upper:
                offending.append({"where": where, "unexpected_micros": spent - upper})
    detail: dict[str, Any] = {
        "ok_ops": len(ok),
        "info_ops": len(info),
        "bounds": bounds,
        "missing_reads": missing,
    }
    if offending:
        return Result("invalid", detail, offending[:EXAMPLES_MAX])
    if missing or not final:
        return Result("unknown", detail)
    return Result("valid", detail)


def convergence(views: Mapping[str, Mapping[str, Any] | None]) -> Result:
    """I5: ``views`` is {node: its ``/v1/cluster?digest=fresh`` answer or None}, taken after
    heal and quiet time. Valid when every node answered with the same applied index and
    digest; invalid when two differ; unknown when one did not answer."""
    states = {
        node: None if view is None else (view.get("applied_index"), view.get("digest"))
        for node, view in sorted(views.items())
    }
    detail: dict[str, Any] = {
        node: None if s is None else {"applied_index": s[0], "digest": s[1]}
        for node, s in states.items()
    }
    answered = {s for s in states.values() if s is not None}
    if len(answered) > 1:
        return Result("invalid", detail, [{"node": n, "state": detail[n]} for n in states])
    if None in states.values() or not answered:
        return Result("unknown", detail)
    return Result("valid", detail)


class Sample(Protocol):
    @property
    def time_ns(self) -> int: ...
    @property
    def node(self) -> str: ...
    @property
    def term(self) -> int: ...
    @property
    def leader_id(self) -> str | None: ...


def election_safety(samples: Iterable[Sample]) -> Result:
    """Never two different nodes declaring themselves leader (``leader_id`` = own id) for
    the same term, over every ``/v1/cluster`` sample. Followers' views are not counted (a
    follower's leader hint may lag its term). No self-declared leader at all: unknown."""
    leaders: dict[int, dict[str, Sample]] = {}
    for sample in sorted(samples, key=lambda s: s.time_ns):
        if sample.leader_id is not None and sample.leader_id == sample.node:
            leaders.setdefault(sample.term, {}).setdefault(sample.node, sample)
    offending = [
        {"term": term, "leaders": {n: s.time_ns for n, s in sorted(by_node.items())}}
        for term, by_node in sorted(leaders.items())
        if len(by_node) > 1
    ]
    detail: dict[str, Any] = {
        "terms": {str(t): sorted(by_node) for t, by_node in sorted(leaders.items())}
    }
    if offending:
        return Result("invalid", detail, offending[:EXAMPLES_MAX])
    if not leaders:
        return Result("unknown", detail)
    return Result("valid", detail)
