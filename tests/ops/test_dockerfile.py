"""The container image, checked without a Docker engine: the Dockerfile's invariants (pinned base
by tag and digest, multi-stage, non-root, volume, ports, health check, entrypoint), what its
build context lets in, and that what it installs works — the wheel of this repository builds
and, installed with constraints.txt into a fresh venv, starts its console script and holds
exactly the pinned packages."""

from __future__ import annotations

import http.server
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-bookworm@sha256:(?P<digest>[0-9a-f]{64})")


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


def instructions(parser: DockerfileParser, name: str, *, stage: int | None = None) -> list[str]:
    """The values of every ``name`` instruction (of stage ``stage`` only, counted from 0)."""
    found: list[str] = []
    current = -1
    for item in parser.structure:
        if item["instruction"] == "FROM":
            current += 1
        if item["instruction"] == name and (stage is None or stage == current):
            found.append(item["value"])
    return found


def test_the_base_image_is_pinned_by_tag_and_digest(dockerfile: DockerfileParser) -> None:
    parents = dockerfile.parent_images
    assert len(parents) == 2 and dockerfile.is_multistage, "a build stage and a runtime stage"
    digests = set()
    for image in parents:
        match = PINNED_BASE.fullmatch(image)
        assert match, f"base image {image!r} is not python:3.11.N-slim-bookworm@sha256:..."
        digests.add(match["digest"])
    (digest,) = digests
    comments = " ".join(instructions(dockerfile, "COMMENT"))
    # The digest and the tag are written out in a comment too, for a reader and for renovation.
    assert f"sha256:{digest}" in comments
    assert parents[0].partition("@")[0] in comments
    assert "latest" not in DOCKERFILE.read_text().lower()


def test_the_runtime_stage_runs_budgetd_as_a_non_root_user(dockerfile: DockerfileParser) -> None:
    users = instructions(dockerfile, "USER", stage=1)
    assert users == ["10001:10001"]
    assert "--uid 10001" in " ".join(instructions(dockerfile, "RUN", stage=1))
    assert json.loads(instructions(dockerfile, "ENTRYPOINT")[-1]) == ["budgetd"]
    assert json.loads(instructions(dockerfile, "CMD")[-1]) == [
        "run",
        "--config",
        "/etc/budgetd/budgetd.toml",
    ]
    assert json.loads(instructions(dockerfile, "VOLUME", stage=1)[0]) == ["/var/lib/budgetd"]
    # The HTTP and Raft ports of the shipped configs.
    exposed = set(" ".join(instructions(dockerfile, "EXPOSE", stage=1)).split())
    assert exposed == {"8080", "7080"}
    dc5 = (REPO / "configs" / "dc5-node.toml").read_text()
    assert ':8080"' in dc5 and ':7080"' in dc5


def test_the_image_installs_the_wheel_with_pinned_packages_and_no_dev_extra(
    dockerfile: DockerfileParser,
) -> None:
    run = " ".join(instructions(dockerfile, "RUN", stage=0))
    assert "pip wheel --no-deps" in run
    assert "pip install --constraint constraints.txt /wheels/budgetd-" in run
    assert "[dev]" not in DOCKERFILE.read_text()
    copied = [source for value in instructions(dockerfile, "COPY") for source in value.split()[:-1]]
    sources = [s for s in copied if not s.startswith("--from=") and s != "/opt/budgetd"]
    assert sources, "the build stage copies the repository's files"
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
        assert source in allowed, f"COPY {source}: excluded by .dockerignore"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_health_check_passes_on_200_and_fails_otherwise(
    dockerfile: DockerfileParser, health_server: str
) -> None:
    (check,) = instructions(dockerfile, "HEALTHCHECK", stage=1)
    command = json.loads(check.partition("CMD")[2])
    assert command[0] == "python", "slim has no curl: the image's python does the check"
    assert "/healthz" in " ".join(instructions(dockerfile, "ENV", stage=1))

    def exit_status(url: str) -> int:
        env = {"BUDGETD_HEALTH_URL": url, "PATH": str(Path(sys.executable).parent)}
        result = subprocess.run(
            [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False
        )
        return result.returncode

    assert exit_status(f"{health_server}/healthz") == 0
    assert exit_status(f"{health_server}/nothing-here") != 0
    assert exit_status("http://127.0.0.1:9/healthz") != 0  # nothing listens there


def _pins(text: str) -> set[str]:
    return {
        line.strip().lower().replace("_", "-")
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }


def _build_context(target: Path) -> Path:
    """What `docker build` sends: the files .dockerignore lets in (caches left out)."""
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    caches = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*_cache")
    target.mkdir()
    for name in allowed:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=caches)
        else:
            shutil.copy2(source, target / name)
    return target


def test_the_wheel_builds_and_its_console_script_starts_in_a_fresh_venv(tmp_path: Path) -> None:
    """What the build stage runs, in a copy of the build context: about 20 s with a warm pip
    cache."""
    context = _build_context(tmp_path / "context")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), "."],
        cwd=context,
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("budgetd-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    subprocess.run(
        [*pip, "install", "--quiet", "--constraint", "constraints.txt", str(wheel)],
        cwd=context,
        check=True,
        timeout=600,
    )
    started = subprocess.run(
        [str(venv / "bin" / "budgetd"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    assert "cluster" in started.stdout and "run" in started.stdout
    frozen = subprocess.run(
        [*pip, "freeze", "--exclude", "budgetd"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    locked = (REPO / "constraints.txt").read_text()
    assert _pins(frozen) == _pins(locked), (
        "constraints.txt is not what the wheel installs; replace its package lines with:\n"
        + frozen
        + "\n(the command: "
        + shlex.join([*pip, "freeze", "--exclude", "budgetd"])
        + ")"
    )
