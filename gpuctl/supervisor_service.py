"""`gpuctl supervise --install`: register the supervisor with the user's service manager.

A systemd user unit on Linux, a launchd agent on macOS: it starts at login and restarts
on failure. The file is generated here (shown to the user before it is written); the
service manager is asked to load it only when its command exists on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

UNIT_NAME = "gpuctl-supervise.service"
AGENT_LABEL = "dev.gpuctl.supervise"


@dataclass(frozen=True)
class ServiceFile:
    """A service definition for one platform: where it goes, what it says, how to load it."""

    path: Path
    text: str
    manager: str  # the command that loads it: systemctl | launchctl
    load: tuple[tuple[str, ...], ...]
    unload: tuple[tuple[str, ...], ...]


def command() -> list[str]:
    """How the service starts this gpuctl: the same interpreter and package."""
    return [sys.executable, "-m", "gpuctl", "supervise"]


def environment() -> dict[str, str]:
    """The data directory override the service needs to supervise the same runs."""
    home = os.environ.get("GPUCTL_HOME")
    return {"GPUCTL_HOME": str(Path(home).expanduser().resolve())} if home else {}


def service_file(platform: str | None = None, home: Path | None = None) -> ServiceFile:
    """The unit (linux) or launch agent (darwin) for this user; ConfigError elsewhere."""
    from .errors import ConfigError

    platform = platform or sys.platform
    home = home or Path.home()
    if platform.startswith("linux"):
        return _systemd(home)
    if platform == "darwin":
        return _launchd(home)
    raise ConfigError(
        f"`gpuctl supervise --install` knows systemd (Linux) and launchd (macOS), not {platform}",
        hint="run `gpuctl supervise` from your own service manager",
    )


def _quote(arg: str) -> str:
    return f'"{arg}"' if any(c.isspace() for c in arg) else arg


def _systemd(home: Path) -> ServiceFile:
    env = "".join(f'Environment="{k}={v}"\n' for k, v in environment().items())
    text = (
        "[Unit]\n"
        "Description=gpuctl supervisor: follows, recovers and ends gpuctl runs\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={' '.join(_quote(a) for a in command())}\n"
        f"{env}"
        "Restart=on-failure\n"
        "RestartSec=10\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )
    ctl = ("systemctl", "--user")
    return ServiceFile(
        home / ".config" / "systemd" / "user" / UNIT_NAME,
        text,
        "systemctl",
        ((*ctl, "daemon-reload"), (*ctl, "enable", "--now", UNIT_NAME)),
        ((*ctl, "disable", "--now", UNIT_NAME), (*ctl, "daemon-reload")),
    )


def _launchd(home: Path) -> ServiceFile:
    args = "".join(f"    <string>{escape(a)}</string>\n" for a in command())
    env = "".join(
        f"    <key>{escape(k)}</key><string>{escape(v)}</string>\n"
        for k, v in environment().items()
    )
    logs = home / "Library" / "Logs" / "gpuctl-supervise.log"
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" '
        '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
        '<plist version="1.0">\n<dict>\n'
        f"  <key>Label</key><string>{AGENT_LABEL}</string>\n"
        f"  <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n"
        + (f"  <key>EnvironmentVariables</key>\n  <dict>\n{env}  </dict>\n" if env else "")
        + "  <key>RunAtLoad</key><true/>\n"
        "  <key>KeepAlive</key>\n  <dict><key>SuccessfulExit</key><false/></dict>\n"
        f"  <key>StandardOutPath</key><string>{escape(str(logs))}</string>\n"
        f"  <key>StandardErrorPath</key><string>{escape(str(logs))}</string>\n"
        "</dict>\n</plist>\n"
    )
    path = home / "Library" / "LaunchAgents" / f"{AGENT_LABEL}.plist"
    return ServiceFile(
        path,
        text,
        "launchctl",
        (("launchctl", "load", "-w", str(path)),),
        (("launchctl", "unload", "-w", str(path)),),
    )


def write(service: ServiceFile) -> None:
    service.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = service.path.with_name(service.path.name + ".tmp")
    tmp.write_text(service.text)
    os.replace(tmp, service.path)


def manager_present(service: ServiceFile) -> bool:
    return shutil.which(service.manager) is not None


def run_manager(steps: tuple[tuple[str, ...], ...]) -> list[str]:
    """Run each step; the failures, as lines to show (an empty list: all went well)."""
    failed = []
    for argv in steps:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            failed.append(f"{' '.join(argv)}: {exc}")
            continue
        if proc.returncode != 0:
            failed.append(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()}")
    return failed
