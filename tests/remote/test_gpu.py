"""GPU meter parsers on recorded tool outputs, and the one-round-trip sampler."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuctl.host import ExecResult
from gpuctl.remote import gpu

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_nvidia_single_a10g() -> None:
    (s,) = gpu.parse_nvidia_smi(fixture("nvidia_a10g.csv"), now=5.0)
    assert (s.index, s.name, s.kind, s.time) == (0, "NVIDIA A10G", "gpu", 5.0)
    assert (s.util_pct, s.mem_used_mb, s.mem_total_mb) == (87.0, 18234.0, 23028.0)
    assert (s.temp_c, s.power_w) == (61.0, 187.45)


def test_nvidia_h100_eight_gpus_in_order() -> None:
    samples = gpu.parse_nvidia_smi(fixture("nvidia_h100x8.csv"))
    assert [s.index for s in samples] == list(range(8))
    assert {s.name for s in samples} == {"NVIDIA H100 80GB HBM3"}
    assert samples[6].util_pct == 97.0 and samples[7].power_w == 693.77
    assert all(s.mem_total_mb == 81559.0 for s in samples)


def test_nvidia_na_fields_are_none() -> None:
    first, second = gpu.parse_nvidia_smi(fixture("nvidia_na_power.csv"))
    assert first.power_w is None and first.util_pct == 0.0 and first.temp_c == 34.0
    assert second.util_pct is None and second.temp_c is None and second.power_w is None
    assert second.mem_used_mb == 3.0


def test_nvidia_columns_follow_the_header_when_present() -> None:
    (s,) = gpu.parse_nvidia_smi(fixture("nvidia_with_header.csv"))
    assert s.name == "NVIDIA GeForce RTX 4090"
    assert (s.util_pct, s.mem_used_mb, s.mem_total_mb, s.power_w) == (43.0, 9874.0, 24564.0, 301.27)


def test_nvidia_columns_follow_the_requested_field_order() -> None:
    (s,) = gpu.parse_nvidia_smi("3, 71, Tesla V100\n", fields=("index", "temperature.gpu", "name"))
    assert (s.index, s.temp_c, s.name, s.util_pct) == (3, 71.0, "Tesla V100", None)


def test_nvidia_error_text_gives_no_samples() -> None:
    assert gpu.parse_nvidia_smi(fixture("nvidia_no_devices.txt")) == ()
    assert gpu.parse_nvidia_smi("") == ()


def test_amd_smi_mi300x_gpu_data_format() -> None:
    names = gpu.parse_amd_smi_names(fixture("amd_smi_static_mi300x.json"))
    assert names == {0: "AMD Instinct MI300X", 1: "AMD Instinct MI300X"}
    busy, idle = gpu.parse_amd_smi(fixture("amd_smi_metric_mi300x.json"), names=names)
    assert busy.name == "AMD Instinct MI300X" and busy.index == 0
    assert (busy.util_pct, busy.mem_used_mb, busy.mem_total_mb) == (97.0, 162310.0, 196592.0)
    assert busy.temp_c == 71.0  # hotspot: MI300X reports no edge sensor
    assert busy.power_w == 698.0
    assert idle.power_w is None and idle.util_pct == 0.0 and idle.mem_used_mb == 283.0


def test_amd_smi_legacy_list_with_bare_values() -> None:
    (s,) = gpu.parse_amd_smi(fixture("amd_smi_metric_legacy.json"))
    assert s.name == "AMD GPU"  # no static query: a generic name, never a crash
    assert (s.util_pct, s.power_w, s.temp_c) == (12.0, 167.0, 45.0)
    assert (s.mem_used_mb, s.mem_total_mb) == (5120.0, 196592.0)


def test_rocm_smi_mi300x() -> None:
    a, b = gpu.parse_rocm_smi(fixture("rocm_smi_mi300x.json"))
    assert (a.index, a.name, a.util_pct, a.temp_c, a.power_w) == (
        0,
        "AMD Instinct MI300X",
        98.0,
        69.0,
        701.0,
    )
    assert a.mem_total_mb == pytest.approx(196592.0, rel=1e-3)
    assert a.mem_used_mb == pytest.approx(162311.0, rel=1e-3)
    assert b.power_w is None and b.util_pct == 0.0


def test_rocm_smi_mi250_average_power_key() -> None:
    (s,) = gpu.parse_rocm_smi(fixture("rocm_smi_mi250.json"))
    assert s.name.startswith("AMD INSTINCT MI250")
    assert (s.power_w, s.temp_c, s.util_pct) == (212.0, 44.0, 64.0)


def test_cpu_fallback_from_proc() -> None:
    s = gpu.parse_proc_cpu(fixture("proc_cpu_first.txt"), fixture("proc_cpu_second.txt"))
    assert s.kind == "cpu" and s.name == "CPU (8 cores)"
    assert s.util_pct == 75.0
    assert s.mem_total_mb == pytest.approx(15932.3, abs=0.1)
    assert s.mem_used_mb == pytest.approx(4202.6, abs=0.1)
    assert (s.temp_c, s.power_w) == (None, None)


@pytest.mark.parametrize("junk", ["N/A", "[N/A]", "[Not Supported]", "", None, "garbage", {}])
def test_to_float_never_raises(junk: object) -> None:
    assert gpu.to_float(junk) is None


def test_to_mb_units() -> None:
    assert gpu.to_mb({"value": 2, "unit": "GB"}) == 2048.0
    assert gpu.to_mb("1048576 B") == 1.0
    assert gpu.to_mb(1048576, "B") == 1.0
    assert gpu.to_mb("N/A") is None


class FakeHost:
    """Records the script and answers with a canned tool output (parsers are the point)."""

    def __init__(self, stdout: str, label: str = "ubuntu@10.0.0.1") -> None:
        self.stdout = stdout
        self.label = label
        self.scripts: list[str] = []

    def exec(
        self, command: str, *, timeout: float | None = 120.0, env: object = None
    ) -> ExecResult:
        self.scripts.append(command)
        return ExecResult(0, self.stdout, "")


def test_sampler_is_one_round_trip_and_caches_amd_names() -> None:
    out = (
        "@@gpuctl:amd-smi\n"
        + fixture("amd_smi_metric_mi300x.json")
        + "@@gpuctl:amd-smi-static\n"
        + fixture("amd_smi_static_mi300x.json")
    )
    host = FakeHost(out)
    sampler = gpu.GpuSampler(host)  # type: ignore[arg-type]
    first = sampler.sample()
    assert [s.name for s in first] == ["AMD Instinct MI300X"] * 2
    host.stdout = "@@gpuctl:amd-smi\n" + fixture("amd_smi_metric_mi300x.json")
    second = sampler.sample()
    assert [s.name for s in second] == ["AMD Instinct MI300X"] * 2
    assert len(host.scripts) == 2
    assert "static" in host.scripts[0] and "static" not in host.scripts[1]


def test_sampler_script_tries_each_tool_then_cpu() -> None:
    script = gpu.sample_script()
    order = [
        script.index(t)
        for t in ("nvidia-smi --query-gpu", "amd-smi metric", "rocm-smi", "/proc/stat")
    ]
    assert order == sorted(order)
    assert gpu.NVIDIA_QUERY in script


def test_sampler_nvidia_section() -> None:
    host = FakeHost("@@gpuctl:nvidia-smi\n" + fixture("nvidia_h100x8.csv"))
    samples = gpu.sample_gpus(host)  # type: ignore[arg-type]
    assert len(samples) == 8 and samples[0].time > 0


def test_sampler_local_cpu_uses_psutil() -> None:
    host = FakeHost("@@gpuctl:cpu-local\n", label="local")
    (s,) = gpu.sample_gpus(host)  # type: ignore[arg-type]
    assert s.kind == "cpu" and s.mem_total_mb and s.util_pct is not None
    assert "/proc/stat" not in host.scripts[0]
