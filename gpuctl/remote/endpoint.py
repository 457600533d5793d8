"""Where an SshTarget really points: `user@host[:port]` specs and ~/.ssh/config.

People already describe their boxes in ~/.ssh/config (HostName, User, Port,
IdentityFile, ProxyJump); gpuctl honours those entries the way `ssh` does, so
`--host mybox` works with no gpuctl-specific setup. Explicit values on the target
(an AWS instance's IP, user and key) win over the config, as on the ssh command line.

``GPUCTL_SSH_CONFIG`` names another config file (tests use it; `/dev/null` ignores it).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuctl.errors import ConfigError
from gpuctl.models import SshTarget

DEFAULT_PORT = 22


def ssh_config_path() -> Path:
    return Path(os.environ.get("GPUCTL_SSH_CONFIG") or "~/.ssh/config").expanduser()


def load_ssh_config(path: Path | None = None) -> Any | None:
    """A paramiko SSHConfig for path (None when the file does not exist or is unreadable)."""
    import paramiko

    path = path or ssh_config_path()
    if not path.is_file():
        return None
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except (OSError, paramiko.ssh_exception.ConfigParseError) as exc:
        raise ConfigError(
            f"cannot read ssh config {path}: {exc}", hint="fix the file or set GPUCTL_SSH_CONFIG"
        ) from None


def _lookup(config: Any | None, name: str) -> dict[str, Any]:
    if config is None:
        return {}
    try:
        return dict(config.lookup(name))
    except Exception as exc:  # paramiko raises several kinds on odd Match/Include lines
        raise ConfigError(
            f"ssh config lookup for '{name}' failed: {exc}", hint="check ~/.ssh/config"
        ) from None


def config_has_host(name: str, config: Any | None = None) -> bool:
    """Whether a non-wildcard Host entry of the ssh config names this host."""
    config = config if config is not None else load_ssh_config()
    if config is None:
        return False
    return name in config.get_hostnames()


def parse_host_spec(spec: str) -> tuple[str | None, str, int | None]:
    """`user@host:port`, `host`, `user@[::1]:2222` -> (user, host, port); None when absent."""
    whole = spec = spec.strip()
    if not spec:
        raise ConfigError("empty host", hint="use --host user@ip[:port]")
    user: str | None = None
    if "@" in spec:
        user, _, spec = spec.rpartition("@")
        user = user or None
    port: int | None = None
    host = spec
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0:
            raise ConfigError(f"bad host '{whole}'", hint="IPv6 looks like user@[::1]:22")
        host = spec[1:end]
        rest = spec[end + 1 :]
        if rest.startswith(":"):
            port = _port(rest[1:], whole)
    elif spec.count(":") == 1:
        host, _, port_text = spec.partition(":")
        port = _port(port_text, whole)
    if not host:
        raise ConfigError(
            f"bad host '{whole}': no machine name" + (" after '@'" if "@" in whole else ""),
            hint="use --host user@ip[:port]",
        )
    return user, host, port


def _port(text: str, spec: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigError(f"bad port in '{spec}'", hint="a port is a number from 1 to 65535")
    return port


def target_from_spec(
    spec: str, *, key_path: str | None = None, config: Any | None = None
) -> SshTarget:
    """An SshTarget for `--host`: explicit parts win, then ~/.ssh/config, then ssh defaults."""
    user, host, port = parse_host_spec(spec)
    config = config if config is not None else load_ssh_config()
    alias = host if config is not None and config_has_host(host, config) else None
    entry = _lookup(config, host) if alias else {}
    return SshTarget(
        host=host,
        port=port or int(entry.get("port", DEFAULT_PORT)),
        user=user or str(entry.get("user") or getpass.getuser()),
        key_path=str(Path(key_path).expanduser()) if key_path else None,
        host_alias=alias,
    )


@dataclass(frozen=True)
class Endpoint:
    """A target resolved through ~/.ssh/config: what to actually connect to, and how."""

    host: str  # address to connect to
    port: int
    user: str
    key_files: tuple[str, ...] = ()  # explicit key first, then IdentityFile entries
    identities_only: bool = False
    proxy_jump: str | None = None
    proxy_command: str | None = None
    alias: str | None = None
    config_path: str | None = None

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + ("" if self.port == DEFAULT_PORT else f":{self.port}")

    @property
    def pin_name(self) -> str:
        """The known_hosts name gpuctl pins this machine's key under: `[host]:port`."""
        return f"[{self.host}]:{self.port}"


def resolve(target: SshTarget, config_path: Path | None = None) -> Endpoint:
    path = config_path or ssh_config_path()
    config = load_ssh_config(path)
    name = target.host_alias or target.host
    entry = _lookup(config, name)
    hostname = str(entry.get("hostname") or name)
    if hostname == name:
        hostname = target.host
    port = target.port
    if port == DEFAULT_PORT and entry.get("port"):
        port = int(entry["port"])
    user = target.user
    if target.host_alias and entry.get("user") and target.user == "root":
        user = str(entry["user"])
    keys: list[str] = []
    if target.key_path:
        keys.append(str(Path(target.key_path).expanduser()))
    for item in entry.get("identityfile", []) or []:
        candidate = str(Path(item).expanduser())
        if candidate not in keys and Path(candidate).is_file():
            keys.append(candidate)
    jump = entry.get("proxyjump")
    command = entry.get("proxycommand")
    return Endpoint(
        host=hostname,
        port=port,
        user=user,
        key_files=tuple(keys),
        identities_only=str(entry.get("identitiesonly", "no")).lower() == "yes",
        proxy_jump=None if not jump or str(jump).lower() == "none" else str(jump),
        proxy_command=None if not command or str(command).lower() == "none" else str(command),
        alias=target.host_alias,
        config_path=str(path) if config is not None else None,
    )
