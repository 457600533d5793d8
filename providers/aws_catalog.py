"""On-demand prices and GPU facts for AWS instance types.

EC2 has no "price" field: on-demand rates live in the Pricing API (slow, us-east-1 only,
not served by emulators). gpuctl ships a dated catalog (aws_prices.json, source noted
inside) so estimates work offline, and overlays Pricing API figures when it has fetched
them. The catalog's GPU facts let `list_instances` name the GPU without an extra call.
"""

from __future__ import annotations

import calendar
import functools
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATALOG_PATH = Path(__file__).with_name("aws_prices.json")
PRICING_REGION = "us-east-1"  # the Pricing API answers only in a few regions


@dataclass(frozen=True)
class GpuFacts:
    """What one instance type offers, from describe_instance_types or the catalog."""

    instance_type: str
    gpu_name: str
    gpu_count: int
    gpu_memory_gb: float
    vcpus: int
    memory_gb: float
    manufacturer: str = ""
    architectures: tuple[str, ...] = ("x86_64",)
    spot_supported: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_type": self.instance_type,
            "gpu_name": self.gpu_name,
            "gpu_count": self.gpu_count,
            "gpu_memory_gb": self.gpu_memory_gb,
            "vcpus": self.vcpus,
            "memory_gb": self.memory_gb,
            "manufacturer": self.manufacturer,
            "architectures": list(self.architectures),
            "spot_supported": self.spot_supported,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuFacts:
        return cls(
            instance_type=data["instance_type"],
            gpu_name=data.get("gpu_name", ""),
            gpu_count=int(data.get("gpu_count", 0)),
            gpu_memory_gb=float(data.get("gpu_memory_gb", 0.0)),
            vcpus=int(data.get("vcpus", 0)),
            memory_gb=float(data.get("memory_gb", 0.0)),
            manufacturer=data.get("manufacturer", ""),
            architectures=tuple(data.get("architectures", ("x86_64",))),
            spot_supported=bool(data.get("spot_supported", True)),
        )

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> GpuFacts:
        """From one DescribeInstanceTypes entry (GpuInfo may be absent: CPU type)."""
        gpus = item.get("GpuInfo", {}).get("Gpus", [])
        first = gpus[0] if gpus else {}
        total_mib = item.get("GpuInfo", {}).get("TotalGpuMemoryInMiB", 0)
        name = str(first.get("Name", ""))
        # Fractional types (g6f: Count 0, GpuPartitionSize 0.125) get one logical GPU.
        count = sum(max(int(g.get("Count", 0)), int(g.get("LogicalGpuCount", 0))) for g in gpus)
        part = float(first.get("GpuPartitionSize", 1.0) or 1.0)
        if 0 < part < 1:
            name = f"{name} 1/{round(1 / part)}"
        return cls(
            instance_type=item["InstanceType"],
            gpu_name=name,
            gpu_count=count,
            gpu_memory_gb=round(total_mib / 1024, 1),
            vcpus=int(item.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
            memory_gb=round(item.get("MemoryInfo", {}).get("SizeInMiB", 0) / 1024, 1),
            manufacturer=str(first.get("Manufacturer", "")),
            architectures=tuple(
                item.get("ProcessorInfo", {}).get("SupportedArchitectures", ["x86_64"])
            ),
            spot_supported="spot" in item.get("SupportedUsageClasses", ["spot"]),
        )


@functools.cache
def bundled() -> dict[str, Any]:
    """The catalog shipped with gpuctl (read once per process)."""
    return json.loads(CATALOG_PATH.read_text(encoding="utf-8"))


def catalog_facts(instance_type: str) -> GpuFacts | None:
    """GPU facts from the bundled catalog, for listings that should not call the API."""
    entry = bundled()["types"].get(instance_type)
    if entry is None:
        return None
    family = instance_type.split(".", 1)[0]
    return GpuFacts(
        instance_type=instance_type,
        gpu_name=entry["gpu"],
        gpu_count=int(entry["gpus"]),
        gpu_memory_gb=float(entry["gpu_memory_gb"]),
        vcpus=int(entry["vcpus"]),
        memory_gb=float(entry["memory_gb"]),
        manufacturer="AMD" if family == "g4ad" else "NVIDIA",
        architectures=("arm64",) if family == "g5g" else ("x86_64",),
    )


def known_types() -> list[str]:
    return sorted(bundled()["types"])


@dataclass(frozen=True)
class Price:
    """An on-demand rate and where it came from (shown beside offers)."""

    per_hour: float
    source: str
    at: float | None = None  # when the figure was true: the API's fetch, the catalog's date


def on_demand_price(
    region: str, instance_type: str, fetched: Mapping[str, Any] | None = None
) -> Price | None:
    """Pricing API figure if fetched, else the bundled catalog's; None if neither knows.

    `fetched` is one region's refresh result: {"fetched_at": unix time, "prices": {...}}.
    """
    if fetched:
        value = fetched.get("prices", {}).get(instance_type)
        if value:
            day = time.strftime("%Y-%m-%d", time.gmtime(fetched.get("fetched_at", 0)))
            at = float(fetched.get("fetched_at", 0)) or None
            return Price(float(value), f"AWS Pricing API {day}", at)
    catalog = bundled()
    value = catalog["on_demand"].get(region, {}).get(instance_type)
    if value is None:
        return None
    return Price(float(value), f"catalog {catalog['as_of']}", _day(str(catalog["as_of"])))


def _day(text: str) -> float | None:
    """A catalog's "YYYY-MM-DD" as the unix time of that day's start (UTC)."""
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        return None


PRICING_FILTERS = (
    ("operatingSystem", "Linux"),
    ("tenancy", "Shared"),
    ("preInstalledSw", "NA"),
    ("capacitystatus", "Used"),
    ("licenseModel", "No License required"),
    ("instanceFamily", "GPU instance"),
)


def pricing_filters(region: str) -> list[dict[str, str]]:
    """GetProducts filters for Linux on-demand GPU instances in one region."""
    filters = [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": region}]
    filters += [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in PRICING_FILTERS]
    return filters


def parse_price_list(items: Iterable[str]) -> dict[str, float]:
    """instance type -> $/h from GetProducts PriceList entries (each a JSON string)."""
    out: dict[str, float] = {}
    for raw in items:
        product = json.loads(raw) if isinstance(raw, str) else raw
        itype = product.get("product", {}).get("attributes", {}).get("instanceType")
        if not itype:
            continue
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                if dim.get("unit") not in ("Hrs", "Hours"):
                    continue
                try:
                    usd = float(dim.get("pricePerUnit", {}).get("USD", "0"))
                except ValueError:
                    continue
                if usd > 0:
                    out[itype] = usd
    return out
