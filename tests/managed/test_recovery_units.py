"""Recovery's decisions in-process: what the agent gets (settings in agent.json, secrets in
its environment only), which interruptions recover, and no relaunch past the budget."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gpuctl.errors import EXIT_BUDGET
from gpuctl.events import Failed
from gpuctl.lifecycle import Engine
from gpuctl.models import Instance, InstanceState, LaunchSpec, Market, PriceSegment, Run, RunStatus
from gpuctl.recovery import (
    CHECKPOINT_URL_ENV,
    DEFAULT_METADATA_URL,
    before_start,
    fetch_from_bucket,
    needs_recovery,
    recover,
    relaunch_spec,
)
from tests.do.util import AMD_TOKEN
from tests.events import drain


def _instance(provider: str, market: Market = Market.ON_DEMAND, **kw: Any) -> Instance:
    return Instance(
        provider, "i-1", "n", "us-east-1", "g5.xlarge", InstanceState.RUNNING, market=market, **kw
    )


def _engine(home: Path, profiles: str) -> Engine:
    (home / "config.toml").write_text(profiles)
    return Engine()


SCOPED = "dop_v1_scoped_to_droplet_delete"


@pytest.mark.parametrize("agent_token", [SCOPED, None, AMD_TOKEN])
def test_only_a_droplet_scoped_token_goes_to_the_agent(
    gpuctl_home: Path, monkeypatch: pytest.MonkeyPatch, agent_token: str | None
) -> None:
    engine = _engine(gpuctl_home, '[profiles.amd]\nendpoint = "http://127.0.0.1:9"\n')
    monkeypatch.setenv("AMD_DEVCLOUD_TOKEN", AMD_TOKEN)
    if agent_token:
        monkeypatch.setenv("AMD_DEVCLOUD_AGENT_TOKEN", agent_token)
    spec = LaunchSpec(run_id="r", preset="validate", provider="amd")
    inst = _instance("amd", price_per_hour=1.99)
    agent = {"shutdown": engine.provider("amd").agent_shutdown(inst)}
    cfg, env, notices = before_start(engine, spec, inst, agent)
    assert AMD_TOKEN not in repr(cfg) and AMD_TOKEN not in env.values()  # never full access
    if agent_token == SCOPED:
        assert env == {"AMD_DEVCLOUD_AGENT_TOKEN": SCOPED} and not notices
        assert cfg["shutdown"]["action"] == "destroy"
    else:
        assert env == {} and cfg["shutdown"]["action"] == "poweroff"
        (notice,) = notices
        assert notice.level == "warning" and "still bills it off ($1.990/h)" in notice.message
    assert "metadata_url" not in cfg  # DigitalOcean has no spot notice


def test_aws_spot_agent_watches_imds_and_gets_a_presigned_url(
    gpuctl_home: Path, aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine(gpuctl_home, f'[profiles.aws-t]\nprovider = "aws"\nendpoint_url = "{aws}"\n')
    import boto3

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="ckpt-b")
    spec = LaunchSpec(
        run_id="r", preset="validate", provider="aws-t", options={"checkpoint_bucket": "ckpt-b"}
    )
    cfg, env, _ = before_start(engine, spec, _instance("aws-t", Market.SPOT), {})
    assert cfg["metadata_url"] == DEFAULT_METADATA_URL and cfg["spot_poll_seconds"] == 5.0
    assert cfg["checkpoint_bucket"] == "ckpt-b" and "X-Amz-Signature" not in repr(cfg)
    assert "X-Amz-Signature=" in env[CHECKPOINT_URL_ENV]
    on_demand, _env, _ = before_start(engine, spec, _instance("aws-t"), {})
    assert "metadata_url" not in on_demand


def test_only_cloud_interruptions_recover() -> None:
    def run(status: RunStatus, reason: str) -> Run:
        return Run("r", "validate", "local", status, 0.0, 0.0, reason=reason)

    assert needs_recovery(run(RunStatus.INTERRUPTED, "spot interruption"), RunStatus.INTERRUPTED)
    gone = run(RunStatus.INTERRUPTED, "instance gone: i-1 (spot capacity reclaimed)")
    assert needs_recovery(gone, RunStatus.INTERRUPTED)
    assert needs_recovery(run(RunStatus.LOST, ""), RunStatus.LOST)
    for reason in ("stopped by user", "max hours reached (1.00 h)", "budget: run"):
        assert not needs_recovery(run(RunStatus.INTERRUPTED, reason), RunStatus.INTERRUPTED)
    assert not needs_recovery(run(RunStatus.FINISHED, ""), RunStatus.FINISHED)


def test_relaunch_prefers_the_same_offer_then_the_other_regions() -> None:
    spec = LaunchSpec(
        run_id="r", preset="p", provider="aws", spot=True, regions=("us-west-2", "us-east-1")
    )
    run = Run("r", "p", "aws", RunStatus.INTERRUPTED, 0.0, 0.0, spec=spec.to_dict())
    new = relaunch_spec(run, _instance("aws", Market.SPOT))
    assert (new.instance_type, new.region, new.regions) == (
        "g5.xlarge",
        "us-east-1",
        ("us-west-2",),
    )
    assert new.spot and new.instance_id is None


def test_no_relaunch_past_the_budget(gpuctl_home: Path) -> None:
    engine = Engine()
    now = time.time()
    spec = LaunchSpec(
        run_id="r-poor", preset="validate", provider="local", managed=True, budget=1.0
    )
    engine.store.add_run(
        Run(
            "r-poor", "validate", "local", RunStatus.INTERRUPTED, now, now,
            instance_id="local-r-poor", spec=spec.to_dict(), budget=1.0,
            reason="instance gone: local-r-poor (spot capacity reclaimed)",
        )
    )  # fmt: skip
    engine.store.open_segment(
        PriceSegment(
            "local", "local-r-poor", "r-poor", "local", "local", "spot", 3.0, now - 3600, now - 1800
        )
    )  # fmt: skip  ($1.50 spent of $1.00)
    events, offset = drain(recover(engine, "r-poor"))
    assert offset is None
    failed = [e for e in events if isinstance(e, Failed)]
    assert failed and failed[-1].exit_code == EXIT_BUDGET and "used up" in failed[-1].error
    run = engine.store.get_run("r-poor")
    assert run.status == RunStatus.BUDGET and run.instance_id == "local-r-poor"
    assert not (gpuctl_home / "local" / "runs" / "r-poor").exists()  # nothing launched


def test_resume_by_hand_without_any_checkpoint_launches_nothing(gpuctl_home: Path) -> None:
    engine = Engine()
    now = time.time()
    spec = LaunchSpec(run_id="r-empty", preset="validate", provider="local")
    engine.store.add_run(
        Run("r-empty", "validate", "local", RunStatus.STOPPED, now, now,
            instance_id="local-r-empty", spec=spec.to_dict(), reason="stopped by user")
    )  # fmt: skip
    events, offset = drain(recover(engine, "r-empty", manual=True))
    assert offset is None
    assert isinstance(events[-1], Failed) and "no checkpoint" in events[-1].error
    assert engine.store.get_run("r-empty").status == RunStatus.STOPPED
    assert not (gpuctl_home / "local" / "runs" / "r-empty").exists()


def test_the_bucket_copy_is_fetched_when_newer_than_what_gpuctl_holds(
    gpuctl_home: Path, aws: str
) -> None:
    import io
    import zipfile

    import boto3

    engine = _engine(gpuctl_home, f'[profiles.aws-t]\nprovider = "aws"\nendpoint_url = "{aws}"\n')
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as zf:
        zf.writestr("data.pkl", "weights" * 100)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="ckpt-b")
    s3.put_object(Bucket="ckpt-b", Key="gpuctl/r-b/last.pt", Body=blob.getvalue())
    spec = LaunchSpec(
        run_id="r-b", preset="validate", provider="aws-t", options={"checkpoint_bucket": "ckpt-b"}
    )
    run = Run("r-b", "validate", "aws-t", RunStatus.INTERRUPTED, 0.0, 0.0, spec=spec.to_dict())
    target = gpuctl_home / "results" / "r-b" / "last.pt"
    assert fetch_from_bucket(engine, run, target) == target
    assert target.read_bytes() == blob.getvalue()
    assert fetch_from_bucket(engine, run, target) is None  # the same checkpoint: not again
