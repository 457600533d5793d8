"""Estimates: the throughput table, scaling, and getting better with the user's own runs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gpuctl import cost, estimate
from gpuctl.lifecycle import Engine
from gpuctl.models import CostLine, LaunchSpec, RunStatus
from gpuctl.presets.loader import load as load_preset
from gpuctl.state import Store
from tests.cost.conftest import T0, inst, run, settings_with

FAST = dict(load_preset("fast").train)


@pytest.mark.parametrize(
    ("name", "itype", "count", "expected"),
    [
        ("NVIDIA A10G", "g5.xlarge", 1, "A10G"),
        ("Tesla T4", "", 1, "T4"),
        ("", "g4dn.xlarge", None, "T4"),
        ("", "p3.2xlarge", None, "V100"),
        ("AMD Instinct MI300X", "gpu-mi300x1-192gb", 1, "MI300X"),
        ("NVIDIA A100-SXM4-80GB", "", 8, "A100"),
        ("NVIDIA H100 80GB HBM3", "", 1, "H100"),
        ("NVIDIA L4", "g6.xlarge", 1, "L4"),
        ("", "local", 0, "CPU"),
        ("", "", None, "CPU"),
    ],
)
def test_gpu_names_map_to_table_classes(
    name: str, itype: str, count: int | None, expected: str
) -> None:
    from gpuctl.providers.aws import AwsProvider
    from gpuctl.providers.digitalocean import DigitalOceanProvider

    hints = AwsProvider.gpu_hints + DigitalOceanProvider.gpu_hints  # each driver's own
    assert estimate.gpu_class(name, itype, count, hints) == expected


def test_table_scales_with_gpu_image_size_and_width() -> None:
    t4 = estimate.estimate(FAST, gpu="T4", provider_kind="aws")
    h100 = estimate.estimate(FAST, gpu="H100", provider_kind="aws")
    assert h100.epoch_seconds < t4.epoch_seconds
    bigger = estimate.estimate({**FAST, "image_size": 128}, gpu="T4", provider_kind="aws")
    wider = estimate.estimate({**FAST, "width": 64}, gpu="T4", provider_kind="aws")
    # Four times the pixels or twice the width: about four times the compute per epoch.
    assert 3.0 < bigger.epoch_seconds / t4.epoch_seconds <= 4.0
    assert 3.0 < wider.epoch_seconds / t4.epoch_seconds <= 4.0
    assert t4.basis == "table" and "rough estimate" in t4.text()


def test_cost_is_hours_at_the_price_capped_and_floored() -> None:
    est = estimate.estimate(FAST, gpu="A10G", provider_kind="aws", price_per_hour=1.006)
    assert est.cost == pytest.approx(est.hours * 1.006)
    # The agent stops the run at max hours: it cannot cost more than that.
    capped = estimate.estimate(
        {**FAST, "epochs": 5000}, gpu="T4", price_per_hour=0.526, max_hours=3.0
    )
    assert capped.capped and capped.cost == pytest.approx(3.0 * 0.526)
    assert "stops at its 3 h limit" in capped.text()
    # A droplet bills five minutes however short the run.
    tiny = estimate.estimate(
        {"epochs": 1, "train_samples": 10, "val_samples": 1},
        gpu="MI300X",
        provider_kind="local",
        price_per_hour=1.99,
        minimum_seconds=300,
    )
    assert tiny.cost is not None and tiny.cost >= 1.99 * 300 / 3600


def add_past_run(
    store: Store,
    run_id: str,
    epoch_seconds: list[float],
    *,
    setup: float = 60.0,
    machine: tuple[str, str] = ("aws", "g5.xlarge"),
    preset: str = "fast",
    train: dict | None = None,
) -> None:
    """A finished run as the lifecycle records it: ledger, launch/started, epochs."""
    provider, itype = machine
    store.add_run(
        run(
            run_id, preset=preset, provider=provider, status=RunStatus.FINISHED, train=train or FAST
        )
    )
    cost.open_compute(store, inst(provider, f"i-{run_id}", run_id=run_id, itype=itype), run_id)
    rows = [(run_id, T0, "launch", {}), (run_id, T0 + setup, "started", {})]
    for i, seconds in enumerate(epoch_seconds, start=1):
        ev = {"epoch": i, "epoch_seconds": seconds, "warmup": i == 1}
        rows.append((run_id, T0 + setup + i, "epoch", ev))
    db = sqlite3.connect(store.path)  # events with the times they really had
    db.executemany(
        "INSERT INTO events (run_id, time, kind, data) VALUES (?, ?, ?, ?)",
        [(r, t, k, json.dumps(d)) for r, t, k, d in rows],
    )
    db.commit()
    db.close()


def test_estimates_improve_with_history(store: Store) -> None:
    """This machine is slower than the table thinks (epochs 3x, a long boot and warm-up):
    each past run closes the gap."""
    table = estimate.estimate(FAST, gpu="A10G", provider_kind="aws")
    steady = table.epoch_seconds * 3
    truth = 900.0 + 400.0 + FAST["epochs"] * steady  # setup + warm-up extra + epochs
    errors = [abs(table.hours * 3600 - truth)]
    for n in range(1, 4):
        # Epoch 1 is the warm-up (much slower) and must not count as a steady epoch.
        add_past_run(store, f"r{n}", [steady + 400.0] + [steady] * 9, setup=900.0)
        past = estimate.past_runs(store, machine="aws:g5.xlarge", preset="fast")
        assert len(past) == n
        est = estimate.estimate(FAST, gpu="A10G", provider_kind="aws", history=past)
        assert est.basis == "history" and est.runs_used == n
        errors.append(abs(est.hours * 3600 - truth))
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 0.25 * errors[0]


def test_warmup_epochs_do_not_count_as_steady(store: Store) -> None:
    add_past_run(store, "r1", [900.0, 10.0, 10.0, 10.0])
    (past,) = estimate.past_runs(store)
    assert past.steady == (10.0, 10.0, 10.0) and past.warmup_extra == pytest.approx(890.0)
    assert past.setup == pytest.approx(60.0)


def test_history_from_another_shape_is_rescaled(store: Store) -> None:
    small = {**FAST, "image_size": 32}  # a quarter of the work per sample
    add_past_run(store, "r1", [50.0, 5.0, 5.0, 5.0], train=small)
    add_past_run(store, "r2", [50.0, 5.0, 5.0, 5.0], train=small)
    past = estimate.past_runs(store)
    est = estimate.estimate(FAST, gpu="A10G", provider_kind="aws", history=past)
    table = estimate.estimate(FAST, gpu="A10G", provider_kind="aws")
    # Measured 5 s at a quarter of the work = ~20 s at this shape, pulled from the table.
    assert abs(est.epoch_seconds - 20.0) < abs(table.epoch_seconds - 20.0)


def test_results_history_json_is_used_when_no_epochs_were_recorded(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "history.json").write_text(
        json.dumps([{"epoch": 1, "epoch_seconds": 99.0}, {"epoch": 2, "epoch_seconds": 9.0}])
    )
    store.add_run(run("r1", status=RunStatus.FINISHED, train=FAST))
    store.update_run("r1", results_dir=str(tmp_path))
    times = estimate.epoch_times(store, store.get_run("r1"))
    assert times == [(1, 99.0, True), (2, 9.0, False)]


def test_eta_excludes_the_warmup_epoch() -> None:
    times = [(1, 600.0, True), (2, 10.0, False), (3, 12.0, False)]
    assert estimate.eta_seconds(times, 10) == pytest.approx(11.0 * 7)
    assert estimate.eta_seconds(times[:1], 10) is None  # only the warm-up so far
    assert estimate.eta_seconds(times, 3) == 0.0


def test_projected_total_is_spent_plus_burn_over_the_eta(store: Store) -> None:
    r = run("r1").evolve(eta_seconds=1800.0)
    line = CostLine("run", "r1", burn_per_hour=2.0, spent=3.0)
    assert cost.projected_total(r, line, T0) == pytest.approx(4.0)
    assert cost.projected_total(r.evolve(eta_seconds=None), line, T0) is None
    done = r.evolve(status=RunStatus.FINISHED)
    assert cost.projected_total(done, line, T0) == 3.0


def test_estimate_for_a_local_spec_uses_the_profile_price(gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, "[profiles.local]\nprice_per_hour = 36.0\n")
    eng = Engine(settings)
    spec = eng.resolve("validate")
    est = eng.estimate(spec)
    assert est is not None and est.gpu_class == "CPU" and est.price_per_hour == 36.0
    assert est.cost == pytest.approx(est.hours * 36.0)
    assert est.basis == "table"
    add_past_run(eng.store, "old", [5.0, 1.0, 1.0], machine=("local", "local"), preset="validate")
    again = eng.estimate(eng.resolve("validate"))
    assert again is not None and again.basis == "history" and again.runs_used == 1


def test_estimate_without_a_price_still_gives_hours(gpuctl_home: Path) -> None:
    from gpuctl.providers.aws import AwsProvider

    class NoOffers:
        kind = "aws"
        gpu_hints = AwsProvider.gpu_hints

        def offers(self, **_kw: object) -> list:
            raise RuntimeError("no credentials")

    settings = settings_with(gpuctl_home)
    spec = LaunchSpec("r9", "fast", "aws", train=FAST, instance_type="g4dn.xlarge")
    est = estimate.estimate_spec(Store(gpuctl_home / "state.db"), settings, spec, NoOffers())
    assert est.cost is None and est.gpu_class == "T4" and est.hours > 0
    assert "price unknown" in est.text()


def test_estimate_on_an_existing_instance_uses_its_type_and_price(gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    store = Store(gpuctl_home / "state.db")
    store.put_instance(inst(price=1.006).evolve(gpu_name="NVIDIA A10G", gpu_count=1))
    spec = LaunchSpec("r9", "fast", "aws", train=FAST, instance_id="i-1")

    class Unreachable:
        kind = "aws"
        gpu_hints = ()

        def offers(self, **_kw: object) -> list:
            raise AssertionError("an existing machine needs no offer lookup")

    est = estimate.estimate_spec(store, settings, spec, Unreachable())
    assert est.gpu_class == "A10G" and est.price_per_hour == 1.006
    assert est.instance_type == "g5.xlarge"
