"""Node settings: the shipped configs load, and every bad setting is named in a clear error."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from budgetd import settings
from budgetd.settings import SettingsError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGETD_CLUSTER_SECRET", "test-secret")


def raw(name: str) -> dict[str, Any]:
    return tomllib.loads((CONFIGS / name).read_text())


@pytest.mark.parametrize("name", ["local-3.toml", "dc5-node.toml"])
def test_shipped_configs_load(name: str) -> None:
    loaded = settings.parse(raw(name) | {"cluster": raw(name)["cluster"] | {"secret_file": None}})
    assert loaded.me.id == loaded.node_id
    assert len(loaded.peers) == len(loaded.members) - 1


def test_dc5_spreads_five_members_over_three_data_centers() -> None:
    loaded = settings.parse(
        raw("dc5-node.toml") | {"cluster": raw("dc5-node.toml")["cluster"] | {"secret_file": None}}
    )
    dcs = [member.dc for member in loaded.members]
    assert len(dcs) == 5 and max(dcs.count(dc) for dc in set(dcs)) == 2


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    text = (
        (CONFIGS / "local-3.toml")
        .read_text()
        .replace('"../.budgetd-dev/cluster-secret"', '"secret"')
    )
    (tmp_path / "n1.toml").write_text(text)
    loaded = settings.load(tmp_path / "n1.toml")
    assert loaded.data_dir == str(tmp_path / "../.budgetd-dev/n1")
    assert loaded.cluster_secret() == "s3cret"


def base() -> dict[str, Any]:
    document = raw("local-3.toml")
    document["cluster"]["secret_file"] = None
    del document["cluster"]["secret_file"]
    return document


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("node"), "missing [node]"),
        (lambda d: d["node"].update(id="n9"), "not among the members"),
        (lambda d: d["node"].update(colour="red"), "unknown setting(s) in [node]: colour"),
        (lambda d: d["raft"].update(heartbeat_ms=0), "raft.heartbeat_ms must be a positive"),
        (lambda d: d["raft"].update(heartbeat_ms=500), "under a third"),
        (lambda d: d["raft"].update(flux=1), "unknown setting raft.flux"),
        (lambda d: d.update(extra={}), "unknown table(s): extra"),
        (
            lambda d: d["cluster"]["members"][1].update(raft_address="127.0.0.1:7080"),
            "repeat a raft_address",
        ),
        (lambda d: d["cluster"]["members"][0].update(http_address="nowhere"), "must be host:port"),
        (
            lambda d: d["cluster"]["members"][0].update(raft_address="127.0.0.1:99999"),
            "out of range",
        ),
        (lambda d: d["proposer"].update(queue_ops_max="many"), "proposer.queue_ops_max"),
        (
            lambda d: d["proposer"].update(queue_ops_max=999),
            "proposer.queue_ops_max (999) must be at least api.batch_ops_max (1000)",
        ),
        (lambda d: d["raft"].update(connection_timeout_ms=500), "at least raft.election_timeout"),
    ],
)
def test_bad_settings_are_named(change: Any, message: str) -> None:
    document = base()
    change(document)
    with pytest.raises(
        SettingsError,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        settings.parse(document)


@pytest.mark.parametrize("members", [3, 1])
def test_a_node_without_a_secret_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, members: int
) -> None:
    monkeypatch.delenv("BUDGETD_CLUSTER_SECRET")
    document = base()
    document["cluster"]["members"] = document["cluster"]["members"][:members]
    with pytest.raises(SettingsError, match="needs a cluster secret"):
        settings.parse(document)


def test_raft_never_binds_a_wildcard() -> None:
    document = base()
    document["node"]["raft_bind"] = "0.0.0.0:7080"
    with pytest.raises(SettingsError, match="not a wildcard"):
        settings.parse(document)


def _with(**tables: dict[str, Any]) -> dict[str, Any]:
    base = raw("local-3.toml")
    return base | {"cluster": base["cluster"] | {"secret_file": None}} | tables


def test_metrics_settings_bound_the_campaign_series() -> None:
    default = settings.parse(_with())
    assert (default.metrics.campaign_series_max, default.metrics.campaigns) == (500, ())
    assert default.api.ready_lag_entries_max == 1_000
    chosen = settings.parse(
        _with(metrics={"campaign_series_max": 3, "campaigns": ["acme:summer", "acme:summer"]})
    )
    assert chosen.metrics.campaign_series_max == 3
    assert chosen.metrics.campaigns == ("acme:summer",)


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"campaign_series_max": 0}, "metrics.campaign_series_max must be a positive integer"),
        ({"campaigns": "acme"}, "metrics.campaigns must be a list of campaign ids"),
        ({"campaigns": [""]}, "metrics.campaigns must be a list of campaign ids"),
        ({"campaign_series_max": 1, "campaigns": ["a", "b"]}, "more than"),
        ({"series": 5}, "unknown setting metrics.series"),
    ],
)
def test_bad_metrics_settings_are_named(metrics: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings.parse(_with(metrics=metrics))
