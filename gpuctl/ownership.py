"""Which machines are gpuctl's to end: its own, created by this installation, only.

An installation is one data directory (GPUCTL_HOME). Its id is made once, on first use,
and every resource gpuctl creates is tagged with it besides the run id, so a colleague's
gpuctl on the same cloud account, or a data directory restored elsewhere, can tell its
machines from theirs. A machine gpuctl did not create (`--instance`, the `ssh` provider,
anything attached) and one another installation created are never stopped, powered off,
terminated or destroyed without the user typing its name.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .models import Instance, LaunchSpec

FILE = "installation"
TAG = "gpuctl:installation"  # AWS tag key; DigitalOcean: TAG_PREFIX + id (tags have no values)
TAG_PREFIX = "gpuctl-inst-"
_ID = re.compile(r"[0-9a-f]{16}")
NAME_RULE = re.compile(r"[a-z0-9][a-z0-9-]*")
NAME_MAX = 40  # run id = name + 12 characters: fits a hostname label and every tag

_cache: dict[Path, str] = {}
_lock = threading.Lock()


def installation_id(home: Path) -> str:
    """This data directory's id: 16 hex digits in `home/installation` (0600), made once."""
    path = Path(home) / FILE
    with _lock:
        known = _cache.get(path)
        if known is not None:
            return known
        value = _read(path)
        if value is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = secrets.token_hex(8)
            tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(fresh + "\n")
            try:
                os.link(tmp, path)  # never replaces an id another process made first
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
            value = _read(path) or fresh
        _cache[path] = value
        return value


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"cannot read gpuctl's installation id {path}: {exc.strerror}",
            hint="make the data directory readable (or point GPUCTL_HOME elsewhere)",
        ) from None
    if not _ID.fullmatch(text):
        raise ConfigError(
            f"{path} does not hold a gpuctl installation id",
            hint="restore it from a backup; without it gpuctl cannot tell its machines "
            "from a colleague's",
        )
    return text


def from_tags(tags: list[str]) -> str | None:
    """The installation id in a DigitalOcean tag list, if any."""
    return next((t[len(TAG_PREFIX) :] for t in tags if t.startswith(TAG_PREFIX)), None)


def is_ours(instance: Instance, installation: str, *, run_known: bool) -> bool:
    """gpuctl created it, in this installation.

    Machines tagged before installations were tagged carry no owner: they count as ours
    only when this installation's store knows their run. A bare `gpuctl` tag is no proof.
    """
    if not instance.managed:
        return False
    if instance.owner:
        return instance.owner == installation
    return run_known


def is_foreign(instance: Instance, installation: str, *, run_known: bool) -> bool:
    """gpuctl-tagged, but by another installation (a colleague, another data directory)."""
    return instance.managed and not is_ours(instance, installation, run_known=run_known)


def created_for(spec: LaunchSpec, instance: Instance, installation: str) -> bool:
    """This installation created the machine for this very run: only then may gpuctl (or
    its agent) stop, power off or terminate it without asking for its name."""
    if spec.instance_id:
        return False  # attached with --instance: the user's, whoever made it
    return is_ours(instance, installation, run_known=instance.run_id == spec.run_id)


def not_ours(instance: Instance) -> str:
    """Why gpuctl may not end this machine on a plain yes (the words both front ends use)."""
    if not instance.managed:
        return "was NOT created by gpuctl"
    return (
        f"was created by another gpuctl installation (owner {instance.owner})"
        if instance.owner
        else "carries gpuctl tags but no run this installation knows"
    )


@dataclass(frozen=True)
class EndRule:
    """What ending a machine asks of the user: one rule for `gpuctl down` and the TUI's `x`.

    `typed`: the name to type back (None: a yes is enough). `release`: the machine serves a
    run that did not create it, so letting go of it (it keeps running) is offered instead.
    """

    typed: str | None
    why: str = ""
    release: bool = False


def end_rule(
    instance: Instance,
    installation: str,
    *,
    run_id: str | None = None,
    spec: LaunchSpec | None = None,
    run_known: bool = False,
) -> EndRule:
    """Money safety: what this installation did not create is ended only by its typed name."""
    name = instance.name or instance.id
    if spec is not None:
        if created_for(spec, instance, installation):
            return EndRule(None)
        return EndRule(name, f"was NOT created by gpuctl for run {run_id or spec.run_id}", True)
    if is_ours(instance, installation, run_known=run_known):
        return EndRule(None)
    return EndRule(name, not_ours(instance))


def owner_label(instance: Instance) -> str:
    """How listings name who created a machine."""
    if not instance.managed:
        return "not gpuctl"
    return f"gpuctl {instance.owner}" if instance.owner else "gpuctl (unknown installation)"


def check_name(name: str, what: str) -> None:
    """Preset and run names end up in tags and hostnames: keep them to one safe alphabet,
    so a run id reads back from every provider exactly as it was written."""
    if len(name) > NAME_MAX or not NAME_RULE.fullmatch(name):
        raise ConfigError(
            f"{what} '{name}' is not a valid name: use lowercase letters, digits and '-', "
            f"starting with a letter or digit ([a-z0-9][a-z0-9-]*, at most {NAME_MAX})",
            hint=f"rename it, e.g. {suggest_name(name)}",
        )


def suggest_name(name: str) -> str:
    """The closest valid name (bert.base -> bert-base)."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:NAME_MAX].strip("-")
    return cleaned or "my-preset"
