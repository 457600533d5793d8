"""Managed runs: bring an interrupted run back without a human.

Spot capacity is cheap because it can be taken away with two minutes' notice. The agent
on the machine sees the notice and checkpoints at once (gpuctl/agent/cloud.py); this
module is gpuctl's half, called from small hooks in lifecycle.py:

- before_start: agent settings for the notice (metadata URL, poll interval) and the
  secrets it may need, passed only in its environment (presigned checkpoint PUT URL,
  the DigitalOcean token for the opt-in self-destroy).
- supervise: after `follow` returns, a managed run that was interrupted (notice,
  machine gone, agent lost) is recovered: the checkpoint is secured (pulled over the
  link, else from the bucket, else the newest local copy), the machine's fate awaited,
  a new one launched when it is gone (same offer, then other zones/regions, then
  on-demand per the run's fallback, never past its budget), the checkpoint put back,
  the trainer restarted with --resume, and following goes on. Every step is an event
  and a row in the run's history; every instance's cost stays on the run.
- vanished: while the link is down, ask the provider whether the machine still exists.
- claim / owner_alive: which process drives a run, so reconcile can tell a launch that
  is still going from one whose gpuctl was killed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import zipfile
from collections.abc import Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import billed_price, cost, deadline
from .errors import (
    EXIT_BUDGET,
    EXIT_PROVIDER,
    EXIT_USAGE,
    BudgetExceeded,
    ConfigError,
    GpuctlError,
)
from .events import Event, Failed, InstanceUp, Notice, Recovered, Recovering
from .files import FileEntry
from .format import rate
from .models import Instance, InstanceState, LaunchSpec, Market, Run, RunStatus
from .providers.base import Capability
from .rundir import RunDir
from .runs.status import Reason, transition
from .runstate import agent_gone_text
from .trainer.protocol import (
    AGENT_LOG_FILE,
    AGENT_STATUS_FILE,
    EVENTS_FILE,
    HISTORY_FILE,
    LAST_CHECKPOINT_FILE,
    STATUS_FILE,
    TRAIN_LOG_FILE,
    Phase,
    ShutdownAction,
    StopReason,
)

if TYPE_CHECKING:
    from .ports import EngineOps
    from .state import Store

log = logging.getLogger("gpuctl.recovery")

Events = Generator[Event, None, Any]

GONE_PREFIX = Reason.GONE.value  # the provider says the machine no longer exists
DEFAULT_METADATA_URL = "http://169.254.169.254"
CHECKPOINT_URL_ENV = "GPUCTL_CHECKPOINT_PUT_URL"  # agent/cloud.py reads it
# What recovery carries from the old machine to the new one (resume needs last.pt; the
# rest keeps the log, the event stream and the history continuous across machines).
CARRY_FILES = (LAST_CHECKPOINT_FILE, HISTORY_FILE, TRAIN_LOG_FILE, EVENTS_FILE)
PULL_FILES = (*CARRY_FILES, STATUS_FILE, AGENT_STATUS_FILE, AGENT_LOG_FILE)
MAX_RECOVERIES = 10
VANISH_CHECK_SECONDS = 15.0

_last_vanish_check: dict[str, float] = {}


# -- who drives a run -------------------------------------------------------------------------


def _me() -> dict[str, Any]:
    import psutil

    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "created": psutil.Process().create_time(),
    }


def claim(store: Store, run_id: str, what: str) -> None:
    """Record that this process now drives the run (launching, watching, resuming)."""
    try:
        store.add_event(run_id, "owner", {**_me(), "what": what})
    except Exception:  # the journal must never break a launch
        log.exception("could not record the owner of %s", run_id)


SUPERVISE = "supervise"  # the claim of `gpuctl supervise` (gpuctl/supervisor.py)


def supervised(store: Store, run_id: str) -> bool:
    """The run's owner is a live supervisor: other gpuctl processes leave recovery to it."""
    claims = store.events(run_id, kinds=["owner"])
    return bool(claims) and claims[-1].get("what") == SUPERVISE and bool(owner_alive(store, run_id))


# A run that may be resumed: it ended, but not by finishing.
RESUMABLE = frozenset(
    {RunStatus.STOPPED, RunStatus.INTERRUPTED, RunStatus.FAILED, RunStatus.LOST, RunStatus.BUDGET}
)


def take_over(
    store: Store, run_id: str, expected: Iterable[RunStatus], to: RunStatus, what: str
) -> bool:
    """Move the run from one of `expected` to `to` and claim it, in one transaction.

    Exactly one of several processes racing for a run (two `gpuctl resume`, the TUI and
    the CLI) wins; the others get False and must leave the run alone.
    """
    return store.transition_run(run_id, expected, to, event=("owner", {**_me(), "what": what}))


def busy_error(store: Store, run_id: str, doing: str = "resumed") -> ConfigError:
    """Why this process may not drive the run: another gpuctl does, or it still runs."""
    run = store.get_run(run_id)
    claims = store.events(run.id, kinds=["owner"])
    last = claims[-1] if claims else {}
    if last.get("what") == SUPERVISE and owner_alive(store, run.id):
        return ConfigError(
            f"run {run.id} is driven by the supervisor (pid {last.get('pid')}), which "
            "recovers it when the cloud interrupts it",
            hint=f"`gpuctl logs {run.id} -f` follows it; `gpuctl supervise --status`",
        )
    if last.get("what") in ("resume", "watch") and owner_alive(store, run.id):
        return ConfigError(
            f"run {run.id} is being {doing} by another gpuctl (pid {last.get('pid')})",
            hint=f"`gpuctl logs {run.id} -f` follows it",
        )
    if run.status.active:
        return ConfigError(
            f"run {run.id} is {run.status.value}", hint="it is still going; `gpuctl logs -f`"
        )
    return ConfigError(
        f"run {run.id} is {run.status.value} and cannot be {doing}",
        hint="launch a new run instead",
    )


def owner_alive(store: Store, run_id: str) -> bool | None:
    """True/False when the last claiming process is (not) alive; None when unknowable
    (no claim recorded, or it ran on another machine)."""
    import psutil

    claims = store.events(run_id, kinds=["owner"])
    if not claims:
        return None
    last = claims[-1]
    if last.get("host") != socket.gethostname():
        return None
    if last.get("pid") == os.getpid():
        return True
    try:
        proc = psutil.Process(int(last["pid"]))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(proc.create_time() - float(last.get("created") or 0)) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError, TypeError):
        return False


# -- the agent's settings and secrets -------------------------------------------------------------


def metadata_url(engine: EngineOps, spec: LaunchSpec, instance: Instance) -> str | None:
    """Where the agent reads the spot notice: the profile's (emulators), else IMDS on AWS spot."""
    profile = engine.settings.profile(spec.provider)
    url = profile.get("metadata_url")
    if url:
        return str(url)
    provider = engine.provider(spec.provider)
    if Capability.SPOT_NOTICE in provider.capabilities and instance.market == Market.SPOT:
        return DEFAULT_METADATA_URL
    return None


def before_start(
    engine: EngineOps, spec: LaunchSpec, instance: Instance, agent: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str], list[Event]]:
    """(agent.json, the agent's environment, notices): nothing secret goes in agent.json."""
    cfg = dict(agent)
    env: dict[str, str] = {}
    notices: list[Event] = []
    profile = engine.settings.profile(spec.provider)
    url = metadata_url(engine, spec, instance)
    if url:
        cfg["metadata_url"] = url
        cfg["spot_poll_seconds"] = float(profile.value("spot_poll_seconds"))
    cfg, destroy_env, destroy_notices = agent_destroy_token(engine, spec, instance, cfg)
    env.update(destroy_env)
    notices += destroy_notices
    bucket = spec.options.get("checkpoint_bucket")
    if bucket:
        try:
            env[CHECKPOINT_URL_ENV] = presign_put(engine, spec, instance, str(bucket))
            cfg["checkpoint_bucket"] = str(bucket)
        except GpuctlError as exc:
            notices.append(
                Notice(spec.run_id, f"checkpoint bucket unusable: {exc.one_line()}", "warning")
            )
    return cfg, env, notices


def agent_destroy_token(
    engine: EngineOps, spec: LaunchSpec, instance: Instance, cfg: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str], list[Event]]:
    """The droplet-scoped token for the agent's self-destroy, and what to say up front.

    A provider that bills a powered-off machine (DigitalOcean, AMD) needs a destroy to end
    the bill. Without a delete-capable token the agent can only power off: the launch says
    so with the price. The full-access token never goes to the machine.
    """
    provider = engine.provider(spec.provider)
    if not provider.billing.billed_when_stopped:
        return cfg, {}, []
    destroys = Capability.SELF_DESTROY in provider.capabilities
    env: dict[str, str] = {}
    why = ""
    for key in ("shutdown", "budget_shutdown"):
        shutdown = cfg.get(key) or {}
        if shutdown.get("action") != ShutdownAction.DESTROY:
            continue
        token_env = str(shutdown.get("token_env") or "")
        token = os.environ.get(token_env, "").strip() if token_env else ""
        full = os.environ.get(provider.token_env, "").strip() if destroys else ""
        if token and token != full:
            env[token_env] = token
            continue
        why = (
            f"{token_env} is not set here"
            if not token
            else f"{token_env} holds the full-access token, which never goes to a machine"
        )
        cfg[key] = {**shutdown, "action": ShutdownAction.POWEROFF}
    price = rate(instance.price_per_hour)
    keys = ["shutdown"] + (["budget_shutdown"] if cfg.get("budget_seconds") is not None else [])
    off = [
        cfg.get(k) or {}
        for k in keys
        if (cfg.get(k) or {}).get("action") == ShutdownAction.POWEROFF
    ]
    if not any(s.get("policy", "terminate") == "terminate" for s in off):
        if off:  # --teardown stop: the user's choice, said with its price
            message = (
                f"--teardown stop: a limit powers {instance.id} off and {spec.provider} still "
                f"bills it off ({price}) until `gpuctl down {spec.run_id}`"
            )
            return cfg, env, [Notice(spec.run_id, message, "warning")]
        return cfg, env, []
    agent_env = provider.agent_token_env if destroys else "a droplet-scoped token variable"
    message = (
        f"a limit on the machine can only power {instance.id} off, and {spec.provider} still "
        f"bills it off ({price}) until gpuctl next lists it and destroys it"
        + (f" ({why})" if why else "")
        + f"; export {agent_env}=<a token scoped to droplet:delete and droplet:read> "
        "to let the machine destroy itself"
    )
    return cfg, env, [Notice(spec.run_id, message, "warning")]


def _s3(engine: EngineOps, spec: LaunchSpec, region: str | None) -> Any:
    provider = engine.provider(spec.provider)
    if Capability.CHECKPOINT_STORAGE not in provider.capabilities:
        raise GpuctlError(
            f"--checkpoint-bucket needs S3; provider {spec.provider} has none",
            hint="use it with an AWS profile, or leave it out (gpuctl pulls the checkpoint)",
        )
    return provider.s3(region)


def bucket_key(run_id: str) -> str:
    return f"gpuctl/{run_id}/{LAST_CHECKPOINT_FILE}"


def presign_put(engine: EngineOps, spec: LaunchSpec, instance: Instance, bucket: str) -> str:
    """A PUT URL for the run's checkpoint, valid for the run's max hours (7 days at most)."""
    hours = float(spec.max_hours or 24.0)
    expires = int(min(7 * 24 * 3600, hours * 3600 + 3600))
    s3 = _s3(engine, spec, instance.region or None)
    try:
        where = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
        if where != s3.meta.region_name:  # a SigV4 URL is only good in the bucket's region
            s3 = _s3(engine, spec, where)
        return str(
            s3.generate_presigned_url(
                "put_object",
                Params={"Bucket": bucket, "Key": bucket_key(spec.run_id)},
                ExpiresIn=expires,
            )
        )
    except Exception as exc:
        raise GpuctlError(f"could not sign an upload URL for s3://{bucket}: {exc}") from None


def fetch_from_bucket(engine: EngineOps, run: Run, target: Path) -> Path | None:
    """Download the bucket's checkpoint when it is newer than target (or target is missing)."""
    spec = run.launch_spec
    bucket = spec.options.get("checkpoint_bucket")
    if not bucket:
        return None
    instance = engine.instance_of(run)
    try:
        s3 = _s3(engine, spec, instance.region if instance else spec.region)
        head = s3.head_object(Bucket=bucket, Key=bucket_key(run.id))
        stamp = head["LastModified"].timestamp()  # upload time: after the file was written
        if valid_checkpoint(target) and (
            _md5(target) == str(head.get("ETag", "")).strip('"') or target.stat().st_mtime >= stamp
        ):
            return None  # what we hold is the same checkpoint, or a newer one
        part = target.with_name(target.name + ".bucket.part")
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, bucket_key(run.id), str(part))
        if not valid_checkpoint(part):
            part.unlink(missing_ok=True)
            return None
        os.utime(part, (stamp, stamp))
        os.replace(part, target)
        return target
    except Exception as exc:  # no object yet, no credentials: the other sources remain
        log.info("no checkpoint from s3://%s for %s: %s", bucket, run.id, exc)
        return None


def _md5(path: Path) -> str:
    import hashlib

    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# -- checkpoints gpuctl holds ------------------------------------------------------------------


def valid_checkpoint(path: Path) -> bool:
    """A complete torch checkpoint (a zip archive) without loading torch."""
    try:
        return path.stat().st_size > 0 and zipfile.is_zipfile(path)
    except OSError:
        return False


def local_dir(engine: EngineOps, run: Run) -> Path:
    return Path(run.results_dir) if run.results_dir else engine.settings.results_dir / run.id


def local_checkpoint(engine: EngineOps, run: Run) -> Path | None:
    path = local_dir(engine, run) / LAST_CHECKPOINT_FILE
    return path if valid_checkpoint(path) else None


def pull_checkpoint(engine: EngineOps, run: Run) -> Events:
    """Copy last.pt (and the log and history) from the machine while it still exists.

    Bounded: a spot notice gives the machine about two minutes, and a pull over a link
    that stalls as it shuts down must not hold up the recovery (nor block for ever).
    What did not arrive in time is reported, and recovery goes on with what gpuctl holds.
    """
    target = local_dir(engine, run)
    seconds = float(engine.settings.profile(run.provider).value("checkpoint_pull_seconds"))
    hosts: list[Any] = []

    def pull() -> Events:
        _instance, host = engine.locate(run)
        hosts.append(host)
        rd = RunDir(host, run.id, run.remote_dir)
        if host.file_size(rd.p(LAST_CHECKPOINT_FILE)) is None:
            return False
        yield from rd.download(target, PULL_FILES)
        return True

    try:
        outcome = yield from deadline.within(pull(), seconds)
    except GpuctlError as exc:
        yield Notice(run.id, f"could not pull the checkpoint: {exc.one_line()}", "warning")
        return None
    finally:
        for host in hosts:
            host.close()  # also ends a read that is still blocked on the worker thread
    if not outcome.finished:
        engine.record_event(run.id, "checkpoint_pull", {"timed_out_after": seconds})
        held = local_checkpoint(engine, run)
        yield Notice(
            run.id,
            f"the checkpoint did not reach gpuctl within {seconds:.0f}s; recovery goes on "
            + (f"from the older one at {held}" if held else "without one (from the start)"),
            "warning",
        )
        return None
    if not outcome.value:
        return None
    engine.store.update_run(run.id, results_dir=str(target))
    return local_checkpoint(engine, run)


def restore(engine: EngineOps, run: Run, rd: RunDir) -> Events:
    """Put the newest checkpoint gpuctl holds into rd (a new machine); True if there was one."""
    bucket = run.launch_spec.options.get("checkpoint_bucket")
    if fetch_from_bucket(engine, run, local_dir(engine, run) / LAST_CHECKPOINT_FILE) is not None:
        yield Notice(run.id, f"newest checkpoint fetched from s3://{bucket}")
    ckpt = local_checkpoint(engine, run)
    if ckpt is None:
        return False
    root = ckpt.parent
    files = []
    for name in CARRY_FILES:
        try:
            st = (root / name).stat()
        except FileNotFoundError:
            continue
        files.append(FileEntry(name, st.st_size, st.st_mtime, 0o644))
    stats = yield from rd.host.put_tree(run.id, root, files, rd.path)
    yield Recovering(
        run.id,
        run.attempt,
        "restoring",
        run.reason,
        f"checkpoint and {len(files) - 1} run file(s) uploaded ({stats.bytes / 1e6:.1f} MB)",
    )
    return True


# -- supervising a managed run --------------------------------------------------------------------


def needs_recovery(run: Run, status: RunStatus | None) -> bool:
    """Interrupted by the cloud (notice, machine gone, agent lost), not by a person or a limit."""
    if status not in (RunStatus.INTERRUPTED, RunStatus.LOST):
        return False
    if status == RunStatus.LOST:
        return True
    # The machine is shutting down under the agent (a signal) counts as the cloud's doing.
    return Reason.of(run.reason) in (Reason.SPOT, Reason.GONE, Reason.SIGNAL)


def supervise(engine: EngineOps, run_id: str, status: RunStatus | None) -> Events:
    """Recover a managed run until it ends on its own terms; returns the final status."""
    while True:
        run = engine.store.get_run(run_id)
        if not run.launch_spec.managed:
            return status
        if status == RunStatus.FAILED and vanished(engine, run, force=True):
            status = RunStatus.INTERRUPTED  # it failed because the machine went away
            run = engine.store.get_run(run_id)
        if not needs_recovery(run, status):
            return status
        if run.attempt > MAX_RECOVERIES:
            yield Notice(
                run_id, f"gave up after {MAX_RECOVERIES} recoveries; `gpuctl resume` it", "error"
            )
            return status
        offset = yield from recover(engine, run_id)  # claims the run, or says who has it
        if offset is None:
            return engine.store.get_run(run_id).status
        status = yield from engine.follow(run_id, from_start=False, tail_lines=0, log_offset=offset)


def recover(engine: EngineOps, run_id: str, *, manual: bool = False) -> Events:
    """Secure the checkpoint, await the machine's fate, relaunch if needed, resume.

    Returns the byte offset the resumed trainer's log continues at (None: not recovered).
    """
    store = engine.store
    run = store.get_run(run_id)
    began = time.monotonic()
    attempt = run.attempt + 1
    reason = run.reason or run.status.value
    if run.status == RunStatus.RECOVERING or not take_over(
        store, run_id, {run.status}, RunStatus.RECOVERING, "resume" if manual else "watch"
    ):  # another gpuctl recovers it (the TUI and the CLI following the same run)
        error = busy_error(store, run_id, "recovered")
        yield Failed(run_id, error.message, error.hint, error.exit_code)
        return None
    engine.record_event(
        run_id,
        "recovering",
        # the machine it replaces: a recovery cut short tells a relaunch from the original
        {"attempt": attempt, "reason": reason, "manual": manual, "instance": run.instance_id},
    )
    yield Recovering(run_id, attempt, "notice", reason, _describe(reason))
    old = engine.instance_of(run)
    pulled = None
    alive = old is not None and old.state != InstanceState.TERMINATED
    if alive and Reason.of(reason) is not Reason.GONE:
        pulled = yield from pull_checkpoint(engine, run)  # while the machine still answers
    target = local_dir(engine, run) / LAST_CHECKPOINT_FILE
    if pulled is None and fetch_from_bucket(engine, run, target):
        yield Notice(run_id, "checkpoint fetched from the bucket (the agent pushed it)")
    ckpt = pulled or local_checkpoint(engine, run)
    if ckpt is None and manual:  # by hand, with the machine gone: nothing to resume from
        from .results import what_is_saved

        transition(store, run_id, run.status)
        yield Failed(
            run_id,
            f"run {run_id} has no checkpoint to resume from: its machine is gone and no "
            f"last.pt reached gpuctl ({what_is_saved(run)})",
            f"`gpuctl run {run.preset}` starts it over",
            EXIT_USAGE,
        )
        return None
    detail = f"checkpoint saved at {ckpt}" if ckpt else "no checkpoint reached gpuctl"
    yield Recovering(run_id, attempt, "checkpoint", reason, detail)
    fate = yield from await_fate(engine, run, old, attempt)
    same = fate == "alive"
    if fate == "unreachable":
        message = f"{old.id if old else 'the machine'} runs but does not answer"
        transition(store, run_id, RunStatus.INTERRUPTED, reason=message)
        yield Failed(
            run_id,
            message,
            f"check it in {run.provider}'s console, then `gpuctl resume {run_id}`",
            EXIT_PROVIDER,
        )
        return None
    if same:
        instance = old
    else:
        if old is not None:
            forget(engine, old)
        instance = yield from relaunch(engine, store.get_run(run_id), old, attempt)
        if instance is None:
            return None
    assert instance is not None
    return (yield from resume_on(engine, run, instance, same, attempt, began))


def resume_on(
    engine: EngineOps, run: Run, instance: Instance, same: bool, attempt: int, began: float
) -> Events:
    """The last steps of a recovery: checkpoint back, trainer restarted with --resume, the
    "recovered" record; a failure terminates a machine launched for nothing. Returns the
    log offset the resumed trainer continues at (None: not recovered)."""
    store = engine.store
    run_id = run.id
    store.update_run(run_id, attempt=attempt)
    try:
        offset, resumed = yield from start_resumed(engine, store.get_run(run_id), instance, same)
    except Exception as exc:  # keep the user's money safe first, then say why
        error = exc if isinstance(exc, GpuctlError) else GpuctlError(f"internal error: {exc!r}")
        if not isinstance(exc, GpuctlError):
            log.exception("recovery of %s failed", run_id)
        if not same:  # a machine launched for nothing bills for nothing
            yield from terminate_machine(engine, run, instance)
            forget(engine, instance)
        message = f"recovery failed: {error.message}"
        transition(store, run_id, RunStatus.INTERRUPTED, reason=message)
        engine.record_event(run_id, "recovery_failed", {"attempt": attempt, "error": error.message})
        yield Failed(run_id, message, error.hint or f"`gpuctl resume {run_id}`", error.exit_code)
        return None
    seconds = round(time.monotonic() - began, 2)
    epoch, step = _position(engine, store.get_run(run_id)) if resumed else (1, 0)
    engine.record_event(
        run_id,
        "recovered",
        {
            "attempt": attempt,
            "instance": instance.id,
            "same_machine": same,
            "resumed": resumed,
            "epoch": epoch,
            "step": step,
            "seconds": seconds,
        },
    )
    yield Recovered(run_id, attempt, instance.id, epoch, step, seconds, same)
    return offset


def _describe(reason: str) -> str:
    if Reason.of(reason) is Reason.SPOT:
        return "spot interruption notice: the trainer checkpointed"
    return reason


def await_fate(engine: EngineOps, run: Run, old: Instance | None, attempt: int) -> Events:
    """'alive' (resume on it), 'gone' (relaunch) or 'unreachable' (not ours to replace).

    After a notice the cloud takes the machine within about two minutes: poll the
    provider until it does. One still there and reachable after that grace period was
    not taken after all (a stopped one is started first). One that stays silent for
    `unreachable_seconds` more is terminated when gpuctl created it (it bills and trains
    nothing), and reported otherwise.
    """
    if old is None:
        return "gone"
    profile = engine.settings.profile(run.provider)
    provider = engine.provider(run.provider)
    grace = float(profile.value("spot_grace_seconds"))
    poll = float(profile.value("recovery_poll_seconds"))
    silent = float(profile.value("unreachable_seconds"))
    deadline = time.monotonic() + (grace if Reason.of(run.reason) is Reason.SPOT else 0.0)
    said = started = False
    while True:
        try:
            current = provider.get_instance(old.id)
        except GpuctlError as exc:
            yield Notice(run.id, f"cannot ask about {old.id}: {exc.one_line()}", "warning")
            current = old
        if current is None or current.state == InstanceState.TERMINATED:
            return "gone"
        now = time.monotonic()
        usable = current.state in (InstanceState.RUNNING, InstanceState.STOPPED)
        if now >= deadline and usable:
            if _reachable(engine, run, current):
                return "alive"
            if current.state == InstanceState.STOPPED and not started:
                started = True  # stopped under the run: its disk still has the checkpoint
                yield Notice(run.id, f"{old.id} is stopped: starting it again")
                try:
                    provider.start(current)
                except GpuctlError as exc:
                    yield Notice(run.id, f"cannot start {old.id}: {exc.one_line()}", "warning")
                    deadline = -silent  # replace it now
            if now >= deadline + silent:
                if not engine.created_for(run.launch_spec, old):
                    return "unreachable"  # not gpuctl's to terminate
                yield Notice(run.id, f"{old.id} does not answer: terminating it")
                yield from terminate_machine(engine, run, current)
                return "gone"
        if not said:
            said = True
            yield Recovering(
                run.id, attempt, "waiting", run.reason, f"waiting for {old.id} to be reclaimed"
            )
        time.sleep(poll)


def terminate_machine(engine: EngineOps, run: Run, instance: Instance) -> Iterator[Event]:
    try:
        engine.provider(run.provider).terminate(instance, wait=True)
    except GpuctlError as exc:
        yield Notice(run.id, f"could not terminate {instance.id}: {exc.one_line()}", "error")


def _reachable(engine: EngineOps, run: Run, instance: Instance) -> bool:
    try:
        host = engine.host_for(run, instance)
        try:
            return host.exec("true", timeout=30).ok
        finally:
            host.close()
    except GpuctlError:
        return False


def forget(engine: EngineOps, old: Instance) -> None:
    """The old machine is gone: its billing ends now (it stays on the run's bill)."""
    cost.close_instance(engine.store, old, time.time())
    engine.store.mark_instance_gone(old.provider, old.id)


def relaunch_spec(run: Run, old: Instance | None) -> LaunchSpec:
    """Same offer first (type, region), then the run's other regions; its fallback applies."""
    spec = run.launch_spec
    if old is None:
        return spec.evolve(instance_id=None)
    regions = [r for r in (old.region, spec.region, *spec.regions) if r]
    ordered = list(dict.fromkeys(regions))
    return spec.evolve(
        instance_type=old.instance_type or spec.instance_type,
        region=ordered[0] if ordered else None,
        regions=tuple(ordered[1:]),
        instance_id=None,
    )


def relaunch(engine: EngineOps, run: Run, old: Instance | None, attempt: int) -> Events:
    """A new machine for the run, within its budget; None (run marked) when there is none."""
    store = engine.store
    spec = run.launch_spec
    if spec.instance_id:
        transition(
            store,
            run.id,
            RunStatus.INTERRUPTED,
            reason=f"{GONE_PREFIX}: {spec.instance_id} (not gpuctl's to replace)",
        )
        yield Failed(
            run.id,
            f"instance {spec.instance_id} is gone and gpuctl did not create it",
            f"start it again, then `gpuctl resume {run.id}`",
            EXIT_PROVIDER,
        )
        return None
    left = cost.remaining_for(store, engine.settings, spec.provider, run.budget, run_id=run.id)
    if left is not None and left[0] <= 0:
        message = f"not relaunching {run.id}: {left[1]} is used up"
        transition(store, run.id, RunStatus.BUDGET, reason=message)
        engine.record_event(run.id, "recovery_refused", {"attempt": attempt, "reason": message})
        yield Failed(
            run.id, message, "raise the budget, then `gpuctl resume " + run.id + "`", EXIT_BUDGET
        )
        return None
    new_spec = relaunch_spec(run, old)
    where = f"{new_spec.instance_type or 'the same type'} in {new_spec.region or 'the same place'}"
    yield Recovering(run.id, attempt, "relaunching", run.reason, where)
    try:
        instance = yield from engine.create_instance(new_spec)
    except GpuctlError as exc:
        transition(store, run.id, RunStatus.INTERRUPTED, reason=f"relaunch failed: {exc.message}")
        engine.record_event(run.id, "recovery_failed", {"attempt": attempt, "error": exc.message})
        yield Failed(
            run.id,
            f"relaunch failed: {exc.message}",
            exc.hint or f"`gpuctl resume {run.id}` later",
            exc.exit_code,
        )
        return None
    store.put_instance(instance)
    store.update_run(run.id, instance_id=instance.id)
    cost.record_launch(store, engine.settings, instance, run.id)
    try:  # the new machine's real price against the run's quote; above the max: no resume
        quoted, quoted_type = billed_price.quote_of(engine, run.id)
        instance = yield from billed_price.at_boot(engine, new_spec, instance, quoted, quoted_type)
    except BudgetExceeded as exc:
        try:
            engine.provider(instance.provider).terminate(instance, wait=False)
            cost.close_instance(store, instance)
            store.mark_instance_gone(instance.provider, instance.id)
        except GpuctlError as down_exc:
            yield Notice(
                run.id,
                f"could not remove {instance.id}: {down_exc.one_line()}; "
                f"run `gpuctl down {run.id}`",
                "error",
            )
        transition(store, run.id, RunStatus.BUDGET, reason=f"{StopReason.BUDGET}: {exc.message}")
        yield Failed(run.id, exc.message, exc.hint, exc.exit_code)
        return None
    yield InstanceUp.of(run.id, instance)
    return instance


def start_resumed(engine: EngineOps, run: Run, instance: Instance, same: bool) -> Events:
    """Checkpoint back in place, trainer restarted with --resume: (log offset, resumed)."""
    spec = run.launch_spec
    boot_wait = engine.settings.profile(spec.provider).value("boot_wait")
    host = engine.host_for(spec, instance, wait=0.0 if same else float(boot_wait or 0.0))
    try:
        rd = RunDir(host, run.id)
        have = same and host.file_size(rd.p(LAST_CHECKPOINT_FILE)) is not None
        if not have:
            have = yield from restore(engine, run, rd)
        if not have:
            yield Notice(run.id, "no checkpoint anywhere: the run starts over", "warning")
        offset = (host.file_size(rd.p(TRAIN_LOG_FILE)) or 0) if have else 0
    finally:
        host.close()
    yield from engine.start_on(instance, spec, resume=have)
    return offset, have


def _position(engine: EngineOps, run: Run) -> tuple[int, int]:
    """(epoch, step) the trainer resumes at: where an interrupted trainer said it stopped,
    else the epoch after the last one completed (a killed trainer's last.pt)."""
    root = local_dir(engine, run)
    try:
        status = json.loads((root / STATUS_FILE).read_text())
    except (OSError, ValueError):
        status = {}
    if not isinstance(status, dict):  # written by the machine: trust nothing of its shape
        status = {}
    if status.get("phase") == Phase.INTERRUPTED and status.get("epoch"):
        try:
            return int(status["epoch"]), int(status.get("step") or 0)
        except (TypeError, ValueError, OverflowError):
            pass
    try:
        done = max(int(h["epoch"]) for h in json.loads((root / HISTORY_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        done = run.epoch
    return done + 1, 0


# -- while the link is down --------------------------------------------------------------------


def vanished(engine: EngineOps, run: Run, *, force: bool = False) -> str | None:
    """With the link down: why the machine is gone per its provider (the run is marked), or
    None while it exists or nobody can tell. Asked at most every VANISH_CHECK_SECONDS."""
    now = time.monotonic()
    if not force and now - _last_vanish_check.get(run.id, 0.0) < VANISH_CHECK_SECONDS:
        return None
    _last_vanish_check[run.id] = now
    if not run.instance_id:
        return None
    try:
        current = engine.provider(run.provider).get_instance(run.instance_id)
    except GpuctlError:
        return None
    if current is not None and current.state != InstanceState.TERMINATED:
        return None
    old = engine.instance_of(run)
    spot = old is not None and old.market == Market.SPOT
    reason = f"{GONE_PREFIX}: {run.instance_id} " + (
        "(spot capacity reclaimed)" if spot else "no longer exists"
    )
    transition(engine.store, run.id, RunStatus.INTERRUPTED, reason=reason)
    engine.record_event(run.id, "vanished", {"instance": run.instance_id, "spot": spot})
    return reason


# -- what the agent status says -------------------------------------------------------------------


def status_notices(run_id: str, status: Mapping[str, Any], seen: set[str]) -> Iterator[Event]:
    """Spot notice, rebalance recommendation, a dead agent: each said once."""
    gone = status.get("agent_alive") is False and status.get("trainer_alive")
    if gone and "agent_gone" not in seen:
        seen.add("agent_gone")
        yield Notice(run_id, agent_gone_text(run_id), "warning")
    rebalance = status.get("rebalance")
    if rebalance and "rebalance" not in seen:
        seen.add("rebalance")
        yield Notice(
            run_id,
            "rebalance recommendation: this spot instance is at elevated risk of interruption",
            "warning",
        )
    spot = status.get("spot")
    if spot and "spot" not in seen:
        seen.add("spot")
        yield Notice(
            run_id,
            f"spot interruption notice ({spot.get('action', '?')} at {spot.get('time', '?')}): "
            "the trainer is checkpointing",
            "warning",
        )


def reconnect_notices(run_id: str, host: Any, seen: set[str]) -> Iterator[Event]:
    """The SSH session reconnected under a read (no error reached follow): say so once per
    reconnect; the tail re-reads by offset, so no line is lost or doubled."""
    count = getattr(getattr(host, "session", None), "reconnects", 0)
    if isinstance(count, int) and count and f"reconnect:{count}" not in seen:
        seen.add(f"reconnect:{count}")
        yield Notice(
            run_id,
            f"link to {host.label} dropped; reconnected (the log continues at the same byte)",
            "warning",
        )


def resume_elsewhere(engine: EngineOps, run_id: str) -> Events:
    """`gpuctl resume` of a run whose machine is gone: recover by hand, then follow."""
    offset = yield from recover(engine, run_id, manual=True)
    if offset is None:
        return engine.store.get_run(run_id).status
    status = yield from engine.follow(run_id, from_start=False, tail_lines=0, log_offset=offset)
    status = yield from supervise(engine, run_id, status)
    return (yield from engine.finish(run_id, status))
