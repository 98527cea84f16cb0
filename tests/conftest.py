"""Shared test set-up: Hypothesis profiles, and the rule that tests of mutants are marked.

Profiles: ``dev`` (the default; quick) and ``ci`` (chosen when the CI variable is set; more
examples, no deadline). Pick one by hand with ``--hypothesis-profile``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_collection_modifyitems(config, items):
    """Every test named after a mutant carries the ``mutant`` marker, so ``pytest -m mutant``
    and the catalogue on docs/verification.md list all of them."""
    unmarked = [item.nodeid for item in items if "mutant" in item.name.lower() and item.get_closest_marker("mutant") is None]
    if unmarked:
        raise pytest.UsageError(
            "tests named after a mutant must be marked @pytest.mark.mutant (tests/conftest.py): "
            + ", ".join(unmarked)
        )
