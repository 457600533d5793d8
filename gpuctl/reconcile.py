"""Make gpuctl's record of runs agree with what the providers report, after anything.

Called on every Engine.refresh (after cost.sync_ledger has brought the ledger in line) and
by `gpuctl ls`. Each difference is fixed in the store, recorded in the run's history
(event "run_reconciled") and returned as a Finding:

- a launch whose gpuctl died (kill -9 mid-provisioning): the run is failed with the
  reason, its machine adopted (run.instance_id) and shown as an orphan;
- an active run whose machine vanished: interrupted (spot) or lost, with the reason
  (`gpuctl resume` brings it back on a new machine from the checkpoint gpuctl holds);
- a machine tagged by this installation whose run the store never knew (a lost state
  file): adopted as an orphan; cost.sync_ledger meters it from the provider's launch time;
  one another installation tagged (a colleague on the same account) is foreign: said
  once, with its owner, and never an orphan;
- a running run nobody follows whose trainer ended: its final status, and `failed` with
  the last log lines when the trainer or the agent died (runstate.sync_run, which every
  command uses too);
- a droplet gpuctl created that a limit on the machine powered off, on a provider that
  bills it off (DigitalOcean, AMD): destroyed when its run's teardown policy is terminate
  (with stop or keep it is the user's choice, shown as "off, still billing").

Otherwise nothing here ends anything: `gpuctl down --orphans` does, for gpuctl's own only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import recovery, runstate
from .errors import GpuctlError
from .format import rate
from .models import Instance, InstanceState, Market, Run, RunStatus
from .ownership import is_ours
from .rundir import RunDir
from .runs.status import transition
from .trainer.protocol import AGENT_ACTIVE, AGENT_ENDED

if TYPE_CHECKING:
    from .ports import EngineOps

log = logging.getLogger("gpuctl.reconcile")

PRE_START = frozenset(
    {RunStatus.PENDING, RunStatus.PROVISIONING, RunStatus.SYNCING, RunStatus.STARTING}
)
STALE_SECONDS = 3600.0  # a launch with no known owner, untouched this long, is dead
AGENT_CHECK_SECONDS = 60.0  # how often one run's agent is asked over SSH, at most
EVENT = "run_reconciled"  # in the run's history (the ledger's own kind is "reconciled")


@dataclass(frozen=True)
class Finding:
    run_id: str | None
    instance_id: str | None
    action: str  # launch_killed | adopted | vanished | orphan | foreign | ended
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def is_orphan(instance: Instance, run: Run | None, *, installation: str) -> bool:
    """This installation created it and nothing will ever take it down: no run, or an
    ended run that meant to terminate it (a kept or stopped machine is the user's choice).
    Another installation's machine is never an orphan here, whatever its tags say."""
    if not instance.managed or instance.state == InstanceState.TERMINATED:
        return False
    if not is_ours(instance, installation, run_known=run is not None):
        return False
    if run is None:
        return True
    if run.status.active:
        return False
    spec = run.spec
    return not spec.get("instance_id") and spec.get("teardown", "terminate") == "terminate"


def after_refresh(engine: EngineOps, listings: Sequence[Any]) -> list[Finding]:
    """Reconcile runs with fresh listings; never breaks a listing."""
    try:
        return _reconcile(engine, listings)
    except Exception:
        log.exception("reconciling runs failed")
        return []


def without_listing(engine: EngineOps) -> list[Finding]:
    """What needs no provider: launches whose gpuctl died (`gpuctl ls` from the cache)."""
    return after_refresh(engine, [])


def _reconcile(engine: EngineOps, listings: Sequence[Any]) -> list[Finding]:
    store = engine.store
    now = time.time()
    usable = {
        listing.provider: listing
        for listing in listings
        if not any(where == "*" for where, _ in listing.errors)
    }
    live: dict[str, dict[str, Instance]] = {
        name: {i.id: i for i in listing.instances if i.state != InstanceState.TERMINATED}
        for name, listing in usable.items()
    }
    runs = store.list_runs()
    known = {r.id for r in runs}
    mine = engine.settings.installation_id
    tagged: dict[str, Instance] = {}
    foreign: dict[str, Instance] = {}
    for found in live.values():
        for inst in found.values():
            if inst.managed and inst.run_id:
                ours = is_ours(inst, mine, run_known=inst.run_id in known)
                (tagged if ours else foreign).setdefault(inst.run_id, inst)
    findings = list(_strangers(engine, tagged, known))
    findings += _foreigners(engine, foreign)
    off = _off_and_billed(engine, usable.values(), {r.id: r for r in runs})
    findings += off
    handled = {f.run_id for f in off if f.action == "destroyed"}
    to_check: list[Run] = []
    for run in runs:
        if not run.status.active or run.id in handled:
            continue
        owner = recovery.owner_alive(store, run.id)
        if owner:
            continue  # its gpuctl is launching, following or recovering it right now
        if run.status in PRE_START or run.status == RunStatus.RECOVERING:
            if owner is False or now - run.updated_at > STALE_SECONDS:
                findings.append(_launch_killed(engine, run, tagged.get(run.id)))
            continue
        listing = usable.get(run.provider)
        if (
            listing is not None
            and listing.complete
            and run.instance_id
            and run.instance_id not in live.get(run.provider, {})
        ):
            finding = _vanished(engine, run)
            if finding is not None:
                findings.append(finding)
                continue
        if run.status == RunStatus.RUNNING and run.remote_dir and listings:
            to_check.append(run)
    if to_check:
        with ThreadPoolExecutor(max_workers=min(4, len(to_check))) as pool:
            for finding in pool.map(lambda r: _check_agent(engine, r), to_check):
                if finding is not None:
                    findings.append(finding)
    for finding in findings:
        engine.record_event(finding.run_id, EVENT, finding.to_dict())
    return findings


def _off_and_billed(
    engine: EngineOps, listings: Iterable[Any], runs: Mapping[str, Run]
) -> list[Finding]:
    """Destroy what a limit on the machine powered off where that still bills."""
    out = []
    for listing in listings:
        provider = engine.provider(listing.provider)
        if not provider.billing.billed_when_stopped:
            continue
        for inst in listing.instances:
            run = runs.get(inst.run_id or "")
            if inst.state != InstanceState.STOPPED or not inst.managed or run is None:
                continue
            if not engine.is_ours(inst):
                continue  # another installation's: never ended without its name typed
            spec = run.spec
            policy = spec.get("teardown", "terminate")
            if run.status == RunStatus.BUDGET:
                policy = engine.settings.budget.on_exceed
            if spec.get("instance_id") or policy != "terminate":
                continue  # not created for this run, or kept/stopped by the user's choice
            if run.status.active and recovery.owner_alive(engine.store, run.id):
                continue  # its gpuctl is handling it right now
            finding = _destroy_off(engine, provider, inst, run)
            if finding is not None:
                out.append(finding)
    return out


def _destroy_off(engine: EngineOps, provider: Any, inst: Instance, run: Run) -> Finding | None:
    from . import cost

    price = rate(inst.price_per_hour)
    try:
        provider.terminate(inst, wait=False)
    except GpuctlError as exc:
        message = (
            f"{inst.provider} {inst.id} is off, still billing {price}, and could not be "
            f"destroyed ({exc.one_line()}): `gpuctl down {run.id}` retries"
        )
        return Finding(run.id, inst.id, "off_billed", message)
    cost.close_instance(engine.store, inst)
    engine.store.mark_instance_gone(inst.provider, inst.id)
    message = (
        f"{inst.provider} {inst.id} was powered off by a limit on the machine and was still "
        f"billed ({price}): destroyed (teardown policy terminate)"
    )
    if not run.results_dir:
        message += "; its results had not been downloaded"
    if run.status.active:
        transition(engine.store, run.id, RunStatus.STOPPED, reason=message[:2000], eta_seconds=None)
    engine.record_event(run.id, "teardown", {"instance": inst.id, "action": "terminated"})
    return Finding(run.id, inst.id, "destroyed", message)


def _strangers(
    engine: EngineOps, tagged: Mapping[str, Instance], known: Iterable[str]
) -> list[Finding]:
    """Tagged machines with no run in the store: adopted as orphans, said once each."""
    known = set(known)
    out = []
    for run_id, inst in tagged.items():
        if run_id in known or engine.store.events(run_id, kinds=[EVENT]):
            continue
        out.append(
            Finding(
                run_id,
                inst.id,
                "orphan",
                f"{inst.provider} {inst.id} is tagged with run {run_id}, which gpuctl has no "
                "record of: adopted as an orphan (cost counted from its launch); "
                "`gpuctl down --orphans` removes it",
            )
        )
    return out


def _foreigners(engine: EngineOps, foreign: Mapping[str, Instance]) -> list[Finding]:
    """Machines another gpuctl installation tagged: named with their owner, said once each,
    never adopted and never ended from here without their name typed."""
    out = []
    for run_id, inst in foreign.items():
        if engine.store.events(run_id, kinds=[EVENT]):
            continue
        owner = f"installation {inst.owner}" if inst.owner else "an unknown installation"
        out.append(
            Finding(
                run_id,
                inst.id,
                "foreign",
                f"{inst.provider} {inst.id} (run {run_id}) was created by another gpuctl, "
                f"{owner}: left alone; `gpuctl down {inst.id}` ends it after you type its name",
            )
        )
    return out


def _launch_killed(engine: EngineOps, run: Run, inst: Instance | None) -> Finding:
    if run.status == RunStatus.STARTING and run.remote_dir and _trainer_started(engine, run):
        # Its trainer started: the run is what its machine says (still training, or
        # already finished while nobody watched), never "failed" for gpuctl's death.
        transition(engine.store, run.id, RunStatus.RUNNING, reason="")
        fresh, _ended = runstate.check(engine, engine.store.get_run(run.id))
        message = "gpuctl was killed just after starting it; the trainer " + (
            "runs: adopted" if fresh.status.active else f"had {fresh.status.value}: adopted"
        )
        return Finding(run.id, run.instance_id, "adopted", message)
    claims = engine.store.events(run.id, kinds=["owner"])
    pid = f" (pid {claims[-1].get('pid')})" if claims else ""
    doing = "recovering" if run.status == RunStatus.RECOVERING else "launching"
    message = f"gpuctl was killed while {doing} it{pid}"
    changes: dict[str, Any] = {}
    status = RunStatus.FAILED
    instance_id = run.instance_id
    if inst is not None:
        instance_id = inst.id
        changes["instance_id"] = inst.id
        message += f"; its instance {inst.id} is an orphan: `gpuctl down --orphans` removes it"
    if doing == "recovering":
        status = RunStatus.INTERRUPTED
        message += f"; `gpuctl resume {run.id}` continues it"
    transition(engine.store, run.id, status, message, **changes)
    return Finding(run.id, instance_id, "launch_killed", message)


def _trainer_started(engine: EngineOps, run: Run) -> bool:
    try:
        _instance, host = engine.locate(run)
    except GpuctlError:
        return False
    try:
        state = RunDir(host, run.id, run.remote_dir).status().get("state")
        return state in (*AGENT_ACTIVE, *AGENT_ENDED)  # the agent ran the trainer
    except GpuctlError:
        return False
    finally:
        host.close()


def _vanished(engine: EngineOps, run: Run) -> Finding | None:
    """The listing lacks the run's machine: confirm with the provider, then mark the run."""
    assert run.instance_id
    try:
        current = engine.provider(run.provider).get_instance(run.instance_id)
    except GpuctlError:
        return None  # cannot tell gone from unreachable
    if current is not None and current.state != InstanceState.TERMINATED:
        return None  # outside the listed regions, or not listed yet
    cached = engine.store.get_instance(run.provider, run.instance_id)
    spot = cached is not None and cached.market == Market.SPOT
    status = RunStatus.INTERRUPTED if spot else RunStatus.LOST
    message = f"{recovery.GONE_PREFIX}: {run.instance_id} " + (
        "(spot capacity reclaimed while gpuctl was not watching)"
        if spot
        else f"vanished from {run.provider}"
    )
    transition(engine.store, run.id, status, reason=message, eta_seconds=None)
    engine.store.mark_instance_gone(run.provider, run.instance_id)
    return Finding(run.id, run.instance_id, "vanished", message)


def _check_agent(engine: EngineOps, run: Run) -> Finding | None:
    """Ask the run's agent whether the trainer still runs (throttled per run)."""
    store = engine.store
    key = f"reconcile:agent:{run.id}"
    if store.cache_get(key, max_age=AGENT_CHECK_SECONDS) is not None:
        return None
    store.cache_put(key, time.time())
    try:
        fresh, ended_here = runstate.check(engine, run)
    finally:  # checks run in a pool, one connection each: let go of it now
        engine.release_hosts(run.provider, run.instance_id)
    if not ended_here:
        return None
    return Finding(
        run.id, run.instance_id, "ended", f"run {run.id} {fresh.status.value}: {fresh.reason}"
    )
