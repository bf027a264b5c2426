"""``python -m jepsen_lite.canaries <mode> <budgetd CLI args...>``: apply one canary mode to
this process, then run budgetd's CLI (e.g. ``run --config n1.toml``). ``--list`` prints the
modes. Imports budgetd (only this package may: see the package docstring).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Final

from jepsen_lite.canaries import UnknownMode, banner, modes, module_name

#: Exit status of a bad invocation (as click uses for usage errors).
EXIT_USAGE: Final = 2
USAGE: Final = "usage: python -m jepsen_lite.canaries (--list | <mode> <budgetd CLI args...>)"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        print("modes: " + ", ".join(modes()), file=sys.stderr)
        return 0 if args else EXIT_USAGE
    if args[0] == "--list":
        for mode, summary in modes().items():
            print(f"{mode}\t{summary}")
        return 0
    mode, rest = args[0], args[1:]
    try:
        name = module_name(mode)
    except UnknownMode as error:
        print(f"jepsen-lite canaries: {error}", file=sys.stderr)
        return EXIT_USAGE
    importlib.import_module(name).apply()
    print(banner(mode), file=sys.stderr, flush=True)
    from budgetd.cli import main as budgetd_main

    budgetd_main(args=rest, prog_name="budgetd")  # click exits with the command's status
    return 0


if __name__ == "__main__":
    sys.exit(main())
