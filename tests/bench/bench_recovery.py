"""Benchmark: a spot interruption end to end, against the emulators (moto, sshd, IMDS).

`gpuctl run validate --spot` runs on a moto instance whose "machine" is a real sshd on
127.0.0.1; its agent reads the IMDS emulator. After epoch 2 the notice is switched on;
once gpuctl holds the checkpoint, the instance is terminated in moto and its run dir
deleted (the lost disk). Printed per round and as medians:

- notice -> checkpoint on disk   (agent poll + trainer finishing its step + last.pt written)
- notice -> checkpoint at gpuctl (the follower saw the stop and pulled last.pt)
- instance loss -> training resumed (provider poll, relaunch, boot/SSH, sync, restore,
  agent start, trainer loads last.pt: the "resumed from" line on the new machine)

Production poll intervals by default (spot notice 5 s, provider 5 s); the notice gives
about 120 s, so the first number must stay far below that.

    .venv/bin/python tests/bench/bench_recovery.py [--rounds 1] [--spot-poll 5] [--poll 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

NOTICE_WINDOW_S = 120.0
EPOCHS = 15
RUN_END_S = 900.0  # the resumed run's last epochs, on a loaded 2-core box


def start_moto() -> str:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


def seed_moto(url: str) -> None:
    """Reset, a Deep Learning AMI, and a spot price for g4dn.xlarge (server side)."""
    from moto.core.responses import ActionResult
    from moto.ec2.responses.spot_instances import SpotInstances

    from tests.aws.conftest import NEWEST_UBUNTU, register_ami

    req = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(req, timeout=10).read()
    register_ami("us-east-1", NEWEST_UBUNTU, created=dt.datetime(2025, 1, 7, tzinfo=dt.UTC))

    def history(self: Any) -> Any:
        return ActionResult(
            {
                "SpotPriceHistory": [
                    {
                        "InstanceType": "g4dn.xlarge",
                        "ProductDescription": "Linux/UNIX",
                        "SpotPrice": "0.210000",
                        "AvailabilityZone": "us-east-1a",
                        "Timestamp": dt.datetime.now(dt.UTC),
                    }
                ]
            }
        )

    SpotInstances.describe_spot_price_history = history  # type: ignore[method-assign]


def wait(predicate: Any, timeout: float, what: str, explain: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}" + (f"\n{explain()}" if explain else ""))


def _state_of(run_dir: Path, run: Any) -> str:
    """What the machine and gpuctl showed when a wait ran out (so a failure says why)."""
    parts = []
    for name in ("agent_status.json", "status.json"):
        try:
            parts.append(f"{name}: {(run_dir / name).read_text()[:1500]}")
        except OSError as exc:
            parts.append(f"{name}: {exc}")
    for name in ("agent.log", "train.log"):
        try:
            parts.append(
                f"{name} tail: " + "".join((run_dir / name).read_text().splitlines(True)[-15:])
            )
        except OSError as exc:
            parts.append(f"{name}: {exc}")
    parts.append("events: " + ", ".join(str(e.get("event")) for e in run.events[-30:]))
    return "\n".join(parts)


def one_round(
    work: Path, moto: str, sshd: Any, imds: Any, spot_poll: float, poll: float
) -> dict[str, float]:
    import boto3

    from tests.managed.conftest import Stream, aws_profile

    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ["GPUCTL_HOME"] = str(home)
    remote = work / "remote"
    aws_profile(
        home,
        moto,
        sshd.port,
        sshd,
        metadata_url=imds.url,
        spot_poll_seconds=spot_poll,
        recovery_poll_seconds=poll,
        spot_grace_seconds=150,
    )
    imds.clear()
    argv = ["run", "validate", "--provider", "aws-test", "--spot", "--json", "--idle-minutes"]
    # Long enough that the notice always lands mid-training (a CPU epoch takes about 1 s);
    # the epochs left after the resume are what the recovery has to finish.
    argv += ["0", "--set", f"epochs={EPOCHS}", "--set", "train_samples=512"]
    argv += ["--set", "val_samples=64"]
    run = Stream(argv, {"GPUCTL_REMOTE_BASE": str(remote)})
    try:
        up = wait(lambda: run.first("instance_up"), 300, "the instance")
        run_dir = remote / "runs" / up["run_id"]

        def training_epoch() -> int:
            """The epoch the trainer is in, read on the machine (gpuctl's events lag)."""
            try:
                status = json.loads((run_dir / "status.json").read_text())
            except (OSError, ValueError):
                return 0
            return (
                int(status.get("epoch") or 0)
                if status.get("phase") in ("warmup", "training")
                else 0
            )

        wait(lambda: training_epoch() >= 2, 300, "epoch 2", lambda: _state_of(run_dir, run))
        noticed = time.time()
        imds.notice()

        def spot() -> dict[str, Any]:
            try:
                status = json.loads((run_dir / "agent_status.json").read_text())
            except (OSError, ValueError):
                return {}
            return dict(status.get("spot") or {})

        on_disk = wait(
            lambda: spot().get("checkpoint_at"),
            120,
            "checkpoint on disk",
            lambda: _state_of(run_dir, run),
        )
        seen = spot().get("noticed_at", noticed)
        wait(
            lambda: run.first("recovering", step="checkpoint"),
            120,
            "checkpoint at gpuctl",
            lambda: _state_of(run_dir, run),
        )
        held = time.time()
        imds.clear()
        lost = time.time()
        boto3.client("ec2", region_name="us-east-1").terminate_instances(
            InstanceIds=[up["instance_id"]]
        )
        shutil.rmtree(run_dir)
        log = run_dir / "train.log"
        wait(lambda: log.exists() and "resumed from" in log.read_text(), 300, "resumed")
        resumed = time.time()
        recovered = wait(lambda: run.first("recovered"), 60, "recovered event")
        try:
            rc, stderr = run.wait(timeout=RUN_END_S)
        except subprocess.TimeoutExpired:
            raise SystemExit(
                f"the run had not ended {RUN_END_S:.0f} s after it resumed\n"
                + _state_of(run_dir, run)
            ) from None
        if rc != 0 or run.events[-1].get("status") != "finished":
            raise SystemExit(f"the run did not finish (rc {rc}): {stderr[-2000:]}")
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    return {
        "notice seen by the agent": seen - noticed,
        "notice -> checkpoint on disk": on_disk - noticed,
        "notice -> checkpoint at gpuctl": held - noticed,
        "instance loss -> training resumed": resumed - lost,
        "gpuctl: interruption seen -> resumed": float(recovered["seconds"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--spot-poll", type=float, default=5.0, help="agent's notice poll (s)")
    parser.add_argument("--poll", type=float, default=5.0, help="gpuctl's provider poll (s)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gpuctl-bench-recovery-"))
    os.environ.update(
        MOTO_EC2_LOAD_DEFAULT_AMIS="false",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE=str(work / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(work / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        GPUCTL_REMOTE_PYTHON=sys.executable,
        GPUCTL_SSH_CONFIG="/dev/null",
    )
    os.environ.pop("AWS_PROFILE", None)
    from tests.fakes.imds import FakeImds
    from tests.fixtures.sshd import running_sshd

    moto = start_moto()
    os.environ["AWS_ENDPOINT_URL"] = moto
    results: list[dict[str, float]] = []
    try:
        with running_sshd(work / "sshd") as sshd, FakeImds() as imds:
            for n in range(args.rounds):
                seed_moto(moto)
                result = one_round(work, moto, sshd, imds, args.spot_poll, args.poll)
                results.append(result)
                print(f"round {n + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nmedians over {len(results)} round(s); spot notice poll {args.spot_poll:g}s, "
        f"provider poll {args.poll:g}s, CPU trainer, moto + loopback sshd"
    )
    for key in results[0]:
        value = statistics.median(r[key] for r in results)
        print(f"  {key:36s} {value:7.2f} s")
    budget = statistics.median(r["notice -> checkpoint on disk"] for r in results)
    print(
        f"  checkpoint used {budget / NOTICE_WINDOW_S:.1%} of the ~{NOTICE_WINDOW_S:.0f} s "
        "notice window"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
