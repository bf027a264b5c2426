"""The Kubernetes manifests in configs/k8s/, checked offline: every object against the
Kubernetes 1.30 JSON schemas (strict: unknown fields are errors) bundled by kubernetes-validate,
the properties a 5-member Raft cluster needs (spread, probes, non-root, a PDB of one, Raft open
to members only), and the per-pod config that the init container renders — run here with sh,
as in the pod — parsed by budgetd itself."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from budgetd.api import Tokens, TokensError
from budgetd.replication.config import build_conf
from budgetd.settings import NodeSettings, parse

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "configs" / "k8s"
KUBERNETES_VERSION = "1.30"
NAMESPACE = "budgetd"
REPLICAS = 5


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                found.append((path.name, document))
    return found


DOCUMENTS = _documents()
OBJECTS = [(name, doc) for name, doc in DOCUMENTS if doc["kind"] != "Kustomization"]


def the(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [
        doc
        for _, doc in OBJECTS
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    return found


@pytest.mark.parametrize(
    "document", [doc for _, doc in OBJECTS], ids=[f"{n}:{d['kind']}" for n, d in OBJECTS]
)
def test_every_manifest_is_valid_for_kubernetes_1_30(document: dict[str, Any]) -> None:
    used = kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    assert used == KUBERNETES_VERSION
    if document["kind"] != "Namespace":
        assert document["metadata"]["namespace"] == NAMESPACE


def test_the_validator_refuses_a_broken_manifest() -> None:
    """Without this, a validator that accepts anything would pass the test above."""
    typo = copy.deepcopy(the("StatefulSet"))
    typo["spec"]["replica"] = typo["spec"].pop("replicas")
    wrong_type = copy.deepcopy(the("PodDisruptionBudget"))
    wrong_type["spec"]["selector"] = "app=budgetd"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    (kustomization,) = [doc for _, doc in DOCUMENTS if doc["kind"] == "Kustomization"]
    files = {name for name, _ in OBJECTS}
    assert sorted(kustomization["resources"]) == sorted(files)


def _pod() -> dict[str, Any]:
    return dict(the("StatefulSet")["spec"]["template"]["spec"])


def test_the_statefulset_spreads_five_members_and_starts_them_together() -> None:
    statefulset = the("StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == REPLICAS
    # OrderedReady would deadlock: budgetd-0 is not Ready before a majority elects a leader.
    assert spec["podManagementPolicy"] == "Parallel"
    labels = spec["selector"]["matchLabels"]
    assert spec["template"]["metadata"]["labels"].items() >= labels.items()
    pod = _pod()
    anti = pod["affinity"]["podAntiAffinity"]
    (host,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert host["topologyKey"] == "kubernetes.io/hostname"
    (zone,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert zone["podAffinityTerm"]["topologyKey"] == "topology.kubernetes.io/zone"
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert spread["topology.kubernetes.io/zone"]["maxSkew"] == 1
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "DoNotSchedule"
    for term in [host, zone["podAffinityTerm"], *spread.values()]:
        assert term["labelSelector"]["matchLabels"] == labels
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert pod["terminationGracePeriodSeconds"] >= 10


def _backup_pod() -> dict[str, Any]:
    return dict(the("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"])


@pytest.mark.parametrize("pod", [_pod(), _backup_pod()], ids=["statefulset", "backup"])
def test_every_container_is_non_root_read_only_and_bounded(pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][kind].keys(), container["name"]
        assert "latest" not in container["image"]


def test_the_probes_use_health_and_readiness() -> None:
    (container,) = _pod()["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8080, "raft": 7080}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"


def test_services_pdb_and_network_policy() -> None:
    statefulset = the("StatefulSet")
    labels = statefulset["spec"]["selector"]["matchLabels"]
    peers = the("Service", statefulset["spec"]["serviceName"])
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in peers["spec"]["ports"]} == {7080, 8080}
    client = the("Service", "budgetd")
    assert [p["port"] for p in client["spec"]["ports"]] == [8080]
    assert "publishNotReadyAddresses" not in client["spec"]
    for service in (peers, client):
        assert service["spec"]["selector"] == labels
    pdb = the("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    policy = the("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == labels
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    by_port = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
    assert by_port.keys() == {7080, 8080}
    # Raft: budgetd pods only. (A rule without "from" admits everyone: only HTTP has one.)
    assert by_port[7080]["from"] == [{"podSelector": {"matchLabels": labels}}]


# ----------------------------------------------------------------------------------------------
# The config each pod renders


def _render(tmp_path: Path, pod_name: str, pod_ip: str) -> subprocess.CompletedProcess[str]:
    """The init container's own command, run with this machine's sh, in a tmp dir."""
    (init,) = _pod()["initContainers"]
    template = tmp_path / "template.toml"
    template.write_text(the("ConfigMap")["data"]["budgetd.toml"])
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env["OUT"] == "/etc/budgetd/budgetd.toml"
    assert _pod()["containers"][0]["args"] == ["run", "--config", env["OUT"]]
    run_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "POD_NAME": pod_name,
        "POD_IP": pod_ip,
        "TEMPLATE": str(template),
        "OUT": str(tmp_path / "budgetd.toml"),
    }
    return subprocess.run(
        init["command"], env=run_env, capture_output=True, text=True, timeout=30, check=False
    )


def _settings(rendered: Path, monkeypatch: pytest.MonkeyPatch) -> NodeSettings:
    monkeypatch.setenv("BUDGETD_CLUSTER_SECRET", "a-test-secret")
    return parse(tomllib.loads(rendered.read_text()), base_dir=rendered.parent)


@pytest.mark.parametrize("ordinal", range(REPLICAS))
def test_each_pod_renders_a_config_budgetd_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ordinal: int
) -> None:
    pod_name, pod_ip = f"budgetd-{ordinal}", f"10.8.{ordinal}.17"
    rendered = _render(tmp_path, pod_name, pod_ip)
    assert rendered.returncode == 0, rendered.stderr
    settings = _settings(tmp_path / "budgetd.toml", monkeypatch)
    assert settings.node_id == pod_name
    assert settings.raft_bind == f"{pod_ip}:7080"
    assert settings.data_dir == "/var/lib/budgetd"
    assert settings.api.tokens_file == "/etc/budgetd-secret/tokens.toml"
    peers = the("StatefulSet")["spec"]["serviceName"]
    assert [m.id for m in settings.members] == [f"budgetd-{i}" for i in range(REPLICAS)]
    for i, member in enumerate(settings.members):
        name = f"budgetd-{i}.{peers}.{NAMESPACE}.svc.cluster.local"
        assert (member.raft_address, member.http_address) == (f"{name}:7080", f"{name}:8080")
    # The one place that builds pysyncobj's config accepts it (bind address, timers, secret).
    conf = build_conf(
        settings,
        serializer=lambda path, data: None,
        deserializer=lambda path: None,
        serialize_checker=lambda: 0,
    )
    assert conf.bindAddress == f"{pod_ip}:7080"
    # A rescheduled pod keeps its name and gets a new IP: peers must not dial the old one for
    # pysyncobj's default 600 s.
    assert conf.dnsCacheTime <= 10 and conf.dnsFailCacheTime <= 5
    # The secret and token paths the config names are where the pod mounts them.
    mounts = {m["name"]: m["mountPath"] for m in _pod()["containers"][0]["volumeMounts"]}
    assert settings.api.tokens_file.startswith(mounts["secret"] + "/")
    assert settings.data_dir == mounts["data"]


@pytest.mark.parametrize(
    ("pod_name", "pod_ip", "complaint"),
    [("other-0", "10.8.0.1", "is not budgetd-N"), ("budgetd-0", "fd00::1", "IPv6")],
)
def test_the_render_step_refuses_what_budgetd_could_not_run(
    tmp_path: Path, pod_name: str, pod_ip: str, complaint: str
) -> None:
    rendered = _render(tmp_path, pod_name, pod_ip)
    assert rendered.returncode != 0 and complaint in rendered.stderr
    assert not (tmp_path / "budgetd.toml").exists()


def test_the_secret_holds_placeholders_that_a_node_refuses(tmp_path: Path) -> None:
    secret = the("Secret", "budgetd")
    values = secret["stringData"]
    assert set(values) == {"cluster-secret", "tokens.toml"}
    assert "REPLACE" in values["cluster-secret"]
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(values["tokens.toml"])
    with pytest.raises(TokensError, match="sha256 must be 64 lowercase hex digits"):
        Tokens.load(str(tokens))
    # The StatefulSet takes both keys from this Secret.
    (container,) = _pod()["containers"]
    (env,) = container["env"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "budgetd", "key": "cluster-secret"}
    volume = next(v for v in _pod()["volumes"] if v["name"] == "secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]


# ----------------------------------------------------------------------------------------------
# The backup job's command, against a real cluster


@pytest.mark.cluster
def test_the_backup_job_saves_a_snapshot_and_prunes_old_ones(tmp_path: Path) -> None:
    from budgetd.codec import decode_snapshot
    from tests.cluster.harness import Cluster

    (container,) = _backup_pod()["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    service = the("Service", "budgetd")["metadata"]["name"]
    assert env["BUDGETD_URL"] == f"http://{service}.{NAMESPACE}.svc.cluster.local:8080"
    assert container["volumeMounts"][0]["mountPath"] == env["BACKUP_DIR"]
    backups = tmp_path / "backups"
    backups.mkdir()
    old = backups / "budgetd-20200101T000000Z.snapshot"
    old.write_bytes(b"old")
    os.utime(old, (0, 0))
    cluster = Cluster.create(tmp_path / "cluster")
    try:
        cluster.leader()
        run_env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "BUDGETD_URL": cluster.nodes[0].url,
            "BUDGETD_TOKEN": cluster.token,
            "BACKUP_DIR": str(backups),
            "KEEP_DAYS": env["KEEP_DAYS"],
        }
        done = subprocess.run(
            container["command"], env=run_env, capture_output=True, text=True, timeout=60
        )
    finally:
        cluster.stop_all()
    assert done.returncode == 0, done.stderr
    (saved,) = backups.glob("budgetd-*.snapshot")
    assert saved != old, "the backup older than KEEP_DAYS is pruned"
    decode_snapshot(saved.read_bytes())
