"""Command lines for the system `ssh` client (rsync transport, interactive `gpuctl ssh`).

The system client must trust exactly what paramiko trusts: gpuctl's pin file through
UserKnownHostsFile, looked up under the same `[host]:port` name (HostKeyAlias), with
StrictHostKeyChecking=yes so it never adds or replaces a key on its own. The agent and
X11 are never forwarded, whatever ~/.ssh/config says. Connections are multiplexed
(ControlMaster) so repeated rsyncs skip the handshake.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from .endpoint import Endpoint


def ssh_binary() -> str | None:
    return shutil.which("ssh")


def control_dir() -> Path | None:
    """A private directory for multiplexing sockets (short path: sun_path is ~100 bytes)."""
    path = Path(tempfile.gettempdir()) / f"gpuctl-ssh-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        if path.stat().st_uid != os.getuid() or path.stat().st_mode & 0o077:
            return None
    except OSError:
        return None
    return path


def ssh_options(
    ep: Endpoint,
    known_hosts: Path,
    *,
    connect_timeout: float = 10.0,
    multiplex: bool = True,
    batch: bool = True,
) -> list[str]:
    """Options (without the destination) that reproduce the paramiko session's trust."""
    opts = ["-F", ep.config_path or "/dev/null", "-p", str(ep.port), "-l", ep.user]
    for key in ep.key_files:
        opts += ["-i", key]
    settings = {
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": str(known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "HostKeyAlias": ep.pin_name,
        "CheckHostIP": "no",
        "ConnectTimeout": str(max(1, round(connect_timeout))),
        "ServerAliveInterval": "15",
        "ServerAliveCountMax": "4",
        "LogLevel": "ERROR",
        # A rented machine is not trusted with this laptop's agent or display: root
        # there could use a forwarded agent to log in wherever its keys open.
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ForwardX11Trusted": "no",
    }
    if ep.key_files:
        settings["IdentitiesOnly"] = "yes"
    if batch:
        settings["BatchMode"] = "yes"
    cdir = control_dir() if multiplex else None
    if cdir is not None:
        settings.update(ControlMaster="auto", ControlPath=str(cdir / "%C"), ControlPersist="60")
    for name, value in settings.items():
        opts += ["-o", f"{name}={value}"]
    if ep.proxy_jump:
        opts += ["-J", ep.proxy_jump]
    elif ep.proxy_command:
        opts += ["-o", f"ProxyCommand={ep.proxy_command}"]
    return opts


def destination(ep: Endpoint) -> str:
    return ep.host


def rsync_remote(ep: Endpoint, path: str) -> str:
    """`host:path` for rsync (the user comes from -l in the -e command)."""
    host = f"[{ep.host}]" if ":" in ep.host else ep.host
    return f"{host}:{path}"


def rsync_shell(ep: Endpoint, known_hosts: Path, *, connect_timeout: float = 10.0) -> str:
    """The -e argument for rsync: rsync splits it on spaces and honours quotes."""
    return shlex.join(["ssh", *ssh_options(ep, known_hosts, connect_timeout=connect_timeout)])


def stop_master(ep: Endpoint, known_hosts: Path) -> None:
    """Close a multiplexing master for this endpoint, if one runs (quietly, quickly)."""
    ssh = ssh_binary()
    if ssh is None or control_dir() is None:
        return
    try:
        subprocess.run(
            [ssh, *ssh_options(ep, known_hosts), "-O", "exit", destination(ep)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        pass
