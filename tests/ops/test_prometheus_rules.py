"""configs/prometheus/rules.yml: valid (promtool check rules), every alert fires and stays silent
as its unit tests say (promtool test rules), every alert is documented in docs/alerts.md; and
configs/grafana/budgetd.json is a dashboard Grafana loads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.ops.promql import (
    ALERTS_DOC,
    RULES,
    RULES_TEST,
    dashboard,
    metric_names,
    recorded_names,
    rules,
)

ALERTS = (
    "BudgetdNoLeader",
    "BudgetdQuorumLost",
    "BudgetdNodeDown",
    "BudgetdReplicationLag",
    "BudgetdFsyncSlow",
    "BudgetdDiskFilling",
    "BudgetdSnapshotStale",
    "BudgetdClockSkew",
    "BudgetdGcPauseLong",
    "BudgetdOverspend",
    "BudgetdLedgerLimitNear",
    "BudgetdReserveErrorBudgetBurn",
    "BudgetdReserveLatencyBurn",
    "BudgetdCommitErrorBudgetBurn",
)


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.geteuid() == 0:
            pytest.fail("promtool is missing; scripts/test installs it (scripts/_apt.sh)")
        pytest.skip("promtool is missing (Debian package prometheus; installing it needs root)")
    return path


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rules()["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_silent_as_its_unit_tests_say() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", RULES_TEST.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULES_TEST.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    cases: dict[str, dict[str, int]] = {}
    for test in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in test["alert_rule_test"]:
            kind = "firing" if check["exp_alerts"] else "silent"
            counts = cases.setdefault(check["alertname"], {"firing": 0, "silent": 0})
            counts[kind] += 1
    for alert in ALERTS:
        assert cases.get(alert, {}).get("firing", 0) >= 1, f"{alert} has no firing test"
        assert cases.get(alert, {}).get("silent", 0) >= 1, f"{alert} has no silent test"


def test_every_alert_is_named_labelled_annotated_and_documented() -> None:
    doc = ALERTS_DOC.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in doc.splitlines()
        if line.startswith("## ")
    }
    defined = {rule["alert"] for rule in _alert_rules()}
    assert defined == set(ALERTS)
    for rule in _alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket", "warning"), name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["runbook_url"] == f"docs/alerts.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/alerts.md has no section for {name}"


def test_alerts_read_only_budgetd_series_recorded_rules_and_up() -> None:
    recorded = recorded_names()
    for group in rules()["groups"]:
        for rule in group["rules"]:
            for name in metric_names(rule["expr"]):
                assert name in recorded or name == "up" or name.startswith("budgetd_"), name


def test_the_dashboard_is_grafana_json_on_a_templated_prometheus() -> None:
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for row in range(grid["y"], grid["y"] + grid["h"]):
            for column in range(grid["x"], grid["x"] + grid["w"]):
                assert (row, column) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((row, column))
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip()


def test_metric_names_are_read_from_promql() -> None:
    expression = (
        'histogram_quantile(0.99, sum by (job, le) (rate(budgetd_x_bucket{route="/v1/a b",'
        'le="0.05"}[5m]))) > 0.05 or on(job) max by (job) (budgetd:r:ratio_rate5m) and up == 0'
    )
    assert metric_names(expression) == {"budgetd_x_bucket", "budgetd:r:ratio_rate5m", "up"}
