"""Launch, follow, stop, down, resume, download: each a generator of typed events.

The CLI prints the events and the TUI turns them into messages; nothing here knows who
is listening. Failures after something was created are cleaned up here (a half-created
instance is terminated), recorded in the state store, and yielded as a `Failed` event
carrying the one-line message, fix hint and exit code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sys
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import cost, filelock, ownership, reconcile, recovery, results, runstate
from .errors import (
    EXIT_BUDGET,
    EXIT_RUN_FAILED,
    ConfigError,
    GpuctlError,
    NotFoundError,
    RemoteError,
    from_os_error,
)
from .events import (
    CostTick,
    Downloaded,
    EpochDone,
    Event,
    Failed,
    Finished,
    GpuSampled,
    InstanceUp,
    LogLines,
    Notice,
    Resolved,
    SshReady,
    TornDown,
    TrainerStarted,
)
from .format import rate
from .host import Host
from .local_host import LocalHost
from .models import Instance, InstanceState, LaunchSpec, Market, Run, RunStatus
from .numbers import finite_nonnegative, finite_positive
from .providers.base import Capability
from .rundir import RunDir
from .runs.status import Reason, transition
from .settings import Settings
from .settings import load as load_settings
from .state import Store
from .tail import Tail, last_lines
from .trainer.protocol import (
    AGENT_ENDED,
    EVENTS_FILE,
    LAST_CHECKPOINT_FILE,
    TRAIN_LOG_FILE,
    ShutdownAction,
    StopReason,
    TrainerEvent,
)

log = logging.getLogger("gpuctl")

# The reason of a run that ended on its own, once `down` dealt with its machine.
AFTER_END = "after it ended"

Events = Generator[Event, None, Any]

TEARDOWN_POLICIES = ("terminate", "stop", "keep")
STALL_WARMUP_SECONDS = 600.0  # the stall clock's allowance before a trainer's first step
FALLBACKS = ("none", "on-demand")


def new_run_id(preset: str) -> str:
    """PRESET-YYMMDD-xxxx: the preset name is checked so the id survives every tag."""
    ownership.check_name(preset, "preset")
    return f"{preset}-{time.strftime('%y%m%d')}-{secrets.token_hex(2)}"


def _refuse_unsupported(profile: Any, **given: Any) -> None:
    """A launch flag the provider would silently ignore is refused: a user who asked for
    spot or a p4d must not get a CPU run on the laptop, nor an estimate for the wrong type."""
    from gpuctl.driver_registry import provider_class
    from gpuctl.providers.base import FLAGS, kinds_honouring

    honoured = provider_class(profile.provider).launch_flags
    for key, value in given.items():
        if value in (None, False, (), [], "") or key in honoured or key not in FLAGS:
            continue
        flag = FLAGS[key]
        others = ", ".join(kinds_honouring(key))
        raise ConfigError(
            f"{flag} does nothing on the {profile.provider} provider (profile '{profile.name}')",
            hint=f"drop {flag}"
            + (f", or use a provider that honours it: {others}" if others else ""),
        )


class Engine:
    """Holds settings, the state store and provider instances for one process."""

    def __init__(self, settings: Settings | None = None, store: Store | None = None) -> None:
        self.settings = settings or load_settings()
        self.store = store or Store(self.settings.state_path)
        self._providers: dict[str, Any] = {}
        self._hosts: dict[tuple[str, str, str | None], Host] = {}
        self.poll_seconds = 0.5
        self.status_seconds = 2.0
        self.gpu_seconds = 5.0
        self.cost_seconds = 10.0
        self._cost_next: dict[str, float | None] = {}
        self.cut_short: list[tuple[str, str]] = []  # (run id, what was undone) on Ctrl-C
        self.findings: list[Any] = []  # what the last refresh's reconcile found

    def provider(self, name: str) -> Any:
        if name not in self._providers:
            from gpuctl.providers.base import get_provider

            profile = self.settings.profile(name)
            cost.profile_price(profile)  # a bad price_per_hour: one clear error, any command
            self._providers[name] = get_provider(profile, self.settings)
        return self._providers[name]

    # -- resolve ---------------------------------------------------------------------------

    def resolve(
        self,
        preset: str,
        *,
        provider: str | None = None,
        overrides: Sequence[str] = (),
        base: str | None = None,
        budget: float | None = None,
        max_hours: float | None = None,
        idle_minutes: float | None = None,
        stall_minutes: float | None = None,
        workdir: str | None = None,
        excludes: Sequence[str] = (),
        include_secrets: Sequence[str] = (),
        instance_type: str | None = None,
        region: str | None = None,
        regions: Sequence[str] = (),
        spot: bool = False,
        max_price: float | None = None,
        fallback: str = "none",
        image: str | None = None,
        disk_gb: int | None = None,
        host: str | None = None,
        identity: str | None = None,
        instance_id: str | None = None,
        managed: bool | None = None,
        teardown: str | None = None,
        require_gpu: bool = False,
        options: dict[str, Any] | None = None,
    ) -> LaunchSpec:
        """Check everything that can be checked before anything is created or paid for."""
        from gpuctl.presets.loader import resolve as resolve_preset

        chosen = resolve_preset(preset, overrides, base=base, user_dir=self.settings.presets_dir)
        ownership.check_name(chosen.name, "preset")  # before anything is created
        profile = self.settings.profile(provider or self.settings.default_provider)
        options = {**profile.launch_options(), **(options or {})}  # a flag wins over config
        cost.profile_price(profile)  # a bad price_per_hour fails here, not mid-launch
        for name, value in (("budget", budget), ("max-hours", max_hours), ("max-price", max_price)):
            if value is not None:
                finite_positive(
                    value,
                    f"--{name}",
                    hint="amounts are in USD and hours; leave it out for no limit"
                    if name != "max-hours"
                    else "e.g. --max-hours 4",
                )
        if idle_minutes is not None:
            finite_nonnegative(idle_minutes, "--idle-minutes", hint="0 turns the idle stop off")
        _refuse_unsupported(
            profile,
            spot=spot,
            instance_type=instance_type,
            region=region,
            regions=regions,
            max_price=max_price,
            fallback=fallback if fallback != "none" else None,
            image=image,
            disk_gb=disk_gb,
            host=host,
            identity=identity,
            **{k: v for k, v in (options or {}).items() if k != "force"},
        )
        if stall_minutes is not None:
            finite_nonnegative(stall_minutes, "--stall-minutes", hint="0 turns it off")
        if stall_minutes is None:
            stall_minutes = chosen.stall_minutes
        if stall_minutes is None:
            stall_minutes = self.settings.stall_minutes
        if disk_gb is not None and disk_gb < 8:
            raise ConfigError(f"--disk must be at least 8 GB, got {disk_gb}")
        teardown = teardown or self.settings.teardown
        if teardown not in TEARDOWN_POLICIES:
            raise ConfigError(
                f"unknown teardown policy '{teardown}'", hint="use terminate, stop or keep"
            )
        if fallback not in FALLBACKS:
            raise ConfigError(f"unknown fallback '{fallback}'", hint="use none or on-demand")
        workdir_path = None
        if workdir is not None:
            if not workdir.strip():
                raise ConfigError(
                    "--workdir is empty", hint="name your project directory, e.g. --workdir ."
                )
            wd = Path(workdir).expanduser()
            if wd.is_file():
                raise ConfigError(
                    f"work directory {workdir} is a file, not a directory",
                    hint="pass the directory that holds your project",
                )
            if not wd.is_dir():
                raise ConfigError(
                    f"work directory {workdir} does not exist", hint="pass an existing directory"
                )
            workdir_path = str(wd.resolve())
        if host:  # a typo in --host fails here, before any run is recorded
            from gpuctl.remote.endpoint import parse_host_spec

            parse_host_spec(host)
        if profile.provider == "ssh" and not (host or profile.get("host")):
            raise ConfigError(
                "the ssh provider needs --host user@ip[:port]",
                hint="or set host = ... under [profiles.ssh] in config.toml",
            )
        results.check_writable(self.settings.results_dir, "results_dir")  # before any rent
        run_id = new_run_id(chosen.name)
        train = dict(chosen.train)
        train.update(run_id=run_id, preset=chosen.name)
        return LaunchSpec(
            run_id=run_id,
            preset=chosen.name,
            provider=profile.name,
            train=train,
            instance_type=instance_type,
            region=region,
            regions=tuple(regions),
            spot=spot,
            max_price=max_price,
            fallback=fallback,
            image=image,
            disk_gb=disk_gb or chosen.disk_gb,
            budget=budget,
            max_hours=max_hours or self.capped("max_hours", chosen.max_hours),
            idle_minutes=idle_minutes
            if idle_minutes is not None
            else self.capped("idle_minutes", chosen.idle_minutes),
            stall_minutes=stall_minutes or None,
            workdir=workdir_path,
            excludes=tuple(excludes),
            include_secrets=tuple(include_secrets),
            host=host or profile.get("host"),
            identity=identity,
            instance_id=instance_id,
            managed=spot if managed is None else managed,
            teardown=teardown,
            require_gpu=require_gpu,
            options=options or {},
        )

    def capped(self, key: str, preset_value: float | None) -> float | None:
        """A preset's limit under config.toml's [defaults] cap, the smaller winning (a
        flag given on the command line is the user's explicit choice and is not capped).
        A cap of 0 or less caps nothing; a preset without a limit gets the cap."""
        cap = getattr(self.settings, key) if key in self.settings.defaults_given else None
        if cap is None or cap <= 0:
            return (preset_value or self.settings.max_hours) if key == "max_hours" else preset_value
        return cap if not preset_value or preset_value <= 0 else min(cap, preset_value)

    # -- launch ------------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> Events:
        """Provision (or reuse), reach, sync and start; ends with TrainerStarted or Failed.

        Credentials and a named --instance are checked first: a mistake there raises its
        GpuctlError before any run is recorded or any event says "run X".
        """
        given = self._preflight(spec)
        est = self.estimate(spec)
        # The check and the record of the run it admits are one step for every gpuctl
        # process: two launches at once cannot both spend the same dollars. The admitted
        # run holds its estimate against the budgets until its machine starts billing.
        self.settle_ended_billing()  # what finished runs really cost, not what they might
        with filelock.exclusive(self.settings.home / "budget.lock"):
            refusal = cost.launch_refusal(
                self.store,
                self.settings,
                spec,
                est.cost if est else None,
                price_per_hour=est.price_per_hour if est else None,
            )
            admitted = refusal is None or bool(spec.options.get("force"))
            if admitted:
                now = time.time()
                self.store.add_run(
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
                if est is not None and est.cost is not None:
                    self.record_event(spec.run_id, cost.RESERVED, {"amount": est.cost})
        if not admitted and refusal is not None:
            yield self._resolved(spec, est)
            yield Failed(spec.run_id, refusal.message, refusal.hint, refusal.exit_code)
            return None  # refused: no run recorded, nothing created
        instance: Instance | None = None
        created = False
        try:  # from here on an interrupt marks the run failed: never `provisioning` forever
            self.record_event(
                spec.run_id, "launch", {"preset": spec.preset, "provider": spec.provider}
            )
            recovery.claim(self.store, spec.run_id, "launch")  # reconcile: is it alive?
            yield self._resolved(spec, est)
            if est is not None:
                self.record_event(spec.run_id, "estimate", est.to_dict())
                yield Notice(spec.run_id, est.text())
            if refusal is not None:
                yield Notice(
                    spec.run_id, f"launching anyway (--force): {refusal.message}", "warning"
                )
            elif est is None or est.cost is None:  # unknown is not $0: say the meter is blind
                yield Notice(
                    spec.run_id,
                    "the price of this machine is unknown: its cost cannot be estimated and is "
                    "not metered until a price is known",
                    "warning",
                )
            if given is not None:
                instance = given
            else:
                instance = yield from self.create_instance(spec)
                created = True
            self.store.put_instance(instance)
            self.store.update_run(spec.run_id, instance_id=instance.id)
            cost.record_launch(self.store, self.settings, instance, spec.run_id)
            yield InstanceUp(
                spec.run_id,
                instance.id,
                instance.price_per_hour,
                instance.public_ip,
                instance.instance_type,
                instance.region,
                instance.market.value,
            )
            started = yield from self.start_on(instance, spec, resume=False)
            return started
        except (KeyboardInterrupt, GeneratorExit):
            # Ctrl-C, or the consumer went away, before the trainer started: a machine
            # that will never run anything must not keep billing.
            self._abandon_launch(spec, instance, created)
            raise
        except GpuctlError as exc:
            yield from self._fail_launch(spec, instance, created, exc)
        except Exception as exc:  # a bug: keep the user's money safe, then report it
            log.exception("launch of %s failed", spec.run_id)
            yield from self._fail_launch(
                spec,
                instance,
                created,
                GpuctlError(
                    f"internal error: {type(exc).__name__}: {exc}",
                    hint=f"details in {self.settings.home / 'gpuctl.log'}",
                ),
            )
        return None

    def _preflight(self, spec: LaunchSpec) -> Instance | None:
        """What can fail before anything exists: the provider's credentials, and the
        machine named with --instance (returned)."""
        provider = self.provider(spec.provider)
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

    def create_instance(self, spec: LaunchSpec) -> Generator[Event, None, Instance]:
        """A new machine for spec, its address freed of any old host-key pin.

        Cloud IPs are recycled: the key pinned for an address belonged to an earlier
        machine. Only machines gpuctl created are unpinned; a user's own box keeps its pin.
        """
        provider = self.provider(spec.provider)
        instance = yield from provider.launch(spec)
        try:
            target = provider.ssh_target(instance) if instance.managed else None
            if target is not None:
                from gpuctl.remote.hostkeys import forget_host

                forget_host(self.settings.known_hosts, target.host, target.port)
        except BaseException:
            # Ctrl-C (or a failure) before the caller holds the instance: nobody else
            # knows it exists yet, so it must be terminated here.
            with contextlib.suppress(Exception):
                provider.terminate(instance, wait=False)
            raise
        return instance

    def estimate(self, spec: LaunchSpec) -> Any:  # -> estimate.Estimate | None
        """Hours and dollars before launch (None if even the provider is unusable)."""
        from . import estimate

        try:
            return estimate.estimate_spec(
                self.store, self.settings, spec, self.provider(spec.provider)
            )
        except Exception:  # an estimate must never block or break a launch
            log.exception("estimate for %s failed", spec.run_id)
            return None

    def _resolved(self, spec: LaunchSpec, est: Any) -> Resolved:
        return Resolved(
            spec.run_id,
            spec.preset,
            spec.provider,
            estimate_hours=round(est.hours, 4) if est else None,
            estimate_cost=round(est.cost, 4) if est and est.cost is not None else None,
            offer=(est.instance_type if est else "") or spec.instance_type or "",
            estimate_note=est.minimum_note if est else "",
        )

    def _abandon_launch(self, spec: LaunchSpec, instance: Instance | None, created: bool) -> None:
        """Undo a launch cut short; no events (the listener is gone), best effort, quick."""
        run = self.store.find_run(spec.run_id)
        if run is not None and run.status == RunStatus.RUNNING:
            return  # the trainer runs: it has its own limits, and `gpuctl ls` shows it
        reason = "launch interrupted before the trainer started"
        if instance is not None and created:
            try:
                self.provider(spec.provider).terminate(instance, wait=False)
                cost.close_instance(self.store, instance)
                self.store.mark_instance_gone(instance.provider, instance.id)
                reason += f"; instance {instance.id} terminated"
            except Exception as exc:  # reconcile shows it as an orphan; say how to remove it
                log.exception("could not terminate %s", instance.id)
                reason += f"; could not terminate {instance.id} ({exc}): gpuctl down --orphans"
        transition(self.store, spec.run_id, RunStatus.FAILED, reason=reason)
        self.record_event(spec.run_id, "failed", {"error": reason})
        self.cut_short.append((spec.run_id, reason))

    def _fail_launch(
        self, spec: LaunchSpec, instance: Instance | None, created: bool, exc: GpuctlError
    ) -> Events:
        if instance is not None and created:
            try:  # created by this very launch a moment ago: no name to type
                yield from self.teardown(spec.run_id, instance, "terminate", confirmed=True)
            except GpuctlError as down_exc:
                yield Notice(
                    spec.run_id,
                    f"could not remove instance {instance.id}: {down_exc.one_line()}; "
                    f"run `gpuctl down {spec.run_id}`",
                    "error",
                )
        transition(self.store, spec.run_id, RunStatus.FAILED, reason=exc.message)
        self.record_event(spec.run_id, "failed", {"error": exc.message, "hint": exc.hint})
        yield Failed(spec.run_id, exc.message, exc.hint, exc.exit_code)

    def release_hosts(self, provider: str, instance_id: str | None) -> None:
        """Close this process's connections to one machine (a pool thread is done with it)."""
        for key, host in list(self._hosts.items()):
            if key[:2] == (provider, instance_id):
                host.close()

    def host_for(self, run: Run | LaunchSpec, instance: Instance, wait: float = 0.0) -> Host:
        """One Host (one SSH connection) per machine and address for this process."""
        key = (instance.provider, instance.id, instance.public_ip)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = self.provider(run.provider).host(instance)
        if wait and hasattr(host, "wait_ready"):
            host.wait_ready(wait)
        return host

    def _environment(self, host: Host, spec: LaunchSpec) -> tuple[str, int, Sequence[Event]]:
        """(python to run the trainer with, GPUs to use, notices) for this machine."""
        if isinstance(host, LocalHost):
            if spec.require_gpu:
                self._require_local_gpu(host)
            return sys.executable, 1, ()
        from gpuctl.remote.probe import prepare_python

        return prepare_python(host, self.settings.profile(spec.provider), spec)

    def _require_local_gpu(self, host: LocalHost) -> None:
        """`--require-gpu` holds on this machine too: the same probe as on a rented one."""
        from gpuctl.remote.probe import probe

        if probe(host, python=sys.executable).gpu_count == 0:
            raise RemoteError(
                "this machine has no GPU (no nvidia-smi, amd-smi or rocm-smi answered)",
                hint="drop --require-gpu to train on its CPU, or launch on a GPU provider",
            )

    def start_on(self, instance: Instance, spec: LaunchSpec, *, resume: bool) -> Events:
        """Reach the machine, sync code and workdir, write configs, start the agent."""
        provider = self.provider(spec.provider)
        # A machine created a moment ago is still booting: retry SSH (with backoff) for up
        # to the profile's `boot_wait` seconds; on resume it must answer now.
        boot_wait = self.settings.profile(spec.provider).value("boot_wait")
        host = self.host_for(spec, instance, wait=0.0 if resume else float(boot_wait or 0.0))
        yield SshReady(spec.run_id, host.label)
        rd = RunDir(host, spec.run_id)
        transition(self.store, spec.run_id, RunStatus.SYNCING, remote_dir=rd.path)
        python, nproc, notices = self._environment(host, spec)
        yield from notices
        code_dir = yield from rd.upload_code(self.settings.cache_dir)
        if spec.workdir and (not resume or not rd.exists()):  # a relaunch: a fresh disk
            yield from rd.upload_workdir(Path(spec.workdir), spec.excludes, spec.include_secrets)
        train = dict(spec.train)
        train["out_dir"] = rd.path
        if spec.workdir:
            train["workdir"] = rd.work
        transition(self.store, spec.run_id, RunStatus.STARTING)
        owned = self.created_for(spec, instance)
        # A machine gpuctl did not create for this run: its limits stop the trainer only.
        shutdown = provider.agent_shutdown(instance) if owned else {"action": ShutdownAction.NONE}
        agent = self._agent_config(spec, instance, nproc, shutdown)
        agent["owned"] = owned  # not booted by gpuctl: no boot guard to re-arm or verify
        if owned:
            yield from self._check_boot_guard(host, spec, instance, resume, shutdown, agent)
        agent, env, notices = recovery.before_start(self, spec, instance, agent)  # spot, secrets
        yield from notices
        answer = rd.start(
            code_dir=code_dir, python=python, train=train, agent=agent, resume=resume, env=env
        )
        transition(self.store, spec.run_id, RunStatus.RUNNING, reason="")
        self.record_event(spec.run_id, "started", {"host": host.label, "resume": resume, **answer})
        yield TrainerStarted(spec.run_id, host.label, answer.get("trainer_pid"), rd.path, resume)
        return True

    def _check_boot_guard(
        self,
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
        if self.provider(spec.provider).kind not in ("aws", "digitalocean") or not command:
            return  # local and ssh machines get no boot guard: they are not gpuctl's to end
        if bootguard.armed(host, spec.run_id):
            self.record_event(spec.run_id, "boot_guard", {"armed_by": "cloud-init"})
            return
        scale = float(self.settings.profile(spec.provider).value("agent_time_scale"))
        agent["guard_seconds"] = bootguard.boot_guard_minutes(spec.max_hours) * 60 * scale
        agent["guard_command"] = list(command)
        self.record_event(spec.run_id, "boot_guard", {"armed_by": "agent"})
        yield Notice(
            spec.run_id,
            f"no boot guard on {host.label} (its image did not run cloud-init user data): "
            f"the agent arms the {spec.max_hours:g} h shutdown itself",
            "warning",
        )

    def _agent_config(
        self, spec: LaunchSpec, instance: Instance, nproc: int, shutdown: dict[str, Any]
    ) -> dict[str, Any]:
        """Watchdog limits in seconds: they hold on the machine with gpuctl closed."""
        from gpuctl.providers.base import limit_shutdown

        scale = float(self.settings.profile(spec.provider).value("agent_time_scale"))
        budget_seconds = cost.agent_budget_seconds(self.store, self.settings, spec, instance)
        if budget_seconds is not None:
            budget_seconds *= scale
        max_seconds = spec.max_hours * 3600 * scale if spec.max_hours else None
        # What this run may still spend, for the budgets it shares with later launches.
        self.record_event(
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
            "budget_shutdown": limit_shutdown(shutdown, self.settings.budget.on_exceed, spot=spot),
            "poll_seconds": 2.0,
        }

    # -- follow ------------------------------------------------------------------------------

    def follow(
        self,
        run_id: str,
        *,
        from_start: bool = False,
        tail_lines: int = 20,
        stop_when_done: bool = True,
        log_offset: int | None = None,
    ) -> Events:
        """Stream log lines, epochs, GPU samples and cost until the trainer ends.

        `log_offset`: follow train.log from there (a resumed run's log continues).
        """
        run = self.store.get_run(run_id)
        run_id = run.id
        try:
            _instance, host = self.locate(run)
        except GpuctlError as exc:
            yield Failed(run_id, exc.message, exc.hint, exc.exit_code)
            return run.status
        rd = RunDir(host, run_id, run.remote_dir)
        if log_offset is not None:
            log_tail = Tail(host, rd.p(TRAIN_LOG_FILE), log_offset)
        elif from_start:
            log_tail = Tail(host, rd.p(TRAIN_LOG_FILE))
        else:
            lines, offset = last_lines(host, rd.p(TRAIN_LOG_FILE), tail_lines)
            if lines:
                yield LogLines(run_id, tuple(lines))
            log_tail = Tail(host, rd.p(TRAIN_LOG_FILE), offset)
        events_tail = Tail(host, rd.p(EVENTS_FILE))
        seen_epochs = EpochClock(() if from_start else range(1, run.epoch + 1))
        next_status = next_gpu = next_cost = 0.0
        final: dict[str, Any] = {}
        link_down_since: float | None = None
        lost_after = float(self.settings.profile(run.provider).value("link_lost_seconds"))
        warned: set[str] = set()
        while True:
            try:
                lines = log_tail.poll()
                if lines:
                    yield LogLines(run_id, tuple(lines))
                for ev in events_tail.poll_json():
                    yield from self._trainer_event(run_id, ev, seen_epochs, events_tail)
                yield from _malformed_notice(run_id, events_tail, warned)
                now = time.monotonic()
                if now >= next_gpu:
                    next_gpu = now + self.gpu_seconds
                    samples = self._sample_gpus(host)
                    if samples:
                        yield GpuSampled(run_id, samples)
                if now >= next_cost:
                    yield from self._cost_tick(run_id, warned)
                    due = self._cost_next.get(run_id)  # sooner when a threshold is near
                    next_cost = now + min(
                        self.cost_seconds, max(self.poll_seconds, due or self.cost_seconds)
                    )
                if now >= next_status:
                    next_status = now + self.status_seconds
                    status = rd.status()
                    yield from recovery.status_notices(run_id, status, warned)  # spot notice
                    state = status.get("state")
                    if not status and rd.exists():
                        # Unknown is not done: the run's directory is there but its agent
                        # config cannot be read; the trainer may well be running.
                        if "unreadable" not in warned:
                            warned.add("unreadable")
                            yield Notice(
                                run_id,
                                f"cannot read the agent's status on {host.label}; still "
                                "following (the trainer may be running)",
                                "warning",
                            )
                    elif state in AGENT_ENDED or not status:
                        for line_batch in (log_tail.flush(),):
                            if line_batch:
                                yield LogLines(run_id, tuple(line_batch))
                        for ev in events_tail.poll_json():
                            yield from self._trainer_event(run_id, ev, seen_epochs, events_tail)
                        yield from _malformed_notice(run_id, events_tail, warned)
                        final = status
                        break
                if link_down_since is not None:
                    yield Notice(run_id, f"reconnected to {host.label}")
                    link_down_since = None
                yield from recovery.reconnect_notices(run_id, host, warned)  # silent reconnects
            except RemoteError as exc:
                if link_down_since is None:
                    link_down_since = time.monotonic()
                    yield Notice(run_id, f"link to {host.label} lost ({exc}); retrying", "warning")
                recorded = self.store.get_run(run_id).status
                if recorded.terminal and run.status.active:
                    return recorded  # ended meanwhile (`gpuctl down`, a stop): that stands
                gone = recovery.vanished(self, run)  # the provider says the machine is gone
                if gone is not None:
                    yield Notice(run_id, gone, "warning")
                    return RunStatus.INTERRUPTED
                if time.monotonic() - link_down_since > lost_after:
                    # Unknown is not done: the machine still exists (or nobody can tell),
                    # so its run may still be training. The run stays as it is and
                    # nothing is torn down; the user decides.
                    self.record_event(
                        run_id, "unreachable", {"host": host.label, "error": str(exc)}
                    )
                    yield Failed(
                        run_id,
                        f"lost the link to {host.label} for {lost_after:.0f}s ({exc}); its "
                        "machine may still be training, so nothing was torn down",
                        f"`gpuctl logs {run_id} -f` reattaches; `gpuctl stop {run_id}` or "
                        f"`gpuctl down {run_id}` ends it",
                        exc.exit_code,
                    )
                    return self.store.get_run(run_id).status
                time.sleep(min(10.0, 1.0 + (time.monotonic() - link_down_since) / 5))
                continue
            if not stop_when_done:
                return None
            time.sleep(self.poll_seconds)
        status = self._final_status(run_id, final)
        return status

    def _trainer_event(
        self, run_id: str, ev: dict[str, Any], seen: EpochClock, tail: Tail | None = None
    ) -> Iterator[Event]:
        if ev.get("event") != TrainerEvent.EPOCH_END:
            return
        try:
            epoch, epochs = _count(ev.get("epoch", 0)), _count(ev.get("epochs", 0))
        except ValueError:
            if tail is not None:  # a line from the machine that is not what it says
                tail.malformed += 1
                tail.last_malformed = json.dumps(ev)[:80]
            return
        ev = {k: (v if k not in _EPOCH_NUMBERS or _number(v) else None) for k, v in ev.items()}
        if not seen.add(epoch, ev):
            return
        eta = seen.eta(epoch, epochs)
        self.store.update_run(
            run_id, epoch=epoch, epochs=epochs, metric=ev.get("val_metric"), eta_seconds=eta
        )
        self.record_event(
            run_id,
            "epoch",
            {k: ev.get(k) for k in ("epoch", "epoch_seconds", "samples_per_second", "warmup")},
        )
        yield EpochDone(
            run_id,
            epoch,
            epochs,
            ev.get("train_loss"),
            ev.get("val_loss"),
            ev.get("val_metric"),
            ev.get("epoch_seconds"),
            eta,
            bool(ev.get("warmup", False)),
        )

    def _sample_gpus(self, host: Host) -> tuple[Any, ...]:
        try:
            from gpuctl.remote.gpu import sample_gpus
        except ImportError:
            return ()
        try:
            return tuple(sample_gpus(host))
        except GpuctlError:
            return ()

    def _cost_tick(self, run_id: str, warned: set[str]) -> Iterator[Event]:
        """Meter the run; warn once at warn_fraction and stop it at 100% of any budget
        that applies (its own, the month's, its provider's)."""
        run = self.store.get_run(run_id)
        line = cost.run_line(self.store, self.settings, run_id)
        yield CostTick(run_id, line.spent, line.burn_per_hour, line.projected_total, run.budget)
        states = cost.run_budgets(self.store, self.settings, run)
        self._cost_next[run_id] = cost.seconds_to_threshold(states, line.burn_per_hour)
        for alert in cost.fire_alerts(self.store, states):
            self.record_event(run_id, "budget", {"level": alert.level, **alert.state.to_dict()})
            yield Notice(run_id, alert.message, "error" if alert.level == "stop" else "warning")
        over = cost.exceeded(states)
        if over is not None and "stop" not in warned and run.status.active:
            warned.add("stop")
            self.store.update_run(run_id, reason=StopReason.BUDGET.value)
            try:
                _instance, host = self.locate(run)
                why = f"{StopReason.BUDGET}: {over.label}"
                RunDir(host, run_id, run.remote_dir).stop(reason=why)
            except GpuctlError as exc:
                yield Notice(run_id, f"budget stop failed: {exc.one_line()}", "error")

    def _final_status(self, run_id: str, agent: dict[str, Any]) -> RunStatus:
        """The run's status once its trainer ended; recorded once, by whoever saw it first."""
        return runstate.record_end(self, run_id, agent)[0]

    # -- run (attached) -----------------------------------------------------------------------

    def run(self, spec: LaunchSpec) -> Events:
        """Launch, follow to the end, download results, tear down by policy."""
        started = yield from self.launch(spec)
        if not started:
            return RunStatus.FAILED
        status = yield from self.follow(spec.run_id, from_start=True)
        status = yield from recovery.supervise(self, spec.run_id, status)  # managed runs
        return (yield from self.finish(spec.run_id, status))

    def finish(self, run_id: str, status: RunStatus | None) -> Events:
        run = self.store.get_run(run_id)
        if status is None or status.active:
            return status  # not ended (the link was lost): never tear down a live run
        spec = run.launch_spec
        saved_to: Path | None = None
        save_error: GpuctlError | None = None
        try:
            saved_to = yield from self.download(run_id)
        except GpuctlError as exc:
            save_error = exc
            yield Notice(run_id, f"download failed: {exc.one_line()}", "error")
        except Exception as exc:  # never skip the teardown below: the machine bills
            log.exception("download of %s failed", run_id)
            yield Notice(run_id, f"download failed: {type(exc).__name__}: {exc}", "error")
        policy = spec.teardown
        if status == RunStatus.BUDGET:
            policy = self.settings.budget.on_exceed
        instance = self.instance_of(run)
        kept = None
        unsaved = save_error is not None and instance is not None
        if unsaved and results.pending(self.store, self.store.get_run(run_id), instance):
            kept = instance  # its results live only there: never end it for a failed copy
            policy = "keep"
        if instance is not None and not self.created_for(spec, instance):
            yield from self.release(run_id, instance)  # never torn down: not gpuctl's
        elif instance is not None and policy != "keep":
            try:
                yield from self.teardown(run_id, instance, policy)
            except GpuctlError as exc:
                yield Notice(run_id, f"teardown failed: {exc.one_line()}", "error")
        # The last stretch (trainer exit, download, teardown) may cross a budget line
        # between two ticks: report it now, from the closed ledger.
        for event in self._cost_tick(run_id, {"stop"}):
            if isinstance(event, Notice):
                yield event
        spent, _ = cost.spent(self.store, self.settings, run_id=run_id)
        run = self.store.get_run(run_id)
        if kept is not None and save_error is not None:
            price = "" if kept.price_per_hour is None else f", billing {rate(kept.price_per_hour)}"
            yield Failed(
                run_id,
                f"run {run_id} {status.value} but its results could not be saved "
                f"({save_error.message}); {kept.id} is kept with them{price}",
                f"`gpuctl download {run_id} --to DIR` saves them, then `gpuctl down {run_id}` "
                "ends the machine",
                save_error.exit_code,
            )
        elif status in (RunStatus.FAILED, RunStatus.LOST, RunStatus.STALLED):
            yield Failed(
                run_id,
                f"run {run_id} {status.value}: {run.reason}",
                f"see the log in {saved_to}"
                if saved_to
                else f"see `gpuctl logs {run_id}`"
                if instance is not None and policy == "keep"
                else self.gone_hint(run),
                EXIT_RUN_FAILED,
            )
        else:
            yield Finished(
                run_id,
                status.value,
                str(saved_to) if saved_to else None,
                run.metric,
                run.epoch,
                round(spent, 4),
            )
        return status

    # -- locate, stop, down, resume, download ---------------------------------------------------

    def instance_of(self, run: Run) -> Instance | None:
        if not run.instance_id:
            return None
        return self.store.get_instance(run.provider, run.instance_id)

    def locate(self, run: Run) -> tuple[Instance, Host]:
        instance = self.instance_of(run)
        if instance is None or instance.state == InstanceState.TERMINATED:
            fresh = None
            if run.instance_id:
                fresh = self.provider(run.provider).get_instance(run.instance_id)
            if fresh is None:
                raise NotFoundError(
                    f"run {run.id} has no live machine (instance "
                    f"{run.instance_id or 'never created'})",
                    hint=self.gone_hint(run),
                )
            instance = fresh
            self.store.put_instance(instance)
        return instance, self.host_for(run, instance)

    def gone_hint(self, run: Run) -> str:
        """What still works for a run whose machine is gone (never the command that failed)."""
        saved = results.saved_dir(run)
        parts = [f"its results are saved in {saved}"] if saved else []
        resumable = run.status != RunStatus.FINISHED and (
            recovery.local_checkpoint(self, run) is not None
            or run.launch_spec.options.get("checkpoint_bucket")
        )
        if resumable:
            parts.append(f"`gpuctl resume {run.id}` continues it on a new machine")
        elif not saved:
            parts.append(f"`gpuctl status {run.id}` says how it ended")
        return "; ".join(parts)

    def stop(self, run_id: str, *, reason: str = StopReason.USER) -> Events:
        run = self.store.get_run(run_id)
        if not run.remote_dir:
            raise NotFoundError(f"run {run.id} never started", hint="nothing to stop")
        run = runstate.sync_run(self, run)  # a run that already ended is not stopped again
        if run.status.terminal:
            yield Notice(run.id, f"run {run.id} already {run.status.value}: nothing to stop")
            return run.status
        _instance, host = self.locate(run)
        transition(self.store, run.id, RunStatus.STOPPING)
        yield Notice(run.id, f"stopping {run.id}: the trainer finishes its step and checkpoints")
        answer = RunDir(host, run.id, run.remote_dir).stop(reason=reason)
        status = self._final_status(run.id, answer.get("status") or {})
        if status.active:
            yield Notice(
                run.id,
                f"the trainer of {run.id} has not exited yet; it stops after its current "
                f"step (`gpuctl status {run.id}` says when)",
                "warning",
            )
            return status
        yield from self._after_stop(run, _instance)
        yield Finished(run.id, status.value, None, self.store.get_run(run.id).metric)
        return status

    def _after_stop(self, run: Run, instance: Instance) -> Events:
        """The trainer stopped; say what the machine now costs, and whose bill it is.

        A machine gpuctl did not create (attached, an ssh box) stops counting against the
        run at once: it was only metered while the run used it. One gpuctl created keeps
        billing until `down` or the on-machine idle rule ends it, and the user is told so.
        """
        provider = self.provider(instance.provider)
        if provider.kind == "ssh" or not self.created_for(run.launch_spec, instance):
            self.store.close_segments(
                instance.provider, instance.id, time.time(), kind=cost.COMPUTE
            )
            yield Notice(run.id, f"{instance.id} is left as it is; the meter of {run.id} ends")
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

    def created_for(self, spec: LaunchSpec, instance: Instance) -> bool:
        """This installation created the machine for this run (see gpuctl.ownership)."""
        return ownership.created_for(spec, instance, self.settings.installation_id)

    def end_rule(self, instance: Instance, run: Run | None = None) -> ownership.EndRule:
        """What ending this machine (the machine of `run`, if given) asks of the user."""
        installation = self.settings.installation_id
        if run is not None:
            return ownership.end_rule(instance, installation, run_id=run.id, spec=run.launch_spec)
        return ownership.end_rule(instance, installation, run_known=self._run_known(instance))

    def _run_known(self, instance: Instance) -> bool:
        """The store knows the run the machine is tagged with."""
        return bool(instance.run_id) and self.store.find_run(instance.run_id or "") is not None

    def is_ours(self, instance: Instance) -> bool:
        """Created by this installation (tagged with its id, or with a run it knows)."""
        return ownership.is_ours(
            instance, self.settings.installation_id, run_known=self._run_known(instance)
        )

    def teardown(
        self, run_id: str | None, instance: Instance, policy: str, *, confirmed: bool = False
    ) -> Events:
        """Stop or terminate an instance, close its ledger, say so (callers confirm first).

        A machine this installation did not create is refused unless `confirmed`: the
        user typed its name. An ssh box is only let go of, so it needs no confirmation.
        """
        provider = self.provider(instance.provider)
        end = (  # local: when the trainer exited
            provider.billing_ended_at(instance)
            if Capability.BILLING_END_TIME in provider.capabilities
            else None
        )
        if not confirmed and provider.kind != "ssh" and not self.is_ours(instance):
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
                cost.stop_instance(self.store, self.settings, instance, end)
        else:
            provider.terminate(instance, wait=True)
            # An ssh box is the user's own machine: gpuctl only lets go of it.
            action = "released" if provider.kind == "ssh" else "terminated"
            cost.close_instance(self.store, instance, end)
            self.store.mark_instance_gone(instance.provider, instance.id)
        self.record_event(run_id, "teardown", {"instance": instance.id, "action": action})
        yield TornDown(run_id or "", instance.id, action)

    def release(self, run_id: str, instance: Instance) -> Events:
        """Let go of a machine gpuctl did not create for this run: the run's meter ends,
        the machine is left exactly as it is (running, and billing its owner)."""
        provider = self.provider(instance.provider)
        cost.close_instance(self.store, instance)
        if provider.kind == "ssh":  # the box is known only through its run: forget it
            provider.terminate(instance, wait=False)  # closes the connection, nothing else
            self.store.mark_instance_gone(instance.provider, instance.id)
        else:
            yield Notice(
                run_id,
                f"{instance.id} was not created by gpuctl for this run: left running; "
                f"`gpuctl down {instance.id}` terminates it once you type its name",
            )
        self.record_event(run_id, "teardown", {"instance": instance.id, "action": "released"})
        yield TornDown(run_id, instance.id, "released")

    def down(
        self, run_id: str, *, discard_results: bool = False, confirmed: bool = False
    ) -> Events:
        """Terminate the run's instance (stopping the trainer first if it still runs).

        Results not yet downloaded are downloaded first; if that fails the machine is
        kept (a Failed event says why), unless `discard_results` says to lose them.
        A machine gpuctl did not create for this run is released instead, unless
        `confirmed` (the user typed its name): then it is terminated too.
        """
        run = self.store.get_run(run_id)
        instance = self.instance_of(run)
        if instance is None or instance.state == InstanceState.TERMINATED:
            yield Notice(run.id, f"run {run.id} has no live instance; nothing to remove")
            return None
        run = runstate.sync_run(self, run)  # a run that already ended keeps its status
        stopped_here = run.status.active
        if stopped_here:
            reason = f"{StopReason.USER} (gpuctl down)"
            try:
                _, host = self.locate(run)
                answer = RunDir(host, run.id, run.remote_dir).stop(reason=reason, timeout=30)
                self._final_status(run.id, answer.get("status") or {})
            except GpuctlError:
                pass
            # Recorded before the machine goes, so that a follower that then finds the run
            # directory gone cannot call the run failed: it was stopped, by the user.
            self.store.end_run(
                run.id,
                RunStatus.STOPPED,
                {"status": RunStatus.STOPPED.value, "reason": reason},
                reason=reason,
                eta_seconds=None,
            )
        mine = self.created_for(run.launch_spec, instance) or confirmed
        if mine and not discard_results and results.pending(self.store, self.store.get_run(run.id)):
            try:
                yield from self.download(run.id)
            except GpuctlError as exc:
                kept = f"{instance.id} kept: its results could not be downloaded"
                ended = self.store.get_run(run.id)
                if stopped_here:  # the reason says what really happened to the machine
                    self.store.update_run(run.id, reason=f"{StopReason.USER}; {kept}")
                elif not ended.reason or ended.reason.startswith(AFTER_END):
                    self.store.update_run(run.id, reason=f"{AFTER_END}: {kept}")
                yield Failed(
                    run.id,
                    f"{instance.id} not terminated: the results of {run.id} are only on it "
                    f"and could not be downloaded ({exc.message})",
                    f"fix that and run `gpuctl down {run.id}` again, or "
                    f"`gpuctl down {run.id} --discard-results` to terminate it and lose them",
                    exc.exit_code,
                )
                return None
        if mine:
            yield from self.teardown(run.id, instance, "terminate", confirmed=confirmed)
        else:
            yield from self.release(run.id, instance)
        run = self.store.get_run(run.id)
        removed = "instance removed" if mine else "machine released"
        if run.status.active:
            transition(self.store, run.id, RunStatus.STOPPED, reason=removed)
        elif run.status == RunStatus.STOPPED and Reason.of(run.reason) is Reason.USER:
            self.store.update_run(run.id, reason=f"{StopReason.USER}: {removed}")
        elif not run.reason or run.reason.startswith(AFTER_END):
            # A run that had ended on its own (finished): say where its machine went.
            gone = removed + (" without its results (discarded)" if discard_results else "")
            self.store.update_run(run.id, reason=f"{AFTER_END}: {gone}")
        return None

    def download(self, run_id: str, to: Path | None = None) -> Events:
        """Bring the run's results home; once its machine is gone, copy the saved ones."""
        run = self.store.get_run(run_id)
        if not run.remote_dir:
            raise NotFoundError(
                f"run {run.id} never started, so it has no results",
                hint=f"`gpuctl status {run.id}` says why",
            )
        target = Path(to).expanduser() if to else self.settings.results_dir / run.id
        try:
            _, host = self.locate(run)
        except NotFoundError as gone:
            return (yield from self._copy_saved(run, Path(to).expanduser() if to else None, gone))
        results.check_writable(target, "--to" if to else "results_dir")
        rd = RunDir(host, run.id, run.remote_dir)
        try:
            stats = yield from rd.download(target)
            files = sum(1 for p in target.iterdir() if p.is_file())
        except OSError as exc:  # the results dir here: read-only, full, a file in the way
            raise from_os_error(exc, f"save results in {target}") from None
        self.store.update_run(run.id, results_dir=str(target))
        self.record_event(run.id, results.DOWNLOADED, {"to": str(target), "files": files})
        yield Downloaded(run.id, str(target), files, stats.bytes)
        return target

    def _copy_saved(self, run: Run, to: Path | None, gone: NotFoundError) -> Events:
        """The machine is gone: the results saved here are the results (copied to `to`)."""
        import shutil

        saved = results.saved_dir(run)
        if saved is None:
            raise NotFoundError(
                f"run {run.id} has no live machine and no saved results "
                f"(instance {run.instance_id or 'never created'})",
                hint=gone.hint,
            )
        target = saved if to is None else to
        if target != saved:
            results.check_writable(target, "--to")
        names = results.saved_files(run)
        size = 0
        try:
            if target.resolve() != saved.resolve():
                target.mkdir(parents=True, exist_ok=True)
                for name in names:
                    shutil.copy2(saved / name, target / name)
            size = sum((target / name).stat().st_size for name in names)
        except OSError as exc:
            raise ConfigError(
                f"cannot copy the results of {run.id} to {target} ({exc.strerror or exc})",
                hint="pass --to a writable directory with free space",
            ) from None
        if target.resolve() == saved.resolve():
            yield Notice(run.id, f"its machine is gone; the results were saved in {saved}")
        else:
            yield Notice(run.id, f"its machine is gone; copying the results saved in {saved}")
        yield Downloaded(run.id, str(target), len(names), size)
        return target

    def resume(self, run_id: str) -> Events:
        """Continue a stopped/interrupted/failed run from its last checkpoint, attached."""
        run = runstate.sync_run(self, self.store.get_run(run_id))  # the machine's word
        if run.status.active:
            if recovery.owner_alive(self.store, run.id):
                raise recovery.busy_error(self.store, run.id)  # another gpuctl has it now
            raise ConfigError(
                f"run {run.id} is {run.status.value}",
                hint=f"it is still going; `gpuctl logs {run.id} -f` follows it",
            )
        if run.status == RunStatus.FINISHED:
            saved = results.saved_dir(run)
            raise ConfigError(
                f"run {run.id} already finished"
                + (f"; its results are in {saved}" if saved else ""),
                hint=f"`gpuctl run {run.preset}` starts a new run",
            )
        # Compare-and-set: of two resumes at once (two shells, the TUI and the CLI) exactly
        # one goes on; the other is told who has the run, and creates nothing.
        previous = run.status
        if not recovery.take_over(
            self.store, run.id, recovery.RESUMABLE, RunStatus.STARTING, "resume"
        ):
            raise recovery.busy_error(self.store, run.id)
        ready = False
        try:
            try:
                instance, host = self.locate(run)
            except NotFoundError:  # the machine is gone: a new one, with our checkpoint
                return (yield from recovery.resume_elsewhere(self, run.id))
            rd = RunDir(host, run.id, run.remote_dir)
            if host.file_size(rd.p(LAST_CHECKPOINT_FILE)) is None and not (
                yield from recovery.restore(self, run, rd)
            ):
                raise ConfigError(
                    f"run {run.id} has no checkpoint to resume from: no last.pt on "
                    f"{instance.id} and none here ({results.what_is_saved(run)})",
                    hint=f"`gpuctl run {run.preset}` starts it over",
                )
            ready = True
        finally:
            if not ready:  # not resumed after all: the run is as it was, for the next try
                self.store.transition_run(run.id, {RunStatus.STARTING}, previous)
        spec = run.launch_spec
        self.store.update_run(run.id, attempt=run.attempt + 1)
        cost.open_compute(self.store, instance, run.id)
        try:
            yield from self.start_on(instance, spec, resume=True)
        except GpuctlError as exc:
            transition(self.store, run.id, RunStatus.FAILED, reason=exc.message)
            yield Failed(run.id, exc.message, exc.hint, exc.exit_code)
            return RunStatus.FAILED
        status = yield from self.follow(run.id, from_start=False, tail_lines=0)
        status = yield from recovery.supervise(self, run.id, status)
        return (yield from self.finish(run.id, status))

    # -- listing ------------------------------------------------------------------------------

    def settle_ended_billing(self) -> int:
        """Close the ledger where a machine already says its billing ended, for every
        provider that can tell (see cost.settle_ended_billing). Returns segments closed."""
        closed = 0
        for name in self.settings.providers:
            try:
                provider = self.provider(name)
            except GpuctlError:
                continue
            closed += cost.settle_ended_billing(self.store, name, provider)
        return closed

    def refresh(self, names: Sequence[str] | None = None, *, include_unmanaged: bool = False):
        """List every provider in parallel; one failing is reported beside the others."""
        from gpuctl.providers.base import Listing

        names = list(names or self.settings.providers)

        def one(name: str) -> Listing:
            try:
                listing = self.provider(name).list_instances(include_unmanaged=include_unmanaged)
            except GpuctlError as exc:
                return Listing(name, (), (("*", exc.one_line()),))
            except Exception as exc:  # never let one provider blank the others
                log.exception("listing %s failed", name)
                return Listing(name, (), (("*", f"{type(exc).__name__}: {exc}"),))
            return listing

        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            listings = list(pool.map(one, names))
        for listing in listings:
            failed_everywhere = listing.errors and any(w == "*" for w, _ in listing.errors)
            if not failed_everywhere:
                self._absorb_listing(listing)
                self.store.put_instances(
                    listing.provider, listing.instances, complete=listing.complete
                )
            message = "; ".join(f"{w}: {m}" if w != "*" else m for w, m in listing.errors)
            self.store.set_provider_status(listing.provider, not listing.errors, message)
        self.findings = reconcile.after_refresh(self, listings)  # vanished, orphans, died
        return listings

    def _absorb_listing(self, listing: Any) -> None:
        """Ledger vs listing: meter what runs unbilled, close what is gone (flagged)."""
        try:
            found = cost.sync_ledger(
                self.store,
                self.settings,
                listing.provider,
                listing.instances,
                complete=listing.complete,
                last_seen=self.store.seen_times(listing.provider),
            )
            cost.sync_spot_prices(self.store, self.provider(listing.provider), listing.instances)
        except Exception:  # the meter must never break a listing
            log.exception("reconciling the ledger with %s failed", listing.provider)
            return
        for item in found:
            self.record_event(item.run_id, "reconciled", item.to_dict())

    def record_event(self, run_id: str | None, kind: str, data: dict[str, Any]) -> None:
        try:
            self.store.add_event(run_id, kind, data)
        except Exception:  # the journal must never break a launch
            log.exception("could not record event %s", kind)


class EpochClock:
    """Epochs already reported, and an ETA that ignores the slow warm-up epochs."""

    def __init__(self, done: Iterable[int] = ()) -> None:
        self.done = set(done)
        self.steady: list[float] = []

    def add(self, epoch: int, ev: dict[str, Any]) -> bool:
        if epoch in self.done:
            return False
        self.done.add(epoch)
        seconds = ev.get("epoch_seconds")
        if isinstance(seconds, int | float) and not ev.get("warmup"):
            self.steady.append(float(seconds))
        return True

    def eta(self, epoch: int, epochs: int) -> float | None:
        if not self.steady or epochs <= epoch:
            return 0.0 if epochs and epochs <= epoch else None
        recent = self.steady[-5:]
        return sum(recent) / len(recent) * (epochs - epoch)


def exit_code_for(status: RunStatus | None) -> int:
    if status in (RunStatus.FINISHED, RunStatus.STOPPED, RunStatus.INTERRUPTED):
        return 0
    if status == RunStatus.BUDGET:
        return EXIT_BUDGET
    return EXIT_RUN_FAILED


# -- lines from the machine ------------------------------------------------------------------

_EPOCH_NUMBERS = ("train_loss", "val_loss", "val_metric", "epoch_seconds", "samples_per_second")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> int:
    """An epoch number from the machine: a non-negative int, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise ValueError(f"not an epoch count: {value!r}")
    return int(value)


def _malformed_notice(run_id: str, tail: Tail, warned: set[str]) -> Iterator[Event]:
    """Warn once per follow that lines were skipped; every skip goes to the log."""
    key = f"malformed:{tail.path}"
    if tail.malformed and key not in warned:
        warned.add(key)
        name = tail.path.rsplit("/", 1)[-1]
        yield Notice(
            run_id,
            f"skipped a malformed line in {name} from the machine ({tail.last_malformed!r}); "
            "the run goes on",
            "warning",
        )
    if tail.malformed:
        log.warning("%s: %d malformed line(s) in %s so far", run_id, tail.malformed, tail.path)
        tail.malformed = 0
