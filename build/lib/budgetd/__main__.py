"""`python -m budgetd` is the `budgetd` command."""

from budgetd.cli import main

main()
