"""[api] settings checked at start-up: every limit has a named maximum, TLS files go together and
exist, plain HTTP off loopback is refused unless allowed, the audit log defaults to the data dir."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from budgetd import settings
from budgetd.settings import API_MAXIMA, SettingsError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGETD_CLUSTER_SECRET", "test-secret")


def document(**api: Any) -> dict[str, Any]:
    raw = tomllib.loads((CONFIGS / "local-3.toml").read_text())
    del raw["cluster"]["secret_file"]
    raw["api"].update(api)
    return raw


def on_address(raw: dict[str, Any], host: str) -> dict[str, Any]:
    for index, member in enumerate(raw["cluster"]["members"]):
        member["http_address"] = f"{host}:{8080 + index}"
    return raw


@pytest.mark.parametrize("name", sorted(API_MAXIMA))
def test_every_limit_has_a_named_maximum(name: str) -> None:
    maximum = API_MAXIMA[name]
    extra = {"rate_burst": maximum} if name == "rate_per_s" else {}
    largest = document(**{name: maximum}, **extra)
    if name == "batch_ops_max":  # the proposer must admit a largest batch
        largest["proposer"]["queue_ops_max"] = maximum
    settings.parse(largest)
    with pytest.raises(SettingsError, match=rf"api\.{name} must be at most {maximum}"):
        settings.parse(document(**{name: maximum + 1}))
    with pytest.raises(SettingsError, match=rf"api\.{name} must be a positive integer"):
        settings.parse(document(**{name: 0}))


def test_local_3_documents_every_api_setting() -> None:
    text = (CONFIGS / "local-3.toml").read_text()
    section = text[text.index("[api]") :]
    for name in settings.ApiSettings.__dataclass_fields__:
        assert f"{name} =" in section, f"configs/local-3.toml does not show api.{name}"


def test_plain_http_off_loopback_is_refused_unless_allowed() -> None:
    with pytest.raises(SettingsError, match=r"refusing plain HTTP on 10\.1\.0\.5"):
        settings.parse(on_address(document(), "10.1.0.5"))
    allowed = settings.parse(on_address(document(allow_plain_http=True), "10.1.0.5"))
    assert allowed.api.allow_plain_http
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert not settings.parse(on_address(document(), host)).api.tls
    with pytest.raises(SettingsError, match="must be true or false"):
        settings.parse(document(allow_plain_http="yes"))


def test_tls_files_go_together_and_must_exist(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    with pytest.raises(SettingsError, match="go together"):
        settings.parse(document(tls_cert_file=str(cert)))
    with pytest.raises(SettingsError, match=r"need api\.tls_cert_file"):
        settings.parse(document(tls_client_ca_file=str(cert)))
    with pytest.raises(SettingsError, match="no such file"):
        settings.parse(document(tls_cert_file=str(cert), tls_key_file=str(tmp_path / "nope")))
    loaded = settings.parse(
        on_address(document(tls_cert_file=str(cert), tls_key_file=str(key)), "10.1.0.5")
    )
    assert loaded.api.tls and loaded.api.scheme == "https"


def test_the_audit_log_defaults_to_the_data_dir(tmp_path: Path) -> None:
    loaded = settings.parse(document(), base_dir=tmp_path)
    assert loaded.api.audit_log == str(Path(loaded.data_dir) / "audit.jsonl")
    moved = settings.parse(document(audit_log="/var/log/budgetd/audit.jsonl"), base_dir=tmp_path)
    assert moved.api.audit_log == "/var/log/budgetd/audit.jsonl"
