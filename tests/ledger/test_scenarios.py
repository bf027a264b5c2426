"""The ledger's scenario scripts, tests/ledger/scenarios/*.txt: one test per file.

Each script is a story with its exact expected output; tests/ledger/scenario.py interprets it.
Regenerate on purpose with ``BUDGETD_REWRITE=1 pytest tests/ledger/test_scenarios.py``, then read
the diff: every changed line is a changed behaviour.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from budgetd.ledger import codes

_HERE = Path(__file__).parent
_SCENARIOS = sorted((_HERE / "scenarios").glob("*.txt"))


def _load_interpreter() -> ModuleType:
    """scenario.py, loaded by path: works whether or not tests/ is a package."""
    name = "budgetd_tests_ledger_scenario"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _HERE / "scenario.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


scenario = _load_interpreter()


@pytest.mark.parametrize("path", _SCENARIOS, ids=[path.name for path in _SCENARIOS])
def test_scenario(path: Path) -> None:
    outcome = scenario.run_file(path)
    if not outcome.ok:
        pytest.fail(outcome.report(), pytrace=False)


def test_refusals_scenario_reaches_every_refusal_code() -> None:
    _, blocks = scenario.parse((_HERE / "scenarios" / "refusals.txt").read_text(encoding="utf-8"))
    seen = {
        line.partition(":")[0]
        for block in blocks
        if not block.pinned
        for line in block.output or []
    }
    assert set(codes.REFUSALS) <= seen, f"never reached: {sorted(set(codes.REFUSALS) - seen)}"
