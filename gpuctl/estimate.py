"""How long a run will take and what it will cost, before launch and while it runs.

Before launch: a per-GPU-class throughput table for the bundled model (rough: a small
CNN's speed depends on much more than the GPU), scaled by the preset's image size, width
and depth, then corrected by the user's own past runs on the same machine type, which
quickly outweigh the table. During a run: the ETA comes from real epoch times, the slow
first (warm-up) epoch excluded.

Pure functions take explicit inputs; `estimate_spec` is the one that reads the store and
asks the provider for the offer's price (the CLI's launch, the TUI's launch modal).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .format import money, price_origin, rate, rough_duration
from .models import LaunchSpec, Offer, Run
from .state import Store
from .trainer.protocol import HISTORY_FILE

# The bundled model at the reference shape: 64 px images, width 32, depth 3 (`fast`).
REFERENCE = {"image_size": 64, "width": 32, "depth": 3}

# Training samples/s at the reference shape, mixed precision where the GPU has it, one
# GPU. CPU is per vCPU. Rough figures: relative speeds of these GPUs on small convnets,
# anchored on an H100; your own runs replace them (see `estimate`).
THROUGHPUT: dict[str, float] = {
    "CPU": 40.0,
    "T4": 2500.0,
    "A10G": 5000.0,
    "L4": 4000.0,
    "V100": 6000.0,
    "A100": 12000.0,
    "H100": 20000.0,
    "MI300X": 16000.0,
}
GPU_CLASSES = tuple(THROUGHPUT)

# Extra seconds the first epoch takes (kernel compilation, autotuning, loader start).
# ROCm's first epoch is reported at 15-30 min on MI300X against 1-2 min later.
WARMUP_SECONDS: dict[str, float] = {"CPU": 3.0, "MI300X": 900.0}
WARMUP_GPU = 60.0
COMPILE_SECONDS = 120.0  # torch.compile adds this to the first epoch
STEP_OVERHEAD = {"CPU": 0.01, "GPU": 0.004}  # python + launch cost per optimizer step
EPOCH_OVERHEAD = 1.0  # validation loader start, checkpoint write
VAL_COST = 1.0 / 3.0  # a validation sample is a forward pass only
AUTO_BATCH = 256  # what batch_size = "auto" usually lands on, for step counts
DDP_EFFICIENCY = 0.9

SETUP_DEFAULT = 300.0  # a driver that does not say its setup_seconds

# A project's own command: only its past runs tell its pace (no table knows a user's script).
MODE_HISTORY = "mode-history"
NO_BASIS = "none"

# How much one past run weighs against the table: w = n / (n + PRIOR_RUNS).
PRIOR_RUNS = 0.5

_NAME_CLASSES = (
    ("MI300", "MI300X"),
    ("MI325", "MI300X"),
    ("H200", "H100"),
    ("H100", "H100"),
    ("A100", "A100"),
    ("A10G", "A10G"),
    ("A10", "A10G"),
    ("L40", "A100"),
    ("6000 ADA", "A100"),
    ("V100", "V100"),
    ("T4", "T4"),
)


def gpu_class(
    gpu_name: str = "",
    instance_type: str = "",
    gpu_count: int | None = None,
    hints: Sequence[tuple[str, str]] = (),
) -> str:
    """Map a GPU name ("NVIDIA A10G", "Tesla T4", "MI300X") to a table class; with no
    name, the driver's `hints` (instance-type prefix -> GPU name) name it from the type."""
    if gpu_count == 0:
        return "CPU"
    name = gpu_name.upper().replace("-", " ")
    if not name.strip():
        itype = instance_type.lower()
        name = next((g.upper() for prefix, g in hints if itype.startswith(prefix)), "")
        if not name:
            return "CPU"
    for needle, cls in _NAME_CLASSES:
        if needle in name:
            return cls
    if any(tok == "L4" for tok in name.split()):
        return "L4"
    return "A10G"  # an unknown GPU: the middle of the table


def setup_seconds_of(kind: str) -> float:
    """The driver's own prior for launch-to-first-step seconds."""
    from gpuctl.providers.base import provider_class

    try:
        return float(provider_class(kind).setup_seconds)
    except (ConfigError, AttributeError):
        return SETUP_DEFAULT


def _num(train: Mapping[str, Any], key: str, default: float) -> float:
    value = train.get(key, default)
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


def sample_work(train: Mapping[str, Any]) -> float:
    """Compute per training sample relative to the reference shape.

    Each of the CNN's stages halves the image and doubles the channels, so every stage
    costs about width² x image_size²: the work scales with image_size², width² and depth.
    """
    size = _num(train, "image_size", 32) / REFERENCE["image_size"]
    width = _num(train, "width", 16) / REFERENCE["width"]
    depth = _num(train, "depth", 2) / REFERENCE["depth"]
    return size * size * width * width * depth


def epoch_work(train: Mapping[str, Any]) -> float:
    """Reference-samples' worth of compute in one epoch (training plus validation)."""
    samples = _num(train, "train_samples", 512) + _num(train, "val_samples", 128) * VAL_COST
    return samples * sample_work(train)


def table_epoch_seconds(
    train: Mapping[str, Any], cls: str, *, gpu_count: int = 1, vcpus: int = 0
) -> float:
    """Seconds for one steady epoch from the throughput table."""
    if cls == "CPU":
        rate = THROUGHPUT["CPU"] * max(1, vcpus or 4)
    else:
        n = max(1, gpu_count)
        rate = THROUGHPUT.get(cls, THROUGHPUT["A10G"]) * n * (DDP_EFFICIENCY if n > 1 else 1.0)
    batch = train.get("batch_size")
    batch = batch if isinstance(batch, int) and batch > 0 else AUTO_BATCH
    steps = math.ceil(_num(train, "train_samples", 512) / batch)
    overhead = STEP_OVERHEAD["CPU" if cls == "CPU" else "GPU"] * steps + EPOCH_OVERHEAD
    return epoch_work(train) / rate + overhead


def table_warmup_seconds(train: Mapping[str, Any], cls: str) -> float:
    extra = WARMUP_SECONDS.get(cls, WARMUP_GPU)
    if train.get("compile") and cls != "CPU":
        extra += COMPILE_SECONDS
    return extra


# -- history --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PastRun:
    """What one earlier run measured: real epoch seconds (warm-up apart) and setup time."""

    run_id: str
    preset: str
    machine: str  # profile:instance_type
    work: float  # epoch_work of its config
    steady: tuple[float, ...]  # seconds of epochs after warm-up
    warmup_extra: float | None  # first epoch minus a steady one
    setup: float | None  # launch -> trainer started

    @property
    def rate(self) -> float:
        """Seconds per reference sample of work on that machine."""
        return statistics.median(self.steady) / self.work


def machine_key(provider: str, instance_type: str | None, host: str | None = None) -> str:
    key = f"{provider}:{instance_type or '?'}"
    return f"{key}@{host}" if host and instance_type in ("ssh", None) else key


def run_machine(store: Store, run: Run) -> str:
    """The machine a run used: the type frozen in its ledger, else what it asked for."""
    itype = None
    for seg in store.segments(run_id=run.id):
        if seg.kind == "compute":
            itype = seg.instance_type
            break
    itype = itype or run.spec.get("instance_type")
    return machine_key(run.provider, itype, run.spec.get("host"))


def epoch_times(store: Store, run: Run) -> list[tuple[int, float, bool]]:
    """(epoch, seconds, warm-up?) from the run's recorded epochs, else its history.json."""
    out = []
    for ev in store.events(run.id, kinds=["epoch"]):
        seconds = ev.get("epoch_seconds")
        if isinstance(seconds, int | float) and seconds > 0:
            out.append((int(ev.get("epoch", 0)), float(seconds), bool(ev.get("warmup"))))
    if out or not run.results_dir:
        return out
    try:
        rows = json.loads((Path(run.results_dir) / HISTORY_FILE).read_text())
    except (OSError, ValueError):
        return []
    for i, row in enumerate(rows if isinstance(rows, list) else []):
        seconds = row.get("epoch_seconds") if isinstance(row, dict) else None
        if isinstance(seconds, int | float) and seconds > 0:
            out.append((int(row.get("epoch", i + 1)), float(seconds), i == 0))
    return out


def _setup_seconds(store: Store, run: Run) -> float | None:
    launch = started = None
    for ev in store.events(run.id, kinds=["launch", "started"]):
        if ev["kind"] == "launch" and launch is None:
            launch = ev["time"]
        elif ev["kind"] == "started" and started is None:
            started = ev["time"]
    if launch is None or started is None or started < launch:
        return None
    return started - launch


def past_runs(
    store: Store, *, machine: str | None = None, preset: str | None = None, limit: int = 200
) -> list[PastRun]:
    """Earlier runs with at least one real (post-warm-up) epoch, newest first."""
    out = []
    for run in store.list_runs(limit=limit):
        if preset is not None and run.preset != preset:
            continue
        key = run_machine(store, run)
        if machine is not None and key != machine:
            continue
        times = epoch_times(store, run)
        steady = tuple(s for _, s, warm in times if not warm)
        if not steady:
            continue
        work = epoch_work(run.spec.get("train") or {})
        if work <= 0:
            continue
        warm = [s for _, s, w in times if w]
        extra = max(0.0, warm[0] - statistics.median(steady)) if warm else None
        out.append(
            PastRun(run.id, run.preset, key, work, steady, extra, _setup_seconds(store, run))
        )
    return out


# -- the estimate ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Expected hours and dollars of one run on one offer; rough, and says why."""

    hours: float
    cost: float | None
    price_per_hour: float | None
    gpu_class: str
    instance_type: str
    epochs: int
    epoch_seconds: float  # one steady epoch
    warmup_seconds: float  # extra time of the first epoch
    setup_seconds: float  # launch until the trainer runs
    basis: str  # "table" | "history" | MODE_HISTORY | NO_BASIS
    runs_used: int = 0
    max_hours: float | None = None
    minimum_seconds: float = 0.0  # the provider's minimum charge per start
    # Where the price came from and when it was read (see Offer.price_origin).
    price_source: str = ""
    priced_at: float | None = None

    @property
    def capped(self) -> bool:
        """The run would hit its max-hours limit (the agent stops it there)."""
        return bool(self.max_hours and self.hours > self.max_hours)

    @property
    def max_cost(self) -> float | None:
        """What the run costs at most: its max hours at its price (None if either is unknown)."""
        if not self.max_hours or self.price_per_hour is None:
            return None
        return self.max_hours * self.price_per_hour

    def seconds_for(self, budget: float) -> float | None:
        """How long `budget` dollars keep this machine running (None: price unknown or 0)."""
        if not self.price_per_hour:
            return None
        return budget / self.price_per_hour * 3600.0

    @property
    def minimum_note(self) -> str:
        """'60 s minimum' when the cost is the provider's minimum charge, not the run time."""
        if self.cost is None or self.minimum_seconds <= 0:
            return ""
        if self.hours * 3600.0 >= self.minimum_seconds:
            return ""
        return f"{rough_duration(self.minimum_seconds)} minimum"

    def text(self) -> str:
        where = self.instance_type or self.gpu_class
        price = "" if self.price_per_hour is None else f", {rate(self.price_per_hour)}"
        if price and self.price_source:
            price += f": {price_origin(self.price_source, self.priced_at, time.time())}"
        cost = "price unknown" if self.cost is None else f"~{money(self.cost)}"
        if self.minimum_note:
            cost += f" ({self.minimum_note})"
        if self.basis == NO_BASIS:
            limit = f"it stops at its {self.max_hours:g} h limit" if self.max_hours else "no limit"
            most = f", at most {money(self.max_cost)}" if self.max_cost is not None else ""
            return (
                f"no estimate yet: this mode has not run on {where} before ({limit}{most}); "
                "its first run teaches gpuctl its pace"
            )
        runs = f"{self.runs_used} past run{'s' if self.runs_used != 1 else ''}"
        source = {
            "history": f"from {runs} on this machine",
            MODE_HISTORY: f"from {runs} of this mode",
        }.get(self.basis, "from gpuctl's throughput table, no past run here yet")
        cap = f"; stops at its {self.max_hours:g} h limit" if self.capped else ""
        return (
            f"rough estimate: ~{rough_duration(self.hours * 3600)}, {cost} on {where} "
            f"({self.gpu_class}{price}), {source}{cap}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "capped": self.capped, "minimum_note": self.minimum_note}


def _blend(table: float, observed: Sequence[float]) -> float:
    """Geometric blend: each past run pulls the table value toward what really happened."""
    if not observed:
        return table
    n = len(observed)
    weight = n / (n + PRIOR_RUNS)
    seen = statistics.median(observed)
    if table <= 0 or seen <= 0:
        return seen
    return math.exp(weight * math.log(seen) + (1 - weight) * math.log(table))


def billed_cost(
    hours: float,
    price_per_hour: float | None,
    max_hours: float | None,
    minimum_seconds: float,
    storage_per_hour: float,
) -> float | None:
    """What `hours` of a machine bills: capped at max hours, at least the provider's
    minimum charge, compute and disk; None when the price is unknown."""
    if price_per_hour is None:
        return None
    billed = min(hours, max_hours) if max_hours else hours
    billed = max(billed, minimum_seconds / 3600.0)
    return billed * (price_per_hour + storage_per_hour)


def estimate(
    train: Mapping[str, Any],
    *,
    gpu: str = "CPU",
    gpu_count: int = 1,
    vcpus: int = 0,
    instance_type: str = "",
    provider_kind: str = "local",
    price_per_hour: float | None = None,
    minimum_seconds: float = 0.0,
    storage_per_hour: float = 0.0,
    max_hours: float | None = None,
    history: Iterable[PastRun] = (),
) -> Estimate:
    """Hours and dollars for `train` (a resolved trainer config) on one machine.

    With `history` (past runs on the same machine type), measured seconds per unit of
    work replace the table's, more with every run; setup and warm-up likewise.
    """
    past = list(history)
    epochs = int(_num(train, "epochs", 1))
    work = epoch_work(train)
    table_epoch = table_epoch_seconds(train, gpu, gpu_count=gpu_count, vcpus=vcpus)
    epoch_s = _blend(table_epoch / work, [p.rate for p in past]) * work if work > 0 else 0.0
    warm = _blend(
        table_warmup_seconds(train, gpu), [p.warmup_extra for p in past if p.warmup_extra]
    )
    setup_obs = [p.setup for p in past if p.setup is not None]
    setup = _blend(setup_seconds_of(provider_kind), setup_obs)
    seconds = setup + warm + epochs * epoch_s
    hours = seconds / 3600.0
    cost = billed_cost(hours, price_per_hour, max_hours, minimum_seconds, storage_per_hour)
    return Estimate(
        hours=hours,
        cost=cost,
        price_per_hour=price_per_hour,
        gpu_class=gpu,
        instance_type=instance_type,
        epochs=epochs,
        epoch_seconds=epoch_s,
        warmup_seconds=warm,
        setup_seconds=setup,
        basis="history" if past else "table",
        runs_used=len(past),
        max_hours=max_hours,
        minimum_seconds=minimum_seconds if price_per_hour else 0.0,
    )


def pick_offer(offers: Sequence[Offer], instance_type: str | None) -> Offer | None:
    """The offer a launch would get: the named type, else the cheapest available one."""
    if instance_type:
        return next((o for o in offers if o.instance_type == instance_type), None)
    usable = [o for o in offers if o.available and o.price_per_hour is not None]
    return min(usable, key=lambda o: o.price_per_hour or 0.0) if usable else None


def _default_type(provider: Any) -> str | None:
    """The type a provider launches when none is named (profile, else its default_type)."""
    named = provider.profile.get("instance_type")
    if named:
        return str(named)
    return str(provider.default_type) if provider.default_type else None


def offer_for(provider: Any, spec: LaunchSpec) -> Offer | None:
    """The offer (type, GPU, price) a spec will run on, from the provider's own listing."""
    offers = provider.offers(region=spec.region)
    return pick_offer(offers, spec.instance_type or _default_type(provider))


def estimate_spec(
    store: Store,
    settings: Any,
    spec: LaunchSpec,
    provider: Any,
    *,
    offer: Offer | None = None,
) -> Estimate:
    """The estimate the launch confirmation shows (CLI `launch`/`run`, the TUI modal).

    Asks the provider for offers unless `offer` is given; a provider that cannot answer
    gives an estimate in hours with no price. Never raises for a missing price.
    """
    from . import cost

    if offer is None and spec.instance_id:  # an existing machine: its own type and price
        known = store.get_instance(spec.provider, spec.instance_id)
        if known is not None:
            offer = Offer(
                provider=known.provider,
                instance_type=known.instance_type,
                gpu_name=known.gpu_name,
                gpu_count=known.gpu_count,
                gpu_memory_gb=0.0,
                vcpus=0,
                memory_gb=0.0,
                price_per_hour=known.price_per_hour,
                region=known.region,
            )
    if offer is None:
        try:
            offer = offer_for(provider, spec)
        except Exception:  # no credentials or network yet: hours only
            offer = None
    kind = provider.kind
    billing = cost.billing_of_kind(kind)
    price = None
    itype = spec.instance_type or ""
    gpu, count, vcpus = "CPU", 1, 0
    if offer is not None:
        itype = offer.instance_type
        gpu = gpu_class(offer.gpu_name, offer.instance_type, offer.gpu_count, provider.gpu_hints)
        count, vcpus = max(1, offer.gpu_count), offer.vcpus
        price = offer.price_per_hour
        if spec.spot and offer.spot_price_per_hour is not None:
            price = offer.spot_price_per_hour
    elif itype:
        gpu = gpu_class("", itype, None, provider.gpu_hints)
    source, priced_at = "", None
    if offer is not None and price is not None:
        spot = spec.spot and offer.spot_price_per_hour is not None
        source = "spot live API" if spot else offer.price_source
        priced_at = offer.spot_priced_at if spot else offer.priced_at
    found = _estimate_spec(store, spec, provider, kind, billing, itype, gpu, count, vcpus, price)
    return dataclasses.replace(found, price_source=source, priced_at=priced_at)


def _estimate_spec(
    store: Store,
    spec: LaunchSpec,
    provider: Any,
    kind: str,
    billing: Any,
    itype: str,
    gpu: str,
    count: int,
    vcpus: int,
    price: float | None,
) -> Estimate:
    from . import cost

    if spec.job:
        return command_estimate(
            store,
            spec,
            machine=machine_key(spec.provider, itype or None, spec.host),
            gpu=gpu,
            instance_type=itype,
            price_per_hour=price,
            minimum_seconds=billing.minimum_seconds,
            storage_per_hour=cost.storage_rate(billing, spec.disk_gb) or 0.0,
        )
    history = past_runs(
        store, machine=machine_key(spec.provider, itype or None, spec.host), preset=spec.preset
    )
    if not history:  # other presets on this machine still tell its speed
        history = past_runs(store, machine=machine_key(spec.provider, itype or None, spec.host))
    return estimate(
        spec.train,
        gpu=gpu,
        gpu_count=count,
        vcpus=vcpus,
        instance_type=itype,
        provider_kind=kind,
        price_per_hour=price,
        minimum_seconds=billing.minimum_seconds,
        storage_per_hour=cost.storage_rate(billing, spec.disk_gb) or 0.0,
        max_hours=spec.max_hours,
        history=history[:10],
    )


def command_estimate(
    store: Store,
    spec: LaunchSpec,
    *,
    machine: str,
    gpu: str,
    instance_type: str,
    price_per_hour: float | None,
    minimum_seconds: float,
    storage_per_hour: float,
) -> Estimate:
    """A project mode's estimate from its own past runs (same project and mode; the same
    machine first). None of them yet: no estimate, only what the run's limit allows."""
    project = spec.job.get("project")
    same = [
        run
        for run in store.list_runs(limit=200)
        if run.preset == spec.preset
        and run.id != spec.run_id
        and (run.spec.get("job") or {}).get("project") == project
        and (run.spec.get("job") or {}).get("command")
    ]
    here = [run for run in same if run_machine(store, run) == machine]
    measured: list[tuple[Run, list[tuple[int, float, bool]]]] = []
    for run in here or same:
        times = epoch_times(store, run)
        if any(not warm for _, _, warm in times):
            measured.append((run, times))
    epochs = int(spec.job.get("epochs") or 0) or next(
        (run.epochs for run, _ in measured if run.epochs), 0
    )
    if not measured or not epochs:
        return Estimate(
            hours=float(spec.max_hours or 0.0),
            cost=None,
            price_per_hour=price_per_hour,
            gpu_class=gpu,
            instance_type=instance_type,
            epochs=epochs,
            epoch_seconds=0.0,
            warmup_seconds=0.0,
            setup_seconds=0.0,
            basis=NO_BASIS,
            max_hours=spec.max_hours,
        )
    measured = measured[:10]
    steady = [statistics.median([s for _, s, w in t if not w]) for _, t in measured]
    epoch_s = statistics.median(steady)
    extras = [
        max(0.0, warm[0] - med)
        for (_, t), med in zip(measured, steady, strict=True)
        if (warm := [s for _, s, w in t if w])
    ]
    warm_s = statistics.median(extras) if extras else 0.0
    setups = [s for run, _ in measured if (s := _setup_seconds(store, run)) is not None]
    setup = statistics.median(setups) if setups else SETUP_DEFAULT
    hours = (setup + warm_s + epochs * epoch_s) / 3600.0
    cost_value = billed_cost(
        hours, price_per_hour, spec.max_hours, minimum_seconds, storage_per_hour
    )
    return Estimate(
        hours=hours,
        cost=cost_value,
        price_per_hour=price_per_hour,
        gpu_class=gpu,
        instance_type=instance_type,
        epochs=epochs,
        epoch_seconds=epoch_s,
        warmup_seconds=warm_s,
        setup_seconds=setup,
        basis=MODE_HISTORY,
        runs_used=len(measured),
        max_hours=spec.max_hours,
        minimum_seconds=minimum_seconds if price_per_hour else 0.0,
    )


# -- during a run ------------------------------------------------------------------------------


def eta_seconds(times: Sequence[tuple[int, float, bool]], epochs: int) -> float | None:
    """Seconds left from real epoch times (warm-up epochs excluded, recent ones weigh)."""
    done = max((e for e, _, _ in times), default=0)
    if epochs and done >= epochs:
        return 0.0
    steady = [s for _, s, warm in times if not warm]
    if not steady or not epochs:
        return None
    recent = steady[-5:]
    return sum(recent) / len(recent) * (epochs - done)
