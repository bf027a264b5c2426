"""``python -m benchlib`` (scripts/bench puts scripts/ on the path): the benchmark of record."""

from benchlib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
