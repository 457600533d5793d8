"""GPU meters over any Host: one shell round trip per sample, pure parsers per tool.

The sampler sends one small script that tries nvidia-smi, then amd-smi, then rocm-smi,
and falls back to CPU utilisation and memory from /proc, so a sample costs a single
exec whatever the machine. Parsers are pure functions of the tool's text (tested on
recorded outputs): every field a tool leaves out or reports as N/A becomes None, because
MI300X, consumer cards and old drivers all omit different things and a meter must show
"N/A", not crash or show 0.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gpuctl.models import GpuSample

if TYPE_CHECKING:
    from gpuctl.host import Host

NVIDIA_FIELDS: tuple[str, ...] = (
    "index",
    "name",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
)
NVIDIA_QUERY = f"nvidia-smi --query-gpu={','.join(NVIDIA_FIELDS)} --format=csv,noheader,nounits"
AMD_SMI_QUERY = "amd-smi metric --json"
AMD_SMI_NAMES = "amd-smi static --asic --json"
ROCM_SMI_QUERY = (
    "rocm-smi --showuse --showmeminfo vram --showtemp --showpower --showproductname --json"
)
_NA = {"", "n/a", "[n/a]", "na", "none", "null", "-", "[not supported]", "not supported"}
_MARK = "@@gpuctl:"


# -- the one round trip ------------------------------------------------------------------


def sample_script(*, names: bool = True, cpu_from_proc: bool = True) -> str:
    """POSIX sh that prints one marked section for the first tool that answers."""
    amd_names = f"echo '{_MARK}amd-smi-static'; {AMD_SMI_NAMES} 2>/dev/null; " if names else ""
    cpu = (
        f"echo '{_MARK}cpu'; head -n 1 /proc/stat; "
        "grep -E '^(MemTotal|MemAvailable):' /proc/meminfo; "
        'echo "ncpu $(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)"; '
        f"sleep 0.2; echo '{_MARK}cpu2'; head -n 1 /proc/stat"
        if cpu_from_proc
        else f"echo '{_MARK}cpu-local'"
    )
    return (
        "PATH=$PATH:/usr/bin:/opt/rocm/bin:/usr/local/nvidia/bin; "
        "if command -v nvidia-smi >/dev/null 2>&1 && "
        f'o=$({NVIDIA_QUERY} 2>/dev/null) && [ -n "$o" ]; then '
        f"echo '{_MARK}nvidia-smi'; printf '%s\\n' \"$o\"; exit 0; fi; "
        "if command -v amd-smi >/dev/null 2>&1 && "
        f'o=$({AMD_SMI_QUERY} 2>/dev/null) && [ -n "$o" ]; then '
        f"echo '{_MARK}amd-smi'; printf '%s\\n' \"$o\"; {amd_names}exit 0; fi; "
        "if command -v rocm-smi >/dev/null 2>&1 && "
        f'o=$({ROCM_SMI_QUERY} 2>/dev/null) && [ -n "$o" ]; then '
        f"echo '{_MARK}rocm-smi'; printf '%s\\n' \"$o\"; exit 0; fi; "
        f"{cpu}"
    )


def split_sections(text: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(_MARK):
            current = sections.setdefault(line[len(_MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def _is_local(host: Host) -> bool:
    return getattr(host, "label", None) == "local"


def sample_gpus(
    host: Host, *, names: Mapping[int, str] | None = None, timeout: float = 30.0
) -> tuple[GpuSample, ...]:
    """One sample of every GPU (or one kind="cpu" pseudo-device) on host.

    `names` (index -> name, from an earlier sample) spares amd-smi's slow static query.
    """
    local = _is_local(host)
    script = sample_script(names=names is None, cpu_from_proc=not local)
    result = host.exec(script, timeout=timeout)
    return parse_sample_output(result.stdout, now=time.time(), names=names, local=local)


def parse_sample_output(
    text: str,
    *,
    now: float = 0.0,
    names: Mapping[int, str] | None = None,
    local: bool = False,
) -> tuple[GpuSample, ...]:
    sections = split_sections(text)
    if "nvidia-smi" in sections:
        return parse_nvidia_smi(sections["nvidia-smi"], now=now)
    if "amd-smi" in sections:
        found = dict(names or {})
        if "amd-smi-static" in sections:
            found.update(parse_amd_smi_names(sections["amd-smi-static"]))
        return parse_amd_smi(sections["amd-smi"], names=found, now=now)
    if "rocm-smi" in sections:
        return parse_rocm_smi(sections["rocm-smi"], now=now)
    if "cpu" in sections:
        return (parse_proc_cpu(sections["cpu"], sections.get("cpu2", ""), now=now),)
    if local or "cpu-local" in sections:
        return (psutil_cpu_sample(now=now),)
    return ()


class GpuSampler:
    """Samples one host repeatedly, querying static GPU names only once."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._names: dict[int, str] | None = None

    def sample(self) -> tuple[GpuSample, ...]:
        samples = sample_gpus(self.host, names=self._names)
        if self._names is None:
            self._names = {s.index: s.name for s in samples if s.kind == "gpu"}
        return samples


# -- values -------------------------------------------------------------------------------


def to_float(value: Any) -> float | None:
    """A number from a tool's field; None for N/A, [Not Supported], blanks, junk."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Mapping):
        return to_float(value.get("value"))
    text = str(value).strip()
    if text.lower() in _NA or text.startswith("["):
        return None
    match = re.match(r"^[-+]?\d+(\.\d+)?([eE][-+]?\d+)?", text)
    return float(match.group(0)) if match else None


_MB = {"b": 1 / (1024 * 1024), "kb": 1 / 1024, "kib": 1 / 1024, "mb": 1.0, "mib": 1.0}
_MB.update({"gb": 1024.0, "gib": 1024.0})


def to_mb(value: Any, default_unit: str = "MB") -> float | None:
    """Memory in MiB from a bare number (in default_unit), '123 MB', or {value, unit}."""
    unit = default_unit
    if isinstance(value, Mapping):
        unit = str(value.get("unit") or default_unit)
        value = value.get("value")
    elif isinstance(value, str):
        m = re.match(r"^\s*([-+]?\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$", value)
        if m:
            value, unit = m.group(1), m.group(2)
    number = to_float(value)
    if number is None:
        return None
    return number * _MB.get(unit.strip().lower(), 1.0)


def _first(mapping: Any, *keys: str) -> Any:
    """The first key present with a usable value (tools rename fields between releases)."""
    if not isinstance(mapping, Mapping):
        return None
    for key in keys:
        if key in mapping and to_float(mapping[key]) is not None:
            return mapping[key]
    return None


# -- NVIDIA -------------------------------------------------------------------------------


def parse_nvidia_smi(
    text: str, fields: Sequence[str] = NVIDIA_FIELDS, *, now: float = 0.0
) -> tuple[GpuSample, ...]:
    """`--query-gpu=... --format=csv[,noheader][,nounits]` by header order.

    With a header line the columns are taken from it (units in brackets stripped);
    without one they follow `fields`, the order we asked for.
    """
    rows = [r for r in csv.reader(io.StringIO(text), skipinitialspace=True) if any(r)]
    if not rows:
        return ()
    columns = [f.strip() for f in fields]
    if rows[0] and rows[0][0].strip().lower().startswith("index"):
        columns = [re.sub(r"\s*\[.*\]$", "", c.strip()) for c in rows[0]]
        rows = rows[1:]
    out = []
    for position, row in enumerate(rows):
        if len(row) < 2:
            continue  # an error line such as "No devices were found"
        data = dict(zip(columns, (c.strip() for c in row), strict=False))
        index = to_float(data.get("index"))
        out.append(
            GpuSample(
                index=int(index) if index is not None else position,
                name=data.get("name", ""),
                util_pct=to_float(data.get("utilization.gpu")),
                mem_used_mb=to_float(data.get("memory.used")),
                mem_total_mb=to_float(data.get("memory.total")),
                temp_c=to_float(data.get("temperature.gpu")),
                power_w=to_float(data.get("power.draw")),
                time=now,
            )
        )
    return tuple(out)


# -- AMD ----------------------------------------------------------------------------------


def _amd_items(data: Any) -> list[Mapping[str, Any]]:
    """amd-smi JSON is a list of GPUs (ROCm 6.0-6.2) or {"gpu_data": [...]} (6.3+)."""
    if isinstance(data, Mapping):
        data = data.get("gpu_data", data.get("gpus", []))
    return [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


def _load_json(text: str) -> Any:
    text = text.strip()
    start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        return json.loads(text[start:])
    except ValueError:
        return None


def parse_amd_smi_names(text: str) -> dict[int, str]:
    """Index -> market name from `amd-smi static --asic --json`."""
    out = {}
    for pos, item in enumerate(_amd_items(_load_json(text))):
        asic = item.get("asic")
        name = asic.get("market_name") if isinstance(asic, Mapping) else None
        if name and str(name).upper() != "N/A":
            index = to_float(item.get("gpu"))
            out[int(index) if index is not None else pos] = str(name)
    return out


def parse_amd_smi(
    text: str, *, names: Mapping[int, str] | None = None, now: float = 0.0
) -> tuple[GpuSample, ...]:
    out = []
    for pos, item in enumerate(_amd_items(_load_json(text))):
        index_value = to_float(item.get("gpu"))
        index = int(index_value) if index_value is not None else pos
        usage, power = item.get("usage"), item.get("power")
        temp, mem = item.get("temperature"), item.get("mem_usage")
        util = _first(usage, "gfx_activity", "gfx_usage")
        if util is None and isinstance(item.get("gfx_activity"), int | float | str | Mapping):
            util = item.get("gfx_activity")
        out.append(
            GpuSample(
                index=index,
                name=(names or {}).get(index, "AMD GPU"),
                util_pct=to_float(util),
                mem_used_mb=to_mb(_first(mem, "used_vram", "used_visible_vram")),
                mem_total_mb=to_mb(_first(mem, "total_vram", "total_visible_vram")),
                temp_c=to_float(_first(temp, "hotspot", "junction", "edge")),
                power_w=to_float(
                    _first(
                        power,
                        "socket_power",
                        "current_socket_power",
                        "average_socket_power",
                        "power_usage",
                    )
                ),
                time=now,
            )
        )
    return tuple(out)


def _rocm_key(card: Mapping[str, Any], *patterns: str) -> Any:
    lowered = {k.lower(): v for k, v in card.items()}
    for pattern in patterns:
        for key, value in lowered.items():
            if re.fullmatch(pattern, key) and to_float(value) is not None:
                return value
    return None


def parse_rocm_smi(text: str, *, now: float = 0.0) -> tuple[GpuSample, ...]:
    """`rocm-smi ... --json`: {"card0": {"GPU use (%)": "12", ...}, "system": {...}}."""
    data = _load_json(text)
    if not isinstance(data, Mapping):
        return ()
    out = []
    for key, card in data.items():
        m = re.fullmatch(r"card(\d+)", str(key))
        if not m or not isinstance(card, Mapping):
            continue
        lowered = {k.lower(): v for k, v in card.items()}
        name = next(
            (
                str(lowered[k])
                for k in ("card series", "card model", "card sku", "device name")
                if k in lowered and str(lowered[k]).strip().upper() not in ("N/A", "")
            ),
            "AMD GPU",
        )
        total = _rocm_key(card, r"vram total memory \(b\)")
        used = _rocm_key(card, r"vram total used memory \(b\)")
        out.append(
            GpuSample(
                index=int(m.group(1)),
                name=name,
                util_pct=to_float(_rocm_key(card, r"gpu use \(%\)")),
                mem_used_mb=to_mb(used, "B") if used is not None else None,
                mem_total_mb=to_mb(total, "B") if total is not None else None,
                temp_c=to_float(
                    _rocm_key(
                        card,
                        r"temperature \(sensor junction\) \(c\)",
                        r"temperature \(sensor edge\) \(c\)",
                        r"temperature.*\(c\)",
                    )
                ),
                power_w=to_float(
                    _rocm_key(
                        card,
                        r"current socket graphics package power \(w\)",
                        r"average graphics package power \(w\)",
                        r".*package power \(w\)",
                    )
                ),
                time=now,
            )
        )
    return tuple(sorted(out, key=lambda s: s.index))


# -- CPU-only -----------------------------------------------------------------------------


def _cpu_times(line: str) -> tuple[int, int] | None:
    """(idle, total) jiffies from /proc/stat's first line."""
    parts = line.split()
    if not parts or parts[0] != "cpu":
        return None
    values = [int(v) for v in parts[1:] if v.isdigit()]
    if len(values) < 4:
        return None
    values = values[:8]  # guest time is already counted in user
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return idle, sum(values)


def parse_proc_cpu(first: str, second: str, *, now: float = 0.0) -> GpuSample:
    """The CPU pseudo-device from /proc/stat twice and /proc/meminfo."""
    stat_lines = [ln for ln in (first + "\n" + second).splitlines() if ln.startswith("cpu ")]
    util: float | None = None
    if len(stat_lines) >= 2:
        a, b = _cpu_times(stat_lines[0]), _cpu_times(stat_lines[-1])
        if a and b and b[1] > a[1]:
            util = round(100.0 * (1 - (b[0] - a[0]) / (b[1] - a[1])), 1)
            util = min(100.0, max(0.0, util))
    mem: dict[str, float] = {}
    ncpu = None
    for line in first.splitlines():
        m = re.match(r"^(MemTotal|MemAvailable):\s+(\d+)\s*kB", line)
        if m:
            mem[m.group(1)] = int(m.group(2)) / 1024
        elif line.startswith("ncpu "):
            ncpu = to_float(line.split()[1]) if len(line.split()) > 1 else None
    total = mem.get("MemTotal")
    used = total - mem["MemAvailable"] if total is not None and "MemAvailable" in mem else None
    name = f"CPU ({int(ncpu)} cores)" if ncpu else "CPU"
    return GpuSample(
        index=0,
        name=name,
        util_pct=util,
        mem_used_mb=round(used, 1) if used is not None else None,
        mem_total_mb=round(total, 1) if total is not None else None,
        time=now,
        kind="cpu",
    )


def psutil_cpu_sample(*, now: float = 0.0, interval: float = 0.2) -> GpuSample:
    import psutil

    vm = psutil.virtual_memory()
    return GpuSample(
        index=0,
        name=f"CPU ({psutil.cpu_count() or '?'} cores)",
        util_pct=psutil.cpu_percent(interval=interval),
        mem_used_mb=round((vm.total - vm.available) / (1024 * 1024), 1),
        mem_total_mb=round(vm.total / (1024 * 1024), 1),
        time=now or time.time(),
        kind="cpu",
    )
