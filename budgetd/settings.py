"""A node's settings: read from TOML, checked once at start-up, one spelling everywhere.

Owns the names and defaults of every setting (the TOML key, the CLI flag and the attribute are the
same word). Imports only the stdlib; nothing here talks to the network or to pysyncobj.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

__all__ = [
    "API_MAXIMA",
    "ApiSettings",
    "Member",
    "MetricsSettings",
    "NodeSettings",
    "ProposerSettings",
    "RaftSettings",
    "SettingsError",
    "load",
    "parse",
]

_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ADDRESS = re.compile(r"(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})")


class SettingsError(ValueError):
    """A setting is missing, unknown or out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    raft_address: str
    http_address: str
    dc: str = "default"


@dataclass(frozen=True, slots=True)
class RaftSettings:
    """pysyncobj's timers (budgetd.replication.config maps them), in milliseconds."""

    #: Election timeout range: a follower that hears nothing for this long stands for election.
    election_timeout_min_ms: int = 400
    election_timeout_max_ms: int = 1_400
    #: Heartbeat (and, with batching off, keep-alive) period of the leader.
    heartbeat_ms: int = 50
    #: A leader that has not heard from a majority for this long steps down.
    leader_fallback_ms: int = 2_000
    #: Dead-connection detection and redial interval.
    connection_timeout_ms: int = 1_500
    reconnect_ms: int = 500
    #: Take a snapshot (full dump) after this many log entries, or this much time.
    snapshot_entries: int = 20_000
    snapshot_interval_ms: int = 300_000
    #: Tick-thread poll period; also how long a leader may hold back the commit index it sends
    #: after applying (followers apply an entry within about one tick of the leader).
    tick_ms: int = 5


@dataclass(frozen=True, slots=True)
class ProposerSettings:
    """Group commit: many requests, few log entries."""

    #: Operations and encoded bytes in one log entry.
    batch_ops_max: int = 4_096
    batch_bytes_max: int = 1_048_576
    #: Admission bound: operations accepted and not yet answered (waiting for a log entry or in
    #: one in flight). A request that would pass it gets 503 unavailable with Retry-After at
    #: once, nothing proposed. About a second of a busy leader's throughput: more only makes
    #: requests wait longer (and time out) behind work that is already late. At least
    #: api.batch_ops_max, so that one largest batch always fits.
    queue_ops_max: int = 32_768
    #: Log entries in flight at once (proposed, not yet applied).
    inflight_batches_max: int = 2
    #: A request not answered within this gets 504 outcome_unknown.
    request_timeout_ms: int = 5_000
    #: The leader proposes a pulse (time, expiry, pacing, pruning) this often.
    pulse_interval_ms: int = 1_000


@dataclass(frozen=True, slots=True)
class ApiSettings:
    #: File of bearer tokens (see docs); none means the node refuses every request.
    tokens_file: str | None = None
    body_bytes_max: int = 1_048_576
    batch_ops_max: int = 1_000
    list_limit_max: int = 1_000
    #: GET /readyz fails while this node's applied index is more than this many entries behind
    #: the commit index it knows (a node replaying or catching up).
    ready_lag_entries_max: int = 1_000
    #: The tokens file is read again when its content changes, checked this often (and on
    #: SIGHUP); a broken new file keeps the old tokens.
    tokens_reload_ms: int = 5_000
    #: Append-only JSON lines of admin actions; default ``<data_dir>/audit.jsonl``.
    audit_log: str | None = None
    #: The request line and each header line, in bytes (longer: 431); headers per request.
    header_line_bytes_max: int = 8_190
    header_field_bytes_max: int = 8_190
    headers_max: int = 100
    #: Open client connections; a connection beyond it is answered 503 and closed.
    connections_max: int = 4_096
    #: A connection that has not sent a whole request head this long after it opened (or after
    #: its last answer) is closed; a request body not read within body_timeout_ms gets 408.
    header_timeout_ms: int = 30_000
    body_timeout_ms: int = 30_000
    #: Requests per second per token (a token bucket of rate_burst); beyond: 429 with
    #: Retry-After. A token's ``rate_per_s`` / ``burst`` in the tokens file overrides them.
    rate_per_s: int = 20_000
    rate_burst: int = 40_000
    #: HTTPS: certificate chain and key (PEM). With tls_client_ca_file, every client must
    #: present a certificate signed by it. tls_ca_file: the CA this node trusts for the other
    #: members' certificates when it forwards to the leader (default: the system's CAs).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    tls_ca_file: str | None = None
    #: Plain HTTP on an address other than loopback is refused unless this is true.
    allow_plain_http: bool = False

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


#: The largest value each [api] limit may take (a typo such as an extra zero fails at start-up).
API_MAXIMA: Final = {
    "body_bytes_max": 64 * 1_048_576,
    "batch_ops_max": 100_000,
    "list_limit_max": 100_000,
    "ready_lag_entries_max": 1_000_000_000,
    "tokens_reload_ms": 3_600_000,
    "header_line_bytes_max": 65_536,
    "header_field_bytes_max": 65_536,
    "headers_max": 1_000,
    "connections_max": 1_000_000,
    "header_timeout_ms": 3_600_000,
    "body_timeout_ms": 3_600_000,
    "rate_per_s": 100_000_000,
    "rate_burst": 1_000_000_000,
}


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """What /metrics exposes per campaign (budgetd.metrics): root campaigns in id order up to
    ``campaign_series_max``, plus every id in ``campaigns``; the other roots are summed into
    ``campaign="_other"`` per currency."""

    campaign_series_max: int = 500
    #: Campaign figures are recomputed at most this often (a walk over every root campaign);
    #: scrapes in between get the last ones.
    campaign_refresh_ms: int = 10_000
    campaigns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeSettings:
    node_id: str
    data_dir: str
    members: tuple[Member, ...]
    #: File holding the cluster secret (pysyncobj password); or the environment variable
    #: BUDGETD_CLUSTER_SECRET. Required, also for a single member (its Raft port listens too).
    secret_file: str | None = None
    #: Raft binds here (default: this member's raft_address). Never 0.0.0.0 by default.
    raft_bind: str | None = None
    #: HTTP binds here (default: this member's http_address).
    http_bind: str | None = None
    raft: RaftSettings = field(default_factory=RaftSettings)
    proposer: ProposerSettings = field(default_factory=ProposerSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    @property
    def me(self) -> Member:
        for member in self.members:
            if member.id == self.node_id:
                return member
        raise SettingsError(f"node_id {self.node_id!r} is not among the members")

    @property
    def peers(self) -> tuple[Member, ...]:
        return tuple(member for member in self.members if member.id != self.node_id)

    def cluster_secret(self) -> str | None:
        """The cluster secret from secret_file or BUDGETD_CLUSTER_SECRET, or None."""
        if self.secret_file:
            try:
                secret = Path(self.secret_file).read_text(encoding="utf-8").strip()
            except OSError as error:
                raise SettingsError(f"secret_file {self.secret_file}: {error.strerror}") from error
            if not secret:
                raise SettingsError(f"secret_file {self.secret_file} is empty")
            return secret
        secret = os.environ.get("BUDGETD_CLUSTER_SECRET", "").strip()
        return secret or None


def _section(raw: dict[str, Any], name: str, cls: type[Any]) -> Any:
    values = raw.pop(name, {})
    if not isinstance(values, dict):
        raise SettingsError(f"[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise SettingsError(f"unknown setting {name}.{key}")
        expected = known[key].type
        if expected == "int" and (type(value) is not int or value < 1):
            raise SettingsError(f"{name}.{key} must be a positive integer, got {value!r}")
        if expected == "str | None" and not isinstance(value, str):
            raise SettingsError(f"{name}.{key} must be a string")
        if expected == "bool" and type(value) is not bool:
            raise SettingsError(f"{name}.{key} must be true or false, got {value!r}")
    return cls(**values)


def _metrics_section(raw: dict[str, Any]) -> MetricsSettings:
    values = dict(raw.get("metrics", {})) if isinstance(raw.get("metrics"), dict) else None
    campaigns = values.pop("campaigns", []) if values is not None else []
    if values is not None:
        raw["metrics"] = values
    metrics = _section(raw, "metrics", MetricsSettings)
    if not isinstance(campaigns, list) or not all(
        isinstance(c, str) and 1 <= len(c) <= 260 for c in campaigns
    ):
        raise SettingsError("metrics.campaigns must be a list of campaign ids")
    if len(campaigns) > metrics.campaign_series_max:
        raise SettingsError(
            f"metrics.campaigns lists {len(campaigns)} ids, more than "
            f"metrics.campaign_series_max ({metrics.campaign_series_max})"
        )
    return replace(metrics, campaigns=tuple(dict.fromkeys(campaigns)))


def _check_address(name: str, address: object) -> str:
    if not isinstance(address, str) or not (match := _ADDRESS.fullmatch(address)):
        raise SettingsError(f"{name} must be host:port, got {address!r}")
    if not 1 <= int(match["port"]) <= 65535:
        raise SettingsError(f"{name} has port {match['port']} out of range")
    return address


def parse(raw: dict[str, Any], *, base_dir: Path | None = None) -> NodeSettings:
    """Settings from a decoded TOML document; relative paths are relative to ``base_dir``."""
    raw = dict(raw)
    node = raw.pop("node", None)
    cluster = raw.pop("cluster", None)
    if not isinstance(node, dict):
        raise SettingsError("missing [node] table")
    if not isinstance(cluster, dict):
        raise SettingsError("missing [cluster] table")
    raft = _section(raw, "raft", RaftSettings)
    proposer = _section(raw, "proposer", ProposerSettings)
    api = _section(raw, "api", ApiSettings)
    metrics = _metrics_section(raw)
    if raw:
        raise SettingsError(f"unknown table(s): {', '.join(sorted(raw))}")

    node = dict(node)
    node_id = node.pop("id", None)
    data_dir = node.pop("data_dir", None)
    raft_bind = node.pop("raft_bind", None)
    http_bind = node.pop("http_bind", None)
    if node:
        raise SettingsError(f"unknown setting(s) in [node]: {', '.join(sorted(node))}")
    if not isinstance(node_id, str) or not _ID.fullmatch(node_id):
        raise SettingsError("node.id must be 1-64 characters of [A-Za-z0-9_.-]")
    if not isinstance(data_dir, str) or not data_dir:
        raise SettingsError("node.data_dir is required")

    cluster = dict(cluster)
    secret_file = cluster.pop("secret_file", None)
    raw_members = cluster.pop("members", None)
    if cluster:
        raise SettingsError(f"unknown setting(s) in [cluster]: {', '.join(sorted(cluster))}")
    if not isinstance(raw_members, list) or not raw_members:
        raise SettingsError("[[cluster.members]] must list at least one member")
    members = []
    for index, entry in enumerate(raw_members):
        if not isinstance(entry, dict):
            raise SettingsError(f"cluster.members[{index}] must be a table")
        entry = dict(entry)
        try:
            member = Member(
                id=entry.pop("id"),
                raft_address=entry.pop("raft_address"),
                http_address=entry.pop("http_address"),
                dc=entry.pop("dc", "default"),
            )
        except KeyError as error:
            raise SettingsError(f"cluster.members[{index}] needs {error.args[0]}") from None
        if entry:
            raise SettingsError(f"unknown setting(s) in cluster.members[{index}]: {sorted(entry)}")
        if not isinstance(member.id, str) or not _ID.fullmatch(member.id):
            raise SettingsError(f"cluster.members[{index}].id must match [A-Za-z0-9_.-]{{1,64}}")
        _check_address(f"cluster.members[{index}].raft_address", member.raft_address)
        _check_address(f"cluster.members[{index}].http_address", member.http_address)
        if not isinstance(member.dc, str) or not _ID.fullmatch(member.dc):
            raise SettingsError(f"cluster.members[{index}].dc must match [A-Za-z0-9_.-]{{1,64}}")
        members.append(member)
    for attribute in ("id", "raft_address", "http_address"):
        values = [getattr(m, attribute) for m in members]
        if len(set(values)) != len(values):
            raise SettingsError(f"cluster members repeat a {attribute}")
    for name, value in (("node.raft_bind", raft_bind), ("node.http_bind", http_bind)):
        if value is not None:
            _check_address(name, value)

    def resolve(path: str) -> str:
        if base_dir is None or os.path.isabs(path):
            return path
        return str(base_dir / path)

    settings = NodeSettings(
        node_id=node_id,
        data_dir=resolve(data_dir),
        members=tuple(members),
        secret_file=None if secret_file is None else resolve(str(secret_file)),
        raft_bind=raft_bind,
        http_bind=http_bind,
        raft=raft,
        proposer=proposer,
        api=_resolve_api(api, resolve, resolve(data_dir)),
        metrics=metrics,
    )
    _check_api(settings)
    settings.me  # noqa: B018 - raises SettingsError when node.id is not a member
    if raft.election_timeout_min_ms >= raft.election_timeout_max_ms:
        raise SettingsError("raft.election_timeout_min_ms must be below election_timeout_max_ms")
    if raft.heartbeat_ms * 3 >= raft.election_timeout_min_ms:
        raise SettingsError("raft.heartbeat_ms must be under a third of election_timeout_min_ms")
    if raft.leader_fallback_ms <= raft.heartbeat_ms:
        raise SettingsError("raft.leader_fallback_ms must exceed raft.heartbeat_ms")
    if raft.connection_timeout_ms < raft.election_timeout_max_ms:
        raise SettingsError(
            "raft.connection_timeout_ms must be at least raft.election_timeout_max_ms"
        )
    if raft.snapshot_entries < 2:
        raise SettingsError("raft.snapshot_entries must be at least 2")
    if proposer.queue_ops_max < settings.api.batch_ops_max:
        raise SettingsError(
            f"proposer.queue_ops_max ({proposer.queue_ops_max}) must be at least "
            f"api.batch_ops_max ({settings.api.batch_ops_max}): a largest batch must fit"
        )
    if raft_bind is not None and raft_bind.rpartition(":")[0] in ("0.0.0.0", "[::]", "::"):
        raise SettingsError(
            "node.raft_bind must be one address, not a wildcard: the Raft port must be "
            "reachable by the members only"
        )
    if settings.cluster_secret() is None:
        raise SettingsError(
            "a node needs a cluster secret: set cluster.secret_file or BUDGETD_CLUSTER_SECRET "
            "(the Raft port speaks pickle: without a secret, whoever reaches it runs code here)"
        )
    return settings


_API_PATHS: Final = (
    "tokens_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "tls_ca_file",
)


def _resolve_api(api: ApiSettings, resolve: Any, data_dir: str) -> ApiSettings:
    paths: dict[str, Any] = {}
    for name in _API_PATHS:
        value = getattr(api, name)
        paths[name] = None if value is None else resolve(value)
    paths["audit_log"] = (
        str(Path(data_dir) / "audit.jsonl") if api.audit_log is None else resolve(api.audit_log)
    )
    return replace(api, **paths)


_LOOPBACK_HOSTS: Final = frozenset({"localhost", "::1", "[::1]"})


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _check_api(settings: NodeSettings) -> None:
    """The [api] limits against API_MAXIMA, TLS files present, no plain HTTP off loopback."""
    api = settings.api
    for name, maximum in API_MAXIMA.items():
        if getattr(api, name) > maximum:
            raise SettingsError(f"api.{name} must be at most {maximum}, got {getattr(api, name)}")
    if api.rate_burst < 1 or api.rate_burst < api.rate_per_s // 1_000:
        raise SettingsError("api.rate_burst must allow at least a millisecond of api.rate_per_s")
    if (api.tls_cert_file is None) != (api.tls_key_file is None):
        raise SettingsError("api.tls_cert_file and api.tls_key_file go together")
    if not api.tls and (api.tls_client_ca_file is not None or api.tls_ca_file is not None):
        raise SettingsError("api.tls_client_ca_file and api.tls_ca_file need api.tls_cert_file")
    for name in _API_PATHS[1:]:
        path = getattr(api, name)
        if path is not None and not os.path.isfile(path):
            raise SettingsError(f"api.{name} {path}: no such file")
    host = (settings.http_bind or settings.me.http_address).rpartition(":")[0]
    if not api.tls and not api.allow_plain_http and not _is_loopback(host):
        raise SettingsError(
            f"refusing plain HTTP on {host}, which is not loopback: set api.tls_cert_file and "
            f"api.tls_key_file, or api.allow_plain_http = true behind a TLS proxy or firewall"
        )


def load(path: str | Path) -> NodeSettings:
    path = Path(path)
    try:
        with path.open("rb") as file:
            raw = tomllib.load(file)
    except OSError as error:
        raise SettingsError(f"{path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path}: {error}") from error
    return parse(raw, base_dir=path.parent)
