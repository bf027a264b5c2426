"""The metric names a PromQL expression reads, and the files that hold budgetd's expressions
(configs/prometheus/rules.yml, configs/grafana/budgetd.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "configs" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "configs" / "prometheus" / "rules_test.yml"
DASHBOARD = ROOT / "configs" / "grafana" / "budgetd.json"
ALERTS_DOC = ROOT / "docs" / "alerts.md"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring"}
)
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expression: str) -> set[str]:
    """Names of the series ``expression`` selects (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expression)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        if re.fullmatch(r"[0-9.e+-]+", name):
            continue
        names.add(name)
    return names


def exposed_name(name: str, families: dict[str, str]) -> str:
    """The family a sample name belongs to: ``x_bucket`` of histogram ``x`` is ``x``; a
    counter's ``_total`` is its family's. ``families`` maps family names to their types."""
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and families.get(base) == "histogram":
            return base
    base = name.removesuffix("_total")
    if base != name and families.get(base) == "counter":
        return base
    return name


def rules() -> dict[str, Any]:
    return dict(yaml.safe_load(RULES.read_text()))


def rule_expressions() -> list[str]:
    return [rule["expr"] for group in rules()["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {
        rule["record"] for group in rules()["groups"] for rule in group["rules"] if "record" in rule
    }


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_expressions() -> list[str]:
    return [
        target["expr"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
