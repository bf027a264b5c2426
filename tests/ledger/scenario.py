"""Interpreter of the ledger's scenario scripts, tests/ledger/scenarios/*.txt.

A scenario tells a story to one `budgetd.ledger.Ledger`, in blocks like etcd-io/raft's datadriven
tests: a command line (indented lines below it continue it), a ``----`` line, then the exact
output expected, up to a blank line. Lines starting with ``#`` between blocks are comments.

    # A slice of one dollar, for ten minutes.
    reserve k1 acme amount=1_000_000 ttl=10m bidder=b1
    ----
    ok reservation_id=1 granted=1_000_000 expires=2026-03-08T02:09:00-05:00 rate=0.100000

Every command that changes the ledger is one ``apply_batch`` call at the time set by ``at``.
After every command the interpreter calls ``check_invariants()``, and restores a twin ledger from
the state (``export_state``, through JSON, ``from_state``): its digest must be equal, and it must
answer the next command exactly as the ledger does (I5: a replica restarted from a snapshot is
the same replica).

Money is integer micros (``_`` separators allowed); durations are ``500ms``, ``10s``, ``5m``,
``25h``, ``2d`` or sums such as ``1h30m``; times are ISO 8601 with an offset, ``+DURATION`` /
``-DURATION`` from the current time, or integer Unix milliseconds.

    limits NAME=N ...            start over with an empty Ledger(Limits(NAME=N, ...)); time stays
    zone NAME                    print times in IANA zone NAME (UTC until then)
    at TIME                      the timestamp of the commands that follow (nothing is applied)
    tick                         an empty batch at that time: expiry and day roll, no op
    put ID [currency= timezone= daily= total= start= end= pacing= weights= burst_ppm= status=
           expect_version= key=]                   weights: 24 values, ``2*6`` repeats 2 six times
    reserve KEY ID amount= ttl= bidder= [min=]
    commit KEY rN amount= [final]
    release KEY rN
    spend KEY ID amount= bidder=
    pulse
    raw JSON                     one decoded op, exactly as given, in a batch of its own
    rawbatch [ts=JSON] JSON      apply_batch(ts, JSON) as given (ts: the current time)
    batch                        the indented op lines below (put ... raw), in one apply_batch
    show ID  /  show rN          a campaign's or a reservation's view (rN: reservation_id N)
    list [PREFIX] [after=ID] [limit=N]
    stats

Results print one line each: ``ok name=value ...`` (``_micros`` dropped from names, rates as
fractions, times in the zone) or ``code: detail``; a replay ends with ``replayed=true``.

``BUDGETD_REWRITE=1`` rewrites the expected outputs in place: a deliberate regeneration, to be read
in the diff. Two kinds of block are never rewritten: a block right under a comment line starting
with ``# BUG:`` (its hand-written expectation says what the ledger should do, and fails until it
does), and a block whose run crashed the ledger or broke an invariant.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from budgetd.ledger import InvariantBroken, Ledger, Limits

REWRITE_ENV = "BUDGETD_REWRITE"
SEPARATOR = "----"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(?:\d[\d_]*(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"(\d[\d_]*)(ms|s|m|h|d)")
_RESERVATION = re.compile(r"r(\d+)")
_PPM = 1_000_000


class ScenarioError(Exception):
    """The script itself is wrong (unknown command, bad argument): fix the script."""


# ------------------------------------------------------------------------------------------------
# Parsing the file


@dataclass
class Block:
    line: int  # 1-based line of the command
    command: list[str]  # the command line and its continuation lines
    output: list[str] | None  # expected output; None when the block has no ``----`` yet
    out_start: int  # index in the file's lines where the output starts (or ``----`` goes)
    out_end: int  # index just past the output
    pinned: bool  # right under a ``# BUG:`` comment: never rewritten


def parse(text: str) -> tuple[list[str], list[Block]]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    blocks: list[Block] = []
    pinned = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            pinned = False  # only the comment lines right above a command pin it
            i += 1
            continue
        if line.startswith("#"):
            pinned = pinned or line.startswith("# BUG:")
            i += 1
            continue
        if line[0].isspace():
            raise ScenarioError(f"line {i + 1}: an indented line must follow a command")
        start = i
        i += 1
        while i < len(lines) and lines[i].strip() and lines[i][0].isspace():
            i += 1
        command = lines[start:i]
        if i < len(lines) and lines[i] == SEPARATOR:
            out_start = i + 1
            i = out_start
            while i < len(lines) and lines[i].strip():
                i += 1
            blocks.append(Block(start + 1, command, lines[out_start:i], out_start, i, pinned))
        else:
            blocks.append(Block(start + 1, command, None, i, i, pinned))
        pinned = False
    return lines, blocks


# ------------------------------------------------------------------------------------------------
# Values in and out


def parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ScenarioError(f"not an integer: {text!r}") from None


def parse_duration_ms(text: str) -> int:
    if text.replace("_", "").isdigit():
        return int(text)
    if not _DURATION.fullmatch(text):
        raise ScenarioError(f"not a duration (500ms, 10s, 5m, 25h, 2d, 1h30m): {text!r}")
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION_PART.findall(text))


def parse_time_ms(text: str, now_ms: int) -> int:
    if text[:1] in "+-" and text[1:2].isdigit():
        step = parse_duration_ms(text[1:])
        return now_ms + step if text[0] == "+" else now_ms - step
    if text.replace("_", "").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ScenarioError(f"not a time (ISO 8601 with offset, +DURATION): {text!r}") from None
    if moment.tzinfo is None:
        raise ScenarioError(f"a time needs its UTC offset: {text!r}")
    return (moment - _EPOCH) // _ONE_MS


def parse_weights(text: str) -> list[int]:
    weights: list[int] = []
    for part in text.split(","):
        value, _, count = part.partition("*")
        weights.extend([parse_int(value)] * (parse_int(count) if count else 1))
    return weights


def load_zone(name: str) -> ZoneInfo:
    """A zone from the pinned tzdata package, the files the ledger itself decides with."""
    try:
        path = resources.files("tzdata").joinpath("zoneinfo", *name.split("/"))
        with path.open("rb") as tzfile:
            return ZoneInfo.from_file(tzfile, key=name)
    except (OSError, ValueError):
        raise ScenarioError(f"unknown zone {name!r}") from None


def money(value: object) -> str:
    if value is None:
        return "none"
    if type(value) is int:
        return f"{value:_}"
    return repr(value)


def rate(ppm: object) -> str:
    if type(ppm) is not int or ppm < 0:
        return repr(ppm)
    return f"{ppm // _PPM}.{ppm % _PPM:06d}"


def span(ms: int) -> str:
    """A length of time: 23h, 24h30m, 90s, 250ms."""
    out = []
    for unit in ("h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    if ms or not out:
        out.append(f"{ms}ms")
    return "".join(out)


def weights_text(weights: list[int]) -> str:
    runs: list[list[int]] = []
    for weight in weights:
        if runs and runs[-1][0] == weight:
            runs[-1][1] += 1
        else:
            runs.append([weight, 1])
    return ",".join(str(w) if n == 1 else f"{w}*{n}" for w, n in runs)


# ------------------------------------------------------------------------------------------------
# The interpreter


def restore(ledger: Ledger) -> Ledger:
    """A ledger rebuilt from ``ledger``'s state sent through JSON, as plain as data gets."""
    return Ledger.from_state(json.loads(json.dumps(ledger.export_state())))


@dataclass
class Run:
    ledger: Ledger = field(default_factory=Ledger)
    twin: Ledger | None = None  # restored from ``ledger``'s snapshot after the last command
    stamp_ms: int = 0
    tz: ZoneInfo | None = None  # None: UTC
    divergence: list[str] = field(default_factory=list)  # what the twin answered differently

    def time(self, ms: object) -> str:
        if type(ms) is not int:
            return repr(ms)
        try:
            moment = _EPOCH + ms * _ONE_MS
        except OverflowError:
            return f"{ms}ms"
        if self.tz is not None:
            moment = moment.astimezone(self.tz)
        text = moment.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")
        return text.removesuffix("+00:00") + "Z" if self.tz is None else text

    # -- results --------------------------------------------------------------------------------

    def value(self, name: str, value: object) -> tuple[str, str]:
        if name == "pass_through_ppm":
            return "rate", rate(value)
        if name.endswith("_micros"):
            return name.removesuffix("_micros"), money(value)
        if name.endswith("_at_ms") or name == "now_ms":
            return name.removesuffix("_ms").removesuffix("_at"), self.time(value)
        if type(value) is bool:
            return name, str(value).lower()
        if value is None:
            return name, "none"
        return name, str(value)

    def result(self, rendered: object) -> str:
        if type(rendered) is not dict:
            return f"!! not a result: {rendered!r}"
        fields = dict(rendered)
        code = fields.pop("code", "?")
        replayed = fields.pop("replayed", None)
        if code == "ok":
            parts = ["ok", *("=".join(self.value(k, v)) for k, v in fields.items())]
        else:
            detail = fields.pop("detail", "")
            parts = [f"{code}: {detail}", *("=".join(self.value(k, v)) for k, v in fields.items())]
        if replayed is not None:
            parts.append("replayed=" + str(replayed).lower())
        return " ".join(parts)

    def apply(self, timestamp_ms: object, ops: object) -> list[str]:
        twin_ops = copy.deepcopy(ops)
        results = self.ledger.apply_batch(timestamp_ms, ops)
        if self.twin is not None:
            twin_results = self.twin.apply_batch(timestamp_ms, twin_ops)
            if twin_results != results:
                self.divergence.append(f"!! the restored twin answered {twin_results!r}")
        if not results:
            return ["no results"]
        return [self.result(r) for r in results]

    # -- building ops ---------------------------------------------------------------------------

    def op(self, text: str) -> object:
        name, _, rest = text.strip().partition(" ")
        if name == "raw":
            try:
                return json.loads(rest)
            except json.JSONDecodeError as error:
                raise ScenarioError(f"raw: not JSON: {error}") from None
        builder = getattr(self, f"op_{name}", None)
        if builder is None:
            raise ScenarioError(f"unknown op {name!r}")
        positional: list[str] = []
        named: dict[str, str] = {}
        for token in rest.split():
            key, eq, value = token.partition("=")
            if eq:
                if key in named:
                    raise ScenarioError(f"{key}= given twice")
                named[key] = value
            else:
                positional.append(token)
        op = builder(positional, named)
        if named:
            raise ScenarioError(f"{name}: unknown argument(s) {', '.join(sorted(named))}")
        return op

    @staticmethod
    def _positional(name: str, positional: list[str], names: tuple[str, ...]) -> list[str]:
        if len(positional) != len(names):
            raise ScenarioError(f"{name} takes {' '.join(names)}, got {positional}")
        return positional

    @staticmethod
    def _reservation_id(text: str) -> int:
        match = _RESERVATION.fullmatch(text)
        if match is None:
            raise ScenarioError(f"a reservation is written rN, got {text!r}")
        return int(match.group(1))

    def op_put(self, positional: list[str], named: dict[str, str]) -> dict[str, Any]:
        (campaign_id,) = self._positional("put", positional, ("ID",))
        op: dict[str, Any] = {"op": "put_campaign", "campaign_id": campaign_id}
        for arg, key in (("currency", "currency"), ("timezone", "timezone"), ("status", "status")):
            if arg in named:
                op[key] = named.pop(arg)
        for arg, key in (("daily", "daily_budget_micros"), ("total", "total_budget_micros")):
            if arg in named:
                op[key] = parse_int(named.pop(arg))
        for arg, key in (("start", "start_ms"), ("end", "end_ms")):
            if arg in named:
                op[key] = parse_time_ms(named.pop(arg), self.stamp_ms)
        if "expect_version" in named:
            op["expected_version"] = parse_int(named.pop("expect_version"))
        if "key" in named:
            op["idempotency_key"] = named.pop("key")
        pacing: dict[str, Any] = {}
        if "pacing" in named:
            pacing["mode"] = named.pop("pacing")
        if "weights" in named:
            pacing["hourly_weights"] = parse_weights(named.pop("weights"))
        if "burst_ppm" in named:
            pacing["burst_ppm"] = parse_int(named.pop("burst_ppm"))
        if pacing:
            op["pacing"] = pacing
        return op

    def op_reserve(self, positional: list[str], named: dict[str, str]) -> dict[str, Any]:
        key, campaign_id = self._positional("reserve", positional, ("KEY", "ID"))
        try:
            op = {
                "op": "reserve",
                "idempotency_key": key,
                "campaign_id": campaign_id,
                "amount_micros": parse_int(named.pop("amount")),
                "ttl_ms": parse_duration_ms(named.pop("ttl")),
                "bidder_id": named.pop("bidder"),
            }
        except KeyError as missing:
            raise ScenarioError(f"reserve needs {missing.args[0]}=") from None
        if "min" in named:
            op["min_amount_micros"] = parse_int(named.pop("min"))
        return op

    def op_commit(self, positional: list[str], named: dict[str, str]) -> dict[str, Any]:
        final = bool(positional) and positional[-1] == "final"
        if final:
            positional = positional[:-1]
        key, rid = self._positional("commit", positional, ("KEY", "rN"))
        if "amount" not in named:
            raise ScenarioError("commit needs amount=")
        op = {
            "op": "commit",
            "idempotency_key": key,
            "reservation_id": self._reservation_id(rid),
            "amount_micros": parse_int(named.pop("amount")),
        }
        if final:
            op["final"] = True
        return op

    def op_release(self, positional: list[str], named: dict[str, str]) -> dict[str, Any]:
        key, rid = self._positional("release", positional, ("KEY", "rN"))
        return {
            "op": "release",
            "idempotency_key": key,
            "reservation_id": self._reservation_id(rid),
        }

    def op_spend(self, positional: list[str], named: dict[str, str]) -> dict[str, Any]:
        key, campaign_id = self._positional("spend", positional, ("KEY", "ID"))
        try:
            return {
                "op": "spend",
                "idempotency_key": key,
                "campaign_id": campaign_id,
                "amount_micros": parse_int(named.pop("amount")),
                "bidder_id": named.pop("bidder"),
            }
        except KeyError as missing:
            raise ScenarioError(f"spend needs {missing.args[0]}=") from None

    def op_pulse(self, positional: list[str], named: dict[str, str]) -> dict[str, Any]:
        self._positional("pulse", positional, ())
        return {"op": "pulse"}

    # -- commands -------------------------------------------------------------------------------

    def execute(self, command: list[str]) -> list[str]:
        name, _, rest = command[0].partition(" ")
        if name == "batch":
            if rest.strip():
                raise ScenarioError("batch takes its ops on the indented lines below it")
            return self.apply(self.stamp_ms, [self.op(line) for line in command[1:]])
        rest = " ".join([rest.strip(), *(line.strip() for line in command[1:])]).strip()
        if name in ("put", "reserve", "commit", "release", "spend", "pulse", "raw"):
            return self.apply(self.stamp_ms, [self.op(f"{name} {rest}")])
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            raise ScenarioError(f"unknown command {name!r}")
        lines: list[str] = handler(rest)
        return lines

    def cmd_limits(self, rest: str) -> list[str]:
        values = {}
        for token in rest.split():
            key, eq, value = token.partition("=")
            if not eq:
                raise ScenarioError(f"limits takes NAME=N, got {token!r}")
            values[key] = parse_int(value)
        try:
            limits = Limits(**values)
        except (TypeError, ValueError) as error:
            return [f"refused: {error}"]
        self.ledger = Ledger(limits)
        self.twin = None
        shown = " ".join(f"{k}={money(v)}" for k, v in values.items())
        return [f"a new ledger with {shown or 'the default limits'}"]

    def cmd_zone(self, rest: str) -> list[str]:
        self.tz = None if rest == "UTC" else load_zone(rest)
        return [f"times shown in {rest}"]

    def cmd_at(self, rest: str) -> list[str]:
        self.stamp_ms = parse_time_ms(rest, self.stamp_ms)
        return [self.time(self.stamp_ms)]

    def cmd_tick(self, rest: str) -> list[str]:
        if rest:
            raise ScenarioError("tick takes no arguments")
        self.apply(self.stamp_ms, [])
        return [f"now={self.time(self.ledger.now_ms)}"]

    def cmd_rawbatch(self, rest: str) -> list[str]:
        timestamp: object = self.stamp_ms
        try:
            if rest.startswith("ts="):
                ts_text, _, rest = rest[3:].partition(" ")
                timestamp = json.loads(ts_text)
            ops = json.loads(rest)
        except json.JSONDecodeError as error:
            raise ScenarioError(f"rawbatch: not JSON: {error}") from None
        return self.apply(timestamp, ops)

    def cmd_show(self, rest: str) -> list[str]:
        match = _RESERVATION.fullmatch(rest)

        def view_of(ledger: Ledger) -> dict[str, Any] | None:
            if match is not None:
                return ledger.reservation(int(match.group(1)))
            return ledger.campaign(rest)

        view = view_of(self.ledger)
        if self.twin is not None and (twin_view := view_of(self.twin)) != view:
            self.divergence.append(f"!! the restored twin shows {twin_view!r}")
        if view is None:
            return [f"{rest}: not found"]
        return self.show_reservation(view) if match else self.show_campaign(view)

    def cmd_list(self, rest: str) -> list[str]:
        prefix = ""
        after: str | None = None
        limit = 100
        for token in rest.split():
            if token.startswith("after="):
                after = token.removeprefix("after=")
            elif token.startswith("limit="):
                limit = parse_int(token.removeprefix("limit="))
            else:
                prefix = token
        ids = self.ledger.campaign_ids(prefix, after=after, limit=limit)
        return [" ".join(ids) if ids else "(none)"]

    def cmd_stats(self, rest: str) -> list[str]:
        stats = dict(self.ledger.stats())
        now = stats.pop("now_ms")
        return [" ".join(f"{k}={v}" for k, v in stats.items()) + f" now={self.time(now)}"]

    # -- views ----------------------------------------------------------------------------------

    def counters(self, fields: dict[str, Any], names: tuple[str, ...]) -> str:
        out = []
        for name in names:
            label, text = self.value(name, fields.pop(name))
            out.append(f"{label.removesuffix('_today').removesuffix('_total')}={text}")
        return " ".join(out)

    def show_campaign(self, view: dict[str, Any]) -> list[str]:
        v = dict(view)
        p = dict(v.pop("pacing"))
        parent = v.pop("parent_id")
        campaign_id = v.pop("campaign_id")
        head = campaign_id if parent is None else f"{campaign_id} (in {parent})"
        lines = [
            f"{head}: {v.pop('currency')} {v.pop('timezone')} v{v.pop('version')} "
            f"{v.pop('status')}, as of {self.time(v.pop('now_ms'))}"
        ]
        start, end = v.pop("start_ms"), v.pop("end_ms")
        flight = ""
        if start is not None or end is not None:
            flight = (
                f" flight={'-' if start is None else self.time(start)}"
                f"..{'-' if end is None else self.time(end)}"
            )
        lines.append(
            f"  budget daily={money(v.pop('daily_budget_micros'))} "
            f"total={money(v.pop('total_budget_micros'))}{flight}"
        )
        weights = p.pop("hourly_weights")
        lines.append(
            f"  pacing {p.pop('mode')}"
            + ("" if weights is None else f" weights={weights_text(weights)}")
            + f" burst={money(p.pop('burst_micros'))} ({money(p.pop('burst_ppm'))}ppm)"
            f" allowance={money(p.pop('allowance_micros'))}"
            f" rate={rate(p.pop('pass_through_ppm'))}"
            f" own_rate={rate(p.pop('own_pass_through_ppm'))}"
        )
        day_start, day_end = v.pop("day_start_ms"), v.pop("day_end_ms")
        lines.append(
            f"  day {v.pop('day')} {self.time(day_start)}..{self.time(day_end)}"
            f" ({span(day_end - day_start)})"
        )
        today = ("spent_today_micros", "held_micros", "overspend_micros", "late_commits_today")
        lines.append(
            f"  today {self.counters(v, today)} available={money(v.pop('available_micros'))}"
        )
        total = (
            "spent_total_micros",
            "held_total_micros",
            "overspend_total_micros",
            "late_commits_total",
        )
        lines.append(f"  total {self.counters(v, total)}")
        for day in v.pop("previous_days"):
            d = dict(day)
            names = ("spent_micros", "held_micros", "overspend_micros", "late_commits")
            lines.append(f"  previous {d.pop('day')} {self.counters(d, names)}")
            lines.extend(f"  !! unshown previous_days field {k}={x!r}" for k, x in d.items())
        # Anything the view grows later shows up here, in the diff, rather than going unseen.
        lines.extend(f"  !! unshown field {k}={x!r}" for k, x in v.items())
        lines.extend(f"  !! unshown pacing field {k}={x!r}" for k, x in p.items())
        return lines

    def show_reservation(self, view: dict[str, Any]) -> list[str]:
        v = dict(view)
        head = (
            f"r{v.pop('reservation_id')} on {v.pop('campaign_id')} by {v.pop('bidder_id')}: "
            f"{v.pop('state')}"
        )
        names = ("granted_micros", "committed_micros", "held_micros", "expires_at_ms", "late")
        line = f"{head} {self.counters(v, names)}"
        line += f" rate={rate(v.pop('pass_through_ppm'))} day={v.pop('day')}"
        return [line, *(f"  !! unshown field {k}={x!r}" for k, x in v.items())]

    # -- checks ---------------------------------------------------------------------------------

    def check(self) -> list[str]:
        """What went wrong: a broken invariant, an unfaithful snapshot, a twin that answered
        differently. Empty when all is well. Restores the twin for the next command."""
        trouble, self.divergence = self.divergence, []
        self.twin = None
        try:
            self.ledger.check_invariants()
        except InvariantBroken as error:
            return [*trouble, f"!! invariant broken: {error}"]
        except Exception as error:
            return [*trouble, f"!! check_invariants raised {type(error).__name__}: {error}"]
        try:
            twin = restore(self.ledger)
            same = twin.digest() == self.ledger.digest()
        except Exception as error:
            return [*trouble, f"!! a snapshot round trip raised {type(error).__name__}: {error}"]
        if not same:
            return [*trouble, "!! a snapshot round trip changed the state's digest"]
        self.twin = twin
        return trouble


# ------------------------------------------------------------------------------------------------
# Running a file


@dataclass
class Outcome:
    path: Path
    problems: list[str]  # one line per failing block, ``path:line: why``
    diff: str  # unified diff, expected file -> actual file

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        hint = f"(run with {REWRITE_ENV}=1 to regenerate, then read the diff before committing)"
        return "\n".join([*self.problems, hint, "", self.diff])


def run_file(path: Path, *, rewrite: bool | None = None) -> Outcome:
    if rewrite is None:
        rewrite = os.environ.get(REWRITE_ENV, "") not in ("", "0")
    text = path.read_text(encoding="utf-8")
    try:
        lines, blocks = parse(text)
    except ScenarioError as error:
        raise ScenarioError(f"{path}:{error}") from None
    run = Run()
    actual = list(lines)
    problems: list[str] = []
    shift = 0  # lines added to ``actual`` before the current block
    for block in blocks:
        where = f"{path}:{block.line}"
        broken = False
        try:
            output = run.execute(block.command)
        except ScenarioError as error:
            raise ScenarioError(f"{where}: {error}") from None
        except Exception as error:  # the ledger must not raise: record it, go on
            output = [f"!! the ledger raised {type(error).__name__}: {error}"]
            broken = True
        trouble = run.check()
        if trouble:
            output.extend(trouble)
            broken = True
        expected = block.output
        if expected is not None and output == expected:
            continue
        keep = rewrite and (block.pinned or broken)
        if expected is None:
            if block.pinned:
                raise ScenarioError(f"{where}: a # BUG: block needs its expected output by hand")
            if not rewrite:
                problems.append(f"{where}: no expected output ({SEPARATOR} missing)")
        elif not rewrite or keep:
            tag = " (a # BUG: block, its expectation kept by hand)" if block.pinned else ""
            problems.append(f"{where}: output differs{tag}: {block.command[0]}")
        if broken and rewrite:
            problems.append(f"{where}: the ledger crashed or broke an invariant; not rewritten")
        if not keep:
            replacement = output if expected is not None else [SEPARATOR, *output]
            start, end = block.out_start + shift, block.out_end + shift
            actual[start:end] = replacement
            shift += len(replacement) - (end - start)
    new_text = "\n".join(actual) + "\n"
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"{path} (expected)",
            tofile=f"{path} (actual)",
        )
    )
    if rewrite and new_text != text:
        path.write_text(new_text, encoding="utf-8")
    return Outcome(path, problems, diff)
