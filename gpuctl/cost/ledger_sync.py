"""Ledger reconciliation: bring the segments in line with what a provider lists.

Engine._absorb_listing calls `sync_ledger` on every listing; reconcile.py, which makes the
record of runs agree with the machines, is a different job. This module only touches money.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpuctl.format import rate
from gpuctl.models import Instance, InstanceState, PriceSegment
from gpuctl.settings import Settings
from gpuctl.state import Store

from .billing import COMPUTE, STORAGE, billing_for
from .ledger import open_compute, open_storage

if TYPE_CHECKING:
    from gpuctl.providers.base import Billing


@dataclass(frozen=True)
class LedgerFix:
    """A difference between the ledger and a provider's listing, and what was done."""

    provider: str
    instance_id: str
    run_id: str | None
    action: str  # metered | stopped | closed
    at: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _compute_billed(inst: Instance, billing: Billing) -> bool:
    if inst.state in (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.STOPPING):
        return True
    return inst.state == InstanceState.STOPPED and billing.billed_when_stopped


def _ended_by(
    store: Store, segs: Sequence[PriceSegment], last_seen: float | None, now: float
) -> float:
    """When a machine that stopped or vanished unobserved stopped billing, at the latest.

    Not before we last saw it, and not after its run's max-hours limit (the agent on the
    machine enforces it with gpuctl closed), so a week away from gpuctl does not turn two
    hours of training into a week of phantom cost. With no limit known: now.
    """
    open_segs = [s for s in segs if s.end is None]
    if not open_segs:
        return now
    start = min(s.start for s in open_segs)
    bound = now
    run = store.find_run(open_segs[0].run_id) if open_segs[0].run_id else None
    hours = run.spec.get("max_hours") if run is not None else None
    if isinstance(hours, int | float) and hours > 0:
        idle = run.spec.get("idle_minutes") if run is not None else None
        grace = float(idle) * 60 if isinstance(idle, int | float) and idle > 0 else 0.0
        bound = start + float(hours) * 3600 + grace
    seen = start if last_seen is None else last_seen
    return max(start, min(now, max(seen, bound)))


def _metered_here(settings: Settings, inst: Instance) -> bool:
    """A machine found billing is metered only if gpuctl made it and no other installation
    says it did: a released one (`--instance`, after its run) and a colleague's are not."""
    return inst.managed and inst.owner in (None, settings.installation_id)


def sync_ledger(
    store: Store,
    settings: Settings,
    provider: str,
    instances: Sequence[Instance],
    *,
    complete: bool = True,
    last_seen: Mapping[str, float] | None = None,
    now: float | None = None,
) -> list[LedgerFix]:
    """Bring the ledger in line with a fresh listing of one provider.

    An instance billing now with no open segment (the ledger thought it gone, or a crash
    came between create and record) is flagged and metered from the provider's launch
    time, never twice for time already in the ledger. A machine the provider no longer
    lists (complete listings only) or that stopped is closed no earlier than we last saw
    it and no later than its run's max-hours limit (see `_ended_by`).
    """
    now = time.time() if now is None else now
    last_seen = last_seen or {}
    billing = billing_for(settings, provider)
    ledger: dict[str, list[PriceSegment]] = defaultdict(list)
    for seg in store.segments(provider=provider):
        ledger[seg.instance_id].append(seg)
    out: list[LedgerFix] = []
    listed = {i.id for i in instances if i.state != InstanceState.TERMINATED}
    for inst in instances:
        segs = ledger.get(inst.id, [])
        if inst.state == InstanceState.TERMINATED or not (inst.managed or segs):
            continue
        open_kinds = {s.kind for s in segs if s.end is None}
        seen = _ended_by(store, segs, last_seen.get(inst.id), now)
        if _compute_billed(inst, billing) and COMPUTE not in open_kinds:
            if inst.price_per_hour is None or not _metered_here(settings, inst):
                continue
            seg = open_compute(store, inst, inst.run_id, now=now, source="reconcile")
            start = seg.start if seg is not None else now
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(start))
            why = "the ledger had it gone" if segs else "it was not in the ledger"
            out.append(
                LedgerFix(
                    provider,
                    inst.id,
                    inst.run_id,
                    "metered",
                    start,
                    f"{provider} {inst.id} is {inst.state.value} but {why}: metering it from "
                    f"{when} ({rate(inst.price_per_hour)})",
                )
            )
            if STORAGE not in open_kinds:
                open_storage(store, settings, inst, inst.run_id, start, now=now, source="reconcile")
        elif not _compute_billed(inst, billing) and COMPUTE in open_kinds:
            if inst.stopped_at is not None:  # the provider knows when it stopped: bill to then
                begun = min(s.start for s in segs if s.end is None)
                seen = max(begun, min(now, float(inst.stopped_at)))
            store.close_segments(provider, inst.id, seen, kind=COMPUTE)
            out.append(
                LedgerFix(
                    provider,
                    inst.id,
                    inst.run_id,
                    "stopped",
                    seen,
                    f"{provider} {inst.id} is {inst.state.value}: compute billing ended",
                )
            )
    if complete:
        for instance_id, segs in ledger.items():
            if instance_id in listed or all(s.end is not None for s in segs):
                continue
            seen = _ended_by(store, segs, last_seen.get(instance_id), now)
            store.close_segments(provider, instance_id, seen)
            out.append(
                LedgerFix(
                    provider,
                    instance_id,
                    segs[0].run_id,
                    "closed",
                    seen,
                    f"{provider} {instance_id} is gone: billing closed at "
                    + time.strftime("%Y-%m-%d %H:%M", time.localtime(seen)),
                )
            )
    return out


def settle_ended_billing(store: Store, provider_name: str, provider: Any) -> int:
    """Close the ledger where a machine already says its billing ended (local: when its
    trainer exited), without a listing: the meter bills what ran, in every view and in
    every budget check, not until gpuctl next lists. Returns segments closed."""
    from gpuctl.providers.base import Capability

    if Capability.BILLING_END_TIME not in provider.capabilities:
        return 0
    closed = 0
    open_ = store.segments(provider=provider_name, open_only=True)
    for prov, iid in {(s.provider, s.instance_id) for s in open_}:
        instance = store.get_instance(prov, iid)
        end = None if instance is None else provider.billing_ended_at(instance)
        if end is not None and instance is not None:
            closed += store.close_segments(prov, iid, end)
            if instance.state.billed:  # as its next listing will say: not billing
                store.put_instance(instance.evolve(state=InstanceState.STOPPED))
    return closed
