"""The user-data script that arms a machine's own shutdown at boot.

It runs before gpuctl ever reaches the machine, so an instance never outlives its
max-hours limit even if gpuctl dies between the create call and the first SSH contact.
The on-machine agent re-arms a tighter limit once the run starts.
"""

from __future__ import annotations

import math

GRACE_MINUTES = 5  # time for the agent's graceful stop and result upload to win the race


def boot_guard_minutes(max_hours: float) -> int:
    return max(1, math.ceil(max_hours * 60) + GRACE_MINUTES)


def boot_guard_script(run_id: str, max_hours: float | None) -> str:
    """A cloud-init shell script (AWS user-data, DigitalOcean user_data)."""
    lines = ["#!/bin/sh", f"# gpuctl boot guard for run {run_id}"]
    if max_hours:
        minutes = boot_guard_minutes(max_hours)
        lines += [
            f"# powers the machine off after {max_hours:g} h (+{GRACE_MINUTES} min grace)",
            f'shutdown -P +{minutes} "gpuctl: max hours reached for run {run_id}" '
            f"|| (sleep {minutes * 60} && poweroff) &",
        ]
    lines.append(f"mkdir -p /var/lib/gpuctl && echo {run_id} > /var/lib/gpuctl/run_id")
    return "\n".join(lines) + "\n"
