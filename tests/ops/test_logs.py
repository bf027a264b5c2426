"""budgetd.logs: every record of the process — budgetd's events with their fields, other
libraries' plain records, exceptions — leaves as one JSON object a line (or a console line), with
the node id and the request id bound while a request runs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from budgetd import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_event_fields_node_and_request_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure(log_format="json", level="info", node_id="n7")
    logging.getLogger("budgetd.replication.node").info(
        "became_leader", extra={"term": 4, "commit_index": 10, "applied_index": 9}
    )
    structlog.contextvars.bind_contextvars(request_id="req-1")
    logging.getLogger("aiohttp.server").warning("client sent %d bad bytes", 3)
    structlog.contextvars.clear_contextvars()
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("pysyncobj.serializer").exception("Failed to open file")
    logging.getLogger("budgetd.node").debug("not shown at info")
    event, foreign, failure = _lines(capsys.readouterr().err)
    assert event["event"] == "became_leader" and event["level"] == "info"
    assert (event["term"], event["commit_index"], event["node_id"]) == (4, 10, "n7")
    assert event["logger"] == "budgetd.replication.node" and "timestamp" in event
    assert foreign["event"] == "client sent 3 bad bytes"
    assert (foreign["request_id"], foreign["level"]) == ("req-1", "warning")
    assert "request_id" not in failure
    assert failure["level"] == "error"
    assert "ValueError" in json.dumps(failure["exception"])


@pytest.mark.usefixtures("restore_logging")
def test_console_lines_are_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(log_format="console", level="debug", node_id="n1")
    logging.getLogger("budgetd.node").info("node_started", extra={"term": 0})
    line = capsys.readouterr().err.strip()
    assert "node_started" in line and "term=0" in line and "node_id=n1" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        logs.configure(log_format="xml")
