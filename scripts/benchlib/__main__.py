"""``python -m benchlib`` (scripts/bench puts scripts/ on the path): the benchmark of record."""

import sys

from benchlib.cli import main

if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as stop:
        # Every process the run started is stopped by then (see cli.main).
        reason = stop or "Ctrl-C"
        print(f"scripts/bench: interrupted ({reason}); no results written", file=sys.stderr)
        raise SystemExit(130) from None
