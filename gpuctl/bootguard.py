"""The user-data script that arms a machine's own shutdown at boot, and its check.

It runs before gpuctl ever reaches the machine, so an instance never outlives its
max-hours limit even if gpuctl dies between the create call and the first SSH contact.
At that first contact gpuctl checks the script ran (its marker holds the run id); on an
image without cloud-init it did not, and the on-machine agent arms the same shutdown.
"""

from __future__ import annotations

import math
import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .host import Host

GRACE_MINUTES = 5  # time for the agent's graceful stop and result upload to win the race
MARKER = "/var/lib/gpuctl/run_id"  # written by the script once the shutdown is armed


def boot_guard_minutes(max_hours: float) -> int:
    return max(1, math.ceil(max_hours * 60) + GRACE_MINUTES)


def boot_guard_script(run_id: str, max_hours: float | None) -> str:
    """A cloud-init shell script (AWS user-data, DigitalOcean user_data)."""
    rid = shlex.quote(run_id)
    lines = ["#!/bin/sh", "# gpuctl boot guard for run " + " ".join(run_id.split())[:200]]
    if max_hours:
        minutes = boot_guard_minutes(max_hours)
        message = shlex.quote(f"gpuctl: max hours reached for run {run_id}")
        lines += [
            f"# powers the machine off after {max_hours:g} h (+{GRACE_MINUTES} min grace)",
            f"shutdown -P +{minutes} {message} || (sleep {minutes * 60} && poweroff) &",
        ]
    lines.append(f"mkdir -p /var/lib/gpuctl && echo {rid} > {MARKER}")
    return "\n".join(lines) + "\n"


def armed(host: Host, run_id: str) -> bool:
    """Did this machine run the boot guard for this run? (Its marker holds the run id.)"""
    result = host.exec(f"cat {MARKER} 2>/dev/null", timeout=30)
    return result.ok and result.stdout.strip() == run_id
