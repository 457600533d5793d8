"""AWS EC2 driver: GPU offers with live spot prices, guarded launches, parallel listing.

Credentials, regions and endpoints come from boto3's own chain (profiles, env, SSO,
instance roles, AWS_ENDPOINT_URL), so emulators such as moto are plain configuration.
Every SDK failure is mapped once (aws_errors.map_error); per-region prerequisites live
in aws_setup and prices in aws_catalog. boto3 is imported only when a client is made.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import difflib
import functools
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from gpuctl import provision
from gpuctl.bootguard import boot_guard_script
from gpuctl.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    GpuctlError,
    ProviderError,
    QuotaError,
)
from gpuctl.events import Event, Notice, Provisioning
from gpuctl.format import rate
from gpuctl.models import (
    BilledPrice,
    Instance,
    InstanceState,
    LaunchSpec,
    Market,
    Offer,
    SshTarget,
)
from gpuctl.ownership import TAG as TAG_INSTALLATION
from gpuctl.provision import (
    PRICE,
    QUOTA,
    REGION,
    UNKNOWN_TYPE,
    Ambiguous,
    Failure,
    Look,
    Pacing,
    Placement,
    Unplaced,
)

from . import aws_setup
from .aws_catalog import (
    PRICING_REGION,
    GpuFacts,
    Price,
    catalog_facts,
    known_types,
    on_demand_price,
    parse_price_list,
    pricing_filters,
)
from .aws_errors import (
    aws_errors,
    classify,
    credential_chain_hint,
    error_code,
    map_error,
    quota_hint,
    quota_name,
)
from .base import FLAGS, SHUTDOWN_POWEROFF, Billing, Capability, Listing

if TYPE_CHECKING:
    from gpuctl.host import Host
    from gpuctl.settings import Profile, Settings
    from gpuctl.state import Store

T = TypeVar("T")
log = logging.getLogger(__name__)
# Where an API call goes: (region, AWS profile); None = the gpuctl profile's own aws_profile.
Target = tuple[str, str | None]

# EC2 state name -> gpuctl state, the one place this mapping lives.
STATE_MAP: dict[str, InstanceState] = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "stopping": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPED,
    "shutting-down": InstanceState.STOPPING,
    "terminated": InstanceState.TERMINATED,
}
LIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")

TAG_RUN = "gpuctl:run"
TAG_PRESET = "gpuctl:preset"
TAG_MANAGED = "gpuctl:managed"
TAG_SSH_USER = "gpuctl:ssh-user"
TAG_PRICE = "gpuctl:price"  # $/h frozen at launch (spot: the market price then)
TAG_KEY = "gpuctl:key"
TAG_DISK = "gpuctl:disk-gb"

DEFAULT_REGIONS = ("us-east-1",)
DEFAULT_TYPE = "g4dn.xlarge"  # cheapest NVIDIA type the PyTorch DLAMI supports (T4, 16 GB)
GPU_TYPE_PATTERNS = ["g*", "p*", "dl*"]  # every EC2 family with GpuInfo starts so
TYPES_MAX_AGE = 24 * 3600.0
SPOT_MAX_AGE = 300.0  # spot prices move; "cached briefly"
LAUNCH_SPOT_MAX_AGE = 60.0
SPOT_HISTORY_DAYS = 90  # how far back AWS keeps spot price history
PRICING_MAX_AGE = 7 * 24 * 3600.0
PRICING_RETRY_AFTER = 24 * 3600.0


@dataclass
class _Plan:
    """What one region needs for a launch, prepared once and reused across markets."""

    region: str
    facts: GpuFacts
    image: aws_setup.Image
    key_name: str
    security_group: str
    subnets: dict[str, str]
    zones: list[str]
    on_demand: Price | None
    spot: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Zone:
    """A placement's data: where RunInstances goes, its arguments and the spot price cap."""

    region: str
    zone: str
    aws_profile: str | None
    params: dict[str, Any]
    max_price: float | None
    current_spot: float | None  # spot: the zone's price now (None: unknown, or on-demand)


class AwsProvider:
    """Provider for EC2 (and any EC2-compatible emulator reached by endpoint)."""

    kind: ClassVar[str] = "aws"
    billing: ClassVar[Billing] = Billing(
        per_second=True, minimum_seconds=60, billed_when_stopped=False, storage_gb_month=0.08
    )
    launch_flags: ClassVar[frozenset[str]] = frozenset(FLAGS) - {"host", "identity"}
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.SPOT_PRICE_HISTORY,
            Capability.SPOT_NOTICE,
            Capability.CHECKPOINT_STORAGE,
            Capability.BOOT_GUARD,
            Capability.BILLED_PRICE,
        }
    )
    default_type: ClassVar[str | None] = DEFAULT_TYPE
    setup_seconds: ClassVar[float] = 420.0
    gpu_hints: ClassVar[tuple[tuple[str, str], ...]] = (
        ("p5", "H100"),
        ("p4", "A100"),
        ("p3", "V100"),
        ("g6", "L4"),
        ("g5", "A10G"),
        ("g4dn", "T4"),
    )

    def __init__(self, profile: Profile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.name = profile.name
        self._lock = threading.RLock()
        self._sessions: dict[str | None, Any] = {}
        self._clients: dict[tuple[str, str, str | None], Any] = {}
        self._store_obj: Store | None = None
        self._where: dict[str, Target] = {}  # instance id -> (region, AWS profile)
        self.poll_seconds = float(profile.value("poll_seconds"))
        self.launch_timeout = float(profile.value("launch_timeout"))
        self.terminate_timeout = float(profile.value("terminate_timeout"))
        self.max_attempts = int(profile.value("max_attempts"))
        self.last_errors: tuple[tuple[str, str], ...] = ()  # regions offers() skipped

    # -- SDK plumbing -----------------------------------------------------------------

    def _aws_profile(self, override: str | None = None) -> str | None:
        return override or self.profile.get("aws_profile") or None

    def _session(self, aws_profile: str | None = None) -> Any:
        """One boto3 Session per AWS profile; its events reach every client made from it."""
        name = self._aws_profile(aws_profile)
        with self._lock:
            session = self._sessions.get(name)
            if session is None:
                import boto3
                import botocore.session

                core = botocore.session.get_session()
                core.register_component("data_loader", _shared_loader())
                with aws_errors(aws_profile=name):
                    session = boto3.Session(botocore_session=core, profile_name=name)
                self._sessions[name] = session
            return session

    def _client(self, service: str, region: str, aws_profile: str | None = None) -> Any:
        """A cached client; creation is serialised because Sessions are not thread-safe."""
        name = self._aws_profile(aws_profile)
        key = (service, region, name)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                from botocore.config import Config

                # Pricing is optional (the catalog stands in): never wait long for it.
                attempts = min(2, self.max_attempts) if service == "pricing" else self.max_attempts
                config = Config(
                    retries={"mode": "standard", "max_attempts": attempts},
                    connect_timeout=5,
                    read_timeout=30,
                    user_agent_extra="gpuctl",
                )
                kwargs: dict[str, Any] = {"region_name": region, "config": config}
                if self.profile.get("endpoint_url"):
                    kwargs["endpoint_url"] = self.profile.get("endpoint_url")
                with aws_errors(region=region, aws_profile=name):
                    client = self._session(name).client(service, **kwargs)
                self._clients[key] = client
            return client

    def _ec2(self, region: str, aws_profile: str | None = None) -> Any:
        return self._client("ec2", region, aws_profile)

    def s3(self, region: str | None = None) -> Any:
        """An S3 client on this profile's credentials (the --checkpoint-bucket of spot runs);
        SigV4, which presigned URLs need in every region."""
        from botocore.config import Config

        kwargs: dict[str, Any] = {
            "region_name": region or self._profile_regions()[0],
            "config": Config(signature_version="s3v4", retries={"mode": "standard"}),
        }
        if self.profile.get("endpoint_url"):
            kwargs["endpoint_url"] = self.profile.get("endpoint_url")
        with self._lock, aws_errors(region=kwargs["region_name"]):
            return self._session(None).client("s3", **kwargs)

    @property
    def emulated(self) -> bool:
        """True when an endpoint override points the SDK somewhere other than AWS."""
        return bool(
            self.profile.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL")
            or os.environ.get("AWS_ENDPOINT_URL_EC2")
        )

    def _store(self) -> Store:
        with self._lock:
            if self._store_obj is None:
                from gpuctl.state import Store

                self._store_obj = Store(self.settings.state_path)
            return self._store_obj

    def _cache_get(self, key: str, max_age: float | None = None) -> Any:
        """Caches only save calls: a broken state store must never break a command."""
        try:
            return self._store().cache_get(f"aws:{self.name}:{key}", max_age)
        except (GpuctlError, OSError, ValueError):
            return None

    def _cache_put(self, key: str, value: Any) -> None:
        try:
            self._store().cache_put(f"aws:{self.name}:{key}", value)
        except (GpuctlError, OSError, ValueError):
            pass

    def _ctx(self, region: str | None = None, **extra: Any) -> dict[str, Any]:
        """Context for map_error: where, and which credentials were in use."""
        return {
            "region": region,
            "aws_profile": self._aws_profile(extra.pop("aws_profile", None)),
            "endpoint": self.profile.get("endpoint_url"),
            **extra,
        }

    # -- regions ------------------------------------------------------------------------

    def _profile_regions(self) -> list[str]:
        raw = self.profile.value("regions") or list(DEFAULT_REGIONS)
        if isinstance(raw, str):
            raw = raw.split(",")
        return _dedupe(str(r).strip() for r in raw if str(r).strip())

    def _own(self, aws_profile: str | None) -> str | None:
        """None when `aws_profile` is the gpuctl profile's own (the usual case)."""
        return None if not aws_profile or aws_profile == self._aws_profile() else aws_profile

    def _list_targets(self) -> list[Target]:
        """Configured regions, plus every (region, AWS profile) gpuctl has launched in.

        A fallback into an unlisted region, or a launch with --aws-profile, must never
        leave an instance that `gpuctl ls` cannot see while it bills.
        """
        targets: list[Target] = [(r, None) for r in self._profile_regions()]
        for region, aws_profile in self._cache_get("used-targets") or []:
            targets.append((str(region), self._own(aws_profile)))
        return list(dict.fromkeys(targets))

    def _record_use(self, target: Target) -> None:
        used = [tuple(t) for t in self._cache_get("used-targets") or []]
        if target not in used:
            self._cache_put("used-targets", [*used, list(target)])

    def _remember(self, instance_id: str, target: Target) -> None:
        if self._where.get(instance_id) != target:
            self._where[instance_id] = target
            self._cache_put(f"where:{instance_id}", list(target))

    def _target_of(self, instance: Instance) -> Target:
        """The instance's region and the AWS profile that can see it."""
        known = self._where.get(instance.id) or self._cache_get(f"where:{instance.id}")
        if known and known[0] == instance.region:
            return (instance.region, self._own(known[1]))
        return (instance.region, None)

    def _label(self, target: Target) -> str:
        region, aws_profile = target
        return f"{region} (AWS profile {aws_profile})" if aws_profile else region

    def _known_regions(self) -> set[str]:
        session = self._session()
        known: set[str] = set()
        for partition in session.get_available_partitions():
            known.update(session.get_available_regions("ec2", partition_name=partition))
        return known

    def _check_region(self, region: str) -> None:
        known = self._known_regions()
        if region not in known:
            close = difflib.get_close_matches(region, sorted(known), n=1)
            raise ConfigError(
                f"unknown AWS region '{region}'",
                hint=(f"did you mean '{close[0]}'? " if close else "")
                + "(a region newer than this boto3 needs `pip install -U boto3`)",
            )

    def _fan_out(
        self, targets: list[Target], work: Callable[[Target], T]
    ) -> tuple[dict[Target, T], list[tuple[Target, GpuctlError]]]:
        """Run `work` per target in parallel; failures come back beside the results."""
        results: dict[Target, T] = {}
        errors: list[tuple[Target, GpuctlError]] = []

        def one(target: Target) -> T:
            self._check_region(target[0])
            with aws_errors(**self._ctx(target[0], aws_profile=target[1])):
                return work(target)

        if not targets:
            return results, errors
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=min(16, len(targets)), thread_name_prefix="gpuctl-aws"
        ) as pool:
            futures = {pool.submit(one, t): t for t in targets}
            for future in concurrent.futures.as_completed(futures):
                target = futures[future]
                try:
                    results[target] = future.result()
                except Exception as exc:  # every failure becomes a gpuctl error
                    ctx = self._ctx(target[0], aws_profile=target[1])
                    errors.append((target, map_error(exc, **ctx)))
        order = {t: i for i, t in enumerate(targets)}
        errors.sort(key=lambda e: order[e[0]])
        return results, errors

    # -- check --------------------------------------------------------------------------

    def check(self) -> None:
        """Fail fast with a fixable message: unknown region, no or expired credentials."""
        regions = self._profile_regions()
        for region in regions:
            self._check_region(region)
        session = self._session()
        with aws_errors(**self._ctx(regions[0], action="checking credentials")):
            credentials = session.get_credentials()
            if credentials is None:
                raise CredentialsError(
                    "no AWS credentials found",
                    hint=credential_chain_hint(self._aws_profile()),
                )
            credentials.get_frozen_credentials()
            self._client("sts", regions[0]).get_caller_identity()

    # -- offers -------------------------------------------------------------------------

    def offers(self, *, gpu: str | None = None, region: str | None = None) -> list[Offer]:
        """GPU types with on-demand and spot $/h per region, cheapest first."""
        targets: list[Target] = [
            (r, None) for r in ([region] if region else self._profile_regions())
        ]
        results, errors = self._fan_out(targets, lambda t: self._region_offers(t[0]))
        self.last_errors = tuple((t[0], e.one_line()) for t, e in errors)
        if errors and not results:
            raise errors[0][1]
        offers = [o for t in targets for o in results.get(t, [])]
        if gpu:
            offers = [o for o in offers if _gpu_matches(gpu, o)]
        return sorted(offers, key=_offer_order)

    def _region_offers(self, region: str) -> list[Offer]:
        types = self._gpu_types(region)
        spot_types = [t.instance_type for t in types if t.spot_supported]
        spot, spot_at = self._spot_quotes(region, spot_types) if spot_types else ({}, None)
        fetched = self._fetched_prices(region)
        offers = []
        for facts in types:
            price = on_demand_price(region, facts.instance_type, fetched)
            zones = spot.get(facts.instance_type, {})
            zone = min(zones, key=lambda z: (zones[z], z)) if zones else None
            notes = [f"on-demand: {price.source}" if price else "on-demand price unknown"]
            if zone:
                notes.append(f"spot: cheapest in {zone}")
            offers.append(
                Offer(
                    provider=self.name,
                    instance_type=facts.instance_type,
                    gpu_name=facts.gpu_name,
                    gpu_count=facts.gpu_count,
                    gpu_memory_gb=facts.gpu_memory_gb,
                    vcpus=facts.vcpus,
                    memory_gb=facts.memory_gb,
                    price_per_hour=price.per_hour if price else None,
                    region=region,
                    spot_price_per_hour=zones[zone] if zone else None,
                    spot_zone=zone,
                    regions=(region,),
                    note="; ".join(notes),
                    price_source=price.source if price else "",
                    priced_at=price.at if price else None,
                    spot_priced_at=spot_at if zone else None,
                )
            )
        return offers

    def _gpu_types(self, region: str) -> list[GpuFacts]:
        """Every type describe_instance_types reports with GpuInfo here (cached a day)."""
        cached = self._cache_get(f"types:{region}", TYPES_MAX_AGE)
        if cached:
            return [GpuFacts.from_dict(d) for d in cached]
        ec2 = self._ec2(region)
        found = []
        paginator = ec2.get_paginator("describe_instance_types")
        pages = paginator.paginate(Filters=[{"Name": "instance-type", "Values": GPU_TYPE_PATTERNS}])
        for page in pages:
            for item in page.get("InstanceTypes", []):
                if item.get("GpuInfo", {}).get("Gpus"):
                    found.append(GpuFacts.from_api(item))
        found.sort(key=lambda f: f.instance_type)
        self._cache_put(f"types:{region}", [f.to_dict() for f in found])
        return found

    def _type_facts(self, region: str, instance_type: str) -> GpuFacts:
        """Facts for one type; raises ClientError(InvalidInstanceType) if not sold here."""
        for facts in self._gpu_types_cached(region):
            if facts.instance_type == instance_type:
                return facts
        response = self._ec2(region).describe_instance_types(InstanceTypes=[instance_type])
        items = response.get("InstanceTypes", [])
        if not items:
            raise ConfigError(
                f"unknown instance type '{instance_type}'", hint=_type_hint(instance_type)
            )
        return GpuFacts.from_api(items[0])

    def _gpu_types_cached(self, region: str) -> list[GpuFacts]:
        cached = self._cache_get(f"types:{region}", TYPES_MAX_AGE) or []
        return [GpuFacts.from_dict(d) for d in cached]

    def _spot_prices(
        self, region: str, types: list[str], max_age: float = SPOT_MAX_AGE
    ) -> dict[str, dict[str, float]]:
        """type -> {zone: current Linux spot $/h}, latest record per zone (cached briefly)."""
        return self._spot_quotes(region, types, max_age)[0]

    def _spot_quotes(
        self, region: str, types: list[str], max_age: float = SPOT_MAX_AGE
    ) -> tuple[dict[str, dict[str, float]], float]:
        """The spot prices and when they were asked of the API (a cached answer's time)."""
        wanted = sorted(set(types))
        digest = hashlib.sha256(",".join(wanted).encode()).hexdigest()[:12]
        key = f"spot:{region}:{digest}"
        cached = self._cache_get(key, max_age)
        if isinstance(cached, dict) and isinstance(cached.get("prices"), dict):
            at = float(cached.get("fetched_at") or time.time())
            return {t: dict(z) for t, z in cached["prices"].items()}, at
        ec2 = self._ec2(region)
        latest: dict[tuple[str, str], tuple[dt.datetime, float]] = {}
        paginator = ec2.get_paginator("describe_spot_price_history")
        pages = paginator.paginate(
            InstanceTypes=wanted,
            ProductDescriptions=["Linux/UNIX"],
            StartTime=dt.datetime.now(dt.UTC),
        )
        for page in pages:
            for record in page.get("SpotPriceHistory", []):
                if not str(record.get("ProductDescription", "")).startswith("Linux/UNIX"):
                    continue
                itype, zone = record.get("InstanceType"), record.get("AvailabilityZone")
                if itype not in wanted or not zone:
                    continue
                stamp = record.get("Timestamp") or dt.datetime.min.replace(tzinfo=dt.UTC)
                try:
                    price = float(record["SpotPrice"])
                except (KeyError, ValueError):
                    continue
                seen = latest.get((itype, zone))
                if seen is None or stamp > seen[0]:
                    latest[(itype, zone)] = (stamp, price)
        out: dict[str, dict[str, float]] = {}
        for (itype, zone), (_, price) in sorted(latest.items()):
            out.setdefault(itype, {})[zone] = price
        asked = time.time()
        self._cache_put(key, {"fetched_at": asked, "prices": out})
        return out, asked

    def spot_price_history(self, instance: Instance, since: float) -> list[tuple[float, float]]:
        """(unix time, $/h) changes of the Linux spot price of the instance's type in its
        zone since `since`, oldest first, with the change in effect at `since` first.

        The meter asks on every refresh, for every running spot instance: one answer per
        type and zone is reused for `spot_history_seconds` (5 min) while it reaches back
        far enough, so a listing costs no API call most of the time.
        """
        zone = instance.zone
        if instance.market != Market.SPOT or not zone or not instance.instance_type:
            return []
        now = time.time()
        since = max(float(since), now - SPOT_HISTORY_DAYS * 86400.0)
        region, aws_profile = self._target_of(instance)
        key = f"spot-history:{region}:{aws_profile or ''}:{instance.instance_type}:{zone}"
        max_age = float(self.profile.value("spot_history_seconds"))
        cached = self._cache_get(key, max_age)
        if cached is not None and float(cached.get("since", now)) <= since:
            if cached.get("error"):
                raise ProviderError(str(cached["error"]))
            points = [(float(t), float(p)) for t, p in cached.get("points", [])]
            return _in_effect_since(points, since)
        try:
            points = self._fetch_spot_history(
                region, aws_profile, instance.instance_type, zone, since
            )
        except GpuctlError as exc:  # remembered too: a denied call must not slow every listing
            self._cache_put(key, {"since": since, "points": [], "error": exc.one_line()})
            raise
        self._cache_put(key, {"since": since, "points": points})
        return _in_effect_since(points, since)

    def billed_price(self, instance: Instance, max_age: float | None = 0.0) -> BilledPrice | None:
        """What the instance really got (type, lifecycle, zone, as EC2 describes it now) and
        its price: a spot instance's is its zone's spot price now, asked afresh unless an
        answer at most `max_age` seconds old is at hand; on-demand, the on-demand rate."""
        region, aws_profile = self._target_of(instance)
        ctx = self._ctx(region, aws_profile=aws_profile, action=f"reading back {instance.id}")
        with aws_errors(**ctx):
            response = self._ec2(region, aws_profile).describe_instances(InstanceIds=[instance.id])
        items = [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]
        if not items:
            return None
        item = items[0]
        itype = str(item.get("InstanceType") or instance.instance_type)
        zone = item.get("Placement", {}).get("AvailabilityZone") or instance.zone
        spot = item.get("InstanceLifecycle") == "spot"
        now = time.time()
        if not spot:
            known = on_demand_price(region, itype, self._cache_get(f"pricing:{region}"))
            if known is None:
                return None
            return BilledPrice(
                itype,
                Market.ON_DEMAND.value,
                zone,
                known.per_hour,
                f"on-demand, {known.source}",
                now,
            )
        if not zone:
            return None
        key = f"billed:{region}:{aws_profile or ''}:{itype}:{zone}"
        if max_age is None:
            max_age = float(self.profile.value("spot_history_seconds"))
        cached = self._cache_get(key, max_age) if max_age > 0 else None
        if isinstance(cached, dict) and cached.get("price") is not None:
            price, asked = float(cached["price"]), float(cached.get("at") or now)
        else:
            points = self._fetch_spot_history(region, aws_profile, itype, zone, now - 1.0)
            if not points:
                return None
            price, asked = points[-1][1], now
            self._cache_put(key, {"price": price, "at": asked})
        return BilledPrice(
            itype, Market.SPOT.value, zone, price, f"spot price history of {zone}", asked
        )

    def _fetch_spot_history(
        self, region: str, aws_profile: str | None, itype: str, zone: str, since: float
    ) -> list[tuple[float, float]]:
        """DescribeSpotPriceHistory for one type and zone, Linux/UNIX, since `since`."""
        ctx = self._ctx(region, aws_profile=aws_profile, action="reading spot price history")
        points: dict[float, float] = {}
        with aws_errors(**ctx):
            paginator = self._ec2(region, aws_profile).get_paginator("describe_spot_price_history")
            pages = paginator.paginate(
                InstanceTypes=[itype],
                AvailabilityZone=zone,
                ProductDescriptions=["Linux/UNIX"],
                StartTime=dt.datetime.fromtimestamp(since, dt.UTC),
            )
            for page in pages:
                for record in page.get("SpotPriceHistory", []):
                    if not str(record.get("ProductDescription", "")).startswith("Linux/UNIX"):
                        continue
                    if record.get("InstanceType") != itype:
                        continue
                    if record.get("AvailabilityZone") != zone:
                        continue
                    stamp = record.get("Timestamp")
                    price = _float(record.get("SpotPrice"))
                    if not isinstance(stamp, dt.datetime) or price is None or price < 0:
                        continue
                    points[stamp.timestamp()] = price
        return sorted(points.items())

    # -- on-demand prices from the Pricing API ----------------------------------------------

    def _fetched_prices(self, region: str) -> Mapping[str, Any] | None:
        """Pricing API figures for a region, refreshed weekly when AWS itself is reachable."""
        record = self._cache_get(f"pricing:{region}")
        fresh = record and time.time() - record.get("fetched_at", 0) < PRICING_MAX_AGE
        if fresh or self.emulated or not self.profile.value("live_prices"):
            return record if record and record.get("prices") else None
        if record and time.time() - record.get("failed_at", 0) < PRICING_RETRY_AFTER:
            return record if record.get("prices") else None
        try:
            return self.refresh_prices([region]).get(region)
        except GpuctlError:
            self._cache_put(f"pricing:{region}", {**(record or {}), "failed_at": time.time()})
            return record if record and record.get("prices") else None

    def refresh_prices(self, regions: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Fetch Linux on-demand GPU rates from the AWS Pricing API into the cache."""
        out: dict[str, dict[str, Any]] = {}
        pricing = self._client("pricing", PRICING_REGION)
        for region in list(regions or self._profile_regions()):
            with aws_errors(**self._ctx(region, action="reading the AWS Pricing API")):
                items: list[str] = []
                paginator = pricing.get_paginator("get_products")
                for page in paginator.paginate(
                    ServiceCode="AmazonEC2",
                    Filters=pricing_filters(region),
                    FormatVersion="aws_v1",
                ):
                    items.extend(page.get("PriceList", []))
            prices = parse_price_list(items)
            record = {"fetched_at": time.time(), "prices": prices}
            self._cache_put(f"pricing:{region}", record)
            out[region] = record
        return out

    # -- listing ------------------------------------------------------------------------

    def list_instances(self, *, include_unmanaged: bool = False) -> Listing:
        """Instances across regions in parallel; a failed region is reported, not fatal."""
        targets = self._list_targets()
        results, errors = self._fan_out(
            targets, lambda target: self._region_instances(target, include_unmanaged)
        )
        seen: dict[str, Instance] = {}  # two AWS profiles may see the same account
        for target in targets:
            for instance in results.get(target, []):
                seen.setdefault(instance.id, instance)
        return Listing(
            provider=self.name,
            instances=tuple(seen.values()),
            errors=_merge_errors([(self._label(t), e) for t, e in errors]),
        )

    def _region_instances(self, target: Target, include_unmanaged: bool) -> list[Instance]:
        region, aws_profile = target
        filters = [{"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
        if not include_unmanaged:
            filters.append({"Name": "tag-key", "Values": [TAG_RUN]})
        found = []
        paginator = self._ec2(region, aws_profile).get_paginator("describe_instances")
        for page in paginator.paginate(Filters=filters):
            for reservation in page.get("Reservations", []):
                for item in reservation.get("Instances", []):
                    instance = self._to_instance(item, region)
                    self._where.setdefault(instance.id, target)
                    found.append(instance)
        found.sort(key=lambda i: (i.launched_at or 0.0, i.id))
        return found

    def _to_instance(self, item: Mapping[str, Any], region: str) -> Instance:
        tags = {t["Key"]: t["Value"] for t in item.get("Tags", []) if "Key" in t}
        raw = str(item.get("State", {}).get("Name", ""))
        itype = str(item.get("InstanceType", ""))
        market = Market.SPOT if item.get("InstanceLifecycle") == "spot" else Market.ON_DEMAND
        price: float | None = _float(tags.get(TAG_PRICE))
        if price is None:  # a spot price not known yet is billed at most on-demand: not $0
            known = on_demand_price(region, itype, self._cache_get(f"pricing:{region}"))
            price = known.per_hour if known else None
        facts = catalog_facts(itype) or next(
            (f for f in self._gpu_types_cached(region) if f.instance_type == itype), None
        )
        launched = item.get("LaunchTime")
        run_id = tags.get(TAG_RUN)
        return Instance(
            provider=self.name,
            id=str(item["InstanceId"]),
            name=tags.get("Name") or str(item["InstanceId"]),
            region=region,
            instance_type=itype,
            state=STATE_MAP.get(raw, InstanceState.UNKNOWN),
            public_ip=item.get("PublicIpAddress"),
            launched_at=launched.timestamp() if isinstance(launched, dt.datetime) else None,
            price_per_hour=price,
            market=market,
            gpu_name=facts.gpu_name if facts else "",
            gpu_count=facts.gpu_count if facts else 0,
            run_id=run_id,
            managed=run_id is not None,
            raw_state=raw,
            zone=item.get("Placement", {}).get("AvailabilityZone"),
            ssh_user=tags.get(TAG_SSH_USER),
            ssh_port=int(self.profile.value("ssh_port")),
            disk_gb=_float(tags.get(TAG_DISK)),
            tags=tags,
            owner=tags.get(TAG_INSTALLATION) or None,
        )

    def get_instance(self, instance_id: str) -> Instance | None:
        """Where known, ask the instance's region; else every listed region in parallel."""
        known = self._where.get(instance_id) or self._cache_get(f"where:{instance_id}")
        targets = [(str(known[0]), self._own(known[1]))] if known else self._list_targets()

        def look(target: Target) -> Instance | None:
            try:
                ec2 = self._ec2(*target)
                response = ec2.describe_instances(InstanceIds=[instance_id])
            except Exception as exc:
                if error_code(exc).startswith("InvalidInstanceID"):
                    return None
                raise
            for reservation in response.get("Reservations", []):
                for item in reservation.get("Instances", []):
                    return self._to_instance(item, target[0])
            return None

        results, errors = self._fan_out(targets, look)
        for target in targets:
            instance = results.get(target)
            if instance is not None:
                self._remember(instance.id, target)
                return None if instance.state == InstanceState.TERMINATED else instance
        if errors:
            raise errors[0][1]  # cannot tell "gone" from "unreachable": say why
        return None

    # -- launch -------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> Generator[Event, None, Instance]:
        """Spot/on-demand with fallback across zones, regions and markets; every try
        reported (gpuctl.provision drives the tries, the boot wait and the clean-up)."""
        return provision.launch(self, spec)

    def _launch_type(self, spec: LaunchSpec) -> str:
        return str(spec.instance_type or self.profile.get("instance_type") or DEFAULT_TYPE)

    def placements(self, spec: LaunchSpec) -> Iterator[Event | Placement | Failure]:
        """Each zone of each region per market (spot first, cheapest zone first), each
        region prepared once on first use: image, key pair, security group, subnets."""
        run_id = spec.run_id
        itype = self._launch_type(spec)
        if spec.instance_type != itype:
            spec = spec.evolve(instance_type=itype)
        if spec.fallback not in ("none", "on-demand"):
            raise ConfigError(
                f"unknown --fallback '{spec.fallback}'", hint="use 'none' or 'on-demand'"
            )
        if spec.max_price is not None and spec.max_price <= 0:
            raise ConfigError("--max-price must be positive", hint="omit it to cap at on-demand")
        regions = _dedupe([*([spec.region] if spec.region else []), *spec.regions])
        regions = regions or self._profile_regions()
        for region in regions:
            self._check_region(region)
        aws_profile = self._own(spec.options.get("aws_profile"))
        markets = [Market.SPOT] if spec.spot else [Market.ON_DEMAND]
        if spec.spot and spec.fallback == "on-demand":
            markets.append(Market.ON_DEMAND)
        yield Provisioning(
            run_id=run_id,
            provider=self.name,
            detail=f"{itype} {'spot' if spec.spot else 'on-demand'} in {', '.join(regions)}",
        )
        cidr, detected = self._ssh_cidr(spec)
        allow_open = bool(spec.options.get("allow_open_ssh") or self.profile.get("allow_open_ssh"))
        open_warning = aws_setup.check_ssh_cidr(cidr, allow_open=allow_open)
        if open_warning:
            yield Notice(run_id, open_warning, level="warning")
        key_name = spec.options.get("key_name") or None
        key = None if key_name else aws_setup.local_key(self.settings.keys_dir)
        token = uuid.uuid4().hex[:12]  # one per launch call: botocore retries reuse it
        plans: dict[str, _Plan | None] = {}
        for market in markets:
            for region in regions:
                if region not in plans:
                    try:
                        plans[region] = yield from self._prepare(
                            spec, region, cidr, key, key_name, aws_profile, detected=detected
                        )
                    except _RegionFailed as exc:
                        plans[region] = None
                        yield exc.failure
                plan = plans[region]
                if plan is None:
                    continue
                if market == Market.SPOT and not plan.facts.spot_supported:
                    yield Failure(f"{region} spot", REGION, f"{itype} is not sold as spot")
                    continue
                yield from self._zone_placements(spec, plan, market, token, aws_profile)

    def _ssh_cidr(self, spec: LaunchSpec) -> tuple[str, bool]:
        """(SSH source, detected): --ssh-cidr / the profile, else the caller's /32.

        Detected afresh on every launch: a laptop that changed networks must not open
        SSH to the address it had a few minutes ago.
        """
        explicit = spec.options.get("ssh_cidr") or self.profile.get("ssh_cidr")
        if explicit:
            return aws_setup.normalise_cidr(str(explicit)), False
        url = str(self.profile.get("checkip_url") or aws_setup.CHECKIP_URL)
        return aws_setup.caller_cidr(url=url), True

    def _caller_rules(self, ec2: Any, region: str, group: str, cidr: str) -> None:
        """Revoke the caller rules this installation added from addresses it no longer has."""
        key = f"caller-rules:{region}:{group}"
        stale = [str(c) for c in self._cache_get(key) or [] if c != cidr]
        for dropped in aws_setup.revoke_ssh_rules(ec2, group, stale):
            log.info("%s: revoked SSH from %s (no longer this machine's address)", region, dropped)
        self._cache_put(key, [cidr])

    def _prepare(
        self,
        spec: LaunchSpec,
        region: str,
        cidr: str,
        key: aws_setup.LocalKey | None,
        key_name: str | None,
        aws_profile: str | None,
        *,
        detected: bool = False,
    ) -> Generator[Event, None, _Plan]:
        """Type, zones, image, key pair and firewall for one region; _RegionFailed if unusable."""
        itype = str(spec.instance_type)
        ec2 = self._ec2(region, aws_profile)
        ctx = self._ctx(region, aws_profile=aws_profile, instance_type=itype, spot=spec.spot)
        try:
            facts = self._type_facts(region, itype)
            offered = ec2.describe_instance_type_offerings(
                LocationType="availability-zone",
                Filters=[{"Name": "instance-type", "Values": [itype]}],
            ).get("InstanceTypeOfferings", [])
            zones_offered = sorted({o["Location"] for o in offered})
            if not zones_offered:
                raise _RegionFailed(Failure(region, REGION, f"{itype} is not offered in {region}"))
            image = aws_setup.find_image(
                ec2,
                region,
                facts,
                image=spec.image,
                owners=self.profile.get("image_owners") or None,
            )
            yield Provisioning(spec.run_id, self.name, f"{region}: image {image.name} ({image.id})")
            if key_name:
                aws_setup.check_key_pair(ec2, key_name, region)
                pair = key_name
            else:
                assert key is not None
                pair = aws_setup.ensure_key_pair(ec2, key, self.settings.installation_id)
            vpc = aws_setup.default_vpc(ec2, region)
            subnets = aws_setup.default_subnets(ec2, vpc)
            group = aws_setup.ensure_security_group(ec2, vpc, cidr, self.settings.installation_id)
            if detected:
                self._caller_rules(ec2, region, group, cidr)
            yield Provisioning(
                spec.run_id,
                self.name,
                f"{region}: key pair {pair}, security group {group} (SSH from {cidr} only)",
            )
            zones = [z for z in zones_offered if z in subnets]
            if not zones:
                raise _RegionFailed(
                    Failure(region, REGION, f"no default subnet in the zones offering {itype}")
                )
            spot = {}
            if spec.spot:
                spot = self._spot_prices(region, [itype], LAUNCH_SPOT_MAX_AGE).get(itype, {})
            price = on_demand_price(region, itype, self._cache_get(f"pricing:{region}"))
        except _RegionFailed:
            raise
        except Exception as exc:
            mapped = map_error(exc, **ctx)
            kind = classify(exc)
            if isinstance(mapped, ConfigError) and kind == "fatal":
                kind = REGION  # image missing, no default VPC, key pair not in this region
            if error_code(exc) == "InvalidInstanceType":
                kind = UNKNOWN_TYPE
            if kind == "fatal":
                raise mapped from None
            raise _RegionFailed(Failure(region, kind, _reason(mapped), error=mapped)) from None
        return _Plan(
            region=region,
            facts=facts,
            image=image,
            key_name=pair,
            security_group=group,
            subnets=subnets,
            zones=zones,
            on_demand=price,
            spot=spot,
        )

    def _zone_placements(
        self,
        spec: LaunchSpec,
        plan: _Plan,
        market: Market,
        token: str,
        aws_profile: str | None,
    ) -> Iterator[Placement]:
        """Each zone of one region in turn (spot: cheapest first)."""
        spot = market == Market.SPOT
        zones = list(plan.zones)
        if spot:
            zones.sort(key=lambda z: (plan.spot.get(z, float("inf")), z))
        max_price = spec.max_price or (plan.on_demand.per_hour if plan.on_demand else None)
        for zone in zones:
            current = plan.spot.get(zone) if spot else None
            if spot:
                price = current if current is not None else max_price
            else:
                price = plan.on_demand.per_hour if plan.on_demand else None
            params = self._run_params(spec, plan, zone, spot, max_price, price, token)
            yield Placement(
                f"{zone} {market.value}",
                market,
                price,
                group=f"{plan.region} {market.value}",
                data=_Zone(plan.region, zone, aws_profile, params, max_price, current),
            )

    def create(self, spec: LaunchSpec, placement: Placement) -> str:
        """RunInstances at one zone and market, classified for the failover loop."""
        z: _Zone = placement.data
        if z.current_spot is not None and z.max_price is not None and z.max_price < z.current_spot:
            raise Unplaced(
                Failure(
                    placement.where,
                    PRICE,
                    f"max price {rate(z.max_price, digits=4)} is below the current spot price "
                    f"{rate(z.current_spot, digits=4)}",
                    data=z.current_spot,
                )
            )
        ctx = self._ctx(
            z.region,
            aws_profile=z.aws_profile,
            instance_type=z.params["InstanceType"],
            spot=placement.market == Market.SPOT,
        )
        try:
            response = self._ec2(z.region, z.aws_profile).run_instances(**z.params)
            instance_id = str(response["Instances"][0]["InstanceId"])
        except Exception as exc:
            if _ambiguous(exc):
                fatal = classify(exc) == "fatal"
                failure = None if fatal else _run_failure(exc, placement.where, ctx)
                raise Ambiguous(map_error(exc, **ctx), failure=failure) from None
            raise Unplaced(_run_failure(exc, placement.where, ctx)) from None  # or fatal
        self._created(instance_id, z)
        return instance_id

    def _created(self, instance_id: str, z: _Zone) -> None:
        """Remember where it is, so `ls` and `get_instance` look there from now on."""
        self._remember(instance_id, (z.region, z.aws_profile))
        self._record_use((z.region, z.aws_profile))

    def find_created(self, spec: LaunchSpec, placement: Placement) -> str | None:
        """After a lost answer to RunInstances: the instance it may have made anyway."""
        z: _Zone = placement.data
        try:
            response = self._ec2(z.region, z.aws_profile).describe_instances(
                Filters=[
                    {"Name": f"tag:{TAG_RUN}", "Values": [spec.run_id]},
                    {"Name": "instance-state-name", "Values": ["pending", "running"]},
                ]
            )
        except Exception:
            return None
        for reservation in response.get("Reservations", []):
            for item in reservation.get("Instances", []):
                instance_id = str(item["InstanceId"])
                self._created(instance_id, z)
                return instance_id
        return None

    def describe(self, instance_id: str, placement: Placement) -> Look:
        """Up when running with an address; stopped or terminated while booting ends the try."""
        z: _Zone = placement.data
        ctx = self._ctx(z.region, aws_profile=z.aws_profile, action=f"waiting for {instance_id}")
        try:
            response = self._ec2(z.region, z.aws_profile).describe_instances(
                InstanceIds=[instance_id]
            )
            items = [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]
        except Exception as exc:
            if not error_code(exc).startswith("InvalidInstanceID.NotFound"):
                raise map_error(exc, **ctx) from None
            items = []  # not yet visible: EC2 is eventually consistent right after create
        if not items:
            return Look()
        item = items[0]
        state = item.get("State", {}).get("Name", "")
        instance = self._to_instance(item, z.region)
        if state == "running":
            if item.get("PublicIpAddress") or self.profile.get("ssh_host"):
                return Look(instance, up=True)
            raise ProviderError(
                f"{instance_id} has no public IP address",
                hint="the default subnet does not assign public IPs; enable "
                "auto-assign public IPv4 on it",
            )
        if state in ("shutting-down", "terminated", "stopping", "stopped"):
            return Look(instance, ended=str(item.get("StateReason", {}).get("Message") or state))
        return Look(instance)

    def end(self, instance_id: str, placement: Placement) -> None:
        z: _Zone = placement.data
        ctx = self._ctx(z.region, aws_profile=z.aws_profile, action=f"terminating {instance_id}")
        with aws_errors(**ctx):
            self._ec2(z.region, z.aws_profile).terminate_instances(InstanceIds=[instance_id])

    def pacing(self) -> Pacing:
        return Pacing(self.launch_timeout, self.poll_seconds, max_poll=self.poll_seconds)

    def _run_params(
        self,
        spec: LaunchSpec,
        plan: _Plan,
        zone: str,
        spot: bool,
        max_price: float | None,
        price: float | None,
        token: str,
    ) -> dict[str, Any]:
        """RunInstances arguments: tagged, IMDSv2, gp3 root, shutdown terminates."""
        disk = max(int(spec.disk_gb or 0), plan.image.root_size_gb, 8)
        ssh_user = str(spec.options.get("ssh_user") or plan.image.ssh_user)
        common = [
            {"Key": TAG_RUN, "Value": spec.run_id},
            {"Key": TAG_PRESET, "Value": spec.preset},
            {"Key": TAG_MANAGED, "Value": "true"},
            {"Key": TAG_INSTALLATION, "Value": self.settings.installation_id},
            {"Key": "Name", "Value": f"gpuctl-{spec.run_id}"},
        ]
        instance_tags = [
            *common,
            {"Key": TAG_SSH_USER, "Value": ssh_user},
            {"Key": TAG_KEY, "Value": plan.key_name},
            {"Key": TAG_DISK, "Value": str(disk)},
        ]
        if price is not None:
            instance_tags.append({"Key": TAG_PRICE, "Value": f"{price:.6g}"})
        params: dict[str, Any] = {
            "ImageId": plan.image.id,
            "InstanceType": plan.facts.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "KeyName": plan.key_name,
            "SubnetId": plan.subnets[zone],
            "SecurityGroupIds": [plan.security_group],
            "UserData": boot_guard_script(spec.run_id, spec.max_hours),
            # A limit's poweroff ends the machine only where the teardown policy may
            # (keep/stop: stopped, its disk and results kept; spot can only terminate).
            "InstanceInitiatedShutdownBehavior": "stop"
            if spec.teardown in ("stop", "keep") and not spot
            else "terminate",
            "MetadataOptions": {
                "HttpTokens": "required",
                "HttpEndpoint": "enabled",
                "HttpPutResponseHopLimit": 2,
            },
            "BlockDeviceMappings": [
                {
                    "DeviceName": plan.image.root_device,
                    "Ebs": {
                        "VolumeSize": disk,
                        "VolumeType": "gp3",
                        "DeleteOnTermination": True,
                        "Encrypted": True,  # the account's default EBS key
                    },
                }
            ],
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": instance_tags},
                {"ResourceType": "volume", "Tags": common},
            ],
            "ClientToken": f"{spec.run_id[:36]}-{token}-{zone[-2:]}-{'s' if spot else 'o'}"[:64],
        }
        if spot:
            options: dict[str, Any] = {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            }
            if max_price is not None:
                options["MaxPrice"] = f"{max_price:.6g}"
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
        return params

    def explain(self, spec: LaunchSpec, failures: Sequence[Failure]) -> GpuctlError:
        """AWS's words for its own kinds: unknown type, spot price, vCPU quota names."""
        itype = self._launch_type(spec)
        kinds = {f.kind for f in failures}
        tried = "; ".join(f"{f.where}: {f.reason}" for f in failures)
        if kinds == {UNKNOWN_TYPE}:
            return ConfigError(f"unknown instance type '{itype}'", hint=_type_hint(itype))
        known = [f for f in failures if f.kind == PRICE and f.data is not None]
        if kinds == {PRICE} and known:
            cheapest = min(known, key=lambda f: float(f.data))
            return CapacityError(
                f"--max-price {rate(spec.max_price, digits=4)} is below the current spot price "
                f"of {itype} ({rate(cheapest.data, digits=4)} in "
                f"{cheapest.where.split()[0]}, "
                "the cheapest zone)",
                hint=f"raise --max-price to at least {cheapest.data:.4g}, omit it "
                "(defaults to the on-demand price), or add --fallback on-demand",
            )
        if kinds == {QUOTA}:
            first = next(f for f in failures if f.kind == QUOTA)
            region = first.where.split()[0]
            return QuotaError(
                f"AWS vCPU quota '{quota_name(itype, spec.spot)}' is too low for {itype} "
                f"in {', '.join(_dedupe(f.where.split()[0] for f in failures))}",
                hint=quota_hint(region, itype, spec.spot),
            )
        first_error = next((f.error for f in failures if f.error), None)
        if kinds <= {REGION, UNKNOWN_TYPE} and first_error is not None:
            if len(failures) == 1:
                return first_error
            return type(first_error)(
                f"no usable region for {itype}: {tried}", hint=first_error.hint
            )
        hint = "try another instance type or region (--regions a,b,c)"
        if spec.spot and spec.fallback != "on-demand":
            hint += ", or --fallback on-demand"
        if QUOTA in kinds:
            hint += f"; a quota also blocked it: {quota_hint(None, itype, spec.spot)}"
        return provision.no_room(itype, failures, hint)

    # -- lifecycle verbs --------------------------------------------------------------------

    def stop(self, instance: Instance) -> None:
        """Stop an EBS-backed on-demand instance (the disk keeps billing)."""
        if instance.market == Market.SPOT:
            raise ConfigError(
                f"{instance.id} is a spot instance and cannot be stopped",
                hint="gpuctl's spot instances are one-time requests: terminate it instead",
            )
        region, aws_profile = self._target_of(instance)
        ctx = self._ctx(region, aws_profile=aws_profile, action=f"stopping {instance.id}")
        with aws_errors(**ctx):
            self._ec2(region, aws_profile).stop_instances(InstanceIds=[instance.id])

    def start(self, instance: Instance) -> None:
        region, aws_profile = self._target_of(instance)
        ctx = self._ctx(region, aws_profile=aws_profile, action=f"starting {instance.id}")
        with aws_errors(**ctx):
            self._ec2(region, aws_profile).start_instances(InstanceIds=[instance.id])

    def terminate(self, instance: Instance, *, wait: bool = True) -> None:
        """Terminate; with wait, poll (bounded) until EC2 itself reports 'terminated'."""
        region, aws_profile = self._target_of(instance)
        ec2 = self._ec2(region, aws_profile)
        ctx = self._ctx(region, aws_profile=aws_profile, action=f"terminating {instance.id}")
        try:
            ec2.terminate_instances(InstanceIds=[instance.id])
        except Exception as exc:
            if error_code(exc).startswith("InvalidInstanceID.NotFound"):
                return  # already gone
            raise map_error(exc, **ctx) from None
        if not wait:
            return
        deadline = time.monotonic() + self.terminate_timeout
        state = "shutting-down"
        while True:
            with aws_errors(**ctx):
                try:
                    response = ec2.describe_instances(InstanceIds=[instance.id])
                except Exception as exc:
                    if error_code(exc).startswith("InvalidInstanceID.NotFound"):
                        return
                    raise
            items = [i for r in response.get("Reservations", []) for i in r.get("Instances", [])]
            if not items:
                return
            state = str(items[0].get("State", {}).get("Name", ""))
            if state == "terminated":
                return
            if time.monotonic() > deadline:
                raise ProviderError(
                    f"{instance.id} is still '{state}' {self.terminate_timeout:.0f}s after "
                    "the terminate request",
                    hint="AWS accepted it; check `gpuctl ls` shortly (billing ends once it "
                    "reports terminated) or the EC2 console",
                )
            time.sleep(self.poll_seconds)

    # -- reaching the machine ---------------------------------------------------------------

    def ssh_target(self, instance: Instance) -> SshTarget | None:
        """Address (or the profile's emulator override), login user and gpuctl's key."""
        user = (
            self.profile.get("ssh_user")
            or instance.ssh_user
            or instance.tags.get(TAG_SSH_USER)
            or "ubuntu"
        )
        key_path: str | None = None
        if self.profile.get("ssh_key"):
            key_path = str(Path(str(self.profile.get("ssh_key"))).expanduser())
        else:
            key = aws_setup.local_key(self.settings.keys_dir, create=False)
            if key is not None and instance.tags.get(TAG_KEY) == key.name:
                key_path = str(key.path)
        return provision.ssh_target(self.profile, instance, user=str(user), key_path=key_path)

    def host(self, instance: Instance) -> Host:
        from gpuctl.remote.ssh_host import SshHost

        target = self.ssh_target(instance)
        if target is None:
            raise ProviderError(
                f"{instance.id} has no public address ({instance.raw_state or instance.state})",
                hint="start it first (`gpuctl start`), or wait until it is running",
            )
        return SshHost(target, self.settings)  # type: ignore[no-any-return]

    def agent_shutdown(self, instance: Instance) -> dict[str, Any]:
        """Power off: the shutdown behaviour set at launch makes it a terminate (or a stop)."""
        command = self.profile.value("shutdown_command")
        return {"action": SHUTDOWN_POWEROFF, "command": list(command)}


@functools.cache
def _shared_loader() -> Any:
    """One botocore model loader per process: parsing the EC2 model costs ~0.2 s a session."""
    from botocore.loaders import create_loader

    return create_loader(os.environ.get("AWS_DATA_PATH"))


class _RegionFailed(Exception):
    """A region cannot be used for this launch; carries the failure for the final error."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item:
            seen.setdefault(item, None)
    return list(seen)


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _in_effect_since(points: list[tuple[float, float]], since: float) -> list[tuple[float, float]]:
    """The changes after `since`, led by the last one at or before it (the price then)."""
    ordered = sorted(points)
    before = [p for p in ordered if p[0] <= since]
    return before[-1:] + [p for p in ordered if p[0] > since]


def _reason(error: GpuctlError) -> str:
    return error.message


def _run_failure(exc: BaseException, where: str, ctx: dict[str, Any]) -> Failure:
    """A failed RunInstances as a failure to report, or the mapped error when fatal."""
    kind = classify(exc)
    mapped = map_error(exc, **ctx)
    if kind == "fatal":
        raise mapped from None
    current = None
    if error_code(exc) == "SpotMaxPriceTooLow":
        kind = PRICE
        current = _price_in(mapped.message)
    return Failure(where, kind, _reason(mapped), error=mapped, data=current)


def _ambiguous(exc: BaseException) -> bool:
    """A failure after the request may have reached AWS: the outcome is unknown."""
    import botocore.exceptions as bx

    return isinstance(exc, bx.ReadTimeoutError | bx.ConnectionClosedError) or error_code(exc) in (
        "InternalError",
        "ServiceUnavailable",
        "Unavailable",
    )


def _price_in(text: str) -> float | None:
    """The fulfilment price AWS quotes in a SpotMaxPriceTooLow message, if any."""
    match = re.search(r"fulfill?ment price of \$?([0-9]+(?:\.[0-9]+)?)", text)
    return float(match.group(1)) if match else None


def _type_hint(instance_type: str) -> str:
    close = difflib.get_close_matches(instance_type, known_types(), n=2)
    suggestion = f"did you mean {' or '.join(close)}? " if close else ""
    return suggestion + "list GPU types with `gpuctl offers --provider aws`"


def _gpu_matches(gpu: str, offer: Offer) -> bool:
    wanted = gpu.strip().lower()
    return wanted in offer.gpu_name.lower() or offer.instance_type.lower().startswith(wanted)


def _offer_order(offer: Offer) -> tuple[float, float, str, str]:
    price = offer.price_per_hour if offer.price_per_hour is not None else float("inf")
    spot = offer.spot_price_per_hour if offer.spot_price_per_hour is not None else float("inf")
    return (price, spot, offer.instance_type, offer.region)


def _merge_errors(errors: list[tuple[str, GpuctlError]]) -> tuple[tuple[str, str], ...]:
    """One entry per distinct reason (4 regions without credentials is one problem)."""
    merged: dict[str, list[str]] = {}
    for region, error in errors:
        merged.setdefault(error.one_line(), []).append(region)
    return tuple((", ".join(regions), reason) for reason, regions in merged.items())
