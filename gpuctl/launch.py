"""A launch: the budget admits it (one step under the budget lock), a machine is created
or reused, the trainer started. Anything created by a launch that is cut short or fails
is ended here, and the run is recorded as failed, never left `provisioning`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from . import billed_price, cost, filelock, listing, recovery, start, teardown
from .errors import BudgetExceeded, GpuctlError, NotFoundError
from .events import Failed, InstanceUp, Notice, Resolved
from .models import Instance, LaunchSpec, Run, RunStatus
from .runs.status import transition
from .trainer.protocol import StopReason

if TYPE_CHECKING:
    from .ports import EngineOps, Events

log = logging.getLogger("gpuctl")


def launch(engine: EngineOps, spec: LaunchSpec) -> Events:
    """Provision (or reuse), reach, sync and start; ends with TrainerStarted or Failed.

    Credentials and a named --instance are checked first: a mistake there raises its
    GpuctlError before any run is recorded or any event says "run X".
    """
    given = preflight(engine, spec)
    est = engine.estimate(spec)
    # The check and the record of the run it admits are one step for every gpuctl
    # process: two launches at once cannot both spend the same dollars. The admitted
    # run holds its estimate against the budgets until its machine starts billing.
    listing.settle_ended_billing(engine)  # what finished runs really cost, not what they might
    with filelock.exclusive(engine.settings.home / "budget.lock"):
        refusal = cost.launch_refusal(
            engine.store,
            engine.settings,
            spec,
            est.cost if est else None,
            price_per_hour=est.price_per_hour if est else None,
        )
        admitted = refusal is None or bool(spec.options.get("force"))
        if admitted:
            now = time.time()
            engine.store.add_run(
                Run(
                    id=spec.run_id,
                    preset=spec.preset,
                    provider=spec.provider,
                    status=RunStatus.PROVISIONING,
                    created_at=now,
                    updated_at=now,
                    spec=spec.to_dict(),
                    epochs=int(spec.train.get("epochs", 0)),
                    budget=spec.budget,
                )
            )
            engine.attached.append(spec.run_id)
            if est is not None and est.cost is not None:
                engine.record_event(spec.run_id, cost.RESERVED, {"amount": est.cost})
    if not admitted and refusal is not None:
        yield resolved_event(engine, spec, est)
        yield Failed(spec.run_id, refusal.message, refusal.hint, refusal.exit_code)
        return None  # refused: no run recorded, nothing created
    instance: Instance | None = None
    created = False
    try:  # from here on an interrupt marks the run failed: never `provisioning` forever
        engine.record_event(
            spec.run_id, "launch", {"preset": spec.preset, "provider": spec.provider}
        )
        recovery.claim(engine.store, spec.run_id, "launch")  # reconcile: is it alive?
        yield resolved_event(engine, spec, est)
        if est is not None:
            engine.record_event(spec.run_id, "estimate", est.to_dict())
            yield Notice(spec.run_id, est.text())
        if refusal is not None:
            yield Notice(spec.run_id, f"launching anyway (--force): {refusal.message}", "warning")
        elif est is None or est.price_per_hour is None:  # unknown is not $0: say so
            yield Notice(
                spec.run_id,
                "the price of this machine is unknown: its cost cannot be estimated and is "
                "not metered until a price is known",
                "warning",
            )
        if given is not None:
            instance = given
        else:
            instance = yield from engine.create_instance(spec)
            created = True
        engine.store.put_instance(instance)
        engine.store.update_run(spec.run_id, instance_id=instance.id)
        cost.record_launch(engine.store, engine.settings, instance, spec.run_id)
        if created:  # what it really bills, against the quote (a reused machine: as known)
            instance = yield from billed_price.at_boot(
                engine,
                spec,
                instance,
                est.price_per_hour if est else None,
                est.instance_type if est else "",
            )
        yield InstanceUp.of(spec.run_id, instance)
        started = yield from start.start_on(engine, instance, spec, resume=False)
        return started
    except (KeyboardInterrupt, GeneratorExit):
        # Ctrl-C, or the consumer went away, before the trainer started: a machine
        # that will never run anything must not keep billing.
        abandon_launch(engine, spec, instance, created)
        raise
    except GpuctlError as exc:
        yield from fail_launch(engine, spec, instance, created, exc)
    except Exception as exc:  # a bug: keep the user's money safe, then report it
        log.exception("launch of %s failed", spec.run_id)
        yield from fail_launch(
            engine,
            spec,
            instance,
            created,
            GpuctlError(
                f"internal error: {type(exc).__name__}: {exc}",
                hint=f"details in {engine.settings.home / 'gpuctl.log'}",
            ),
        )
    return None


def preflight(engine: EngineOps, spec: LaunchSpec) -> Instance | None:
    """What can fail before anything exists: the provider's credentials, and the
    machine named with --instance (returned)."""
    provider = engine.provider(spec.provider)
    provider.check()
    if not spec.instance_id:
        return None
    instance = provider.get_instance(spec.instance_id)
    if instance is None:
        raise NotFoundError(
            f"instance {spec.instance_id} not found on {spec.provider}",
            hint="`gpuctl ls --all` lists the instances gpuctl can see",
        )
    return instance


def resolved_event(engine: EngineOps, spec: LaunchSpec, est: Any) -> Resolved:
    return Resolved(
        spec.run_id,
        spec.preset,
        spec.provider,
        estimate_hours=round(est.hours, 4) if est else None,
        estimate_cost=round(est.cost, 4) if est and est.cost is not None else None,
        offer=(est.instance_type if est else "") or spec.instance_type or "",
        estimate_note=est.minimum_note if est else "",
        what="mode" if spec.job.get("kind") == "command" else "preset",
    )


def abandon_launch(
    engine: EngineOps, spec: LaunchSpec, instance: Instance | None, created: bool
) -> None:
    """Undo a launch cut short; no events (the listener is gone), best effort, quick."""
    run = engine.store.find_run(spec.run_id)
    if run is not None and run.status == RunStatus.RUNNING:
        return  # the trainer runs: it has its own limits, and `gpuctl ls` shows it
    reason = "launch interrupted before the trainer started"
    if instance is not None and created:
        try:
            engine.provider(spec.provider).terminate(instance, wait=False)
            cost.close_instance(engine.store, instance)
            engine.store.mark_instance_gone(instance.provider, instance.id)
            reason += f"; instance {instance.id} terminated"
        except Exception as exc:  # reconcile shows it as an orphan; say how to remove it
            log.exception("could not terminate %s", instance.id)
            reason += f"; could not terminate {instance.id} ({exc}): gpuctl down --orphans"
    transition(engine.store, spec.run_id, RunStatus.FAILED, reason=reason)
    engine.record_event(spec.run_id, "failed", {"error": reason})
    engine.cut_short.append((spec.run_id, reason))


def fail_launch(
    engine: EngineOps, spec: LaunchSpec, instance: Instance | None, created: bool, exc: GpuctlError
) -> Events:
    if instance is not None and created:
        try:  # created by this very launch a moment ago: no name to type
            yield from teardown.teardown(engine, spec.run_id, instance, "terminate", confirmed=True)
        except GpuctlError as down_exc:
            yield Notice(
                spec.run_id,
                f"could not remove instance {instance.id}: {down_exc.one_line()}; "
                f"run `gpuctl down {spec.run_id}`",
                "error",
            )
    if isinstance(exc, BudgetExceeded):  # a spot price above the max price: a budget end
        transition(
            engine.store,
            spec.run_id,
            RunStatus.BUDGET,
            reason=f"{StopReason.BUDGET}: {exc.message}",
        )
    else:
        transition(engine.store, spec.run_id, RunStatus.FAILED, reason=exc.message)
    engine.record_event(spec.run_id, "failed", {"error": exc.message, "hint": exc.hint})
    yield Failed(spec.run_id, exc.message, exc.hint, exc.exit_code)
