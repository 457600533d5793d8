"""gpuctl's on-machine agent: starts the trainer detached and guards the machine's money.

Standard library only: it is copied next to the trainer on every machine and run with
whatever python3 is there. It keeps working when gpuctl is closed, the laptop sleeps or
the SSH link drops, because it runs in its own session and owns the trainer process.

    python3 agent.py start --run-dir DIR     start the supervisor detached, print its pid
    python3 agent.py stop --run-dir DIR      graceful stop: STOP file + SIGTERM, wait
    python3 agent.py status --run-dir DIR    one JSON object: agent and trainer status

The supervisor reads DIR/agent.json (written by gpuctl) and writes DIR/agent_status.json.
Watchdog limits (max_seconds, budget_seconds, idle_seconds, stall_seconds) stop the
trainer gracefully first (it checkpoints), then run the shutdown action the run's teardown
policy allows (none, poweroff, destroy; the budget has its own, `budget_shutdown`).
Secrets (API token, presigned URL) reach the supervisor on a pipe, never in its
environment, so the trainer (same user) cannot read them from /proc.

With a `job` in agent.json it runs the user's own command instead (job.py): data first
(fetch.py), then the setup once per machine, then `sh -c` the command with its output in
train.log, which progress.py turns into the trainer's events, status and history.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:  # imported as gpuctl.agent.agent (tests, the local provider)
    from ..trainer import protocol
    from . import cloud, fetch, job, progress, webhook
except ImportError:  # run as a script on the machine: agent/ is sys.path[0]
    # The names it shares with the trainer and gpuctl are in trainer/protocol.py, which
    # every code bundle ships next to agent/ (stdlib only, like this file).
    sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
    import cloud  # type: ignore[no-redef]
    import fetch  # type: ignore[no-redef]
    import job  # type: ignore[no-redef]
    import progress  # type: ignore[no-redef]
    import webhook  # type: ignore[no-redef]

    from trainer import protocol  # type: ignore[no-redef]

AgentState = protocol.AgentState
StopReason = protocol.StopReason
ShutdownAction = protocol.ShutdownAction
STATUS = protocol.AGENT_STATUS_FILE
CONFIG = protocol.AGENT_CONFIG_FILE
PROGRESS_FILES = (protocol.TRAIN_LOG_FILE, protocol.EVENTS_FILE, protocol.TRAINER_OUT_FILE)


def now() -> float:
    return time.time()


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic: a reader never sees half a file, a crash never leaves one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def trainer_alive(pid: int | None) -> bool:
    """The trainer, or anything of its process group (a job's script after `sh` died)."""
    return pid_alive(pid) or job.group_alive(pid)


def gpu_utilisation(timeout: float = 10.0) -> float | None:
    """Mean GPU utilisation in percent from nvidia-smi or rocm-smi; None when unknown."""
    commands = (
        ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
        ["rocm-smi", "--showuse", "--csv"],
    )
    for cmd in commands:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        values = []
        for line in out.splitlines():
            cell = line.rsplit(",", 1)[-1].strip().rstrip("%")
            try:
                values.append(float(cell))
            except ValueError:
                continue
        if values:
            return sum(values) / len(values)
    return None


class Progress:
    """Is the trainer getting anywhere? New log, event or output bytes, or a new step.

    The clock starts over at every sign of progress. Before the trainer's first step it
    gets a warm-up on top (imports, data, compilation). A busy GPU with no progress
    (a long evaluation) gets twice the time as well, but not forever: a deadlocked
    collective keeps a GPU at 100% too.
    """

    def __init__(
        self, run_dir: Path, stall_seconds: float, warmup_seconds: float, gpu_poll_seconds: float
    ) -> None:
        self.dir = run_dir
        self.stall_seconds = stall_seconds
        self.warmup_seconds = warmup_seconds
        self.gpu_poll_seconds = gpu_poll_seconds
        self.signature: tuple[Any, ...] | None = None
        self.changed = time.monotonic()
        self.stepped = False
        self.gpu: float | None = None
        self._gpu_at = -1e18

    def _signature(self) -> tuple[Any, ...]:
        sizes = []
        for name in PROGRESS_FILES:
            try:
                sizes.append((self.dir / name).stat().st_size)
            except OSError:
                sizes.append(None)
        status = read_json(self.dir / protocol.STATUS_FILE)
        step = tuple(status.get(k) for k in ("phase", "epoch", "step", "updated_at"))
        if status.get("step") or status.get("phase") == protocol.Phase.TRAINING:
            self.stepped = True
        return (*sizes, *step)

    def quiet_for(self, mono: float) -> float | None:
        """Seconds without progress once that is a stall, else None."""
        signature = self._signature()
        if signature != self.signature:
            self.signature, self.changed = signature, mono
            return None
        quiet = mono - self.changed
        limit = self.stall_seconds + (0.0 if self.stepped else self.warmup_seconds)
        if quiet < limit:
            return None
        if mono - self._gpu_at >= self.gpu_poll_seconds:
            self._gpu_at = mono
            self.gpu = gpu_utilisation()
        if self.gpu is not None and self.gpu >= 5.0 and quiet < 2 * limit:
            return None
        return quiet


class Supervisor:
    """Owns the trainer process and the watchdog loop for one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.cfg = read_json(run_dir / CONFIG)
        self.status: dict[str, Any] = read_json(run_dir / STATUS)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = now()
        self.started_mono = time.monotonic()  # limits: immune to the machine's clock jumping
        self.last_busy = now()
        self.stop_reason: str | None = None
        self.killed = False  # the command outlived its grace and was SIGKILLed
        self.spot = cloud.SpotWatch.from_config(self.cfg)  # AWS spot (or a test's emulator)
        self.job = job.Job.from_config(self.cfg)  # a user's own command, else the trainer
        self.adapter: progress.Adapter | None = None
        self.limit_reason: str | None = None
        stall = self.cfg.get("stall_seconds")
        self.progress = (
            Progress(
                run_dir,
                float(stall),
                float(self.cfg.get("stall_warmup_seconds") or 0.0),
                float(self.cfg.get("gpu_poll_seconds") or 30.0),
            )
            if stall
            else None
        )

    # -- status ----------------------------------------------------------------------

    def save(self, **changes: Any) -> None:
        self.status.update(changes)
        self.status["updated_at"] = now()
        write_json(self.dir / STATUS, self.status)

    def log(self, message: str) -> None:
        line = f"[agent {time.strftime('%Y-%m-%d %H:%M:%S')}] {message}\n"
        with open(self.dir / protocol.AGENT_LOG_FILE, "a") as fh:
            fh.write(line)

    # -- trainer -----------------------------------------------------------------------

    def trainer_command(self) -> list[str]:
        if self.job is not None:
            return self.job.argv(resuming=bool(self.cfg.get("resume")))
        python = self.cfg.get("python") or sys.executable
        config = str(self.dir / protocol.RUN_CONFIG_FILE)
        nproc = int(self.cfg.get("nproc") or 1)
        if nproc > 1:
            cmd = [python, "-m", "torch.distributed.run", "--standalone"]
            cmd += [f"--nproc_per_node={nproc}", "-m", "trainer", "--config", config]
        else:
            cmd = [python, "-u", "-m", "trainer", "--config", config]
        if self.cfg.get("resume"):
            cmd.append("--resume")
        return cmd

    def code_dir(self) -> str:
        return self.cfg.get("code_dir") or str(Path(__file__).resolve().parent.parent)

    def base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in cloud.secret_env_names(self.cfg):  # the trainer never sees them
            env.pop(name, None)
        env.update({k: str(v) for k, v in (self.cfg.get("env") or {}).items()})
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def trainer_env(self) -> dict[str, str]:
        env = self.base_env()
        paths = [self.code_dir()]
        if self.cfg.get("workdir"):
            paths.append(str(self.cfg["workdir"]))
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    def job_env(self, spec: job.Job) -> dict[str, str]:
        """The command's environment: its own secrets (from the pipe), the report file,
        and the helper on the path; not code_dir (the user's `trainer` would be shadowed)."""
        env = self.base_env()
        env.update(dict(spec.env))
        for name in spec.secret_env:
            value = cloud.env_value(name)
            if value:
                env[name] = value
        env[protocol.REPORTS_ENV] = str(self.dir / protocol.REPORTS_FILE)
        env[protocol.RUN_ID_ENV] = str(self.cfg.get("run_id") or self.dir.name)
        env[protocol.RUN_DIR_ENV] = str(self.dir)
        ckpt = spec.checkpoint_path()
        if ckpt is not None:
            env[protocol.CHECKPOINT_ENV] = str(ckpt)
        if self.cfg.get("resume"):
            env[protocol.RESUME_ENV] = "1"
        paths = [str(Path(self.code_dir()) / "agent" / "helper"), spec.cwd]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        shims = self.python_shims()
        if shims:
            env["PATH"] = os.pathsep.join([shims, env.get("PATH") or os.defpath])
        return env

    def python_shims(self) -> str | None:
        """`python` and `python3` in the command (and its setup) are the interpreter gpuctl
        matched to the machine's GPU stack: many images have no `python` at all, and the
        first python3 on PATH may lack torch. Shell shims, not links: a link to a venv's
        python would lose the venv."""
        python = str(self.cfg.get("python") or "")
        if not python or not os.path.isabs(python):
            return None
        shims = self.dir / ".bin"
        try:
            shims.mkdir(exist_ok=True)
            for name in ("python", "python3"):
                path = shims / name
                tmp = shims / f".{name}.tmp"
                tmp.write_text(f'#!/bin/sh\nexec {shlex.quote(python)} "$@"\n')
                tmp.chmod(0o755)
                os.replace(tmp, path)
        except OSError as exc:
            self.log(f"cannot put gpuctl's python first on PATH: {exc}")
            return None
        return str(shims)

    def start_trainer(self) -> None:
        (self.dir / protocol.STOP_FILE).unlink(missing_ok=True)
        cmd = self.trainer_command()
        if self.job is not None:
            env, cwd = self.job_env(self.job), self.job.cwd
            output = self.dir / protocol.TRAIN_LOG_FILE  # a file: it outlives the agent
            self.log("starting command: " + shlex.join(cmd))
        else:
            env, cwd = self.trainer_env(), self.code_dir()
            output = self.dir / protocol.TRAINER_OUT_FILE
            self.log("starting trainer: " + shlex.join(cmd))
        if self.adapter is not None:
            self.adapter.command_started(output.stat().st_size if output.exists() else 0)
        out = open(output, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        out.close()
        if self.adapter is not None:
            self.adapter.status["pid"] = self.proc.pid
        if self.job is not None:
            self.status["job_step"] = "command"
        self.save(
            state=AgentState.RUNNING,
            trainer_pid=self.proc.pid,
            trainer_started_at=now(),
            exit_code=None,
            ended_at=None,
            reason="",
            command=cmd,
        )

    def running(self) -> bool:
        """The trainer runs; a job runs while any process of its group lives.

        `sh -c` dies at once at a stop's SIGTERM while the script still checkpoints: then
        the job runs on until its whole group is gone. A shell that ended by itself ran its
        command line to the end: what is left of the group (a `tensorboard &`) would keep
        the run, and the machine's bill, going for ever, so it is ended.
        """
        if self.proc is None:
            return False
        if self.proc.poll() is None:
            return True
        if self.job is None or not job.group_alive(self.proc.pid):
            return False
        stop_asked = self.stop_reason or (self.dir / protocol.STOP_FILE).exists()
        if self.proc.returncode >= 0 and not stop_asked:
            self.log("the command line ended; stopping what it left running in the background")
            job.stop_group(self.proc, 10.0)
            self.save(leftovers_stopped=True)
            return False
        return True

    def signal_trainer(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def graceful_stop(self, reason: str, signalled: bool = False) -> None:
        """STOP file + SIGTERM: the trainer finishes its step and writes last.pt.

        `signalled`: `agent.py stop` wrote the file and sent the SIGTERM (a second one now
        would mean "exit at once"); the grace is enforced here all the same, so a trainer
        that ignores SIGTERM is killed even when the client that asked went away.
        """
        if self.stop_reason:
            return
        self.stop_reason = reason
        self.log(f"stopping trainer: {reason}")
        self.save(state=AgentState.STOPPING, reason=reason)
        if not signalled:
            (self.dir / protocol.STOP_FILE).write_text(reason + "\n")
            self.signal_trainer(signal.SIGTERM)
        grace = float(self.cfg.get("grace_seconds", 90))
        if reason.startswith(StopReason.STALL) and self.progress is not None:
            grace = min(grace, self.progress.stall_seconds)  # it was stuck that long already
        deadline = now() + grace
        while self.running() and now() < deadline:
            self.follow()
            time.sleep(0.2)
        if self.running():
            # A repeat means "now" to the trainer: it leaves its last checkpoint and exits.
            self.log(f"trainer still running {grace:.0f}s after SIGTERM; asking again")
            self.signal_trainer(signal.SIGTERM)
            deadline = now() + min(grace, 10.0)
            while self.running() and now() < deadline:
                self.follow()
                time.sleep(0.2)
        if self.running():
            self.log("trainer ignored SIGTERM, killing it")
            self.killed = True
            self.signal_trainer(signal.SIGKILL)

    # -- limits ------------------------------------------------------------------------

    def check_limits(self) -> str | None:
        elapsed = time.monotonic() - self.started_mono
        max_s = self.cfg.get("max_seconds")
        if max_s and elapsed >= float(max_s):
            return f"{StopReason.MAX_HOURS} ({float(max_s) / 3600:.2f} h)"
        budget_s = self.cfg.get("budget_seconds")
        if budget_s is not None and elapsed >= float(budget_s):  # 0 = nothing left: stop now
            limit = f"time limit = budget / price = {float(budget_s):.0f} s"
            return f"{StopReason.BUDGET} reached ({limit})"
        return None

    def check_stall(self) -> str | None:
        if self.progress is None:
            return None
        quiet = self.progress.quiet_for(time.monotonic())
        if quiet is None:
            return None
        gpu = self.progress.gpu
        busy = f", GPU {gpu:.0f}% busy" if gpu is not None else ""
        return f"{StopReason.STALL}: no training progress for {quiet / 60:.1f} min{busy}"

    def shutdown_config(self, reason: str) -> dict[str, Any]:
        """The action for this limit: the budget's own policy, else the run's teardown's."""
        if reason.startswith(StopReason.BUDGET) and isinstance(
            self.cfg.get("budget_shutdown"), dict
        ):
            return dict(self.cfg["budget_shutdown"])
        return dict(self.cfg.get("shutdown") or {})

    def shutdown(self, reason: str) -> None:
        cfg = self.shutdown_config(reason)
        action = cfg.get("action", ShutdownAction.NONE)
        command = cfg.get("command") or []
        self.save(shutdown={"action": action, "reason": reason, "at": now()})
        if action == ShutdownAction.NONE:
            self.log(f"{reason}: the trainer is stopped; the machine is left as it is")
            return
        if action == ShutdownAction.DESTROY and self.destroy_self(cfg):
            return
        if action == ShutdownAction.NONE or not command:
            return
        self.log(f"shutdown ({action}): {reason}")
        try:
            subprocess.run(command, timeout=120, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            self.log(f"shutdown command failed: {exc}")

    def destroy_self(self, cfg: dict[str, Any]) -> bool:
        """DigitalOcean opt-in: delete this droplet through the API (only that ends billing).

        The token (a droplet-scoped one) is the secret named by token_env, handed over on
        the supervisor's pipe; it is never logged or written. False: use the command.
        """
        token = cloud.env_value(str(cfg.get("token_env") or ""))
        if not (token and cfg.get("api") and cfg.get("droplet_id")):
            self.log("destroy: no API token in the environment; powering off instead")
            return False
        self.log(f"destroying droplet {cfg['droplet_id']} through the API")
        why = cloud.destroy_droplet(str(cfg["api"]), str(cfg["droplet_id"]), token)
        if why:
            self.log(f"destroy failed ({why}); powering off instead")
        self.save(destroy={"at": now(), "ok": not why, "error": why or None})
        return not why

    def arm_guard(self) -> None:
        """No boot guard on this machine: arm the same max-hours shutdown, detached, once.

        It outlives this supervisor (its own session), as the boot guard would.
        """
        seconds, command = self.cfg.get("guard_seconds"), self.cfg.get("guard_command")
        if not seconds or not command:
            return
        guard = self.status.get("guard") or {}
        if pid_alive(guard.get("pid")):
            return  # armed by an earlier start of this run
        script = 'sleep "$0" && exec "$@"'
        try:
            proc = subprocess.Popen(
                ["sh", "-c", script, f"{float(seconds):.0f}", *map(str, command)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            self.log(f"could not arm the max-hours shutdown: {exc}")
            self.save(guard={"error": str(exc)[:200]})
            return
        self.log(f"no boot guard on this machine: shutdown armed in {float(seconds):.0f}s")
        self.save(guard={"pid": proc.pid, "seconds": float(seconds), "armed_at": now()})

    # -- spot interruption ---------------------------------------------------------------

    def check_spot(self) -> None:
        """Poll the notice; on one, checkpoint now (the machine has about two minutes)."""
        assert self.spot is not None
        notice, rebalance = self.spot.poll(now())
        if self.spot.error and self.status.get("spot_error") != self.spot.error:
            self.log(f"metadata service: {self.spot.error}")
            self.save(spot_error=self.spot.error)
        if rebalance is not None:
            self.log(f"rebalance recommendation: {json.dumps(rebalance)}")
            self.save(rebalance={**rebalance, "seen_at": now()})
        if notice is not None:
            self.log(f"spot interruption notice: {json.dumps(notice)}")
            self.save(spot={**notice, "noticed_at": now()})
            self.graceful_stop(StopReason.SPOT)

    def note_checkpoint(self) -> None:
        """The trainer has written last.pt: say when (before 'exited', which gpuctl sees)."""
        spot = dict(self.status.get("spot") or {})
        try:
            spot["checkpoint_at"] = (self.dir / protocol.LAST_CHECKPOINT_FILE).stat().st_mtime
        except OSError:
            spot["checkpoint_error"] = "no last.pt after the stop"
        self.status["spot"] = spot

    def push_checkpoint(self) -> None:
        """Copy last.pt to the bucket (presigned URL from the environment), if asked to."""
        spot = dict(self.status.get("spot") or {})
        url = cloud.env_value(cloud.CHECKPOINT_URL_ENV)
        if not url or "checkpoint_at" not in spot:
            return
        last = self.dir / protocol.LAST_CHECKPOINT_FILE
        started = now()
        try:
            sent = cloud.put_file(url, last)
            spot.update(uploaded_at=now(), uploaded_bytes=sent)
            self.log(f"checkpoint pushed to the bucket ({sent} bytes, {now() - started:.1f}s)")
        except Exception as exc:  # never print the URL: it is a credential
            spot["upload_error"] = f"{type(exc).__name__}: {getattr(exc, 'reason', '')}"[:200]
            self.log(f"checkpoint push to the bucket failed: {spot['upload_error']}")
        self.save(spot=spot)

    # -- main loop ----------------------------------------------------------------------

    def run(self) -> int:
        self.save(
            state=AgentState.STARTING,
            agent_pid=os.getpid(),
            started_at=self.started,
            limits={
                k: self.cfg.get(k)
                for k in ("max_seconds", "budget_seconds", "idle_seconds", "stall_seconds")
            },
            shutdown_action=(self.cfg.get("shutdown") or {}).get("action", ShutdownAction.NONE),
        )
        stop_requested = {"reason": ""}

        def on_term(signum: int, _frame: object) -> None:
            stop_requested["reason"] = f"{StopReason.SIGNAL} {signum}"

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.arm_guard()
        if self.job is not None:
            ended = self.prepare_job(self.job, stop_requested)
            if ended is not None:
                return ended
        try:
            self.start_trainer()
        except OSError as exc:
            reason = f"cannot start trainer: {exc}"
            if self.adapter is not None:
                self.adapter.finish(None, None, failure=reason)
            self.save(state=AgentState.EXITED, exit_code=127, reason=reason)
            return 1
        poll = float(self.cfg.get("poll_seconds", 2.0))
        limit_reason: str | None = None
        while True:
            assert self.proc is not None
            self.follow()
            if not self.running():
                code = self.proc.returncode
                break
            if stop_requested["reason"]:
                self.graceful_stop(stop_requested["reason"])
                continue
            if (self.dir / protocol.STOP_FILE).exists():  # `agent.py stop` asked
                self.read_stop_file()
                reason, self.stop_reason = self.stop_reason or StopReason.USER, None
                self.graceful_stop(reason, signalled=True)
                continue
            if self.spot is not None and self.spot.due(now()):
                self.check_spot()
                continue
            limit_reason = self.check_limits()
            if limit_reason:
                self.graceful_stop(limit_reason)
                continue
            stalled = self.check_stall()
            if stalled:
                self.graceful_stop(stalled)  # then the idle rule below, like any ended run
                continue
            nap = min(poll, 0.5) if now() - self.started < 5 else poll
            time.sleep(min(nap, self.spot.poll_seconds) if self.spot is not None else nap)
        external = self.stop_reason is None and (self.dir / protocol.STOP_FILE).exists()
        external = external or bool(stop_requested["reason"])
        self.read_stop_file()
        if self.job is not None:
            run_id = str(self.cfg.get("run_id") or self.dir.name)
            left = job.end_escaped(protocol.RUN_ID_ENV, run_id)
            if left:
                self.log(f"stopped {len(left)} process(es) the command left outside its group")
        last = self.dir / protocol.LAST_CHECKPOINT_FILE
        if self.job is not None and self.killed and last.exists():
            # Killed past its grace, it may have been half-way through writing it.
            self.log("kept the last checkpoint copied: the command was killed past its grace")
        elif self.job is not None:
            self.mirror_checkpoint(None)  # before note/push: the spot path sends last.pt
        if self.stop_reason == StopReason.SPOT:
            self.note_checkpoint()
        if self.adapter is not None:
            try:
                phase = self.adapter.finish(code, self.stop_reason)
            except Exception as exc:  # never lose the exit record over a progress file
                phase = f"unknown ({type(exc).__name__}: {exc})"
            self.log(f"command ended: {phase}")
            self.save(reports_ignored=self.adapter.ignored)
        self.notify_end(code, external)
        self.save(
            state=AgentState.EXITED,
            exit_code=code,
            ended_at=now(),
            reason=self.stop_reason or "",
            checkpoint_at=self.checkpoint_at(),
        )
        self.log(f"trainer exited with code {code}")
        if self.stop_reason == StopReason.SPOT:
            self.push_checkpoint()
        return self.after_exit(limit_reason)

    def after_exit(self, limit_reason: str | None) -> int:
        """The trainer is gone: the limit's shutdown, the idle watch or the stall's."""
        if limit_reason:
            self.shutdown(limit_reason)
            return 0
        idle = self.cfg.get("idle_seconds")
        action = (self.cfg.get("shutdown") or {}).get("action", ShutdownAction.NONE)
        if idle and action != ShutdownAction.NONE:
            self.idle_watch(float(idle))
        elif (self.stop_reason or "").startswith(StopReason.STALL):
            self.shutdown(self.stop_reason or StopReason.STALL)  # no idle rule: act now
        return 0

    def notify_end(self, code: int | None, external: bool) -> None:
        """Send the run's end to its webhooks when nobody on the laptop may be listening,
        and record what was sent (agent_status.json `notified`) so the laptop does not
        send it again. Before the EXITED state: whoever sees the end sees this too."""
        trainer = read_json(self.dir / protocol.STATUS_FILE)
        kind = end_kind(trainer.get("phase"), code, self.stop_reason or "", external)
        if kind is not None:
            self.notify_kind(kind, trainer, self.stop_reason or str(trainer.get("reason") or ""))

    def notify_kind(self, kind: str, trainer: dict[str, Any], reason: str) -> None:
        """POST one notification to the run's webhooks (if it is one the user wants)."""
        cfg = self.cfg.get("notify")
        targets = webhook.hooks(cloud.env_value(webhook.WEBHOOKS_ENV))
        if not isinstance(cfg, dict) or not targets or kind not in (cfg.get("events") or ()):
            return
        run_id = str(cfg.get("run_id") or self.dir.name)
        hours = (now() - self.started) / 3600
        spent = float(cfg.get("spent_before") or 0.0) + hours * float(cfg.get("price") or 0.0)
        words = {
            "budget_100": "stopped: budget reached",
            "interrupted": "interrupted (spot)",
            "idle_shutdown": "ended: its machine was idle",
        }
        status = {"budget_100": "budget", "idle_shutdown": "idle"}.get(kind, kind)
        parts = [f"run {run_id} {words.get(kind, kind)}", f"status {status}"]
        metric = trainer.get("best_metric")
        if isinstance(metric, int | float):
            parts.append(f"metric {metric:.4g}")
        if trainer.get("epochs"):
            parts.append(f"epochs {trainer.get('epochs_done', '?')}/{trainer['epochs']}")
        parts.append(f"after {hours * 60:.1f} min")
        parts.append(f"cost ${spent:.2f} to date (as the machine counts it)")
        if kind != "finished" and reason:
            parts.append(f"reason: {reason}")
        if kind == "failed":
            tail = self.last_log_lines(5)
            if tail:
                parts.append("last log: " + " | ".join(tail))
        at = self.checkpoint_at()
        if at is not None:
            parts.append(f"checkpoint {now() - at:.0f} s old")
        title = f"gpuctl: run {run_id} {kind.replace('_', ' ')}"
        if webhook.post(targets, title, "; ".join(parts)):
            self.log(f"notification sent: {kind}")
            self.save(notified=[*self.status.get("notified", []), kind])
        else:
            self.log(f"notification {kind} not delivered (gpuctl sends it when it looks)")

    def checkpoint_at(self) -> float | None:
        """When the last checkpoint was written (its age goes in the run's messages)."""
        try:
            return (self.dir / protocol.LAST_CHECKPOINT_FILE).stat().st_mtime
        except OSError:
            return None

    def last_log_lines(self, count: int) -> list[str]:
        for name in (protocol.TRAIN_LOG_FILE, protocol.TRAINER_OUT_FILE):
            try:
                lines = (self.dir / name).read_text(errors="replace").splitlines()
            except OSError:
                continue
            lines = [ln.strip() for ln in lines if ln.strip()]
            if lines:
                return [ln[:300] for ln in lines[-count:]]
        return []

    def read_stop_file(self) -> None:
        stop_file = self.dir / protocol.STOP_FILE
        if not self.stop_reason and stop_file.exists():
            self.stop_reason = stop_file.read_text().strip() or "stopped"

    # -- a user's command ---------------------------------------------------------------

    def follow(self) -> None:
        """The command's new output and reports into the trainer's files."""
        if self.adapter is None:
            return
        try:
            self.adapter.poll()
        except Exception as exc:  # a disk full, a file removed: keep supervising
            self.log(f"progress: {type(exc).__name__}: {exc}")
        if self.adapter.ignored != self.status.get("reports_ignored", 0):
            self.save(reports_ignored=self.adapter.ignored)

    def mirror_checkpoint(self, path: str | None) -> str | None:
        """The project's checkpoint (or a reported path under it) copied to last.pt."""
        if self.job is None:
            return None
        src = Path(self.job.cwd) / path if path else self.job.checkpoint_path()
        if src is None or not src.exists():
            return None
        last = self.dir / protocol.LAST_CHECKPOINT_FILE
        known = self.status.get("checkpoint") or {}
        try:
            signature = job.signature(src)
            same = known.get("signature") == signature and known.get("path") == str(src)
            if same and last.exists() and "mirrored_at" in known:
                return str(last)  # unchanged since the last copy: gigabytes not copied again
            kind = job.mirror(src, last)
        except OSError as exc:
            self.log(f"checkpoint mirror of {src} failed: {exc}")
            self.save(checkpoint={"path": str(src), "error": str(exc)[:200]})
            return None
        self.log(f"checkpoint {src} mirrored to last.pt ({kind})")
        mirrored = {"path": str(src), "kind": kind, "mirrored_at": now(), "signature": signature}
        self.save(checkpoint=mirrored)
        return str(last)

    def prepare_job(self, spec: job.Job, stop_requested: dict[str, str]) -> int | None:
        """Data, setup and the checkpoint restore before the command; the exit code of
        the supervisor when the command must not start (failed, or stopped meanwhile)."""
        log_path = self.dir / protocol.TRAIN_LOG_FILE
        try:
            log_path.touch()
            (self.dir / protocol.STOP_FILE).unlink(missing_ok=True)  # an earlier run's
            self.adapter = progress.Adapter(
                self.dir,
                epochs=spec.epochs,
                resume=bool(self.cfg.get("resume")),
                log_offset=log_path.stat().st_size,
                on_checkpoint=self.mirror_checkpoint,
            )
        except OSError as exc:  # a full disk, a read-only run dir: say so, start nothing
            reason = f"cannot write the run's progress files: {exc}"
            self.save(state=AgentState.EXITED, exit_code=1, ended_at=now(), reason=reason)
            return 1
        adapter = self.adapter

        def stop_asked() -> str | None:
            self.read_stop_file()
            if not self.stop_reason and stop_requested["reason"]:
                self.stop_reason = stop_requested["reason"]
            if not self.stop_reason:
                self.limit_reason = self.check_limits()
                self.stop_reason = self.limit_reason
            return self.stop_reason

        failure = None
        try:
            if spec.kind != job.KIND_COMMAND:
                raise job.JobError(f"this agent cannot run a job of kind {spec.kind!r}")
            if not spec.command:
                raise job.JobError("the job has no command")
            if not Path(spec.cwd).is_dir():
                raise job.JobError(f"the project directory {spec.cwd} is not on the machine")
            self.save(job_step="data")
            self.fetch_data(spec, log_path)
            self.save(job_step="setup")
            env = self.job_env(spec)
            failure = job.run_setup(
                spec, log_path, env, stop_asked, lambda pid: self.save(trainer_pid=pid)
            )
            if failure is None and stop_asked() is None:
                self.restore_checkpoint(spec)
        except (job.JobError, fetch.FetchError) as exc:
            failure = str(exc)
        except OSError as exc:
            failure = f"cannot prepare the command: {exc}"
        if failure is None and not self.stop_reason:
            return None
        stopped = bool(self.stop_reason) and failure in (None, self.stop_reason)
        try:
            adapter.finish(None, self.stop_reason, failure=None if stopped else failure)
        except OSError as exc:
            self.log(f"could not write the end to status.json: {exc}")
        if stopped:
            self.log(f"stopped before the command started: {self.stop_reason}")
        else:
            self.log(f"the command did not start: {failure}")
        if not stopped:
            self.notify_end(1, False)
        self.save(
            state=AgentState.EXITED,
            exit_code=None if stopped else 1,
            ended_at=now(),
            reason=self.stop_reason or "",
            trainer_pid=None,
        )
        return self.after_exit(self.limit_reason)

    def fetch_data(self, spec: job.Job, log_path: Path) -> None:
        for data in spec.data:
            urls = cloud.env_value(data.urls_env)
            if not urls:
                continue
            try:
                objects = json.loads(urls)
            except ValueError:
                raise fetch.FetchError(f"data {data.name}: the URL list is not JSON") from None
            fetched, size, fresh = fetch.fetch_set(
                data.name,
                Path(data.dir),
                objects,
                lambda line: job.log_line(log_path, line),
            )
            summary = f"data {data.name}: {fetched} downloaded ({size} bytes), {fresh} up to date"
            job.log_line(log_path, summary)
            data_status = dict(self.status.get("data") or {})
            data_status[data.name] = {"fetched": fetched, "bytes": size, "fresh": fresh}
            self.save(data=data_status)

    def restore_checkpoint(self, spec: job.Job) -> None:
        """A resume on a fresh machine: last.pt (carried here) back into the project."""
        target = spec.checkpoint_path()
        last = self.dir / protocol.LAST_CHECKPOINT_FILE
        if not self.cfg.get("resume") or target is None or target.exists() or not last.exists():
            return
        kind = job.restore(last, target)
        self.log(f"checkpoint restored from last.pt to {target} ({kind})")
        self.save(checkpoint={"path": str(target), "kind": kind, "restored_at": now()})

    def idle_watch(self, idle_seconds: float) -> None:
        """No trainer and no new run for idle_seconds: the machine is only burning money."""
        deadline = now() + idle_seconds
        while now() < deadline:
            time.sleep(min(5.0, idle_seconds))
            status = read_json(self.dir / STATUS)
            if (
                status.get("state") in (AgentState.STARTING, AgentState.RUNNING)
                and status.get("agent_pid") != os.getpid()
            ):
                return  # a resumed run took over this machine
        reason = f"idle for {idle_seconds / 60:.0f} min with no trainer"
        self.notify_kind("idle_shutdown", read_json(self.dir / protocol.STATUS_FILE), reason)
        self.shutdown(reason)


def end_kind(phase: str | None, code: int | None, stop_reason: str, external: bool) -> str | None:
    """Which notification an ended agent sends itself (None: the laptop's, or none).

    A stop asked from outside (`gpuctl stop`, a budget stop from an open gpuctl) means
    someone listens there; a max-hours stop or a shutdown signal is no event of the list.
    """
    if external:
        return None
    reason = stop_reason or ""
    for why, kind in (
        (StopReason.BUDGET, "budget_100"),
        (StopReason.STALL, "stalled"),
        (StopReason.SPOT, "interrupted"),
    ):
        if reason.startswith(why):
            return kind
    if reason:
        return None
    if phase == protocol.Phase.FINISHED and code in (0, None):
        return "finished"
    return "failed"


# -- commands ------------------------------------------------------------------------------


def cmd_start(run_dir: Path) -> int:
    status = read_json(run_dir / STATUS)
    if status.get("state") in protocol.AGENT_ACTIVE and (
        pid_alive(status.get("agent_pid")) or trainer_alive(status.get("trainer_pid"))
    ):  # a trainer whose agent died still trains: a second one would share its files
        print(json.dumps({"error": "already running", "agent_pid": status.get("agent_pid")}))
        return 3
    # Secrets go to the supervisor on a pipe: its environment (readable in /proc by the
    # trainer, same user) never holds them.
    names = cloud.secret_env_names(read_json(run_dir / CONFIG))
    secrets = {n: cloud.env_value(n) for n in names if cloud.env_value(n)}
    env = {k: v for k, v in os.environ.items() if k not in names}
    log = open(run_dir / protocol.AGENT_LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
    argv = [sys.executable, os.path.abspath(__file__), "supervise", "--run-dir", str(run_dir)]
    proc = subprocess.Popen(
        [*argv, "--secrets-on-stdin"],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
        env=env,
    )
    log.close()
    assert proc.stdin is not None
    try:
        with proc.stdin:
            proc.stdin.write(json.dumps(secrets).encode())
    except BrokenPipeError:
        pass  # it died at once: the wait below reports what it left
    deadline = now() + 15
    while now() < deadline:
        status = read_json(run_dir / STATUS)
        if status.get("agent_pid") == proc.pid and status.get("trainer_pid"):
            break
        if status.get("agent_pid") == proc.pid and status.get("state") == AgentState.EXITED:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    status = read_json(run_dir / STATUS)
    print(json.dumps({"agent_pid": proc.pid, "trainer_pid": status.get("trainer_pid")}))
    return 0


def cmd_stop(run_dir: Path, reason: str, timeout: float) -> int:
    """Ask the trainer to checkpoint and exit; the supervisor records the outcome."""
    status = read_json(run_dir / STATUS)
    (run_dir / protocol.STOP_FILE).write_text(reason + "\n")
    pid = status.get("trainer_pid")
    agent_pid = status.get("agent_pid")
    if pid and trainer_alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = now() + timeout
    while now() < deadline and trainer_alive(pid):
        time.sleep(0.1)
    killed = False
    if trainer_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
            killed = True
        except ProcessLookupError:
            pass
    while now() < deadline + 5 and pid_alive(agent_pid):
        status = read_json(run_dir / STATUS)
        if status.get("state") == AgentState.EXITED:
            break
        time.sleep(0.1)
    if not pid_alive(agent_pid) and not trainer_alive(pid):
        # No supervisor to record the end (it died): this stop does, so that every
        # later reader sees the run stopped, not an agent lost.
        status = read_json(run_dir / STATUS)
        if status.get("state") in protocol.AGENT_ACTIVE:
            status.update(state=AgentState.EXITED, ended_at=now(), updated_at=now())
            status["reason"] = status.get("reason") or reason
            write_json(run_dir / STATUS, status)
    status = full_status(run_dir)
    if not status.get("reason"):  # no supervisor recorded it (it died): this stop's own
        status["reason"] = reason
    print(json.dumps({"stopped": True, "killed": killed, "status": status}))
    return 0


def full_status(run_dir: Path) -> dict[str, Any]:
    """The agent's status with the trainer's status.json inside.

    A supervisor that died while its trainer still trains leaves the state as it was
    (unknown is not done: the run goes on, only its limits are no longer enforced here),
    with agent_alive false; 'lost' only once the trainer is gone too.
    """
    status = read_json(run_dir / STATUS)
    status["trainer"] = read_json(run_dir / protocol.STATUS_FILE)
    status["trainer_alive"] = trainer_alive(status.get("trainer_pid"))
    active = status.get("state") in protocol.AGENT_ACTIVE
    status["agent_alive"] = active and pid_alive(status.get("agent_pid"))
    if active and not status["agent_alive"] and not status["trainer_alive"]:
        status["state"] = AgentState.LOST
    return status


def cmd_status(run_dir: Path) -> int:
    print(json.dumps(full_status(run_dir)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpuctl-agent")
    parser.add_argument("command", choices=["start", "supervise", "stop", "status"])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--reason", default=StopReason.USER)
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--secrets-on-stdin", action="store_true")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        print(json.dumps({"error": f"run directory {run_dir} does not exist"}))
        return 2
    if args.command == "start":
        return cmd_start(run_dir)
    if args.command == "supervise":
        if args.secrets_on_stdin:
            cloud.load_secrets(sys.stdin.read())
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
        return Supervisor(run_dir).run()
    if args.command == "stop":
        return cmd_stop(run_dir, args.reason, args.timeout)
    return cmd_status(run_dir)


if __name__ == "__main__":
    sys.exit(main())
