"""Start a run on a machine: reach it, sync code and work dir, arm its limits, start the agent.

The watchdog limits go to the machine in seconds, so that they hold with gpuctl closed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import cost, datasets, notify, recovery
from .errors import RemoteError
from .events import Event, Notice, SshReady, TrainerStarted
from .host import Host
from .local_host import LocalHost
from .models import Instance, LaunchSpec, Market, RunStatus
from .providers.base import Capability
from .rundir import RunDir
from .runs.status import transition
from .trainer.protocol import ShutdownAction

STALL_WARMUP_SECONDS = 600.0  # the stall clock's allowance before a trainer's first step

if TYPE_CHECKING:
    from .ports import EngineOps, Events


def environment(
    engine: EngineOps, host: Host, spec: LaunchSpec
) -> tuple[str, int, Sequence[Event]]:
    """(python to run the trainer with, GPUs to use, notices) for this machine."""
    if isinstance(host, LocalHost):
        if spec.require_gpu:
            require_local_gpu(engine, host)
        return sys.executable, 1, ()
    from gpuctl.remote.probe import prepare_python

    return prepare_python(host, engine.settings.profile(spec.provider), spec)


def require_local_gpu(engine: EngineOps, host: LocalHost) -> None:
    """`--require-gpu` holds on this machine too: the same probe as on a rented one."""
    from gpuctl.remote.probe import probe

    if probe(host, python=sys.executable).gpu_count == 0:
        raise RemoteError(
            "this machine has no GPU (no nvidia-smi, amd-smi or rocm-smi answered)",
            hint="drop --require-gpu to train on its CPU, or launch on a GPU provider",
        )


def start_on(engine: EngineOps, instance: Instance, spec: LaunchSpec, *, resume: bool) -> Events:
    """Reach the machine, sync code and workdir, write configs, start the agent."""
    provider = engine.provider(spec.provider)
    # A machine created a moment ago is still booting: retry SSH (with backoff) for up
    # to the profile's `boot_wait` seconds; on resume it must answer now.
    boot_wait = engine.settings.profile(spec.provider).value("boot_wait")
    host = engine.host_for(spec, instance, wait=0.0 if resume else float(boot_wait or 0.0))
    yield SshReady(spec.run_id, host.label)
    rd = RunDir(host, spec.run_id)
    transition(engine.store, spec.run_id, RunStatus.SYNCING, remote_dir=rd.path)
    python, nproc, notices = environment(engine, host, spec)
    yield from notices
    code_dir = yield from rd.upload_code(engine.settings.cache_dir)
    if spec.workdir and (not resume or not rd.exists()):  # a relaunch: a fresh disk
        yield from rd.upload_workdir(Path(spec.workdir), spec.excludes, spec.include_secrets)
    data = (yield from datasets.sync(host, spec.run_id, rd.work, spec.job)) if spec.job else []
    train = dict(spec.train)
    train["out_dir"] = rd.path
    if spec.workdir:
        train["workdir"] = rd.work
    transition(engine.store, spec.run_id, RunStatus.STARTING)
    owned = engine.created_for(spec, instance)
    # A machine gpuctl did not create for this run: its limits stop the trainer only.
    shutdown = provider.agent_shutdown(instance) if owned else {"action": ShutdownAction.NONE}
    agent = agent_config(engine, spec, instance, nproc, shutdown)
    agent["owned"] = owned  # not booted by gpuctl: no boot guard to re-arm or verify
    if owned:
        yield from check_boot_guard(engine, host, spec, instance, resume, shutdown, agent)
    if spec.job:
        agent.update(job_config(host, rd, spec, data))
    agent, env, notices = recovery.before_start(engine, spec, instance, agent)  # spot, secrets
    yield from notices
    if spec.job:
        env.update(job_secrets(spec))
    told, hooks = notify_share(engine, spec, instance)  # the agent's own end POST
    agent.update(told)
    env.update(hooks)
    answer = rd.start(
        code_dir=code_dir, python=python, train=train, agent=agent, resume=resume, env=env
    )
    transition(engine.store, spec.run_id, RunStatus.RUNNING, reason="")
    engine.record_event(spec.run_id, "started", {"host": host.label, "resume": resume, **answer})
    yield TrainerStarted(spec.run_id, host.label, answer.get("trainer_pid"), rd.path, resume)
    return True


def notify_share(
    engine: EngineOps, spec: LaunchSpec, instance: Instance
) -> tuple[dict[str, Any], dict[str, str]]:
    """What the agent needs to send the run's end itself (webhooks on its secret pipe)."""
    if not engine.settings.notify.urls:
        return {}, {}
    try:
        spent = cost.run_line(engine.store, engine.settings, spec.run_id).spent
    except Exception:  # the agent's estimate of the cost, never a reason not to start
        spent = 0.0
    return notify.agent_share(engine.settings, spec.run_id, spent, instance.price_per_hour)


def job_config(host: Host, rd: RunDir, spec: LaunchSpec, data: list[Any]) -> dict[str, Any]:
    """agent.json's `job`: the user's command, run under the agent like the bundled trainer.
    Secrets appear by name only; their values travel on the agent's pipe."""
    job = spec.job
    out: dict[str, Any] = {
        "job": {
            "kind": "command",
            "command": str(job["command"]),
            "cwd": rd.work,
            "checkpoint": str(job.get("checkpoint") or ""),
            "resume_args": str(job.get("resume") or ""),
            "setup": list(job.get("setup") or ()),
            "setup_key": str(job.get("setup_key") or ""),
            "setup_dir": f"{host.base_dir()}/setup",
            "epochs": job.get("epochs"),
            "env": dict(job.get("env") or {}),
            "secret_env": list(job.get("secrets") or ()),
            "data": data,
        }
    }
    if job.get("grace_seconds") is not None:
        out["grace_seconds"] = float(job["grace_seconds"])
    return out


def job_secrets(spec: LaunchSpec) -> dict[str, str]:
    """The values of the project's named secrets, and presigned URLs of its s3 datasets."""
    from .project import secret_values

    names = [str(n) for n in spec.job.get("secrets") or ()]
    env = secret_values(names, str(spec.job.get("project_file") or ""))
    seconds = (spec.max_hours or 12.0) * 3600
    env.update(datasets.presigned(spec.job, seconds, spec.options.get("aws_profile")))
    return env


def check_boot_guard(
    engine: EngineOps,
    host: Host,
    spec: LaunchSpec,
    instance: Instance,
    resume: bool,
    shutdown: dict[str, Any],
    agent: dict[str, Any],
) -> Iterator[Event]:
    """First contact with a machine gpuctl created: did its boot guard arm? If not (an
    image without cloud-init), the agent arms the same max-hours shutdown itself."""
    from . import bootguard

    command = shutdown.get("command")
    if resume or spec.instance_id or not instance.managed or not spec.max_hours:
        return
    if Capability.BOOT_GUARD not in engine.provider(spec.provider).capabilities or not command:
        return  # local and ssh machines get no boot guard: they are not gpuctl's to end
    if bootguard.armed(host, spec.run_id):
        engine.record_event(spec.run_id, "boot_guard", {"armed_by": "cloud-init"})
        return
    scale = float(engine.settings.profile(spec.provider).value("agent_time_scale"))
    agent["guard_seconds"] = bootguard.boot_guard_minutes(spec.max_hours) * 60 * scale
    agent["guard_command"] = list(command)
    engine.record_event(spec.run_id, "boot_guard", {"armed_by": "agent"})
    yield Notice(
        spec.run_id,
        f"no boot guard on {host.label} (its image did not run cloud-init user data): "
        f"the agent arms the {spec.max_hours:g} h shutdown itself",
        "warning",
    )


def agent_config(
    engine: EngineOps, spec: LaunchSpec, instance: Instance, nproc: int, shutdown: dict[str, Any]
) -> dict[str, Any]:
    """Watchdog limits in seconds: they hold on the machine with gpuctl closed."""
    from gpuctl.providers.base import limit_shutdown

    scale = float(engine.settings.profile(spec.provider).value("agent_time_scale"))
    budget_seconds = cost.agent_budget_seconds(engine.store, engine.settings, spec, instance)
    if budget_seconds is not None:
        budget_seconds *= scale
    max_seconds = spec.max_hours * 3600 * scale if spec.max_hours else None
    # What this run may still spend, for the budgets it shares with later launches.
    engine.record_event(
        spec.run_id, "limits", {"max_seconds": max_seconds, "budget_seconds": budget_seconds}
    )
    spot = instance.market == Market.SPOT
    stall = spec.stall_minutes
    return {
        "nproc": nproc,
        "max_seconds": max_seconds,
        "budget_seconds": budget_seconds,
        "idle_seconds": spec.idle_minutes * 60 * scale if spec.idle_minutes else None,
        # Not scaled by agent_time_scale: a stall is about the trainer's own pace, and a
        # scaled-down clock (an emulator run) would call a slow step on a busy box a stall.
        "stall_seconds": stall * 60 if stall else None,
        "stall_warmup_seconds": STALL_WARMUP_SECONDS,  # before the first step
        # --teardown reaches the machine: an idle or limit shutdown never does more
        # than the policy allows (keep: the trainer only; stop: never terminate).
        "shutdown": limit_shutdown(shutdown, spec.teardown, spot=spot),
        "budget_shutdown": limit_shutdown(shutdown, engine.settings.budget.on_exceed, spot=spot),
        "poll_seconds": 2.0,
    }
