"""The cloud firewall that keeps SSH to gpuctl's droplets open to the caller only.

DigitalOcean (and AMD Developer Cloud) droplets answer on every port unless a cloud
firewall covers them. gpuctl keeps one firewall, `gpuctl-ssh`, applied by the droplet
tag `gpuctl-ssh` that every droplet it creates carries, so one firewall serves them all
and is reused by every launch (like the AWS security group). Inbound it allows SSH
from the caller's address only; outbound everything (a firewall without outbound rules
would cut the trainer off from package mirrors and data sets).

The caller's address is detected on every launch. When it changed, the address this
installation added before is dropped from the rule (it may be someone else's now);
addresses other people on the same account added stay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

from gpuctl.errors import CredentialsError, GpuctlError, NotFoundError
from gpuctl.events import Event, Notice, Provisioning

from . import aws_setup

if TYPE_CHECKING:
    from gpuctl.models import LaunchSpec
    from gpuctl.settings import Profile, Settings

log = logging.getLogger("gpuctl.providers.digitalocean")

FIREWALL_NAME = "gpuctl-ssh"
FIREWALL_TAG = "gpuctl-ssh"  # the droplet tag the firewall applies to
_EVERYWHERE = {"addresses": ["0.0.0.0/0", "::/0"]}
OUTBOUND_RULES = [
    {"protocol": "tcp", "ports": "0", "destinations": _EVERYWHERE},
    {"protocol": "udp", "ports": "0", "destinations": _EVERYWHERE},
    {"protocol": "icmp", "destinations": _EVERYWHERE},
]


class DropletAccount(Protocol):
    """What the firewall needs of the DigitalOcean driver: its profile and its API calls
    (a protocol, so this module does not import the driver that imports it)."""

    name: str
    endpoint: str
    profile: Profile
    settings: Settings

    @property
    def host_label(self) -> str: ...

    def _client(self) -> Any: ...

    def _call(
        self,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        expect: str | None,
        retry: bool = True,
        **kwargs: Any,
    ) -> Any: ...

    def _paged(self, what: str, fn: Callable[..., Any], key: str, **kwargs: Any) -> list[Any]: ...


def ssh_source(provider: DropletAccount, spec: LaunchSpec) -> tuple[str, bool]:
    """(SSH source, detected): --ssh-cidr / the profile's ssh_cidr, else the caller's /32."""
    explicit = spec.options.get("ssh_cidr") or provider.profile.get("ssh_cidr")
    if explicit:
        return aws_setup.normalise_cidr(str(explicit)), False
    url = str(provider.profile.get("checkip_url") or aws_setup.CHECKIP_URL)
    return aws_setup.caller_cidr(url=url), True


def ensure_firewall(
    provider: DropletAccount, spec: LaunchSpec
) -> Generator[Event, None, str | None]:
    """Make sure the firewall exists and lets the caller in; its droplet tag, or None.

    None when the profile turned firewalls off (`firewall = false`) or the cloud has no
    firewall API: the launch goes on, and the user is told SSH is open to the internet.
    """
    rid = spec.run_id
    if provider.profile.value("firewall") is False:
        yield Notice(
            rid,
            f"profile '{provider.name}' has firewall = false: SSH to the droplet is open to "
            "the internet (key login only)",
            level="warning",
        )
        return None
    cidr, detected = ssh_source(provider, spec)
    allow_open = bool(spec.options.get("allow_open_ssh") or provider.profile.get("allow_open_ssh"))
    warning = aws_setup.check_ssh_cidr(cidr, allow_open=allow_open)
    if warning:
        yield Notice(rid, warning, level="warning")
    client = provider._client()
    try:
        firewalls = provider._paged("list firewalls", client.firewalls.list, "firewalls")
    except NotFoundError:
        yield Notice(
            rid,
            f"{provider.host_label} has no cloud firewalls: SSH to the droplet is open to the "
            "internet (key login only)",
            level="warning",
        )
        return None
    except CredentialsError as exc:
        raise CredentialsError(
            f"{exc.message} (gpuctl keeps SSH to its droplets behind a cloud firewall)",
            hint="give the token firewall read/write scope, or set firewall = false under "
            f"[profiles.{provider.name}] to launch without one",
        ) from None
    remembered_key = f"digitalocean:{provider.name}:{provider.endpoint}:firewall-caller"
    stale = [c for c in _cache_get(provider, remembered_key) if c != cidr] if detected else []
    firewall = next(
        (
            f
            for f in firewalls
            if f.get("name") == FIREWALL_NAME and FIREWALL_TAG in (f.get("tags") or [])
        ),
        None,
    )
    if firewall is None:
        # A firewall may name only tags that exist; creating one that exists is a no-op.
        provider._call(
            "create the gpuctl-ssh tag", client.tags.create, {"name": FIREWALL_TAG}, expect="tag"
        )
        body = {
            "name": FIREWALL_NAME,
            "inbound_rules": [_ssh_rule([cidr])],
            "outbound_rules": OUTBOUND_RULES,
            "tags": [FIREWALL_TAG],
        }
        made = provider._call(
            f"create the firewall {FIREWALL_NAME}", client.firewalls.create, body, expect="firewall"
        )
        firewall_id = str(made["firewall"]["id"])
        action = "created"
    else:
        firewall_id = str(firewall["id"])
        inbound = [dict(r) for r in firewall.get("inbound_rules") or []]
        rule = next((r for r in inbound if _is_ssh_rule(r)), None)
        if rule is None:
            rule = _ssh_rule([])
            inbound.append(rule)
        sources = dict(rule.get("sources") or {})
        before = [str(a) for a in sources.get("addresses") or []]
        after = [a for a in before if a not in stale]
        if cidr not in after:
            after.append(cidr)
        action = "reused"
        if after != before:
            sources["addresses"] = after
            rule["sources"] = sources
            body = {
                "name": firewall.get("name") or FIREWALL_NAME,
                "inbound_rules": inbound,
                "outbound_rules": firewall.get("outbound_rules") or OUTBOUND_RULES,
                "tags": list(firewall.get("tags") or [FIREWALL_TAG]),
                "droplet_ids": list(firewall.get("droplet_ids") or []),
            }
            provider._call(
                f"update the firewall {FIREWALL_NAME}",
                client.firewalls.update,
                firewall_id,
                body,
                expect="firewall",
            )
            dropped = [a for a in before if a not in after]
            action = "updated" + (f", {', '.join(dropped)} removed" if dropped else "")
    if detected:
        _cache_put(provider, remembered_key, [cidr])
    yield Provisioning(
        rid, provider.name, f"firewall {FIREWALL_NAME} ({action}): SSH from {cidr} only"
    )
    return FIREWALL_TAG


def _ssh_rule(addresses: list[str]) -> dict[str, Any]:
    return {"protocol": "tcp", "ports": "22", "sources": {"addresses": list(addresses)}}


def _is_ssh_rule(rule: dict[str, Any]) -> bool:
    return rule.get("protocol") == "tcp" and str(rule.get("ports")) == "22"


def _cache_get(provider: DropletAccount, key: str) -> list[str]:
    """A broken state store only costs the clean-up of an old address, never a launch."""
    from gpuctl.state import Store

    try:
        store = Store(provider.settings.state_path)
    except (GpuctlError, OSError):
        return []
    try:
        value = store.cache_get(key)
        return [str(v) for v in value] if isinstance(value, list) else []
    finally:
        store.close()


def _cache_put(provider: DropletAccount, key: str, value: list[str]) -> None:
    from gpuctl.state import Store

    try:
        store = Store(provider.settings.state_path)
    except (GpuctlError, OSError):
        return
    try:
        store.cache_put(key, value)
    except (GpuctlError, OSError):
        log.warning("could not remember the firewall's caller address")
    finally:
        store.close()
