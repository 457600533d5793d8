"""End to end: a detached managed spot run that only `gpuctl supervise` watches.

moto + the real test sshd + the IMDS emulator, as in test_interruption_e2e.py: the run is
launched with `gpuctl launch --spot` (which exits), nobody follows it, and a spot notice
comes mid-run. The supervisor alone must recover it onto a new instance and finish it.
Killed with -9 mid-recovery (right after it launched the new instance) and started again,
it must adopt that instance: no second relaunch, and nothing left billing in moto.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from gpuctl.state import Store
from tests.aws.helpers import boto
from tests.cli import gpuctl, json_lines
from tests.fakes.imds import FakeImds
from tests.fixtures.sshd import SshdServer

from .conftest import Stream, aws_profile, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.sshd]

EPOCHS = 6
SUPERVISE = ["supervise", "--json", "--interval", "0.5"]


@pytest.mark.parametrize("kill", [False, True], ids=["recovers", "killed-mid-recovery"])
def test_only_the_supervisor_recovers_a_detached_spot_run_once(
    kill: bool,
    aws: str,
    spot_prices: Any,
    gpuctl_home: Path,
    sshd: SshdServer,
    imds: FakeImds,
    tmp_path: Path,
) -> None:
    spot_prices[("us-east-1", "g4dn.xlarge", "us-east-1a")] = 0.21
    aws_profile(
        gpuctl_home,
        aws,
        sshd.port,
        sshd,
        metadata_url=imds.url,
        spot_poll_seconds=0.2,
        spot_grace_seconds=120,
        recovery_poll_seconds=0.2,
    )
    remote = tmp_path / "remote"
    env = {"GPUCTL_REMOTE_BASE": str(remote), "GPUCTL_REMOTE_PYTHON": sys.executable}
    argv = ["launch", "validate", "--provider", "aws-test", "--spot", "--json"]
    argv += ["--set", f"epochs={EPOCHS}", "--set", "train_samples=512", "--set", "val_samples=64"]
    launched = gpuctl(*argv, "--idle-minutes", "0", env=env, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    events = json_lines(launched.stdout)
    run_id = events[-1]["run_id"]
    first = next(e["instance_id"] for e in events if e["event"] == "instance_up")

    sup = Stream(SUPERVISE, env)
    try:
        wait_for(lambda: sup.first("epoch"), 240, "an epoch, seen by the supervisor")
        imds.notice()
        saved = wait_for(lambda: sup.first("recovering", step="checkpoint"), 120, "checkpoint")
        assert "saved at" in saved["detail"], saved
        imds.clear()  # the next instance gets no notice
        boto("us-east-1").terminate_instances(InstanceIds=[first])  # and its disk goes
        shutil.rmtree(remote / "runs" / run_id)
        if kill:
            wait_for(lambda: sup.first("instance_up"), 120, "the new instance")
            sup.proc.kill()  # kill -9: no clean-up at all
            sup.wait(timeout=30)
            sup = Stream(SUPERVISE, env)
        done = wait_for(lambda: sup.first("finished"), 400, "the run's end")
        sup.proc.send_signal(signal.SIGTERM)  # a clean stop
        rc, stderr = sup.wait(timeout=60)
    finally:
        if sup.proc.poll() is None:
            sup.proc.kill()
    assert rc == 0, stderr[-3000:] + json.dumps(sup.events[-5:])
    assert done["status"] == "finished", done
    history = json.loads((Path(done["results_dir"]) / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))

    # Exactly one relaunch, and nothing left billing: every instance of the run terminated.
    found = boto("us-east-1").describe_instances(
        Filters=[{"Name": "tag:gpuctl:run", "Values": [run_id]}]
    )
    instances = [i for r in found["Reservations"] for i in r["Instances"]]
    assert len(instances) == 2, [i["InstanceId"] for i in instances]
    assert {i["State"]["Name"] for i in instances} == {"terminated"}
    with Store(gpuctl_home / "state.db") as store:
        run = store.get_run(run_id)
        assert run.status.value == "finished" and run.attempt == 2
        compute = [s for s in store.segments(run_id=run_id) if s.kind == "compute"]
        assert {s.instance_id for s in compute} == {i["InstanceId"] for i in instances}
        assert all(s.end is not None for s in compute)
        kinds = [e["kind"] for e in store.events(run_id)]
        assert kinds.count("recovered") == 1
        owners = [e for e in store.events(run_id, kinds=["owner"])]
        assert owners[-1]["what"] in ("supervise", "watch")  # the supervisor drove it
        acts = [e["action"] for e in store.events(run_id, kinds=["supervisor"])]
        assert acts[0] == "following" and acts[-1] == "left"
        if kill:  # the restarted one took up the cut recovery and kept its new machine
            assert "recovering" in acts and "adopted" in acts, acts
