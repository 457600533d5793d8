"""End or let go of a machine: stop or terminate it, close its ledger, say so.

A machine this installation did not create is never ended without the typed name
(gpuctl.ownership); one it did not create for the run is only released.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import cost, ownership
from .errors import ConfigError
from .events import Notice, TornDown
from .format import rate
from .models import Instance, Run
from .providers.base import Capability

if TYPE_CHECKING:
    from .ports import EngineOps, Events


def after_stop(engine: EngineOps, run: Run, instance: Instance) -> Events:
    """The trainer stopped; say what the machine now costs, and whose bill it is.

    A machine gpuctl did not create (attached, an ssh box) stops counting against the
    run at once: it was only metered while the run used it. One gpuctl created keeps
    billing until `down` or the on-machine idle rule ends it, and the user is told so.
    """
    provider = engine.provider(instance.provider)
    user_machine = Capability.USER_MACHINES in provider.capabilities
    if user_machine or not engine.created_for(run.launch_spec, instance):
        engine.store.close_segments(instance.provider, instance.id, time.time(), kind=cost.COMPUTE)
        yield Notice(run.id, f"{instance.id} is left as it is; the meter of {run.id} ends")
        return
    ended = (
        provider.billing_ended_at(instance)
        if Capability.BILLING_END_TIME in provider.capabilities
        else None
    )
    if ended is not None:  # local: the machine bills only while its trainer runs
        engine.store.close_segments(instance.provider, instance.id, ended)
        yield Notice(run.id, f"{instance.id} bills nothing more now that its trainer exited")
        return
    price = "" if instance.price_per_hour is None else f" ({rate(instance.price_per_hour)})"
    spec = run.launch_spec
    idle = (
        f", or the idle rule does after {spec.idle_minutes:g} minutes"
        if spec.idle_minutes and spec.teardown != "keep"
        else ""
    )
    yield Notice(
        run.id,
        f"{instance.id} is still up and billing{price}: `gpuctl down {run.id}` ends it{idle}",
    )


def teardown(
    engine: EngineOps,
    run_id: str | None,
    instance: Instance,
    policy: str,
    *,
    confirmed: bool = False,
) -> Events:
    """Stop or terminate an instance, close its ledger, say so (callers confirm first).

    A machine this installation did not create is refused unless `confirmed`: the
    user typed its name. An ssh box is only let go of, so it needs no confirmation.
    """
    provider = engine.provider(instance.provider)
    end = (  # local: when the trainer exited
        provider.billing_ended_at(instance)
        if Capability.BILLING_END_TIME in provider.capabilities
        else None
    )
    user_machine = Capability.USER_MACHINES in provider.capabilities
    if not confirmed and not user_machine and not engine.is_ours(instance):
        raise ConfigError(
            f"{instance.id} was not created by this gpuctl "
            f"({ownership.owner_label(instance)}); nothing was {policy}d",
            hint=f"run `gpuctl down {instance.id}` in a terminal and type its name",
        )
    if policy == "stop":
        provider.stop(instance)
        action = "stopped"
        if provider.billing.billed_when_stopped:
            yield Notice(
                run_id or "",
                f"{instance.id} is powered off but still billed by {instance.provider}; "
                f"`gpuctl down {run_id or instance.id}` ends billing",
                "warning",
            )
        else:
            cost.stop_instance(engine.store, engine.settings, instance, end)
    else:
        provider.terminate(instance, wait=True)
        # An ssh box is the user's own machine: gpuctl only lets go of it.
        action = "released" if user_machine else "terminated"
        cost.close_instance(engine.store, instance, end)
        engine.store.mark_instance_gone(instance.provider, instance.id)
    engine.record_event(run_id, "teardown", {"instance": instance.id, "action": action})
    yield TornDown(run_id or "", instance.id, action)


def release(engine: EngineOps, run_id: str, instance: Instance) -> Events:
    """Let go of a machine gpuctl did not create for this run: the run's meter ends,
    the machine is left exactly as it is (running, and billing its owner)."""
    provider = engine.provider(instance.provider)
    cost.close_instance(engine.store, instance)
    if Capability.USER_MACHINES in provider.capabilities:  # known only through its run
        provider.terminate(instance, wait=False)  # closes the connection, nothing else
        engine.store.mark_instance_gone(instance.provider, instance.id)
    else:
        yield Notice(
            run_id,
            f"{instance.id} was not created by gpuctl for this run: left running; "
            f"`gpuctl down {instance.id}` terminates it once you type its name",
        )
    engine.record_event(run_id, "teardown", {"instance": instance.id, "action": "released"})
    yield TornDown(run_id, instance.id, "released")
