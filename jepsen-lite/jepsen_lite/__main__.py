"""`python -m jepsen_lite`: the `jepsen-lite` command (jepsen_lite.cli). No budgetd import."""

from jepsen_lite.cli import main

main()
