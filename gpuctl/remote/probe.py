"""What a machine offers, learned in one round trip, and a Python that can train on it.

Cloud images differ wildly: a Deep Learning AMI or ROCm PyTorch image ships torch
built for its GPUs, a plain Ubuntu box has python3 and nothing else. The probe says
which (OS, Python, torch and its CUDA/ROCm build, GPUs, disk, rsync/tmux), and
`ensure_python_env` installs torch into a venv only when the machine has none, with
the wheel index that matches the GPU vendor. An installed torch is used as is.

``GPUCTL_REMOTE_PYTHON`` (or a profile's `python` option) names the interpreter to use
on the machine instead of `python3` (tests point it at the project venv).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpuctl.errors import RemoteError

from .gpu import parse_amd_smi_names, parse_nvidia_smi, parse_rocm_smi, to_mb

if TYPE_CHECKING:
    from gpuctl.events import Event
    from gpuctl.host import Host
    from gpuctl.models import LaunchSpec
    from gpuctl.settings import Profile

REMOTE_PYTHON_ENV = "GPUCTL_REMOTE_PYTHON"
TORCH_INDEX = {
    "cuda": None,  # PyPI's default torch wheel bundles CUDA
    "rocm": "https://download.pytorch.org/whl/rocm6.3",
    "cpu": "https://download.pytorch.org/whl/cpu",
}
_MARK = "@@gpuctl:"

_PY_SNIPPET = """
import json, platform, sys
d = {"version": platform.python_version(), "executable": sys.executable}
try:
    import torch
    d["torch"] = torch.__version__
    d["cuda"] = getattr(torch.version, "cuda", None)
    d["hip"] = getattr(torch.version, "hip", None)
    try:
        d["gpu_available"] = bool(torch.cuda.is_available())
        d["gpu_count"] = torch.cuda.device_count() if d["gpu_available"] else 0
    except Exception:
        pass
except ImportError:
    pass
except Exception as e:
    d["torch_error"] = (type(e).__name__ + ": " + str(e))[:300]
print(json.dumps(d))
"""


@dataclass(frozen=True)
class MachineInfo:
    """A frozen snapshot of a machine's software and hardware, as the probe found it."""

    os: str = ""
    arch: str = ""
    kernel: str = ""
    distro: str = ""
    home: str = ""
    python: str | None = None  # interpreter path; None when the machine has no python3
    python_version: str | None = None
    torch_version: str | None = None
    torch_cuda: str | None = None  # CUDA version torch was built with
    torch_hip: str | None = None  # ROCm/HIP version torch was built with
    torch_gpu_available: bool | None = None
    torch_error: str | None = None
    gpu_vendor: str | None = None  # "nvidia" | "amd" | None
    gpu_names: tuple[str, ...] = ()
    gpu_memory_mb: tuple[float | None, ...] = ()
    rocm_version: str | None = None
    cpus: int | None = None
    mem_total_mb: float | None = None
    disk_free_gb: float | None = None
    has_rsync: bool = False
    has_tmux: bool = False

    @property
    def gpu_count(self) -> int:
        return len(self.gpu_names)

    @property
    def accelerator(self) -> str:
        """What the hardware offers: cuda | rocm | cpu."""
        return {"nvidia": "cuda", "amd": "rocm"}.get(self.gpu_vendor or "", "cpu")

    @property
    def torch_build(self) -> str | None:
        """What the installed torch targets: cuda | rocm | cpu (None without torch)."""
        if self.torch_version is None:
            return None
        if self.torch_hip:
            return "rocm"
        if self.torch_cuda:
            return "cuda"
        return "cpu"

    def warnings(self) -> list[str]:
        out = []
        if self.torch_version and self.accelerator != "cpu" and self.torch_build == "cpu":
            out.append(
                f"torch {self.torch_version} on this machine is a CPU build; "
                f"its {self.gpu_count} {self.gpu_vendor} GPU(s) will sit idle"
            )
        if self.torch_build not in (None, "cpu") and self.torch_gpu_available is False:
            out.append(f"torch {self.torch_version} cannot see a GPU (driver not loaded?)")
        if self.disk_free_gb is not None and self.disk_free_gb < 5:
            out.append(f"only {self.disk_free_gb:.1f} GB free on disk")
        return out

    def summary(self) -> str:
        gpus = f"{self.gpu_count}x {self.gpu_names[0]}" if self.gpu_names else "no GPU"
        torch = (
            f"torch {self.torch_version} ({self.torch_build})" if self.torch_version else "no torch"
        )
        py = f"python {self.python_version}" if self.python else "no python3"
        return f"{self.distro or self.os} {self.arch}, {py}, {torch}, {gpus}"


def probe_script(python: str | None, path: str | None) -> str:
    py = f"PY={shlex.quote(python)}" if python else "PY=$(command -v python3 2>/dev/null)"
    where = shlex.quote(path) if path else '"$HOME"'
    return f"""{py}
PATH=$PATH:/usr/bin:/opt/rocm/bin:/usr/local/nvidia/bin
echo "os=$(uname -s)"; echo "arch=$(uname -m)"; echo "kernel=$(uname -r)"
( [ -r /etc/os-release ] && . /etc/os-release && echo "distro=$PRETTY_NAME" )
echo "home=$HOME"
echo "ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)"
awk '/^MemTotal:/ {{print "memkb=" $2}}' /proc/meminfo 2>/dev/null
d={where}; while [ ! -d "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
echo "diskkb=$(df -Pk "$d" 2>/dev/null | awk 'NR==2 {{print $4}}')"
[ -r /opt/rocm/.info/version ] && echo "rocm=$(head -n 1 /opt/rocm/.info/version)"
for t in rsync tmux nvidia-smi amd-smi rocm-smi; do
  command -v $t >/dev/null 2>&1 && echo "has_$t=1"
done
if [ -n "$PY" ] && [ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1; then
  echo "python=$PY"
  echo '{_MARK}python'; "$PY" -c {shlex.quote(_PY_SNIPPET)} 2>/dev/null
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  echo '{_MARK}nvidia'; nvidia-smi --query-gpu=index,name,memory.total \\
    --format=csv,noheader,nounits 2>/dev/null
elif command -v amd-smi >/dev/null 2>&1; then
  echo '{_MARK}amd'; amd-smi static --asic --vram --json 2>/dev/null
elif command -v rocm-smi >/dev/null 2>&1; then
  echo '{_MARK}rocm'; rocm-smi --showproductname --showmeminfo vram --json 2>/dev/null
fi
exit 0
"""


def parse_probe(text: str) -> MachineInfo:
    """Pure: the probe script's output -> MachineInfo."""
    head: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(_MARK):
            current = sections.setdefault(line[len(_MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
        elif "=" in line:
            key, _, value = line.partition("=")
            head[key.strip()] = value.strip()
    py: dict[str, Any] = {}
    for line in reversed(sections.get("python", [])):
        if line.startswith("{"):
            try:
                py = json.loads(line)
            except ValueError:
                py = {}
            break
    vendor, names, mems = _gpus(sections)
    return MachineInfo(
        os=head.get("os", ""),
        arch=head.get("arch", ""),
        kernel=head.get("kernel", ""),
        distro=head.get("distro", ""),
        home=head.get("home", ""),
        python=head.get("python") or None,
        python_version=py.get("version"),
        torch_version=py.get("torch"),
        torch_cuda=py.get("cuda"),
        torch_hip=py.get("hip"),
        torch_gpu_available=py.get("gpu_available"),
        torch_error=py.get("torch_error"),
        gpu_vendor=vendor,
        gpu_names=names,
        gpu_memory_mb=mems,
        rocm_version=head.get("rocm") or None,
        cpus=_int(head.get("ncpu")),
        mem_total_mb=_div(head.get("memkb"), 1024),
        disk_free_gb=_div(head.get("diskkb"), 1024 * 1024),
        has_rsync=head.get("has_rsync") == "1",
        has_tmux=head.get("has_tmux") == "1",
    )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _div(text: str | None, by: float) -> float | None:
    value = _int(text)
    return None if value is None else round(value / by, 2)


def _gpus(
    sections: dict[str, list[str]],
) -> tuple[str | None, tuple[str, ...], tuple[float | None, ...]]:
    if "nvidia" in sections:
        fields = ("index", "name", "memory.total")
        gpus = parse_nvidia_smi("\n".join(sections["nvidia"]), fields)
        if gpus:
            return "nvidia", tuple(g.name for g in gpus), tuple(g.mem_total_mb for g in gpus)
    if "amd" in sections:
        text = "\n".join(sections["amd"])
        names = parse_amd_smi_names(text)
        mems = _amd_vram(text)
        indices = sorted(set(names) | set(mems))
        if indices:
            return (
                "amd",
                tuple(names.get(i, "AMD GPU") for i in indices),
                tuple(mems.get(i) for i in indices),
            )
    if "rocm" in sections:
        gpus = parse_rocm_smi("\n".join(sections["rocm"]))
        if gpus:
            return "amd", tuple(g.name for g in gpus), tuple(g.mem_total_mb for g in gpus)
    return None, (), ()


def _amd_vram(text: str) -> dict[int, float | None]:
    from .gpu import _amd_items, _load_json, to_float

    out: dict[int, float | None] = {}
    for pos, item in enumerate(_amd_items(_load_json(text))):
        vram = item.get("vram")
        size = vram.get("size") if isinstance(vram, dict) else None
        index = to_float(item.get("gpu"))
        out[int(index) if index is not None else pos] = to_mb(size) if size is not None else None
    return out


def remote_python(option: str | None = None) -> str | None:
    """The interpreter gpuctl should use on machines: profile option, then env, then python3."""
    return option or os.environ.get(REMOTE_PYTHON_ENV) or None


def probe(host: Host, *, python: str | None = None, timeout: float = 180.0) -> MachineInfo:
    """One round trip: what is on the machine (importing torch can take a while: timeout)."""
    python = remote_python(python)
    result = host.exec(probe_script(python, host.base_dir()), timeout=timeout)
    info = parse_probe(result.stdout)
    if not info.os:
        raise RemoteError(
            f"probing {host.label} failed: {(result.stderr or result.stdout).strip()[:200]}",
            hint="the machine needs a POSIX shell (sh) and coreutils",
        )
    return info


# -- Python environment ------------------------------------------------------------------


def torch_index_url(info: MachineInfo, override: str | None = None) -> str | None:
    """The wheel index matching the machine's GPUs (None = PyPI default, i.e. CUDA)."""
    if override:
        return override
    if info.accelerator == "rocm" and info.rocm_version:
        m = re.match(r"(\d+)\.(\d+)", info.rocm_version)
        if m and m.group(1) == "6":
            minor = min(int(m.group(2)), 4)
            return f"https://download.pytorch.org/whl/rocm6.{minor}"
    return TORCH_INDEX[info.accelerator]


def install_commands(
    info: MachineInfo, base_dir: str, *, index_url: str | None = None, torch_spec: str = "torch"
) -> tuple[str, list[str]]:
    """(venv python, shell commands) that put torch into base_dir/venv."""
    if not info.python:
        raise no_python_error("the machine")
    venv = f"{base_dir.rstrip('/')}/venv"
    vpy = f"{venv}/bin/python"
    url = torch_index_url(info, index_url)
    pip = [vpy, "-m", "pip", "install", "--no-input", "--progress-bar", "off", torch_spec]
    if url:
        pip += ["--index-url", url]
    return vpy, [
        f"[ -x {shlex.quote(vpy)} ] || {shlex.join([info.python, '-m', 'venv', venv])}",
        shlex.join(pip),
    ]


def no_python_error(label: str) -> RemoteError:
    return RemoteError(
        f"no python3 on {label}",
        hint="install python3 and python3-venv (apt-get install -y python3 python3-venv), "
        "or use an image with PyTorch",
    )


def ensure_python_env(
    host: Host,
    info: MachineInfo,
    *,
    index_url: str | None = None,
    torch_spec: str = "torch",
    timeout: float = 1800.0,
) -> str:
    """The python to run the trainer with; installs torch into a venv only when missing."""
    if not info.python:
        raise no_python_error(host.label)
    if info.torch_version:
        return info.python
    vpy, commands = install_commands(
        info, host.base_dir(), index_url=index_url, torch_spec=torch_spec
    )
    check = f"{shlex.quote(vpy)} -c 'import torch' 2>/dev/null"
    if host.exec(check, timeout=120).ok:
        return vpy  # installed by an earlier run
    venv_cmd, pip_cmd = commands
    res = host.exec(venv_cmd, timeout=300)
    if not res.ok:
        raise RemoteError(
            f"creating a Python venv on {host.label} failed: "
            f"{(res.stderr or res.stdout).strip().splitlines()[-1:] or ['?']}",
            hint="install python3-venv (apt-get install -y python3-venv) or use an image "
            "with PyTorch",
        )
    res = host.exec(pip_cmd, timeout=timeout)
    if not res.ok:
        last = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
        raise RemoteError(
            f"installing {torch_spec} on {host.label} failed: {last[0][:300]}",
            hint="check the machine's network and free disk space, or use an image with PyTorch",
        )
    return vpy


def prepare_python(host: Host, profile: Profile, spec: LaunchSpec) -> tuple[str, int, list[Event]]:
    """(python to run the trainer with, processes to start, notices) for one launch.

    A machine without GPUs trains on its CPU with a warning, unless `--require-gpu`.
    """
    from gpuctl.events import Notice

    info = probe(host, python=profile.get("python"))
    notices: list[Event] = [Notice(spec.run_id, f"{host.label}: {info.summary()}")]
    notices += [Notice(spec.run_id, w, "warning") for w in info.warnings()]
    if info.gpu_count == 0:
        if spec.require_gpu:
            raise RemoteError(
                f"{host.label} has no GPU (no nvidia-smi, amd-smi or rocm-smi answered)",
                hint="drop --require-gpu to train on its CPU, or choose a GPU machine",
            )
        notices.append(Notice(spec.run_id, f"{host.label} has no GPU: training on CPU", "warning"))
    python = ensure_python_env(host, info, index_url=profile.get("torch_index_url"))
    if python != info.python:
        notices.append(Notice(spec.run_id, f"using torch installed in {python}"))
    gpu_torch = info.torch_build in (None, "cuda", "rocm") and info.torch_gpu_available is not False
    nproc = info.gpu_count if info.gpu_count > 1 and gpu_torch else 1
    return python, nproc, notices
