"""Partitions: one nftables set of cut (source, destination) address pairs in the control
namespace, which routes every node-to-node packet. Each change is one `nft -f` transaction, so
a partition appears (or heals) at once. Cut TCP gets a reset, anything else an ICMP reject, so
peers fail fast instead of waiting for timeouts. The harness's own address is never cut. Also
the grudge functions (Jepsen's partition shapes), pure and seeded by the caller's Random.

Imports no budgetd module.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from jepsen_lite._run import run

__all__ = [
    "TABLE",
    "Grudge",
    "Net",
    "complete_grudge",
    "grudge_bridge",
    "grudge_halves",
    "grudge_isolate",
    "grudge_majorities_ring",
    "grudge_one",
    "grudge_pairs",
]

#: The nftables table (family inet) in the control namespace.
TABLE: Final = "jl"
#: Cut pairs one transaction may install: every directed pair of a 16-node cluster.
CUT_PAIRS_MAX: Final = 16 * 15

_BASE: Final = f"""\
table inet {TABLE} {{
  set cut {{ type ipv4_addr . ipv4_addr; }}
  chain filter_fwd {{
    type filter hook forward priority 0; policy accept;
    ip saddr . ip daddr @cut meta l4proto tcp counter reject with tcp reset
    ip saddr . ip daddr @cut counter reject
  }}
}}
"""


class Net:
    """The cut links between nodes, by node id. ``addresses`` maps node id to its IPv4
    address; ``namespace`` is the control namespace that routes between them."""

    def __init__(self, namespace: str, addresses: Mapping[str, str]) -> None:
        self.namespace = namespace
        self.addresses = dict(addresses)
        self._cut: frozenset[tuple[str, str]] = frozenset()
        self._listeners: list[Callable[[frozenset[tuple[str, str]]], None]] = []

    def on_apply(self, listener: Callable[[frozenset[tuple[str, str]]], None]) -> None:
        """Call ``listener`` with the new cut pairs after every change the table took (a
        userspace relay cuts the links it carries the same way)."""
        self._listeners.append(listener)

    def install(self) -> None:
        """Create the table with an empty cut set (a fresh control namespace has no rules)."""
        self._nft(_BASE)
        self._cut = frozenset()

    @property
    def cut(self) -> frozenset[tuple[str, str]]:
        """The directed (from node, to node) pairs cut now, as last applied."""
        return self._cut

    def apply(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Make exactly ``pairs`` (directed, by node id) the cut links, in one transaction."""
        wanted = frozenset(pairs)
        for source, destination in wanted:
            if source == destination:
                raise ValueError(f"a node cannot be cut from itself: {source}")
            for node_id in (source, destination):
                if node_id not in self.addresses:
                    raise ValueError(f"unknown node {node_id!r}")
        if len(wanted) > CUT_PAIRS_MAX:
            raise ValueError(f"{len(wanted)} cut pairs exceed CUT_PAIRS_MAX={CUT_PAIRS_MAX}")
        script = f"flush set inet {TABLE} cut\n"
        if wanted:
            elements = ", ".join(
                f"{self.addresses[s]} . {self.addresses[d]}" for s, d in sorted(wanted)
            )
            script += f"add element inet {TABLE} cut {{ {elements} }}\n"
        self._nft(script)
        self._cut = wanted
        for listener in self._listeners:
            listener(wanted)

    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Split the nodes into ``groups``: every node in exactly one; links between groups
        are cut both ways, links inside a group stay up."""
        component: dict[str, int] = {}
        for index, group in enumerate(groups):
            for node_id in group:
                if node_id not in self.addresses:
                    raise ValueError(f"unknown node {node_id!r}")
                if node_id in component:
                    raise ValueError(f"node {node_id} is in two groups")
                component[node_id] = index
        missing = sorted(set(self.addresses) - set(component))
        if missing:
            raise ValueError(f"nodes in no group: {', '.join(missing)}")
        self.apply((a, b) for a in component for b in component if component[a] != component[b])

    def isolate(self, node_id: str) -> None:
        """Cut ``node_id`` from every other node; the others still see each other."""
        self.partition([[node_id], [n for n in self.addresses if n != node_id]])

    def apply_grudge(self, grudge: Grudge) -> None:
        """Make exactly the links ``grudge`` cuts the cut links, in one transaction."""
        self.apply(grudge_pairs(grudge))

    def heal(self) -> None:
        """Restore every link."""
        self.apply(())

    def installed(self) -> frozenset[tuple[str, str]]:
        """The cut pairs as nftables holds them now, read back (by node id)."""
        listing = json.loads(
            run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.namespace,
                    "nft",
                    "-j",
                    "list",
                    "set",
                    "inet",
                    TABLE,
                    "cut",
                ]
            )
        )
        by_address = {address: node_id for node_id, address in self.addresses.items()}
        pairs = set()
        for item in listing["nftables"]:
            for element in item.get("set", {}).get("elem", []):
                source, destination = element["concat"]
                pairs.add((by_address[source], by_address[destination]))
        return frozenset(pairs)

    def _nft(self, script: str) -> None:
        run(["ip", "netns", "exec", self.namespace, "nft", "-f", "-"], stdin=script)


# Grudges (Jepsen's nemesis/combined): {node: the nodes it drops packets from} -----------------

#: A grudge: each node id → the node ids whose packets it drops.
Grudge = Mapping[str, frozenset[str]]


def complete_grudge(components: Sequence[Iterable[str]]) -> dict[str, frozenset[str]]:
    """Every node drops packets from every node outside its own component."""
    groups = [list(component) for component in components]
    everyone = frozenset(node for group in groups for node in group)
    return {node: everyone - frozenset(group) for group in groups for node in group}


def grudge_isolate(nodes: Sequence[str], node: str) -> dict[str, frozenset[str]]:
    """``node`` alone on one side, every other node on the other."""
    if node not in nodes:
        raise ValueError(f"unknown node {node!r}")
    return complete_grudge([[node], [n for n in nodes if n != node]])


def grudge_one(nodes: Sequence[str], rng: random.Random) -> dict[str, frozenset[str]]:
    """A random node isolated from the rest."""
    return grudge_isolate(nodes, rng.choice(list(nodes)))


def grudge_halves(nodes: Sequence[str], rng: random.Random) -> dict[str, frozenset[str]]:
    """Random halves: the smaller ``len // 2`` nodes against the rest (a majority)."""
    shuffled = _shuffled(nodes, rng, at_least=2)
    half = len(shuffled) // 2
    return complete_grudge([shuffled[:half], shuffled[half:]])


def grudge_majorities_ring(nodes: Sequence[str], rng: random.Random) -> dict[str, frozenset[str]]:
    """Nodes on a random ring, each seeing only the majority window centred on itself: every
    node sees a majority, and (for 5 nodes) no two see the same one."""
    ring = _shuffled(nodes, rng, at_least=3)
    size = len(ring)
    majority = size // 2 + 1
    everyone = frozenset(ring)
    grudge = {}
    for start in range(size):
        window = [ring[(start + k) % size] for k in range(majority)]
        grudge[window[majority // 2]] = everyone - frozenset(window)
    return grudge


def grudge_bridge(nodes: Sequence[str], rng: random.Random) -> dict[str, frozenset[str]]:
    """Two random halves plus one node of the larger half that sees both (the bridge)."""
    shuffled = _shuffled(nodes, rng, at_least=3)
    half = len(shuffled) // 2
    first, second = shuffled[:half], shuffled[half:]
    bridge = second[0]
    grudge = complete_grudge([first, second])
    grudge[bridge] = frozenset()
    return {node: drops - {bridge} for node, drops in grudge.items()}


def grudge_pairs(grudge: Grudge) -> frozenset[tuple[str, str]]:
    """The directed (from, to) links a grudge cuts: ``to`` drops packets from ``from``."""
    return frozenset((source, node) for node, sources in grudge.items() for source in sources)


def _shuffled(nodes: Sequence[str], rng: random.Random, *, at_least: int) -> list[str]:
    if len(nodes) < at_least:
        raise ValueError(f"this partition needs at least {at_least} nodes, got {len(nodes)}")
    shuffled = sorted(nodes)
    rng.shuffle(shuffled)
    return shuffled
