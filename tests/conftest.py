"""Shared test set-up: Hypothesis profiles and the GPU marker.

Profiles: ``dev`` (the default; quick) and ``ci`` (chosen when the CI variable is set; more
examples, no deadline). Pick one by hand with ``--hypothesis-profile``.
"""

from __future__ import annotations

import os

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
