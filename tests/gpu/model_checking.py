"""What the CPU model checkers of the Hopper kernel's protocols share (test_hopper_ring_protocol,
test_hopper_cluster_exchange_protocol): the violation they raise, and running a deliberately
wrong protocol over every configuration to collect what the checker reports."""

from __future__ import annotations

from collections.abc import Callable, Iterable


class Violation(AssertionError):
    """A race, a wrong read or a deadlock in one interleaving of a modelled protocol."""


def violations(explore: Callable[..., int], configs: Iterable[tuple], mutant: str) -> list[str]:
    """The messages of the configurations on which ``explore(*config, mutant=mutant)`` raised."""
    messages = []
    for config in configs:
        try:
            explore(*config, mutant=mutant)
        except Violation as violation:
            messages.append(str(violation))
    return messages
