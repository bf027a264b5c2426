"""The `budgetd` command: run a node, run a local dev cluster, and operate a cluster over HTTP.

Owns argument parsing, human and JSON output, and one-line errors. Node internals come from
budgetd.node; admin commands speak only the HTTP API (DESIGN §5), like any other client.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NoReturn

import click

from budgetd.settings import SettingsError

DEV_DIR_DEFAULT = ".budgetd-dev"
URL_DEFAULT = "http://127.0.0.1:8080"


#: ``budgetd run --event-loop``: auto is uvloop when it is installed, else asyncio's own loop.
EVENT_LOOPS: Final = ("auto", "uvloop", "asyncio")


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the node's event loop (None: asyncio's default)."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            _fail("--event-loop uvloop: uvloop is not installed")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"budgetd: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="budgetd")
def main() -> None:
    """budgetd: a Raft-replicated budget and pacing store for real-time bidders."""


# ---------------------------------------------------------------------------------------------
# run / dev


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
@click.option(
    "--log-format",
    default="json",
    show_default=True,
    type=click.Choice(["json", "console"]),
    help="json: one JSON object a line on stderr; console: aligned lines for people.",
)
@click.option(
    "--access-log", is_flag=True, help="Log every HTTP request (off: the hot path logs nothing)."
)
@click.option(
    "--event-loop",
    envvar="BUDGETD_EVENT_LOOP",
    default="auto",
    show_default=True,
    type=click.Choice(EVENT_LOOPS),
    help="The node's asyncio loop: uvloop (libuv), asyncio (the stdlib's), auto: uvloop when "
    "installed.",
)
def run(
    config_path: str, log_level: str, log_format: str, access_log: bool, event_loop: str
) -> None:
    """Run one node from a TOML config file."""
    from budgetd import settings as settings_module

    try:
        settings = settings_module.load(config_path)
    except SettingsError as error:
        _fail(f"config: {error}")
    from budgetd import logs

    logs.configure(log_format=log_format, level=log_level, node_id=settings.node_id)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    from budgetd.api import TokensError
    from budgetd.node import serve
    from budgetd.replication import ReplicationError

    try:
        with asyncio.Runner(loop_factory=_loop_factory(event_loop)) as runner:
            runner.run(serve(settings, access_log=access_log))
    except (SettingsError, TokensError) as error:
        _fail(f"config: {error}")
    except (OSError, ReplicationError) as error:
        _fail(f"cannot start node {settings.node_id}: {error}")


@main.command()
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--http-port", default=8080, show_default=True, type=click.IntRange(1, 65000))
@click.option("--raft-port", default=7080, show_default=True, type=click.IntRange(1, 65000))
@click.option(
    "--data-dir", default=DEV_DIR_DEFAULT, show_default=True, type=click.Path(file_okay=False)
)
@click.option("--token", default=None, help="The token with every role (default: generated).")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
@click.option(
    "--log-format",
    default="console",
    show_default=True,
    type=click.Choice(["json", "console"]),
    help="How each node writes its log file.",
)
def dev(
    nodes: int,
    http_port: int,
    raft_port: int,
    data_dir: str,
    token: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Run a local N-node cluster on 127.0.0.1 until Ctrl-C; resumes from DATA_DIR when rerun.

    Node i serves HTTP on HTTP_PORT+i-1 and Raft on RAFT_PORT+i-1. DATA_DIR holds each node's
    config, data and log, a generated cluster secret and the token."""
    from budgetd.localcluster import LocalCluster

    members = [
        (f"n{i}", f"127.0.0.1:{raft_port + i - 1}", f"127.0.0.1:{http_port + i - 1}")
        for i in range(1, nodes + 1)
    ]
    cluster = LocalCluster.prepare(Path(data_dir), members, token=token, log_level=log_level)
    cluster.log_format = log_format
    # SIGTERM (e.g. from a supervisor) stops the cluster like Ctrl-C does.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        for node in cluster.nodes:
            cluster.start(node.node_id)
        click.echo(f"budgetd dev: {nodes} node(s), data in {cluster.root}")
        for node in cluster.nodes:
            assert node.process is not None
            click.echo(
                f"  {node.node_id}  pid {node.process.pid}  {node.url}  "
                f"raft {node.raft_address}  log {node.log}"
            )
        click.echo(f"  token  {cluster.token}  (also in {cluster.token_path})")
        not_ready = cluster.wait_ready(timeout_s=60)
        _check_alive(cluster)
        if not_ready:
            click.echo(f"not ready after 60 s: {', '.join(not_ready)} (see their logs)")
        else:
            url = cluster.nodes[0].url
            click.echo("ready. Try:")
            click.echo(f"  export BUDGETD_TOKEN=$(cat {cluster.token_path})")
            click.echo(f'  curl -s -H "Authorization: Bearer $BUDGETD_TOKEN" {url}/v1/cluster')
        click.echo("Ctrl-C stops the cluster; run the same command again to resume from disk.")
        while True:
            _check_alive(cluster)
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("\nstopping...")
        cluster.stop_all()
        click.echo("stopped.")


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _check_alive(cluster: Any) -> None:
    for node in cluster.exited():
        cluster.stop_all()
        _fail(f"node {node.node_id} exited with status {node.process.returncode}; see {node.log}")


# ---------------------------------------------------------------------------------------------
# HTTP admin commands


class _Http:
    def __init__(
        self, url: str, token: str | None, as_json: bool, tls: ssl.SSLContext | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.as_json = as_json
        self.tls = tls

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        raw: bool = False,
    ) -> Any:
        """The decoded answer (its bytes with ``raw``); an error ends the command."""
        return asyncio.run(self._call(method, path, body, headers or {}, raw))

    async def _call(
        self, method: str, path: str, body: Any, headers: dict[str, str], raw_body: bool
    ) -> Any:
        import aiohttp

        all_headers = {"Accept": "application/json", **headers}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        timeout = aiohttp.ClientTimeout(total=30)
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=timeout, connector=aiohttp.TCPConnector(ssl=self.tls or True)
                ) as session,
                session.request(
                    method, self.url + path, data=data, headers=all_headers, max_redirects=5
                ) as response,
            ):
                raw = await response.read()
                ctype = response.headers.get("Content-Type", "")
                if raw_body and response.status < 400:
                    return raw
                if "msgpack" in ctype:
                    import msgpack

                    payload = msgpack.unpackb(raw)
                elif raw and ("json" in ctype):
                    payload = json.loads(raw)
                else:
                    payload = raw
                if response.status >= 400:
                    if isinstance(payload, dict) and "code" in payload:
                        _fail(f"{payload['code']} ({response.status}): {payload.get('detail', '')}")
                    _fail(f"HTTP {response.status}: {raw[:200]!r}")
                return payload
        except aiohttp.ClientSSLError as error:
            _fail(f"TLS with {self.url} failed (see --cacert, --cert, --cert-key): {error}", code=2)
        except aiohttp.ClientConnectionError as error:
            _fail(f"cannot reach {self.url}: {error}", code=2)
        except TimeoutError:
            _fail(f"no answer from {self.url} within 30 s", code=2)

    def show(self, payload: Any, render: Any = None) -> None:
        """``--json`` prints JSON; otherwise ``render``, or a two-column table of a map."""
        if self.as_json or not isinstance(payload, dict):
            click.echo(json.dumps(payload, indent=2, sort_keys=True))
        elif render is not None:
            render(payload)
        else:
            _table([(name.replace("_", " "), _cell(value)) for name, value in payload.items()])


def _default_token() -> str | None:
    token = os.environ.get("BUDGETD_TOKEN")
    if token:
        return token.strip()
    path = Path(DEV_DIR_DEFAULT) / "token"
    if path.exists():
        return path.read_text().strip()
    return None


def _remember_tls(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    ctx.meta[f"budgetd.{param.name}"] = value


def _tls_options(function: Any) -> Any:
    """--cacert / --cert / --cert-key, kept in the click context (read by `_client`)."""
    for flag, envvar, text in (
        ("--cert-key", "BUDGETD_CERT_KEY", "Private key of --cert (PEM)."),
        ("--cert", "BUDGETD_CERT", "Client certificate (PEM), for nodes that require one."),
        ("--cacert", "BUDGETD_CACERT", "CA certificate (PEM) to verify an https:// node with."),
    ):
        function = click.option(
            flag,
            envvar=envvar,
            default=None,
            expose_value=False,
            callback=_remember_tls,
            type=click.Path(exists=True, dir_okay=False),
            help=text,
        )(function)
    return function


def _tls_context() -> ssl.SSLContext | None:
    meta = click.get_current_context().meta
    cacert, cert, key = (meta.get(f"budgetd.{name}") for name in ("cacert", "cert", "cert_key"))
    if cacert is None and cert is None:
        return None
    if key is not None and cert is None:
        _fail("--cert-key goes with --cert")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cacert)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        _fail(f"cannot load the TLS files: {error}")
    return context


def _http_options(function: Any) -> Any:
    function = _tls_options(function)
    function = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(
        function
    )
    function = click.option(
        "--token",
        envvar="BUDGETD_TOKEN",
        default=None,
        help="Bearer token (default: $BUDGETD_TOKEN, else ./.budgetd-dev/token).",
    )(function)
    function = click.option(
        "--url", envvar="BUDGETD_URL", default=URL_DEFAULT, show_default=True, help="Any node."
    )(function)
    return function


def _client(url: str, token: str | None, as_json: bool) -> _Http:
    return _Http(url, token or _default_token(), as_json, _tls_context())


def _post(http: _Http, path: str, body: dict[str, Any], key: str | None) -> None:
    """A mutating POST with an idempotency key (generated unless given) and its answer shown."""
    idempotency_key = key or f"cli-{secrets.token_hex(12)}"
    http.show(http.call("POST", path, body, {"Idempotency-Key": idempotency_key}))


def _money(micros: Any) -> str:
    if micros is None:
        return "-"
    return f"{micros:,}"


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _table(rows: list[tuple[str, Any]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


def _render_campaign(c: dict[str, Any]) -> None:
    pacing = c.get("pacing") or {}
    _table(
        [
            ("campaign", c["campaign_id"]),
            ("status", f"{c['status']} (version {c['version']})"),
            ("currency / zone", f"{c['currency']} / {c['timezone']}"),
            ("day", c["day"]),
            ("daily budget", _money(c.get("daily_budget_micros"))),
            ("total budget", _money(c.get("total_budget_micros"))),
            ("spent today", _money(c["spent_today_micros"])),
            ("held", _money(c["held_micros"])),
            ("available", _money(c.get("available_micros"))),
            ("overspend today", _money(c["overspend_micros"])),
            ("spent total", _money(c["spent_total_micros"])),
            (
                "pacing",
                f"{pacing.get('mode')}  allowance {_money(pacing.get('allowance_micros'))}"
                f"  pass-through {pacing.get('pass_through_rate')}",
            ),
            ("applied index", c.get("applied_index")),
        ]
    )


@main.group()
def campaign() -> None:
    """Create, read and list campaigns."""


@campaign.command("put")
@click.argument("campaign_id")
@click.option("--currency")
@click.option("--timezone")
@click.option("--daily", "daily_budget_micros", type=int, help="Daily budget in micros.")
@click.option("--total", "total_budget_micros", type=int, help="Total budget in micros.")
@click.option("--start-ms", type=int)
@click.option("--end-ms", type=int)
@click.option(
    "--pacing",
    "mode",
    default="asap",
    show_default=True,
    type=click.Choice(["asap", "even", "frontloaded", "traffic_shaped"]),
)
@click.option("--weights", help="24 comma-separated hourly weights (traffic_shaped).")
@click.option("--burst-ppm", type=int)
@click.option(
    "--status", default="active", show_default=True, type=click.Choice(["active", "paused"])
)
@click.option("--if-match", "if_match", type=int, help="Only if the campaign is at this version.")
@_http_options
def campaign_put(
    campaign_id: str,
    mode: str,
    weights: str | None,
    burst_ppm: int | None,
    if_match: int | None,
    url: str,
    token: str | None,
    as_json: bool,
    **fields: Any,
) -> None:
    """Create or replace a campaign's settings."""
    body: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    pacing: dict[str, Any] = {"mode": mode}
    if weights is not None:
        try:
            pacing["hourly_weights"] = [int(w) for w in weights.split(",")]
        except ValueError:
            _fail("--weights must be 24 comma-separated integers")
    if burst_ppm is not None:
        pacing["burst_ppm"] = burst_ppm
    body["pacing"] = pacing
    headers = {} if if_match is None else {"If-Match": str(if_match)}
    http = _client(url, token, as_json)
    http.show(
        http.call("PUT", f"/v1/campaigns/{urllib.parse.quote(campaign_id)}", body, headers),
        _render_campaign,
    )


@campaign.command("get")
@click.argument("campaign_id")
@click.option("--local", is_flag=True, help="Read this node's copy (may be stale).")
@_http_options
def campaign_get(campaign_id: str, local: bool, url: str, token: str | None, as_json: bool) -> None:
    """Settings and live state of a campaign."""
    consistency = "local" if local else "strong"
    http = _client(url, token, as_json)
    path = f"/v1/campaigns/{urllib.parse.quote(campaign_id)}?consistency={consistency}"
    http.show(http.call("GET", path), _render_campaign)


@campaign.command("list")
@click.option("--prefix", default="")
@click.option("--after", default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@_http_options
def campaign_list(
    prefix: str, after: str | None, limit: int, url: str, token: str | None, as_json: bool
) -> None:
    """List campaigns by id prefix."""
    query = {"prefix": prefix, "limit": str(limit)}
    if after:
        query["after"] = after
    http = _client(url, token, as_json)
    payload = http.call("GET", "/v1/campaigns?" + urllib.parse.urlencode(query))

    def render(p: dict[str, Any]) -> None:
        for c in p.get("campaigns", []):
            click.echo(
                f"{c['campaign_id']:<40} {c['status']:<7} spent today "
                f"{_money(c['spent_today_micros']):>18}  held {_money(c['held_micros']):>15}"
            )
        if p.get("next"):
            click.echo(f"(more: --after {p['next']})")

    http.show(payload, render)


@main.command()
@click.argument("campaign_id")
@click.option("--amount", "amount_micros", required=True, type=int)
@click.option("--min", "min_amount_micros", type=int)
@click.option("--ttl-ms", required=True, type=int)
@click.option("--bidder", "bidder_id", required=True)
@click.option("--key", default=None, help="Idempotency key (default: generated).")
@_http_options
def reserve(
    campaign_id: str, key: str | None, url: str, token: str | None, as_json: bool, **fields: Any
) -> None:
    """Reserve a slice of a campaign's budget."""
    body = {"campaign_id": campaign_id, **{k: v for k, v in fields.items() if v is not None}}
    _post(_client(url, token, as_json), "/v1/reservations", body, key)


@main.command()
@click.argument("reservation_id", type=int)
@click.option("--amount", "amount_micros", required=True, type=int)
@click.option("--final", is_flag=True, help="Release the rest after this commit.")
@click.option("--key", default=None)
@_http_options
def commit(
    reservation_id: int,
    amount_micros: int,
    final: bool,
    key: str | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Commit spend against a reservation."""
    body = {"amount_micros": amount_micros, "final": final}
    _post(_client(url, token, as_json), f"/v1/reservations/{reservation_id}/commit", body, key)


@main.command()
@click.argument("reservation_id", type=int)
@click.option("--key", default=None)
@_http_options
def release(
    reservation_id: int, key: str | None, url: str, token: str | None, as_json: bool
) -> None:
    """Release what a reservation still holds."""
    _post(_client(url, token, as_json), f"/v1/reservations/{reservation_id}/release", {}, key)


@main.command()
@click.argument("campaign_id")
@click.option("--amount", "amount_micros", required=True, type=int)
@click.option("--bidder", "bidder_id", required=True)
@click.option("--key", default=None)
@_http_options
def spend(
    campaign_id: str,
    amount_micros: int,
    bidder_id: str,
    key: str | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Record spend with no reservation (a late billing notice)."""
    body = {"amount_micros": amount_micros, "bidder_id": bidder_id}
    path = f"/v1/campaigns/{urllib.parse.quote(campaign_id)}/spend"
    _post(_client(url, token, as_json), path, body, key)


@main.group()
def cluster() -> None:
    """Cluster status and membership."""


@cluster.command("status")
@_http_options
def cluster_status(url: str, token: str | None, as_json: bool) -> None:
    """Leader, term, indexes, digest and members, as one node sees them."""
    http = _client(url, token, as_json)

    def render(s: dict[str, Any]) -> None:
        _table(
            [
                ("node", s.get("node_id")),
                ("leader", s.get("leader_id")),
                ("term", s.get("term")),
                ("commit index", s.get("commit_index")),
                ("applied index", s.get("applied_index")),
                ("digest", s.get("digest")),
            ]
        )
        click.echo("")
        click.echo(f"{'member':<8} {'role':<10} {'dc':<10} {'healthy':<8} {'raft':<22} http")
        for m in s.get("members", []):
            # A member added after this node started, and not yet in its config, has no id.
            click.echo(
                f"{m.get('id') or '?':<8} {m.get('role')!s:<10} {m.get('dc') or '?':<10} "
                f"{m.get('healthy')!s:<8} {m['raft_address']:<22} {m.get('http_address') or '?'}"
            )

    http.show(http.call("GET", "/v1/cluster"), render)


@cluster.command("add-node")
@click.option("--id", "member_id", required=True)
@click.option("--raft-address", required=True)
@click.option("--http-address", required=True)
@click.option("--dc", default="default", show_default=True)
@_http_options
def cluster_add(
    member_id: str,
    raft_address: str,
    http_address: str,
    dc: str,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Add a member (start it first with the new member list in its config)."""
    http = _client(url, token, as_json)
    body = {"id": member_id, "raft_address": raft_address, "http_address": http_address, "dc": dc}
    http.show(http.call("POST", "/v1/cluster/members", body))


@cluster.command("remove-node")
@click.argument("member_id")
@_http_options
def cluster_remove(member_id: str, url: str, token: str | None, as_json: bool) -> None:
    """Remove a member from the cluster."""
    http = _client(url, token, as_json)
    http.show(http.call("DELETE", f"/v1/cluster/members/{urllib.parse.quote(member_id)}"))


@cluster.command("transfer-leader")
@click.option("--to", "target_id", default=None, help="Member id (default: any caught-up one).")
@_http_options
def cluster_transfer_leader(
    target_id: str | None, url: str, token: str | None, as_json: bool
) -> None:
    """Move leadership to another member and wait until it leads (e.g. before stopping the
    leader). Writes sent meanwhile get 503 unavailable: retry them with the same key."""
    http = _client(url, token, as_json)
    http.show(http.call("POST", "/v1/cluster/leader", {"node_id": target_id}))


#: ``budgetd limits set`` options: (flag, the limit it sets). One spelling with the API's fields.
_LIMIT_OPTIONS: Final = (
    ("--campaigns-max", "campaigns_max"),
    ("--open-reservations-max", "open_reservations_max"),
    ("--ended-reservations-max", "ended_reservations_max"),
    ("--idempotency-keys-max", "idempotency_keys_max"),
    ("--ttl-ms-max", "ttl_ms_max"),
    ("--idempotency-retention-ms", "idempotency_retention_ms"),
    ("--ended-retention-ms", "ended_retention_ms"),
)
#: The table each limit bounds, as `GET /v1/admin/limits` reports its usage.
_LIMIT_TABLES: Final = {
    "campaigns_max": "campaigns",
    "open_reservations_max": "open_reservations",
    "ended_reservations_max": "ended_reservations",
    "idempotency_keys_max": "idempotency_keys",
}


def _render_limits(view: dict[str, Any]) -> None:
    usage = view.get("usage", {})
    settable = set(view.get("settable", []))
    click.echo(f"{'limit':<26} {'value':>25} {'held':>14} {'share':>7}")
    for name, value in view["limits"].items():
        table = _LIMIT_TABLES.get(name)
        held = usage.get(table) if table else None
        share = f"{held / value:.1%}" if held is not None and value else ""
        fixed = "" if name in settable else "  (fixed)"
        held_text = _money(held) if held is not None else ""
        click.echo(f"{name:<26} {value:>25,} {held_text:>14} {share:>7}{fixed}".rstrip())
    click.echo(f"applied index {view.get('applied_index')}")


@main.group()
def limits() -> None:
    """Show and change the ledger's limits (replicated: a change goes through the log)."""


@limits.command("show")
@click.option("--local", is_flag=True, help="Read this node's copy (may be stale).")
@_http_options
def limits_show(local: bool, url: str, token: str | None, as_json: bool) -> None:
    """Every limit, what its table holds now and the share of the limit it uses."""
    http = _client(url, token, as_json)
    path = "/v1/admin/limits" + ("?consistency=local" if local else "")
    http.show(http.call("GET", path), _render_limits)


def _limit_options(function: Any) -> Any:
    for flag, name in reversed(_LIMIT_OPTIONS):
        function = click.option(flag, name, type=int, default=None, help=f"New {name}.")(function)
    return function


@limits.command("set")
@_limit_options
@_http_options
def limits_set(url: str, token: str | None, as_json: bool, **values: int | None) -> None:
    """Change the named limits, through the log (every node applies the change at the same
    entry). A limit below what its table holds refuses new entries only; retentions are at
    least 1 h (idempotency) and 10 min (ended reservations); --ttl-ms-max at most a day."""
    changes = {name: value for name, value in values.items() if value is not None}
    if not changes:
        _fail(f"name at least one limit to set: {', '.join(flag for flag, _ in _LIMIT_OPTIONS)}")
    http = _client(url, token, as_json)
    http.show(http.call("PATCH", "/v1/admin/limits", changes), _render_limits)


@main.group()
def snapshot() -> None:
    """Back up the ledger and restore it."""


@snapshot.command("save")
@click.argument("path", type=click.Path(dir_okay=False))
@_http_options
def snapshot_save(path: str, url: str, token: str | None, as_json: bool) -> None:
    """Save a consistent snapshot of the ledger (taken through the log) to PATH."""
    http = _client(url, token, as_json)
    data = http.call("GET", "/v1/snapshot", headers={"Accept": "application/msgpack"}, raw=True)
    if not isinstance(data, bytes | bytearray):
        _fail("the node did not return snapshot bytes")
    from budgetd.codec import CodecError, decode_snapshot

    try:
        ledger = decode_snapshot(bytes(data))
    except CodecError as error:
        _fail(f"the node returned a snapshot that does not decode: {error}")
    tmp = Path(path + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    stats = ledger.stats()
    click.echo(
        f"saved {len(data):,} bytes to {path}: {stats['campaigns']} campaigns, "
        f"{stats['open_reservations']} open reservations, digest {ledger.digest()}"
    )


@snapshot.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The data_dir of a STOPPED node; its log and dump are replaced.",
)
def snapshot_restore(path: str, data_dir: str) -> None:
    """Seed a stopped node's data dir from a snapshot (restore every node, then start them)."""
    from budgetd.codec import CodecError, decode_snapshot
    from budgetd.replication import SEED_SNAPSHOT

    data = Path(path).read_bytes()
    try:
        ledger = decode_snapshot(data)
    except CodecError as error:
        _fail(f"{path} is not a budgetd snapshot: {error}")
    target = Path(data_dir)
    if target.exists():
        backup = target.with_name(target.name + f".before-restore-{int(time.time())}")
        shutil.move(str(target), backup)
        click.echo(f"moved the old data dir to {backup}")
    target.mkdir(parents=True)
    shutil.copyfile(path, target / SEED_SNAPSHOT)
    click.echo(
        f"{target} will start from {path} (digest {ledger.digest()}); restore every node "
        "from the same file, then start them all"
    )


if __name__ == "__main__":
    main()
