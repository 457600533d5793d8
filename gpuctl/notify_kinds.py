"""The notifications a user may ask for in `[notify] events`, by name.

Kept apart from gpuctl/notify.py (which builds and sends them) so that config.toml's
check, the README and the agent on the machine agree on one list of names.
"""

from __future__ import annotations

# name -> what it says (the README's table and `gpuctl notify test` use these words)
KINDS: dict[str, str] = {
    "finished": "a run finished: final metric, duration, cost",
    "failed": "a run failed: the last log lines",
    "budget_80": "a budget reached its warning line (warn_fraction, 80% by default)",
    "budget_100": "a budget is used up and the run is stopped",
    "interrupted": "a run was interrupted (spot reclaim, machine gone)",
    "recovered": "a managed run recovered: time lost and what the recovery cost",
    "stalled": "the agent stopped a trainer that made no progress",
    "idle_shutdown": "a machine idle with no trainer was shut down by its agent",
    "orphan": "a machine tagged by gpuctl with no run it knows of",
    "price_differs": "the price billed differs from the quote",
    "max_price_exceeded": "the spot price went above the run's max price",
}

# What the agent on the machine may send itself when nobody on the laptop listens.
# idle_shutdown only the agent sees: the machine goes down with nobody told otherwise.
AGENT_KINDS: tuple[str, ...] = (
    "finished",
    "failed",
    "budget_100",
    "stalled",
    "interrupted",
    "idle_shutdown",
)

# Shown as warnings, not information (the control center's toasts).
URGENT: frozenset[str] = frozenset({"failed", "budget_100", "max_price_exceeded", "orphan"})
