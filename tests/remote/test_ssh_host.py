"""SshHost against a real OpenSSH sshd: commands, files, trust, failures, dropped links."""

from __future__ import annotations

import os
import pty
import select
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gpuctl.errors import EXIT_PROVIDER, HostKeyError, RemoteError
from gpuctl.host import Host
from gpuctl.remote import sshcmd
from gpuctl.remote.endpoint import target_from_spec
from gpuctl.remote.gpu import sample_gpus
from gpuctl.remote.hostkeys import forget_host
from gpuctl.remote.ssh_host import SshHost
from gpuctl.settings import Settings
from tests.fixtures.sshd import SshdServer, free_port

pytestmark = pytest.mark.sshd


@pytest.fixture(autouse=True)
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the keys a test names may authenticate."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("GPUCTL_SSH_CONFIG", "/dev/null")


def test_implements_the_host_protocol(host: SshHost) -> None:
    assert isinstance(host, Host)
    assert host.label.endswith(f"@127.0.0.1:{host.session.endpoint.port}")


def test_exec_returns_rc_stdout_stderr(host: SshHost) -> None:
    res = host.exec("echo out; echo err >&2; exit 3")
    assert (res.rc, res.stdout, res.stderr) == (3, "out\n", "err\n")
    assert host.exec("true").ok


def test_exec_env_travels_on_stdin_not_argv(host: SshHost) -> None:
    secret = "s3cr3t 'quoted' $HOME \"x\"\nline2"
    res = host.exec(
        'printf "<%s>" "$TOKEN"; tr "\\0" " " < /proc/$$/cmdline', env={"TOKEN": secret}
    )
    value, _, cmdline = res.stdout[1:].partition(">")
    assert value == secret
    assert "s3cr3t" not in cmdline  # the shell's argv is just `sh -s`
    with pytest.raises(ValueError):
        host.exec("true", env={"BAD-NAME": "x"})


def test_exec_timeout_is_a_one_line_remote_error(host: SshHost) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteError, match=r"timed out after 0\.5s"):
        host.exec("sleep 5", timeout=0.5)
    assert time.monotonic() - started < 3
    assert host.exec("echo still-usable").stdout == "still-usable\n"


def test_files_read_write_size(host: SshHost, remote_base: Path) -> None:
    path = f"{host.base_dir()}/a/b/c.bin"
    data = os.urandom(3 << 20) + b"tail"
    host.write_bytes(path, data, mode=0o600)
    assert (remote_base / "a/b/c.bin").read_bytes() == data
    assert stat.S_IMODE((remote_base / "a/b/c.bin").stat().st_mode) == 0o600
    assert host.file_size(path) == len(data)
    assert host.read_bytes(path) == data
    assert host.read_bytes(path, len(data) - 4) == b"tail"
    assert host.read_bytes(path, 10, 5) == data[10:15]
    assert host.read_bytes(path, len(data) + 10) == b""
    assert host.read_bytes(f"{host.base_dir()}/missing") is None
    assert host.file_size(f"{host.base_dir()}/missing") is None
    assert not [p for p in (remote_base / "a/b").iterdir() if p.name != "c.bin"]  # no tmp left
    host.write_bytes(path, b"replaced")
    assert host.read_bytes(path) == b"replaced"


def test_base_dir_expands_home(sshd: SshdServer, settings: Settings, tmp_path: Path) -> None:
    relative = os.path.relpath(tmp_path / "gp", os.path.expanduser("~"))
    h = SshHost(sshd.target(), settings, remote_base=f"~/{relative}")
    try:
        assert h.base_dir() == str(tmp_path / "gp")
        assert (tmp_path / "gp").is_dir()
    finally:
        h.close()


# -- trust ------------------------------------------------------------------------------


def test_first_contact_pins_the_key_in_gpuctl_known_hosts(
    host: SshHost, settings: Settings, sshd: SshdServer
) -> None:
    host.connect()
    text = settings.known_hosts.read_text()
    assert text.startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    assert stat.S_IMODE(settings.known_hosts.stat().st_mode) == 0o600
    # The system client trusts exactly that pin.
    ep = host.session.endpoint
    argv = [
        "ssh",
        *sshcmd.ssh_options(ep, settings.known_hosts, multiplex=False),
        ep.host,
        "echo ok",
    ]
    assert subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout == "ok\n"


def test_changed_host_key_is_refused(private_sshd: SshdServer, settings: Settings) -> None:
    first = SshHost(private_sshd.target(), settings)
    first.connect()
    first.close()
    private_sshd.restart_with_new_host_key()
    second = SshHost(private_sshd.target(), settings)
    with pytest.raises(HostKeyError) as info:
        second.connect()
    err = info.value
    assert "changed" in err.message and "\n" not in err.message
    assert str(settings.known_hosts) in err.hint
    assert err.exit_code == EXIT_PROVIDER
    # The pin is untouched, and the system client refuses too.
    assert f"[127.0.0.1]:{private_sshd.port}" in settings.known_hosts.read_text()
    ep = second.session.endpoint
    argv = ["ssh", *sshcmd.ssh_options(ep, settings.known_hosts, multiplex=False), ep.host, "true"]
    assert subprocess.run(argv, capture_output=True, timeout=20).returncode == 255
    # A provider that just created a machine at a recycled address forgets the old pin.
    assert forget_host(settings.known_hosts, "127.0.0.1", private_sshd.port)
    assert SshHost(private_sshd.target(), settings).exec("echo new").stdout == "new\n"


# -- failures: one line, bounded time ----------------------------------------------------------


def _fails_fast(host: SshHost, within: float, match: str) -> RemoteError:
    started = time.monotonic()
    with pytest.raises(RemoteError, match=match) as info:
        host.connect()
    assert time.monotonic() - started < within
    assert "\n" not in info.value.message and info.value.hint
    assert info.value.exit_code == EXIT_PROVIDER
    return info.value


def test_wrong_key_is_an_auth_failure(sshd: SshdServer, settings: Settings) -> None:
    h = SshHost(sshd.target(key_path=str(sshd.unauthorized_key())), settings, connect_timeout=5)
    err = _fails_fast(h, 10, "authentication failed")
    assert "--identity" in err.hint


def test_missing_identity_file(sshd: SshdServer, settings: Settings, tmp_path: Path) -> None:
    h = SshHost(sshd.target(key_path=str(tmp_path / "nope")), settings)
    _fails_fast(h, 2, "identity file .* not found")


def test_closed_port_is_refused_quickly(sshd: SshdServer, settings: Settings) -> None:
    h = SshHost(sshd.target(port=free_port()), settings, connect_timeout=5)
    _fails_fast(h, 3, "refused|unreachable")


def test_unreachable_host_is_bounded(sshd: SshdServer, settings: Settings) -> None:
    h = SshHost(sshd.target(host="192.0.2.1"), settings, connect_timeout=2)
    _fails_fast(h, 6, "192.0.2.1")


def test_unknown_host_name(sshd: SshdServer, settings: Settings) -> None:
    h = SshHost(sshd.target(host="no-such-host.invalid"), settings, connect_timeout=2)
    _fails_fast(h, 10, "cannot resolve")


def test_boot_wait_retries_until_sshd_listens(private_sshd: SshdServer, settings: Settings) -> None:
    private_sshd.stop()
    timer = threading.Timer(1.5, private_sshd.start)
    timer.start()
    try:
        h = SshHost(private_sshd.target(), settings, connect_timeout=2, boot_wait=20)
        started = time.monotonic()
        assert h.exec("echo up").stdout == "up\n"
        assert 1.0 < time.monotonic() - started < 15
        h.close()
    finally:
        timer.join()


def test_wait_ready_bounds_only_the_first_connect(host: SshHost) -> None:
    started = time.monotonic()
    assert host.wait_ready(300) is host
    assert time.monotonic() - started < 5 and host.session.boot_wait == 0


# -- dropped links --------------------------------------------------------------------------


def test_exec_after_a_dropped_link_reconnects(host: SshHost, sshd: SshdServer) -> None:
    host.exec("true")
    port = host.session.local_port
    assert port and sshd.kill_connection(port) >= 1
    assert host.exec("echo again").stdout == "again\n"
    assert host.session.reconnects == 1


def test_tail_survives_a_killed_sshd_child_byte_for_byte(
    host: SshHost, sshd: SshdServer, remote_base: Path
) -> None:
    log = remote_base / "train.log"
    log.write_bytes(b"")
    done = threading.Event()

    def writer() -> None:
        with open(log, "ab", buffering=0) as fh:
            for i in range(3000):
                fh.write(f"step {i} loss {1 / (i + 1):.6f} {'x' * (i % 97)}\n".encode())
                if i % 100 == 0:
                    time.sleep(0.01)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    collected = bytearray()
    killed = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        chunk = host.read_bytes(str(log), len(collected), 64 << 10)
        assert chunk is not None
        collected += chunk
        if not killed and len(collected) > 20_000:
            port = host.session.local_port
            assert port and sshd.kill_connection(port) >= 1
            killed = True
        if done.is_set() and not chunk and len(collected) == log.stat().st_size:
            break
        if not chunk:
            time.sleep(0.01)
    thread.join()
    assert killed and host.session.reconnects >= 1
    assert bytes(collected) == log.read_bytes()


# -- ~/.ssh/config, ProxyJump, shell, sampler ------------------------------------------------


def test_ssh_config_alias_and_proxyjump(
    sshd: SshdServer, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host gpubox\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_path}\n\n"
        f"Host behind\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_path}\n  ProxyJump gpubox\n"
    )
    monkeypatch.setenv("GPUCTL_SSH_CONFIG", str(config))
    target = target_from_spec("gpubox")
    assert (target.host_alias, target.port, target.user) == ("gpubox", sshd.port, sshd.user)
    direct = SshHost(target, settings)
    assert direct.exec("echo direct").stdout == "direct\n"
    assert direct.session.endpoint.host == "127.0.0.1"
    direct.close()
    jumped = SshHost(target_from_spec("behind"), settings)
    assert jumped.session.endpoint.proxy_jump == "gpubox"
    assert jumped.exec("echo jumped").stdout == "jumped\n"
    assert jumped.read_bytes(str(config)) == config.read_bytes()
    jumped.close()


def test_shell_runs_in_the_run_dir(host: SshHost, remote_base: Path) -> None:
    host.connect()
    argv = host.shell_argv(str(remote_base))
    assert argv is not None and "-t" in argv
    res = subprocess.run(argv, input="pwd\nexit 7\n", capture_output=True, text=True, timeout=30)
    assert str(remote_base) in res.stdout
    assert res.returncode == 7


def test_gpu_sampler_over_ssh_falls_back_to_cpu(host: SshHost) -> None:
    (s,) = sample_gpus(host)
    assert s.kind == "cpu" and s.util_pct is not None and s.mem_total_mb


def test_interactive_fallback_without_a_system_ssh(sshd: SshdServer, remote_base: Path) -> None:
    """`gpuctl ssh` on a machine with no `ssh` binary: a pty over the paramiko channel."""
    code = (
        "import sys\n"
        "from gpuctl.models import SshTarget\n"
        "from gpuctl.remote.interactive import run_interactive\n"
        "from gpuctl.remote.ssh_host import SshHost\n"
        "from gpuctl.settings import load\n"
        f"t = SshTarget(host='127.0.0.1', port={sshd.port}, user={sshd.user!r}, "
        f"key_path={str(sshd.key_path)!r})\n"
        "h = SshHost(t, load()).connect()\n"
        f"sys.exit(run_interactive(h.session.transport(), h.shell_command({str(remote_base)!r})))\n"
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    output = bytearray()
    sent = False
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if not sent and time.monotonic() > deadline - 28:
                os.write(master, b"echo IN=$(pwd); exit 5\n")
                sent = True
            if proc.poll() is not None and not ready:
                break
    finally:
        os.close(master)
    assert proc.wait(10) == 5, output.decode(errors="replace")
    assert f"IN={remote_base}".encode() in output


def test_system_ssh_never_forwards_the_agent_or_x11(
    sshd: SshdServer, settings: Settings, remote_base: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """`gpuctl ssh` (and rsync's transport) keep the laptop's agent off the rented machine,
    even when the user's ssh config forwards it everywhere."""
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True)
    env = dict(
        line.split(";")[0].split("=", 1) for line in agent.stdout.splitlines() if "=" in line
    )
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  ForwardAgent yes\n  ForwardX11 yes\n")
    monkeypatch.setenv("GPUCTL_SSH_CONFIG", str(config))
    monkeypatch.setenv("SSH_AUTH_SOCK", env["SSH_AUTH_SOCK"])
    monkeypatch.setenv("DISPLAY", ":0")
    host = SshHost(sshd.target(), settings, remote_base=str(remote_base))
    try:
        host.connect()
        argv = host.shell_argv(str(remote_base))
        assert argv is not None
        script = 'echo "agent=${SSH_AUTH_SOCK:-none} display=${DISPLAY:-none}"\nexit\n'
        res = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=30)
        assert "agent=none display=none" in res.stdout, res.stdout + res.stderr
    finally:
        host.close()
        subprocess.run(["kill", env["SSH_AGENT_PID"]], check=False)
