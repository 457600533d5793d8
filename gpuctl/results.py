"""A run's results (best.pt, last.pt, history, logs): saved here, or still only there.

One rule, used by `gpuctl down`, `down --orphans`, `gpuctl run`'s teardown and the
control center's terminate: a machine whose results were never brought home is not
ended silently. Results are *pending* while the trainer has run on a machine that still
exists and no download completed after the trainer last started or ended there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError
from .models import Instance, InstanceState, Run

if TYPE_CHECKING:
    from .state import Store

DOWNLOADED = "downloaded"  # event: a download of the run's results completed
ACTIVITY = ("started", "ended")  # events after which the machine holds newer results


def pending(store: Store, run: Run, instance: Instance | None = None) -> bool:
    """True while the run's newest results exist only on its machine (`instance`, or
    the run's own machine as the store has it)."""
    if instance is None and run.instance_id:
        instance = store.get_instance(run.provider, run.instance_id)
    if instance is None or instance.state == InstanceState.TERMINATED:
        return False
    if instance.id != run.instance_id:
        return False  # an earlier machine of the run: its results moved on with the run
    events = store.events(run.id, kinds=[DOWNLOADED, *ACTIVITY])
    trained = [e["id"] for e in events if e["kind"] == "started"]
    if not trained:
        return False  # the trainer never ran there: nothing to lose
    if run.status.active:
        return True  # it is still writing
    last_activity = max(e["id"] for e in events if e["kind"] in ACTIVITY)
    downloads = [e["id"] for e in events if e["kind"] == DOWNLOADED]
    return not downloads or max(downloads) < last_activity


def saved_dir(run: Run) -> Path | None:
    """Where the run's results were saved on this machine, if any file is there."""
    if not run.results_dir:
        return None
    path = Path(run.results_dir)
    try:
        return path if any(p.is_file() for p in path.iterdir()) else None
    except OSError:
        return None


def saved_files(run: Run) -> list[str]:
    path = saved_dir(run)
    if path is None:
        return []
    return sorted(p.name for p in path.iterdir() if p.is_file())


def what_is_saved(run: Run) -> str:
    """One phrase for an error message: what of the run gpuctl holds here."""
    names = saved_files(run)
    if not names:
        return "no results were saved on this machine"
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"saved in {run.results_dir}: {shown}"


def check_writable(path: Path, what: str) -> None:
    """Refuse a results directory that cannot be created or written, before any
    machine is rented or any file copied. Leaves nothing behind."""
    path = Path(path).expanduser()
    fix = (
        "pass --to a writable directory"
        if what == "--to"
        else "set results_dir in config.toml to a writable directory"
    )
    probe = path
    try:
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
    except OSError as exc:
        raise ConfigError(
            f"{what} {path} cannot be reached ({exc.strerror or exc})", hint=fix
        ) from None
    if not probe.is_dir():
        where = "is a file" if probe == path else f"is under {probe}, which is a file"
        raise ConfigError(f"{what} {path} {where}, not a directory", hint=fix)
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == path else f" ({probe} is not writable)"
        raise ConfigError(f"{what} {path} is not writable{where}", hint=fix)
    # Permission bits are not the whole truth (root on /proc or a read-only mount, an
    # ACL): make and remove an empty directory there, as the download will need to.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".gpuctl-probe-", dir=probe))
    except OSError as exc:
        where = "" if probe == path else f" (cannot create anything in {probe})"
        raise ConfigError(
            f"{what} {path} is not writable{where}: {exc.strerror or exc}", hint=fix
        ) from None
