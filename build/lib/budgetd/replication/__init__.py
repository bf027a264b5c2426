"""Replication: the ledger behind Raft (pysyncobj 0.3.17), durable and with msgpack snapshots.

Owns the one replicated entry point, pysyncobj's configuration, the durability patch and the
dump format; no business rules. Imports budgetd.ledger, budgetd.codec, budgetd.settings,
pysyncobj and msgpack; never aiohttp or click. See docs in each module: `node` (RaftNode), `config`,
`durability`, `snapshot`.
"""

from budgetd.replication.node import (
    EXIT_NODE_BROKEN,
    SEED_SNAPSHOT,
    MembershipCallback,
    Outcome,
    ProposalCallback,
    RaftNode,
    ReplicationError,
)

__all__ = [
    "EXIT_NODE_BROKEN",
    "SEED_SNAPSHOT",
    "MembershipCallback",
    "Outcome",
    "ProposalCallback",
    "RaftNode",
    "ReplicationError",
]
