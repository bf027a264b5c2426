"""Broken-store canaries: real budgetd nodes with one deliberate bug each, to show that the
checkers catch real broken stores. Owns the mode registry; imports no budgetd module here.

Each mode is a module ``jepsen_lite.canaries.<mode_with_underscores>`` exposing ``apply()``
(monkeypatches budgetd inside the running node process only) and a docstring naming the
checker that must flag it. ``python -m jepsen_lite.canaries <mode> <budgetd CLI args...>``
applies a mode and runs budgetd's CLI in the same process; ``Sandbox(..., canary=mode)``
starts every node that way. budgetd itself has no canary code or switch.

This package is the one part of jepsen_lite allowed to import budgetd (the
"jepsen-lite-outside" import contract ignores its modules): a canary must break budgetd from
the inside. Nothing else in jepsen_lite imports the mode modules.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import re
from typing import Final

__all__ = ["LOG_LINE", "UnknownMode", "banner", "modes", "module_name"]

#: The loud line a canary node writes first (stderr, so into the node's log).
LOG_LINE: Final = "CANARY {mode}: this node is deliberately broken"
_MODE: Final = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class UnknownMode(ValueError):
    """No canary module of that name; the message is one line naming the known modes."""


def banner(mode: str) -> str:
    return LOG_LINE.format(mode=mode)


def modes() -> dict[str, str]:
    """{mode name: the first line of its module docstring}, found by module name (every
    public module of this package but ``__main__``), sorted. Reads the docstrings without
    importing the modules (they import budgetd)."""
    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mode = info.name.replace("_", "-")
        found[mode] = _summary(info)
    return dict(sorted(found.items()))


def _summary(info: pkgutil.ModuleInfo) -> str:
    """The first paragraph of the module's docstring, on one line."""
    spec = importlib.util.find_spec(f"{__name__}.{info.name}")  # finds, does not import
    origin = None if spec is None else spec.origin
    if origin is None:
        return ""
    with open(origin, encoding="utf-8") as source:
        docstring = ast.get_docstring(ast.parse(source.read())) or ""
    return " ".join(docstring.split("\n\n", 1)[0].split())


def module_name(mode: str) -> str:
    """The module of ``mode``; UnknownMode if there is none."""
    known = modes()
    if not _MODE.match(mode) or mode not in known:
        raise UnknownMode(f"unknown canary mode {mode!r} (known: {', '.join(known) or 'none'})")
    return f"{__name__}.{mode.replace('-', '_')}"
