"""The environment probe over a real sshd (and LocalHost), and the torch install plan."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gpuctl.errors import RemoteError
from gpuctl.local_host import LocalHost
from gpuctl.models import LaunchSpec
from gpuctl.remote import probe as probe_mod
from gpuctl.remote.probe import (
    MachineInfo,
    ensure_python_env,
    install_commands,
    parse_probe,
    prepare_python,
    probe,
    torch_index_url,
)
from gpuctl.remote.ssh_host import SshHost
from gpuctl.settings import Profile

VENV_PYTHON = sys.executable  # the project venv: torch CPU build, as on the test machine
PLAIN_PYTHON = "/usr/bin/python3"  # no torch: probes fast


@pytest.mark.sshd
def test_probe_over_ssh_with_the_named_python(host: SshHost) -> None:
    info = probe(host, python=VENV_PYTHON)
    assert info.os == "Linux" and info.arch and info.home.startswith("/")
    assert info.python == VENV_PYTHON and info.python_version == sys.version.split()[0]
    assert info.torch_version and info.torch_build == "cpu"
    assert info.gpu_vendor is None and info.gpu_count == 0 and info.accelerator == "cpu"
    assert info.has_rsync and info.has_tmux
    assert info.disk_free_gb and info.disk_free_gb > 0 and info.cpus and info.mem_total_mb
    assert ensure_python_env(host, info) == VENV_PYTHON  # torch present: used as is


@pytest.mark.sshd
def test_env_var_names_the_remote_python(host: SshHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(probe_mod.REMOTE_PYTHON_ENV, PLAIN_PYTHON)
    assert probe(host).python == PLAIN_PYTHON


@pytest.mark.sshd
def test_no_python_is_a_clear_error(host: SshHost) -> None:
    info = probe(host, python="/nonexistent/python3")
    assert info.python is None and info.torch_version is None
    with pytest.raises(RemoteError, match="no python3 on") as err:
        ensure_python_env(host, info)
    assert "python3-venv" in err.value.hint


@pytest.mark.sshd
def test_prepare_python_warns_on_cpu_and_refuses_with_require_gpu(host: SshHost) -> None:
    profile = Profile("ssh", "ssh", {"python": VENV_PYTHON})
    spec = LaunchSpec(run_id="r1", preset="validate", provider="ssh")
    python, nproc, notices = prepare_python(host, profile, spec)
    assert (python, nproc) == (VENV_PYTHON, 1)
    assert any("no GPU" in n.text() and "warning" in n.text() for n in notices)
    plain = Profile("ssh", "ssh", {"python": PLAIN_PYTHON})
    with pytest.raises(RemoteError, match="has no GPU"):
        prepare_python(host, plain, replace(spec, require_gpu=True))


def test_probe_works_over_localhost(tmp_path: Path) -> None:
    info = probe(LocalHost(tmp_path), python=PLAIN_PYTHON)
    assert info.python == PLAIN_PYTHON and info.python_version and info.os == "Linux"


def test_parse_probe_with_amd_gpus() -> None:
    fixtures = Path(__file__).parent / "fixtures"
    text = (
        "os=Linux\narch=x86_64\npython=/usr/bin/python3\nhas_rsync=1\ndiskkb=104857600\n"
        "rocm=6.2.4-120\n@@gpuctl:python\n"
        '{"version": "3.10.12", "torch": "2.5.1+rocm6.2", "cuda": null, "hip": "6.2.41133", '
        '"gpu_available": true, "gpu_count": 2}\n'
        "@@gpuctl:amd\n" + (fixtures / "amd_smi_static_mi300x.json").read_text()
    )
    info = parse_probe(text)
    assert info.gpu_vendor == "amd" and info.gpu_names == ("AMD Instinct MI300X",) * 2
    assert info.gpu_memory_mb == (196592.0, 196592.0)
    assert info.torch_build == "rocm" and info.accelerator == "rocm" and not info.warnings()
    assert info.disk_free_gb == 100.0 and info.has_rsync and not info.has_tmux
    assert torch_index_url(info) == "https://download.pytorch.org/whl/rocm6.2"


def test_parse_probe_with_nvidia_and_a_cpu_torch_warns() -> None:
    text = (
        "os=Linux\npython=/usr/bin/python3\n@@gpuctl:python\n"
        '{"version": "3.12.3", "torch": "2.6.0+cpu", "cuda": null, "hip": null}\n'
        "@@gpuctl:nvidia\n0, NVIDIA A10G, 23028\n"
    )
    info = parse_probe(text)
    assert info.gpu_names == ("NVIDIA A10G",) and info.gpu_memory_mb == (23028.0,)
    assert info.torch_build == "cpu" and "CPU build" in info.warnings()[0]


def test_torch_index_by_vendor() -> None:
    cuda = MachineInfo(os="Linux", python="/usr/bin/python3", gpu_vendor="nvidia", gpu_names=("A",))
    rocm = replace(cuda, gpu_vendor="amd")
    cpu = replace(cuda, gpu_vendor=None, gpu_names=())
    assert torch_index_url(cuda) is None  # PyPI's default wheel is the CUDA one
    assert torch_index_url(rocm).startswith("https://download.pytorch.org/whl/rocm6.")  # type: ignore[union-attr]
    assert torch_index_url(cpu) == "https://download.pytorch.org/whl/cpu"
    vpy, (venv, pip) = install_commands(cpu, "/home/u/gpuctl")
    assert vpy == "/home/u/gpuctl/venv/bin/python"
    assert "-m venv /home/u/gpuctl/venv" in venv
    assert pip.endswith("torch --index-url https://download.pytorch.org/whl/cpu")
    _, (_, pip) = install_commands(cuda, "/b")
    assert "--index-url" not in pip
