"""Host-key pinning: trust on first use, refuse a changed key, in gpuctl's own file.

A cloud machine's key is unknown before its first boot, so the first contact pins it
(`settings.known_hosts`, OpenSSH format, mode 0600, one `[host]:port` name per machine).
A different key later means a re-created machine or an interception: gpuctl refuses
with HostKeyError and never replaces the pin silently. The system `ssh` (rsync, `gpuctl
ssh`) reads the same file through UserKnownHostsFile + HostKeyAlias, so both clients
agree on what is trusted.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import paramiko

from gpuctl.errors import HostKeyError
from gpuctl.filelock import exclusive


def fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def _locked(path: Path) -> contextlib.AbstractContextManager[None]:
    """Serialise read-modify-write of the pin file between gpuctl processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return exclusive(path.with_name(path.name + ".lock"))


class PinStore:
    """The known_hosts file gpuctl owns."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _load(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        if self.path.exists():
            with contextlib.suppress(OSError, paramiko.SSHException):
                keys.load(str(self.path))
        return keys

    def lookup(self, name: str) -> dict[str, paramiko.PKey]:
        """Pinned keys for name, by key type (empty when never seen)."""
        found = self._load().lookup(name)
        return dict(found) if found else {}

    def pin(self, name: str, key: paramiko.PKey) -> None:
        with _locked(self.path):
            keys = self._load()
            keys.add(name, key.get_name(), key)
            self._save(keys)

    def forget(self, name: str) -> bool:
        """Drop a machine's pin (its address now belongs to a new machine we created)."""
        with _locked(self.path):
            keys = self._load()
            if keys.lookup(name) is None:
                return False
            del keys[name]
            self._save(keys)
            return True

    def _save(self, keys: paramiko.HostKeys) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        keys.save(str(tmp))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


def changed_key_error(
    name: str, pinned: paramiko.PKey, offered: paramiko.PKey, path: Path
) -> Exception:
    return HostKeyError(
        f"host key of {name} changed: pinned {fingerprint(pinned)}, "
        f"the machine now offers {fingerprint(offered)}; refusing to connect",
        hint=f"if this machine was re-created, delete the {name} line from {path}; "
        "otherwise someone may be intercepting the connection",
    )


class TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Called by paramiko when the client has no pin loaded: pin it, unless one appeared."""

    def __init__(self, store: PinStore, name: str) -> None:
        self.store = store
        self.name = name
        self.pinned_now = False

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        existing = self.store.lookup(self.name)
        if existing:  # pinned by another gpuctl process since we looked
            same = existing.get(key.get_name())
            if same is None or same != key:
                raise changed_key_error(
                    self.name, same or next(iter(existing.values())), key, self.store.path
                )
            return
        self.store.pin(self.name, key)
        self.pinned_now = True


def prepare_client(
    client: paramiko.SSHClient, store: PinStore, name: str, hostname: str, port: int
) -> TrustOnFirstUse:
    """Load the pin for name under the name paramiko looks up, and install TOFU.

    Loading the pin makes paramiko prefer the pinned key type during negotiation and
    raise BadHostKeyException on a mismatch, which the session turns into HostKeyError.
    """
    lookup_name = hostname if port == 22 else f"[{hostname}]:{port}"
    for key_type, key in store.lookup(name).items():
        client.get_host_keys().add(lookup_name, key_type, key)
    policy = TrustOnFirstUse(store, name)
    client.set_missing_host_key_policy(policy)
    return policy


def forget_host(known_hosts: Path, host: str, port: int = 22) -> bool:
    """Drop the pin for host:port; a provider calls this when it hands an address to a new
    machine it just created (cloud IPs are recycled), never on a mere key mismatch."""
    return PinStore(known_hosts).forget(f"[{host}]:{port}")
