"""Launch, follow, stop, down, resume, download: each a generator of typed events.

The CLI prints the events and the TUI turns them into messages; nothing here knows who
is listening. Failures after something was created are cleaned up here (a half-created
instance is terminated), recorded in the state store, and yielded as a `Failed` event
carrying the one-line message, fix hint and exit code.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import cost, reconcile, recovery
from .errors import (
    EXIT_BUDGET,
    EXIT_RUN_FAILED,
    ConfigError,
    GpuctlError,
    NotFoundError,
    RemoteError,
    RunFailed,
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
from .host import Host
from .local_host import LocalHost
from .models import Instance, InstanceState, LaunchSpec, Market, Run, RunStatus
from .rundir import RunDir
from .settings import Settings
from .settings import load as load_settings
from .state import Store
from .tail import Tail, last_lines

log = logging.getLogger("gpuctl")

Events = Generator[Event, None, Any]

TEARDOWN_POLICIES = ("terminate", "stop", "keep")
STALL_WARMUP_SECONDS = 600.0  # the stall clock's allowance before a trainer's first step
FALLBACKS = ("none", "on-demand")


def new_run_id(preset: str) -> str:
    return f"{preset}-{time.strftime('%y%m%d')}-{secrets.token_hex(2)}"


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
        profile = self.settings.profile(provider or self.settings.default_provider)
        cost.profile_price(profile)  # a bad price_per_hour fails here, not mid-launch
        for name, value in (("budget", budget), ("max-hours", max_hours), ("max-price", max_price)):
            if value is not None and value <= 0:
                raise ConfigError(
                    f"--{name} must be a positive number, got {value:g}",
                    hint="amounts are in USD and hours; leave it out for no limit"
                    if name != "max-hours"
                    else "e.g. --max-hours 4",
                )
        if idle_minutes is not None and idle_minutes < 0:
            raise ConfigError(f"--idle-minutes must be >= 0, got {idle_minutes:g}")
        if stall_minutes is not None and not stall_minutes >= 0:
            raise ConfigError(
                f"--stall-minutes must be >= 0, got {stall_minutes:g}", hint="0 turns it off"
            )
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
        if workdir:
            wd = Path(workdir).expanduser()
            if not wd.is_dir():
                raise ConfigError(
                    f"work directory {workdir} does not exist", hint="pass an existing directory"
                )
            workdir_path = str(wd.resolve())
        if profile.provider == "ssh" and not (host or profile.get("host")):
            raise ConfigError(
                "the ssh provider needs --host user@ip[:port]",
                hint="or set host = ... under [profiles.ssh] in config.toml",
            )
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
            max_hours=max_hours or chosen.max_hours or self.settings.max_hours,
            idle_minutes=idle_minutes if idle_minutes is not None else chosen.idle_minutes,
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

    # -- launch ------------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> Events:
        """Provision (or reuse), reach, sync and start; ends with TrainerStarted or Failed."""
        est = self.estimate(spec)
        refusal = cost.launch_refusal(self.store, self.settings, spec, est.cost if est else None)
        if refusal is not None and not spec.options.get("force"):
            yield self._resolved(spec, est)
            yield Failed(spec.run_id, refusal.message, refusal.hint, refusal.exit_code)
            return None  # refused: no run recorded, nothing created
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
        self._event(spec.run_id, "launch", {"preset": spec.preset, "provider": spec.provider})
        recovery.claim(self.store, spec.run_id, "launch")  # reconcile: is this launch alive?
        yield self._resolved(spec, est)
        if est is not None:
            self._event(spec.run_id, "estimate", est.to_dict())
            yield Notice(spec.run_id, est.text())
        if refusal is not None:
            yield Notice(spec.run_id, f"launching anyway (--force): {refusal.message}", "warning")
        instance: Instance | None = None
        created = False
        try:
            provider = self.provider(spec.provider)
            provider.check()
            if spec.instance_id:
                instance = provider.get_instance(spec.instance_id)
                if instance is None:
                    raise NotFoundError(
                        f"instance {spec.instance_id} not found on {spec.provider}",
                        hint="`gpuctl ls` lists the instances gpuctl can see",
                    )
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
            started = yield from self._start_on(instance, spec, resume=False)
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
        self.store.update_run(spec.run_id, status=RunStatus.FAILED, reason=reason)
        self._event(spec.run_id, "failed", {"error": reason})

    def _fail_launch(
        self, spec: LaunchSpec, instance: Instance | None, created: bool, exc: GpuctlError
    ) -> Events:
        if instance is not None and created:
            try:
                yield from self.teardown(spec.run_id, instance, "terminate")
            except GpuctlError as down_exc:
                yield Notice(
                    spec.run_id,
                    f"could not remove instance {instance.id}: {down_exc.one_line()}; "
                    f"run `gpuctl down {spec.run_id}`",
                    "error",
                )
        self.store.update_run(spec.run_id, status=RunStatus.FAILED, reason=exc.message)
        self._event(spec.run_id, "failed", {"error": exc.message, "hint": exc.hint})
        yield Failed(spec.run_id, exc.message, exc.hint, exc.exit_code)

    def _host(self, run: Run | LaunchSpec, instance: Instance, wait: float = 0.0) -> Host:
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

    def _start_on(self, instance: Instance, spec: LaunchSpec, *, resume: bool) -> Events:
        """Reach the machine, sync code and workdir, write configs, start the agent."""
        provider = self.provider(spec.provider)
        # A machine created a moment ago is still booting: retry SSH (with backoff) for up
        # to the profile's `boot_wait` seconds; on resume it must answer now.
        boot_wait = self.settings.profile(spec.provider).get("boot_wait", 300.0)
        host = self._host(spec, instance, wait=0.0 if resume else float(boot_wait or 0.0))
        yield SshReady(spec.run_id, host.label)
        rd = RunDir(host, spec.run_id)
        self.store.update_run(spec.run_id, status=RunStatus.SYNCING, remote_dir=rd.path)
        python, nproc, notices = self._environment(host, spec)
        yield from notices
        code_dir = yield from rd.upload_code(self.settings.cache_dir)
        if spec.workdir and (not resume or not rd.exists()):  # a relaunch: a fresh disk
            yield from rd.upload_workdir(Path(spec.workdir), spec.excludes, spec.include_secrets)
        train = dict(spec.train)
        train["out_dir"] = rd.path
        if spec.workdir:
            train["workdir"] = rd.work
        self.store.update_run(spec.run_id, status=RunStatus.STARTING)
        shutdown = provider.agent_shutdown(instance)
        agent = self._agent_config(spec, instance, nproc, shutdown)
        yield from self._check_boot_guard(host, spec, instance, resume, shutdown, agent)
        agent, env, notices = recovery.before_start(self, spec, instance, agent)  # spot, secrets
        yield from notices
        answer = rd.start(
            code_dir=code_dir, python=python, train=train, agent=agent, resume=resume, env=env
        )
        self.store.update_run(spec.run_id, status=RunStatus.RUNNING, reason="")
        self._event(spec.run_id, "started", {"host": host.label, "resume": resume, **answer})
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
            self._event(spec.run_id, "boot_guard", {"armed_by": "cloud-init"})
            return
        scale = float(self.settings.profile(spec.provider).get("agent_time_scale", 1.0) or 1.0)
        agent["guard_seconds"] = bootguard.boot_guard_minutes(spec.max_hours) * 60 * scale
        agent["guard_command"] = list(command)
        self._event(spec.run_id, "boot_guard", {"armed_by": "agent"})
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

        scale = float(self.settings.profile(spec.provider).get("agent_time_scale", 1.0) or 1.0)
        budget_seconds = cost.agent_budget_seconds(self.store, self.settings, spec, instance)
        if budget_seconds is not None:
            budget_seconds *= scale
        spot = instance.market == Market.SPOT
        stall = spec.stall_minutes
        return {
            "nproc": nproc,
            "max_seconds": spec.max_hours * 3600 * scale if spec.max_hours else None,
            "budget_seconds": budget_seconds,
            "idle_seconds": spec.idle_minutes * 60 * scale if spec.idle_minutes else None,
            "stall_seconds": stall * 60 * scale if stall else None,
            "stall_warmup_seconds": STALL_WARMUP_SECONDS * scale,  # before the first step
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
            log_tail = Tail(host, rd.p("train.log"), log_offset)
        elif from_start:
            log_tail = Tail(host, rd.p("train.log"))
        else:
            lines, offset = last_lines(host, rd.p("train.log"), tail_lines)
            if lines:
                yield LogLines(run_id, tuple(lines))
            log_tail = Tail(host, rd.p("train.log"), offset)
        events_tail = Tail(host, rd.p("events.jsonl"))
        seen_epochs = EpochClock(() if from_start else range(1, run.epoch + 1))
        next_status = next_gpu = next_cost = 0.0
        final: dict[str, Any] = {}
        link_down_since: float | None = None
        warned: set[str] = set()
        while True:
            try:
                lines = log_tail.poll()
                if lines:
                    yield LogLines(run_id, tuple(lines))
                for ev in events_tail.poll_json():
                    yield from self._trainer_event(run_id, ev, seen_epochs)
                now = time.monotonic()
                if now >= next_gpu:
                    next_gpu = now + self.gpu_seconds
                    samples = self._sample_gpus(host)
                    if samples:
                        yield GpuSampled(run_id, samples)
                if now >= next_cost:
                    yield from self._cost_tick(run_id, warned)
                    due = self._cost_next.get(run_id)  # sooner when a threshold is near
                    next_cost = now + min(self.cost_seconds, max(1.0, due or self.cost_seconds))
                if now >= next_status:
                    next_status = now + self.status_seconds
                    status = rd.status()
                    yield from recovery.status_notices(run_id, status, warned)  # spot notice
                    state = status.get("state")
                    if state in ("exited", "lost") or not status:
                        for line_batch in (log_tail.flush(),):
                            if line_batch:
                                yield LogLines(run_id, tuple(line_batch))
                        for ev in events_tail.poll_json():
                            yield from self._trainer_event(run_id, ev, seen_epochs)
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
                gone = recovery.vanished(self, run)  # the provider says the machine is gone
                if gone is not None:
                    yield Notice(run_id, gone, "warning")
                    return RunStatus.INTERRUPTED
                if time.monotonic() - link_down_since > 600:
                    yield Failed(
                        run_id, f"lost {host.label} for 10 minutes", exc.hint, exc.exit_code
                    )
                    return run.status
                time.sleep(min(10.0, 1.0 + (time.monotonic() - link_down_since) / 5))
                continue
            if not stop_when_done:
                return None
            time.sleep(self.poll_seconds)
        status = self._final_status(run_id, final)
        return status

    def _trainer_event(self, run_id: str, ev: dict[str, Any], seen: EpochClock) -> Iterator[Event]:
        if ev.get("event") != "epoch_end":
            return
        epoch = int(ev.get("epoch", 0))
        if not seen.add(epoch, ev):
            return
        epochs = int(ev.get("epochs", 0))
        eta = seen.eta(epoch, epochs)
        self.store.update_run(
            run_id, epoch=epoch, epochs=epochs, metric=ev.get("val_metric"), eta_seconds=eta
        )
        self._event(
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
            self._event(run_id, "budget", {"level": alert.level, **alert.state.to_dict()})
            yield Notice(run_id, alert.message, "error" if alert.level == "stop" else "warning")
        over = cost.exceeded(states)
        if over is not None and "stop" not in warned and run.status.active:
            warned.add("stop")
            self.store.update_run(run_id, reason="budget")
            try:
                _instance, host = self.locate(run)
                RunDir(host, run_id, run.remote_dir).stop(reason=f"budget: {over.label}")
            except GpuctlError as exc:
                yield Notice(run_id, f"budget stop failed: {exc.one_line()}", "error")

    def _final_status(self, run_id: str, agent: dict[str, Any]) -> RunStatus:
        trainer = agent.get("trainer") or {}
        phase = trainer.get("phase")
        reason = str(agent.get("reason") or trainer.get("reason") or "")
        run = self.store.get_run(run_id)
        if run.reason == "budget" or reason.startswith("budget"):
            status = RunStatus.BUDGET
        elif reason.startswith("stalled"):  # the agent's stall guard stopped it
            status = RunStatus.STALLED
        elif phase == "finished":
            status = RunStatus.FINISHED
        elif phase == "interrupted":
            status = RunStatus.STOPPED if "user" in reason else RunStatus.INTERRUPTED
        elif agent.get("state") == "lost":
            status = RunStatus.LOST
        else:
            status = RunStatus.FAILED
            reason = str(trainer.get("reason") or reason or f"exit code {agent.get('exit_code')}")
        self.store.update_run(
            run_id,
            status=status,
            reason=reason,
            epoch=int(trainer.get("epoch") or run.epoch or 0),
            metric=trainer.get("best_metric", run.metric),
            eta_seconds=None,
        )
        self._event(run_id, "ended", {"status": status.value, "reason": reason})
        return status

    # -- run (attached) -----------------------------------------------------------------------

    def run(self, spec: LaunchSpec) -> Events:
        """Launch, follow to the end, download results, tear down by policy."""
        started = yield from self.launch(spec)
        if not started:
            return RunStatus.FAILED
        status = yield from self.follow(spec.run_id, from_start=True)
        status = yield from recovery.supervise(self, spec.run_id, status)  # managed runs
        return (yield from self.finish(spec.run_id, status))

    def finish(self, run_id: str, status: RunStatus) -> Events:
        run = self.store.get_run(run_id)
        spec = run.launch_spec
        results = None
        try:
            results = yield from self.download(run_id)
        except GpuctlError as exc:
            yield Notice(run_id, f"download failed: {exc.one_line()}", "error")
        policy = spec.teardown
        if status == RunStatus.BUDGET:
            policy = self.settings.budget.on_exceed
        if spec.instance_id:
            policy = "keep"  # never tear down a machine gpuctl did not create for this run
        instance = self._instance_of(run)
        if instance is not None and policy != "keep":
            try:
                yield from self.teardown(run_id, instance, policy)
            except GpuctlError as exc:
                yield Notice(run_id, f"teardown failed: {exc.one_line()}", "error")
        spent, _ = cost.spent(self.store, self.settings, run_id=run_id)
        run = self.store.get_run(run_id)
        if status in (RunStatus.FAILED, RunStatus.LOST, RunStatus.STALLED):
            yield Failed(
                run_id,
                f"run {run_id} {status.value}: {run.reason}",
                "see the log in " + str(results) if results else "see `gpuctl logs " + run_id + "`",
                EXIT_RUN_FAILED,
            )
        else:
            yield Finished(
                run_id,
                status.value,
                str(results) if results else None,
                run.metric,
                run.epoch,
                round(spent, 4),
            )
        return status

    # -- locate, stop, down, resume, download ---------------------------------------------------

    def _instance_of(self, run: Run) -> Instance | None:
        if not run.instance_id:
            return None
        return self.store.get_instance(run.provider, run.instance_id)

    def locate(self, run: Run) -> tuple[Instance, Host]:
        instance = self._instance_of(run)
        if instance is None or instance.state == InstanceState.TERMINATED:
            fresh = None
            if run.instance_id:
                fresh = self.provider(run.provider).get_instance(run.instance_id)
            if fresh is None:
                raise NotFoundError(
                    f"run {run.id} has no live machine (instance "
                    f"{run.instance_id or 'never created'})",
                    hint=f"`gpuctl download {run.id}` gets saved results; "
                    f"`gpuctl resume {run.id}` relaunches it",
                )
            instance = fresh
            self.store.put_instance(instance)
        return instance, self._host(run, instance)

    def stop(self, run_id: str, *, reason: str = "stopped by user") -> Events:
        run = self.store.get_run(run_id)
        if not run.remote_dir:
            raise NotFoundError(f"run {run.id} never started", hint="nothing to stop")
        _instance, host = self.locate(run)
        self.store.update_run(run.id, status=RunStatus.STOPPING)
        yield Notice(run.id, f"stopping {run.id}: the trainer finishes its step and checkpoints")
        answer = RunDir(host, run.id, run.remote_dir).stop(reason=reason)
        status = self._final_status(run.id, answer.get("status") or {})
        if status == RunStatus.INTERRUPTED:
            status = RunStatus.STOPPED
            self.store.update_run(run.id, status=status)
        yield Finished(run.id, status.value, None, self.store.get_run(run.id).metric)
        return status

    def teardown(self, run_id: str | None, instance: Instance, policy: str) -> Events:
        """Stop or terminate an instance, close its ledger, say so (callers confirm first)."""
        provider = self.provider(instance.provider)
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
                cost.stop_instance(self.store, self.settings, instance)
        else:
            provider.terminate(instance, wait=True)
            # An ssh box is the user's own machine: gpuctl only lets go of it.
            action = "released" if provider.kind == "ssh" else "terminated"
            cost.close_instance(self.store, instance)
            self.store.mark_instance_gone(instance.provider, instance.id)
        self._event(run_id, "teardown", {"instance": instance.id, "action": action})
        yield TornDown(run_id or "", instance.id, action)

    def down(self, run_id: str) -> Events:
        """Terminate the run's instance (stopping the trainer first if it still runs)."""
        run = self.store.get_run(run_id)
        instance = self._instance_of(run)
        if instance is None or instance.state == InstanceState.TERMINATED:
            yield Notice(run.id, f"run {run.id} has no live instance; nothing to remove")
            return None
        if run.status.active:
            try:
                _, host = self.locate(run)
                RunDir(host, run.id, run.remote_dir).stop(reason="instance removed", timeout=30)
                self._final_status(run.id, RunDir(host, run.id, run.remote_dir).status())
            except GpuctlError:
                pass
        yield from self.teardown(run.id, instance, "terminate")
        run = self.store.get_run(run.id)
        if run.status.active:
            self.store.update_run(run.id, status=RunStatus.STOPPED, reason="instance removed")
        return None

    def download(self, run_id: str, to: Path | None = None) -> Events:
        run = self.store.get_run(run_id)
        if not run.remote_dir:
            raise NotFoundError(f"run {run.id} never started", hint="nothing to download")
        _, host = self.locate(run)
        target = Path(to) if to else self.settings.results_dir / run.id
        rd = RunDir(host, run.id, run.remote_dir)
        stats = yield from rd.download(target)
        self.store.update_run(run.id, results_dir=str(target))
        files = sum(1 for p in target.iterdir() if p.is_file())
        yield Downloaded(run.id, str(target), files, stats.bytes)
        return target

    def resume(self, run_id: str) -> Events:
        """Continue a stopped/interrupted/failed run from its last checkpoint, attached."""
        run = self.store.get_run(run_id)
        if run.status.active:
            raise ConfigError(
                f"run {run.id} is {run.status.value}", hint="it is still going; `gpuctl logs -f`"
            )
        if run.status == RunStatus.FINISHED:
            raise ConfigError(f"run {run.id} already finished", hint="launch a new run instead")
        recovery.claim(self.store, run.id, "resume")
        try:
            instance, host = self.locate(run)
        except NotFoundError:  # the machine is gone: a new one, with the checkpoint we hold
            return (yield from recovery.resume_elsewhere(self, run.id))
        rd = RunDir(host, run.id, run.remote_dir)
        if host.file_size(rd.p("last.pt")) is None and not (
            yield from recovery.restore(self, run, rd)
        ):
            raise RunFailed(
                f"run {run.id} has no checkpoint to resume from (last.pt missing)",
                hint=f"start a new run: gpuctl run {run.preset}",
            )
        spec = run.launch_spec
        self.store.update_run(run.id, status=RunStatus.STARTING, attempt=run.attempt + 1)
        cost.open_compute(self.store, instance, run.id)
        try:
            yield from self._start_on(instance, spec, resume=True)
        except GpuctlError as exc:
            self.store.update_run(run.id, status=RunStatus.FAILED, reason=exc.message)
            yield Failed(run.id, exc.message, exc.hint, exc.exit_code)
            return RunStatus.FAILED
        status = yield from self.follow(run.id, from_start=False, tail_lines=0)
        status = yield from recovery.supervise(self, run.id, status)
        return (yield from self.finish(run.id, status))

    # -- listing ------------------------------------------------------------------------------

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
                self._reconcile(listing)
                self.store.put_instances(
                    listing.provider, listing.instances, complete=listing.complete
                )
            message = "; ".join(f"{w}: {m}" if w != "*" else m for w, m in listing.errors)
            self.store.set_provider_status(listing.provider, not listing.errors, message)
        self.findings = reconcile.after_refresh(self, listings)  # vanished, orphans, died
        return listings

    def _reconcile(self, listing: Any) -> None:
        """Ledger vs listing: meter what runs unbilled, close what is gone (flagged)."""
        try:
            found = cost.reconcile(
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
            self._event(item.run_id, "reconciled", item.to_dict())

    def _event(self, run_id: str | None, kind: str, data: dict[str, Any]) -> None:
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
