"""budgetd: a Raft-replicated budget and pacing store for programmatic advertising.

The pure ledger lives in `budgetd.ledger`; `budgetd.codec` turns its state into bytes and back.
"""

__version__ = "0.1.0"
