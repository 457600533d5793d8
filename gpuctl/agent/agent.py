"""gpuctl's on-machine agent: starts the trainer detached and guards the machine's money.

Standard library only: it is copied next to the trainer on every machine and run with
whatever python3 is there. It keeps working when gpuctl is closed, the laptop sleeps or
the SSH link drops, because it runs in its own session and owns the trainer process.

    python3 agent.py start --run-dir DIR     start the supervisor detached, print its pid
    python3 agent.py stop --run-dir DIR      graceful stop: STOP file + SIGTERM, wait
    python3 agent.py status --run-dir DIR    one JSON object: agent and trainer status

The supervisor reads DIR/agent.json (written by gpuctl) and writes DIR/agent_status.json.
Watchdog limits (max_seconds, budget_seconds, idle_seconds) stop the trainer gracefully
first (it checkpoints), then run the configured shutdown action (none, poweroff, destroy).
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
    from . import cloud
except ImportError:  # run as a script on the machine: agent/ is sys.path[0]
    import cloud  # type: ignore[no-redef]

STATUS = "agent_status.json"
CONFIG = "agent.json"
TERMINAL_PHASES = ("finished", "failed", "interrupted")
SPOT_REASON = "spot interruption"


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
        self.spot = cloud.SpotWatch.from_config(self.cfg)  # AWS spot (or a test's emulator)

    # -- status ----------------------------------------------------------------------

    def save(self, **changes: Any) -> None:
        self.status.update(changes)
        self.status["updated_at"] = now()
        write_json(self.dir / STATUS, self.status)

    def log(self, message: str) -> None:
        line = f"[agent {time.strftime('%Y-%m-%d %H:%M:%S')}] {message}\n"
        with open(self.dir / "agent.log", "a") as fh:
            fh.write(line)

    # -- trainer -----------------------------------------------------------------------

    def trainer_command(self) -> list[str]:
        python = self.cfg.get("python") or sys.executable
        config = str(self.dir / "run.json")
        nproc = int(self.cfg.get("nproc") or 1)
        if nproc > 1:
            cmd = [python, "-m", "torch.distributed.run", "--standalone"]
            cmd += [f"--nproc_per_node={nproc}", "-m", "trainer", "--config", config]
        else:
            cmd = [python, "-u", "-m", "trainer", "--config", config]
        if self.cfg.get("resume"):
            cmd.append("--resume")
        return cmd

    def start_trainer(self) -> None:
        env = dict(os.environ)
        for name in cloud.secret_env_names(self.cfg):  # the trainer never sees them
            env.pop(name, None)
        env.update({k: str(v) for k, v in (self.cfg.get("env") or {}).items()})
        code_dir = self.cfg.get("code_dir") or str(Path(__file__).resolve().parent.parent)
        paths = [code_dir]
        if self.cfg.get("workdir"):
            paths.append(str(self.cfg["workdir"]))
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        (self.dir / "STOP").unlink(missing_ok=True)
        cmd = self.trainer_command()
        self.log("starting trainer: " + shlex.join(cmd))
        out = open(self.dir / "trainer.out", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            cmd,
            cwd=code_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        out.close()
        self.save(
            state="running",
            trainer_pid=self.proc.pid,
            trainer_started_at=now(),
            exit_code=None,
            ended_at=None,
            reason="",
            command=cmd,
        )

    def signal_trainer(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def graceful_stop(self, reason: str) -> None:
        """STOP file + SIGTERM: the trainer finishes its step and writes last.pt."""
        if self.stop_reason:
            return
        self.stop_reason = reason
        self.log(f"stopping trainer: {reason}")
        self.save(state="stopping", reason=reason)
        (self.dir / "STOP").write_text(reason + "\n")
        self.signal_trainer(signal.SIGTERM)
        grace = float(self.cfg.get("grace_seconds", 90))
        deadline = now() + grace
        while self.proc is not None and self.proc.poll() is None and now() < deadline:
            time.sleep(0.2)
        if self.proc is not None and self.proc.poll() is None:
            self.log(f"trainer ignored SIGTERM for {grace:.0f}s, killing it")
            self.signal_trainer(signal.SIGKILL)

    # -- limits ------------------------------------------------------------------------

    def check_limits(self) -> str | None:
        elapsed = time.monotonic() - self.started_mono
        max_s = self.cfg.get("max_seconds")
        if max_s and elapsed >= float(max_s):
            return f"max hours reached ({float(max_s) / 3600:.2f} h)"
        budget_s = self.cfg.get("budget_seconds")
        if budget_s is not None and elapsed >= float(budget_s):  # 0 = nothing left: stop now
            return f"budget reached (time limit = budget / price = {float(budget_s):.0f} s)"
        return None

    def shutdown(self, reason: str) -> None:
        action = (self.cfg.get("shutdown") or {}).get("action", "none")
        command = (self.cfg.get("shutdown") or {}).get("command") or []
        self.save(shutdown={"action": action, "reason": reason, "at": now()})
        if action == "destroy" and self.destroy_self():
            return
        if action == "none" or not command:
            return
        self.log(f"shutdown ({action}): {reason}")
        try:
            subprocess.run(command, timeout=120, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            self.log(f"shutdown command failed: {exc}")

    def destroy_self(self) -> bool:
        """DigitalOcean opt-in: delete this droplet through the API (only that ends billing).

        The token comes from the variable named by token_env, set in this process's
        environment by gpuctl; it is never logged or written. False: use the command.
        """
        cfg = self.cfg.get("shutdown") or {}
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
            self.graceful_stop(SPOT_REASON)

    def note_checkpoint(self) -> None:
        """The trainer has written last.pt: say when (before 'exited', which gpuctl sees)."""
        spot = dict(self.status.get("spot") or {})
        try:
            spot["checkpoint_at"] = (self.dir / "last.pt").stat().st_mtime
        except OSError:
            spot["checkpoint_error"] = "no last.pt after the stop"
        self.status["spot"] = spot

    def push_checkpoint(self) -> None:
        """Copy last.pt to the bucket (presigned URL from the environment), if asked to."""
        spot = dict(self.status.get("spot") or {})
        url = cloud.env_value(cloud.CHECKPOINT_URL_ENV)
        if not url or "checkpoint_at" not in spot:
            return
        last = self.dir / "last.pt"
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
            state="starting",
            agent_pid=os.getpid(),
            started_at=self.started,
            limits={k: self.cfg.get(k) for k in ("max_seconds", "budget_seconds", "idle_seconds")},
            shutdown_action=(self.cfg.get("shutdown") or {}).get("action", "none"),
        )
        stop_requested = {"reason": ""}

        def on_term(signum: int, _frame: object) -> None:
            stop_requested["reason"] = f"agent got signal {signum}"

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            self.start_trainer()
        except OSError as exc:
            self.save(state="exited", exit_code=127, reason=f"cannot start trainer: {exc}")
            return 1
        poll = float(self.cfg.get("poll_seconds", 2.0))
        limit_reason: str | None = None
        while True:
            assert self.proc is not None
            code = self.proc.poll()
            if code is not None:
                break
            if stop_requested["reason"]:
                self.graceful_stop(stop_requested["reason"])
                continue
            if self.spot is not None and self.spot.due(now()):
                self.check_spot()
                continue
            limit_reason = self.check_limits()
            if limit_reason:
                self.graceful_stop(limit_reason)
                continue
            nap = min(poll, 0.5) if now() - self.started < 5 else poll
            time.sleep(min(nap, self.spot.poll_seconds) if self.spot is not None else nap)
        stop_file = self.dir / "STOP"
        if not self.stop_reason and stop_file.exists():
            self.stop_reason = stop_file.read_text().strip() or "stopped"
        if self.stop_reason == SPOT_REASON:
            self.note_checkpoint()
        self.save(state="exited", exit_code=code, ended_at=now(), reason=self.stop_reason or "")
        self.log(f"trainer exited with code {code}")
        if self.stop_reason == SPOT_REASON:
            self.push_checkpoint()
        if limit_reason:
            self.shutdown(limit_reason)
            return 0
        idle = self.cfg.get("idle_seconds")
        if idle and (self.cfg.get("shutdown") or {}).get("action", "none") != "none":
            self.idle_watch(float(idle))
        return 0

    def idle_watch(self, idle_seconds: float) -> None:
        """No trainer and no new run for idle_seconds: the machine is only burning money."""
        deadline = now() + idle_seconds
        while now() < deadline:
            time.sleep(min(5.0, idle_seconds))
            status = read_json(self.dir / STATUS)
            if (
                status.get("state") in ("starting", "running")
                and status.get("agent_pid") != os.getpid()
            ):
                return  # a resumed run took over this machine
        self.shutdown(f"idle for {idle_seconds / 60:.0f} min with no trainer")


# -- commands ------------------------------------------------------------------------------


def cmd_start(run_dir: Path) -> int:
    status = read_json(run_dir / STATUS)
    if status.get("state") in ("starting", "running", "stopping") and pid_alive(
        status.get("agent_pid")
    ):
        print(json.dumps({"error": "already running", "agent_pid": status.get("agent_pid")}))
        return 3
    log = open(run_dir / "agent.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "supervise", "--run-dir", str(run_dir)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    log.close()
    deadline = now() + 15
    while now() < deadline:
        status = read_json(run_dir / STATUS)
        if status.get("agent_pid") == proc.pid and status.get("trainer_pid"):
            break
        if status.get("agent_pid") == proc.pid and status.get("state") == "exited":
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
    (run_dir / "STOP").write_text(reason + "\n")
    pid = status.get("trainer_pid")
    agent_pid = status.get("agent_pid")
    if pid and pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = now() + timeout
    while now() < deadline and pid_alive(pid):
        time.sleep(0.1)
    killed = False
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
            killed = True
        except ProcessLookupError:
            pass
    while now() < deadline + 5 and pid_alive(agent_pid):
        status = read_json(run_dir / STATUS)
        if status.get("state") == "exited":
            break
        time.sleep(0.1)
    status = full_status(run_dir)
    status.setdefault("reason", reason)
    print(json.dumps({"stopped": True, "killed": killed, "status": status}))
    return 0


def full_status(run_dir: Path) -> dict[str, Any]:
    """The agent's status with the trainer's status.json inside; 'lost' if the agent died."""
    status = read_json(run_dir / STATUS)
    if status.get("state") in ("starting", "running", "stopping") and not pid_alive(
        status.get("agent_pid")
    ):
        status["state"] = "lost"
    status["trainer"] = read_json(run_dir / "status.json")
    status["trainer_alive"] = pid_alive(status.get("trainer_pid"))
    return status


def cmd_status(run_dir: Path) -> int:
    print(json.dumps(full_status(run_dir)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpuctl-agent")
    parser.add_argument("command", choices=["start", "supervise", "stop", "status"])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--reason", default="stopped by user")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        print(json.dumps({"error": f"run directory {run_dir} does not exist"}))
        return 2
    if args.command == "start":
        return cmd_start(run_dir)
    if args.command == "supervise":
        return Supervisor(run_dir).run()
    if args.command == "stop":
        return cmd_stop(run_dir, args.reason, args.timeout)
    return cmd_status(run_dir)


if __name__ == "__main__":
    sys.exit(main())
