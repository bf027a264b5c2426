"""Checkers: a history (and what the nodes said at the end) in, a verdict out: ``valid``,
``invalid`` or ``unknown``, with the first offending ops or samples. Pure functions, stdlib
only; imports no budgetd module.

    no_lost_spend      I2 (and I3's bound): on every node, Σ ok spend+commit ≤ spent_total
                       ≤ Σ ok + Σ info, each idempotency key counted once
    convergence        I5: every node on the same (applied index, fresh digest)
    election_safety    never two different self-declared leaders for one term
    stale_reads        I4: every ok strong read between the spend acknowledged before it and
                       the spend invoked (and not failed) before it returned
    no_overspend       I1: spent + held ≤ cap + overspend at every level and day, on every
                       final state and ok read; no reserve granted more than asked
    exactly_once       I3: ok writes re-sent replay their original answer; info writes re-sent
                       twice resolve once and never spend again; resolves I2's info ops
    reservation_lifecycle
                       I5 (research §3.3): commits only on granted, open reservations;
                       Σ committed ≤ granted; one final commit or release each
    stats              I8: every op type had an ok, enough ok ops before the first fault
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
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
    "exactly_once",
    "no_lost_spend",
    "no_overspend",
    "reservation_lifecycle",
    "stale_reads",
    "stats",
    "write_results",
]

Validity = Literal["valid", "invalid", "unknown"]
#: Offending ops (or samples) named in a result.
EXAMPLES_MAX: Final = 10
#: Ops that record spend, and the value field holding the amount spent.
SPENDING: Final = {"spend": "amount_micros", "commit": "amount_micros"}
#: Ops that write, each with an idempotency key.
WRITES: Final = ("spend", "reserve", "commit")


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


def no_lost_spend(
    ops: Sequence[Op],
    final: Mapping[str, Mapping[str, int | None]],
    applied: Mapping[str, bool] | None = None,
) -> Result:
    """I2: ``final`` is {reader (e.g. a node): {campaign id: spent_total_micros or None}}.
    For each campaign, the ok spends and commits on it or below it must all be there, and
    nothing beyond them and the info ones. ``applied`` ({key: applied before the final
    reads?}, e.g. exactly_once's ``detail["applied"]``) resolves info ops: true ones count as
    ok, false ones as never sent; when every info op is resolved the bounds meet and the total
    must be exact (``detail["exact"]``). A missing read makes the verdict unknown (unless
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
    resolved = {"applied": 0, "not_applied": 0}
    for key, was_applied in (applied or {}).items():
        op = info.pop(key, None)
        if op is not None:
            resolved["applied" if was_applied else "not_applied"] += 1
            if was_applied:
                ok[key] = op
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
        "info_resolved": resolved,
        "exact": not info,
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


# Spend ops by key ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Write:
    key: str
    f: str
    campaign_id: str
    amount: int
    invoke_index: int
    #: The completion's type, or None when the history ended first.
    outcome: str | None
    completion_index: int | None


def _writes(ops: Sequence[Op], fs: Iterable[str]) -> dict[str, _Write]:
    """The first invoke of each idempotency key among ops of ``fs``; an ok anywhere for a
    key makes it ok (a retry of the same key settles it), a fail counts only if nothing
    else came."""
    wanted = set(fs)
    found: dict[str, _Write] = {}
    for invoked, completion in pairs(list(ops)):
        if invoked.f not in wanted:
            continue
        key = str(invoked.value["key"])
        outcome = None if completion is None else completion.type
        index = None if completion is None else completion.index
        write = _Write(
            key,
            invoked.f,
            str(invoked.value["campaign_id"]),
            int(invoked.value.get("amount_micros", 0)),
            invoked.index,
            outcome,
            index,
        )
        seen = found.get(key)
        rank = {"ok": 0, None: 1, "info": 1, "fail": 2}
        if seen is None or rank[outcome] < rank[seen.outcome]:
            found[key] = write if seen is None else replace(write, invoke_index=seen.invoke_index)
    return found


# Stale reads (I4) ---------------------------------------------------------------------------


def stale_reads(ops: Sequence[Op]) -> Result:
    """I4: every ok ``read`` (a strong campaign read) must show ``spent_total_micros`` at
    least the spends and commits on or below that campaign acknowledged (ok) before the read
    was invoked, and at most every one invoked before the read completed that did not fail
    (an info or unfinished one may have been applied). Below: a stale read; above: a read of
    spend that never happened. No ok read: unknown."""
    writes = [w for w in _writes(ops, SPENDING).values() if w.outcome != "fail"]
    reads = [
        (invoked, completion)
        for invoked, completion in pairs(list(ops))
        if invoked.f == "read" and completion is not None and completion.type == "ok"
    ]
    offending: list[dict[str, Any]] = []
    per_node: dict[str, int] = {}
    stale = phantom = 0
    worst_stale = 0
    prepared: dict[str, tuple[list[int], list[int], list[int], list[int]]] = {}
    for invoked, completion in reads:
        campaign_id = str(invoked.value["campaign_id"])
        if campaign_id not in prepared:
            mine = [w for w in writes if _under(w.campaign_id, campaign_id)]
            acked = sorted((w.completion_index or 0, w.amount) for w in mine if w.outcome == "ok")
            started = sorted((w.invoke_index, w.amount) for w in mine)
            prepared[campaign_id] = (
                [i for i, _ in acked],
                _prefix([a for _, a in acked]),
                [i for i, _ in started],
                _prefix([a for _, a in started]),
            )
        acked_at, acked_sum, started_at, started_sum = prepared[campaign_id]
        lower = acked_sum[bisect_left(acked_at, invoked.index)]
        upper = started_sum[bisect_left(started_at, completion.index)]
        spent = completion.value.get("spent_total_micros")
        node = invoked.node or "?"
        per_node[node] = per_node.get(node, 0) + 1
        if not isinstance(spent, int):
            offending.append({"read": _op_dict(completion), "problem": "no spent_total_micros"})
        elif spent < lower:
            stale += 1
            worst_stale = max(worst_stale, lower - spent)
            offending.append(
                {"read": _op_dict(completion), "lower": lower, "missing_micros": lower - spent}
            )
        elif spent > upper:
            phantom += 1
            offending.append(
                {"read": _op_dict(completion), "upper": upper, "unexpected_micros": spent - upper}
            )
    detail: dict[str, Any] = {
        "ok_reads": len(reads),
        "ok_reads_per_node": dict(sorted(per_node.items())),
        "stale": stale,
        "worst_stale_micros": worst_stale,
        "above_upper": phantom,
    }
    if offending:
        return Result("invalid", detail, offending[:EXAMPLES_MAX])
    if not reads:
        return Result("unknown", detail)
    return Result("valid", detail)


def _prefix(amounts: list[int]) -> list[int]:
    """[0, a0, a0+a1, …]: the sum of the first i amounts at position i."""
    sums = [0]
    for amount in amounts:
        sums.append(sums[-1] + amount)
    return sums


# No overspend beyond what is reported (I1) --------------------------------------------------


def _level_breaches(where: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``spent + held ≤ cap + overspend`` for today (daily cap), every kept previous day
    (against the same daily cap: the runs never change a cap) and the total."""
    breaches = []
    checks: list[tuple[str, Any, Any, Any, Any]] = [
        (
            "today",
            body.get("spent_today_micros"),
            body.get("held_micros"),
            body.get("daily_budget_micros"),
            body.get("overspend_micros"),
        ),
        (
            "total",
            body.get("spent_total_micros"),
            body.get("held_total_micros"),
            body.get("total_budget_micros"),
            body.get("overspend_total_micros"),
        ),
    ]
    for day in body.get("previous_days") or []:
        checks.append(
            (
                f"day {day.get('day')}",
                day.get("spent_micros"),
                day.get("held_micros"),
                body.get("daily_budget_micros"),
                day.get("overspend_micros"),
            )
        )
    for level, spent, held, cap, overspend in checks:
        if cap is None:
            continue  # no cap at this level: nothing to exceed
        if not all(isinstance(v, int) for v in (spent, held, overspend)):
            breaches.append({"where": where, "level": level, "problem": "missing counters"})
        elif spent + held > cap + overspend:
            breaches.append(
                {
                    "where": where,
                    "level": level,
                    "spent": spent,
                    "held": held,
                    "cap": cap,
                    "overspend": overspend,
                    "unreported_micros": spent + held - cap - overspend,
                }
            )
    return breaches


def no_overspend(
    ops: Sequence[Op], states: Mapping[str, Mapping[str, Mapping[str, Any] | None]]
) -> Result:
    """I1: ``states`` is {reader: {campaign id: its read or None}} taken at the end. On every
    final state and every ok ``read`` op: at every level and day, spent + held ≤ cap +
    overspend. And no ok reserve granted more than it asked (or nothing). A missing final
    state makes the verdict unknown (unless something is already invalid)."""
    offending: list[dict[str, Any]] = []
    missing: list[str] = []
    checked = 0
    exhausted = 0
    max_overspend: dict[str, int] = {}
    for reader, by_campaign in sorted(states.items()):
        for campaign_id, body in sorted(by_campaign.items()):
            where = f"{reader}/{campaign_id}"
            if body is None:
                missing.append(where)
                continue
            checked += 1
            offending += _level_breaches(where, body)
            overspend = body.get("overspend_micros")
            if isinstance(overspend, int):
                max_overspend[campaign_id] = max(max_overspend.get(campaign_id, 0), overspend)
    for invoked, completion in pairs(list(ops)):
        if completion is None:
            continue
        if invoked.f == "read" and completion.type == "ok":
            checked += 1
            where = f"read {completion.index} via {invoked.node}/{invoked.value['campaign_id']}"
            offending += _level_breaches(where, completion.value)
        elif invoked.f == "reserve" and completion.type == "ok":
            asked = int(invoked.value["amount_micros"])
            granted = completion.value.get("granted_micros")
            if not isinstance(granted, int) or not 0 < granted <= asked:
                offending.append({"reserve": _op_dict(completion), "asked": asked})
        elif invoked.f == "reserve" and completion.error == "budget_exhausted":
            exhausted += 1
    detail: dict[str, Any] = {
        "states_checked": checked,
        "budget_exhausted_refusals": exhausted,
        "max_overspend_micros": dict(sorted(max_overspend.items())),
        "missing_states": missing,
    }
    if offending:
        return Result("invalid", detail, offending[:EXAMPLES_MAX])
    if missing or not states:
        return Result("unknown", detail)
    return Result("valid", detail)


# Exactly once (I3) --------------------------------------------------------------------------

#: Totals read (strong, at the leader) around the re-sends, in order.
PHASES: Final = ("before", "after_ok", "after_info_1", "after_info_2")


def _answered(resend: Mapping[str, Any] | None) -> bool:
    return resend is not None and resend.get("status") is not None and resend["status"] < 500


def _fields(body: Any) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "replayed"} if isinstance(body, dict) else {}


def _same_answer(original: Any, body: Any) -> bool:
    """The replay carries every field of the original answer with the same value (the
    original may be a client library's view of it: a subset of the server's fields)."""
    kept, got = _fields(original), _fields(body)
    return bool(kept) and all(k in got and got[k] == v for k, v in kept.items())


def _code(body: Any) -> Any:
    return body.get("code") if isinstance(body, dict) else None


def exactly_once(
    ops: Sequence[Op],
    resends: Sequence[Mapping[str, Any]],
    totals: Mapping[str, Mapping[str, int | None]],
) -> Result:
    """I3, from re-sending write ops with their original key and body after the run.

    ``resends`` are dicts like workload.Resend (key, f, campaign_id, amount_micros, round,
    status, body, earlier_attempt_maybe_applied): every ok spend/commit/reserve re-sent once
    (round 1), every info (or unfinished) one twice (rounds 1 and 2). ``totals`` is {phase:
    {campaign id: spent_total_micros}} for PHASES: before the re-sends, after the ok ones,
    after each info round.

    Invalid when an ok op's re-send is not ``replayed: true`` with the original answer's
    fields; when an info op's second re-send is not a replay of its first; when re-sending
    the ok ops or the second info round changed a total; or when the first info round
    changed a total by anything but the info spends and commits it applied for the first
    time (``replayed: false``). ``detail["applied"]`` resolves each info spend/commit key:
    true if it had been applied before (replayed), false if not (applied only now, or
    refused); a key whose first re-send needed a retry after an indeterminate attempt stays
    unresolved. A missing answer or total makes the verdict unknown."""
    writes = _writes(ops, WRITES)
    ok_results: dict[str, Any] = {}
    for invoked, completion in pairs(list(ops)):
        if completion is not None and completion.type == "ok" and invoked.f in WRITES:
            ok_results.setdefault(str(invoked.value["key"]), completion.value.get("result"))
    by_round: dict[int, dict[str, Mapping[str, Any]]] = {1: {}, 2: {}}
    for resend in resends:
        by_round.setdefault(int(resend["round"]), {})[str(resend["key"])] = resend
    offending: list[dict[str, Any]] = []
    unanswered: list[str] = []
    applied: dict[str, bool] = {}
    ambiguous: list[str] = []
    applied_now: dict[str, int] = {}
    for key, write in sorted(writes.items()):
        first, second = by_round[1].get(key), by_round.get(2, {}).get(key)
        if write.outcome == "fail":
            continue
        if write.outcome == "ok":
            if not _answered(first):
                unanswered.append(key)
                continue
            assert first is not None
            body = first.get("body")
            original = ok_results.get(key)
            same = _same_answer(original, body)
            replayed = isinstance(body, dict) and body.get("replayed") is True
            if not (200 <= first["status"] < 300 and replayed and same):
                offending.append({"key": key, "original": original, "resend": dict(first)})
            continue
        # info or unfinished: round 1 resolves it, round 2 must replay round 1.
        if not _answered(first):
            unanswered.append(key)
            continue
        assert first is not None
        body1 = first.get("body")
        if 200 <= first["status"] < 300:
            replayed1 = body1.get("replayed") if isinstance(body1, dict) else None
            if not isinstance(replayed1, bool):
                offending.append({"key": key, "problem": "no replayed flag", "resend": first})
                continue
            if replayed1 and first.get("earlier_attempt_maybe_applied"):
                ambiguous.append(key)
            elif write.f in SPENDING:
                applied[key] = replayed1
            if not replayed1 and write.f in SPENDING:
                applied_now[key] = write.amount
        elif write.f in SPENDING:  # a refusal, first time or replayed: nothing spent
            applied[key] = False
        if not _answered(second):
            unanswered.append(key)
            continue
        assert second is not None
        body2 = second.get("body")
        if 200 <= first["status"] < 300:
            twice_same = (
                200 <= second["status"] < 300
                and isinstance(body2, dict)
                and body2.get("replayed") is True
                and _fields(body2) == _fields(body1)
            )
        else:
            twice_same = second["status"] == first["status"] and _code(body2) == _code(body1)
        if not twice_same:
            offending.append({"key": key, "round_1": dict(first), "round_2": dict(second)})
    missing_totals: list[str] = []
    for phase in PHASES:
        got = totals.get(phase)
        if not got:
            missing_totals.append(phase)
        else:
            missing_totals += [f"{phase}/{c}" for c, spent in got.items() if spent is None]
    deltas: dict[str, Any] = {}
    if not missing_totals:
        campaigns = sorted(totals["before"])
        for campaign_id in campaigns:
            t = {phase: totals[phase].get(campaign_id) for phase in PHASES}
            expected_new = sum(
                amount
                for key, amount in applied_now.items()
                if _under(writes[key].campaign_id, campaign_id)
            )
            deltas[campaign_id] = {**t, "info_applied_now_micros": expected_new}
            if None in t.values():
                missing_totals.append(campaign_id)
                continue
            if t["after_ok"] != t["before"]:
                offending.append({"campaign": campaign_id, "problem": "ok re-sends spent", **t})
            if t["after_info_1"] - t["after_ok"] != expected_new:  # type: ignore[operator]
                offending.append(
                    {
                        "campaign": campaign_id,
                        "problem": "info re-sends spent other than their first applications",
                        "expected_micros": expected_new,
                        **t,
                    }
                )
            if t["after_info_2"] != t["after_info_1"]:
                offending.append({"campaign": campaign_id, "problem": "second re-send spent", **t})
    counts = {"ok": 0, "info": 0}
    for write in writes.values():
        if write.outcome == "ok":
            counts["ok"] += 1
        elif write.outcome != "fail":
            counts["info"] += 1
    detail: dict[str, Any] = {
        "resent_ok": counts["ok"],
        "resent_info": counts["info"],
        "applied": dict(sorted(applied.items())),
        "info_applied_before": sum(applied.values()),
        "info_applied_only_now": len(applied_now),
        "ambiguous": ambiguous,
        "unanswered": unanswered[:EXAMPLES_MAX],
        "unanswered_count": len(unanswered),
        "missing_totals": missing_totals,
        "totals": deltas,
    }
    if offending:
        return Result("invalid", detail, offending[:EXAMPLES_MAX])
    if unanswered or missing_totals or not writes:
        return Result("unknown", detail)
    return Result("valid", detail)


# Non-vacuous run (I8) -----------------------------------------------------------------------


def stats(
    ops: Sequence[Op],
    *,
    fs: Iterable[str] = ("spend", "reserve", "commit", "read"),
    ok_before_fault_min: int = 10,
) -> Result:
    """The run tested something: every op type in ``fs`` had at least one ok, and at least
    ``ok_before_fault_min`` client ops were ok before the first nemesis op (all of them when
    there was none). Invalid otherwise; unknown for a history without client ops."""
    first_fault = next((op.index for op in ops if op.process == "nemesis"), None)
    counts: dict[str, dict[str, int]] = {}
    ok_before = 0
    for op in ops:
        if op.process == "nemesis" or op.type == "invoke":
            continue
        counts.setdefault(op.f, {}).setdefault(op.type, 0)
        counts[op.f][op.type] += 1
        if op.type == "ok" and (first_fault is None or op.index < first_fault):
            ok_before += 1
    no_ok = [f for f in fs if not counts.get(f, {}).get("ok")]
    detail: dict[str, Any] = {
        "counts": {f: dict(sorted(c.items())) for f, c in sorted(counts.items())},
        "ok_before_first_fault": ok_before,
        "ok_before_fault_min": ok_before_fault_min,
        "first_fault_index": first_fault,
        "no_ok": no_ok,
    }
    if not counts:
        return Result("unknown", detail)
    offending: list[dict[str, Any]] = [{"f": f, "problem": "no ok op"} for f in no_ok]
    if ok_before < ok_before_fault_min:
        offending.append({"problem": "too few ok ops before the first fault", "ok": ok_before})
    if offending:
        return Result("invalid", detail, offending)
    return Result("valid", detail)


# Reservation lifecycle (research §3.3 I5) ---------------------------------------------------

#: A commit invoked this long after its reservation's TTL ran out (by the history's clock,
#: counted from the reserve's invoke) must come back ``late``.
EXPIRY_MARGIN_S: Final = 5.0


def _final(op: Op) -> bool:
    if "final" in op.value:
        return bool(op.value["final"])
    request = op.value.get("request")
    body = request.get("body") if isinstance(request, dict) else None
    return bool(body.get("final")) if isinstance(body, dict) else False


def reservation_lifecycle(ops: Sequence[Op]) -> Result:
    """I5: every ok ``commit`` / ``release`` names a reservation granted by an ok reserve (or
    possibly by an info one, when the history has any), after which no final commit or
    release had already been acknowledged; the ok commits on a reservation (each key once)
    add up to at most what was granted; at most one final commit or release per reservation
    is ok; an ok commit invoked after the reservation's TTL (plus EXPIRY_MARGIN_S) says
    ``late``. No ok reserve at all: unknown."""
    granted: dict[int, tuple[Op, Op]] = {}
    info_reserves = 0
    closes: dict[int, list[Op]] = {}
    committed: dict[int, dict[str, int]] = {}
    offending: list[dict[str, Any]] = []
    late_checked = 0
    every = list(pairs(list(ops)))
    for invoked, completion in every:
        if invoked.f != "reserve":
            continue
        if completion is not None and completion.type == "ok":
            rid = completion.value.get("reservation_id")
            if isinstance(rid, int):
                granted.setdefault(rid, (invoked, completion))
        elif completion is None or completion.type == "info":
            info_reserves += 1
    unexplained = 0
    for invoked, completion in every:
        if invoked.f not in ("commit", "release") or completion is None:
            continue
        if completion.type != "ok":
            continue
        rid = invoked.value.get("reservation_id")
        if not isinstance(rid, int) or rid not in granted:
            if info_reserves:
                unexplained += 1  # perhaps granted by a reserve whose answer was lost
            else:
                offending.append({"problem": "no granted reservation", "op": _op_dict(completion)})
            continue
        reserve_invoke, _ = granted[rid]
        closed_before = [
            c
            for c in closes.get(rid, [])
            if c.index < invoked.index and c.value["key"] != invoked.value["key"]
        ]
        if closed_before:
            offending.append(
                {
                    "problem": f"{invoked.f} acknowledged on a closed reservation",
                    "reservation_id": rid,
                    "closed_by": _op_dict(closed_before[0]),
                    "op": _op_dict(completion),
                }
            )
        if invoked.f == "commit":
            amount = int(invoked.value.get("amount_micros", 0))
            committed.setdefault(rid, {})[str(invoked.value["key"])] = amount
            ttl_ms = reserve_invoke.value.get("request", {}).get("body", {}).get("ttl_ms")
            if isinstance(ttl_ms, int):
                expired_s = (invoked.time_ns - reserve_invoke.time_ns) / 1e9 - ttl_ms / 1000
                result = completion.value.get("result")
                if expired_s > EXPIRY_MARGIN_S and isinstance(result, dict):
                    late_checked += 1
                    if result.get("late") is not True:
                        offending.append(
                            {
                                "problem": "commit after expiry not marked late",
                                "reservation_id": rid,
                                "op": _op_dict(completion),
                            }
                        )
        if invoked.f == "release" or _final(invoked):
            known = {str(c.value["key"]) for c in closes.get(rid, [])}
            if known and str(invoked.value["key"]) not in known:
                offending.append(
                    {
                        "problem": "two final commits or releases acknowledged",
                        "reservation_id": rid,
                        "first": _op_dict(closes[rid][0]),
                        "op": _op_dict(completion),
                    }
                )
            closes.setdefault(rid, []).append(completion)
    over = 0
    for rid, by_key in committed.items():
        grant = granted[rid][1].value.get("granted_micros")
        total = sum(by_key.values())
        if not isinstance(grant, int) or total > grant:
            over += 1
            offending.append(
                {
                    "problem": "committed more than granted",
                    "reservation_id": rid,
                    "granted_micros": grant,
                    "committed_micros": total,
                    "reserve": _op_dict(granted[rid][1]),
                }
            )
    detail: dict[str, Any] = {
        "reservations_granted": len(granted),
        "reserves_info": info_reserves,
        "reservations_committed": len(committed),
        "reservations_closed": len(closes),
        "commits_on_unknown_reservations": unexplained,
        "late_commits_checked": late_checked,
        "over_committed": over,
    }
    if offending:
        return Result("invalid", detail, offending[:EXAMPLES_MAX])
    if not granted:
        return Result("unknown", detail)
    return Result("valid", detail)
