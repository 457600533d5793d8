"""Helpers for the cost tests: a UTC calendar, config files, a store, instances."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuctl.models import Instance, InstanceState, Market, Run, RunStatus
from gpuctl.settings import Settings, load
from gpuctl.state import Store

# 2026-03-10 12:00:00 UTC: a Tuesday in the middle of a month.
T0 = 1773144000.0


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Days and months are local time; pin it so frozen clocks mean the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def settings_with(home: Path, toml: str = "") -> Settings:
    (home / "config.toml").write_text(toml)
    return load()


@pytest.fixture
def store(gpuctl_home: Path) -> Store:
    return Store(gpuctl_home / "state.db")


def inst(
    provider: str = "aws",
    iid: str = "i-1",
    *,
    price: float | None = 3.6,
    state: InstanceState = InstanceState.RUNNING,
    launched_at: float | None = T0,
    run_id: str | None = "r1",
    market: Market = Market.ON_DEMAND,
    disk_gb: float | None = None,
    itype: str = "g5.xlarge",
) -> Instance:
    return Instance(
        provider=provider,
        id=iid,
        name=iid,
        region="us-east-1",
        instance_type=itype,
        state=state,
        launched_at=launched_at,
        price_per_hour=price,
        market=market,
        run_id=run_id,
        managed=True,
        disk_gb=disk_gb,
    )


def run(
    run_id: str = "r1",
    *,
    preset: str = "fast",
    provider: str = "aws",
    status: RunStatus = RunStatus.RUNNING,
    budget: float | None = None,
    created: float = T0,
    train: dict | None = None,
    **spec: object,
) -> Run:
    return Run(
        id=run_id,
        preset=preset,
        provider=provider,
        status=status,
        created_at=created,
        updated_at=created,
        budget=budget,
        spec={
            "run_id": run_id,
            "preset": preset,
            "provider": provider,
            "train": train or {},
            **spec,
        },
    )
