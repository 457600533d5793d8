"""DigitalOcean GPU droplets, and the AMD Developer Cloud (same v2 API, its own host).

Two builtin profiles use this driver: `digitalocean` (api.digitalocean.com,
DIGITALOCEAN_TOKEN) and `amd` (AMD Developer Cloud, AMD_DEVCLOUD_TOKEN, MI300X). The
endpoint is a profile setting so an emulator (the fake API in the tests) can stand in.

Money rules this file keeps:
- a powered-off droplet is still billed (Billing.billed_when_stopped); only destroy
  ends billing, and terminate() verifies it (GET answers 404);
- every droplet is tagged `gpuctl` + `gpuctl-run-<id>` + `gpuctl-inst-<installation>` at
  create time, so one created just before gpuctl died is found again by the listing, and
  one another installation created is told apart from ours;
- a droplet create is never retried blindly: an ambiguous failure is reported as such,
  and gpuctl.provision looks for the run's tag before it sends the create again, so a
  retry cannot start a second billed machine;
- pydo answers several errors with a plain body dict instead of raising; every call
  goes through `_call`, which checks for the expected key, and every HTTP failure is
  mapped to gpuctl's errors in one function, `api_error`.

The token is read from the environment at call time, kept only in the pydo client,
and never put in a message, a log record or a file.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from gpuctl import provision
from gpuctl.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    GpuctlError,
    NotFoundError,
    ProviderError,
    QuotaError,
)
from gpuctl.events import Event, Notice, Provisioning
from gpuctl.format import rate
from gpuctl.models import (
    BilledPrice,
    Instance,
    InstanceState,
    LaunchSpec,
    Market,
    Offer,
    SshTarget,
)
from gpuctl.ownership import TAG_PREFIX as TAG_INSTALLATION_PREFIX
from gpuctl.ownership import from_tags as installation_from_tags
from gpuctl.provision import CAPACITY, Ambiguous, Failure, Look, Pacing, Placement, Unplaced

from . import do_catalog as catalog
from .base import SHUTDOWN_DESTROY, SHUTDOWN_POWEROFF, Billing, Capability, Listing

if TYPE_CHECKING:
    from gpuctl.host import Host
    from gpuctl.settings import Profile, Settings

log = logging.getLogger("gpuctl.providers.digitalocean")

DO_ENDPOINT = "https://api.digitalocean.com"
AMD_ENDPOINT = "https://api-amd.digitalocean.com"
DEFAULT_ENDPOINTS = {"digitalocean": DO_ENDPOINT, "amd": AMD_ENDPOINT}
DEFAULT_TOKEN_ENVS = {"digitalocean": "DIGITALOCEAN_TOKEN", "amd": "AMD_DEVCLOUD_TOKEN"}

# One place for DigitalOcean's droplet status -> gpuctl's neutral state.
STATE_MAP: dict[str, InstanceState] = {
    "new": InstanceState.PENDING,
    "active": InstanceState.RUNNING,
    "off": InstanceState.STOPPED,
    "archive": InstanceState.TERMINATED,
}

TAG_MANAGED = "gpuctl"
TAG_RUN_PREFIX = "gpuctl-run-"
USER_DATA_LIMIT = 64 * 1024  # bytes; DigitalOcean refuses more

# Error body ids -> the status they stand for, when pydo hands us a body, not an error.
_BODY_STATUS = {
    "not_found": 404,
    "unauthorized": 401,
    "forbidden": 403,
    "unprocessable_entity": 422,
    "bad_request": 400,
    "too_many_requests": 429,
}

_CLIENTS: dict[tuple[str, str, int], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def droplet_name(run_id: str) -> str:
    """Droplet names allow letters, digits, '.' and '-' only."""
    cleaned = re.sub(r"[^A-Za-z0-9.-]+", "-", run_id).strip("-.") or "run"
    return f"gpuctl-{cleaned}"[:255]


def run_tag(run_id: str) -> str:
    """Tags allow letters, digits, ':', '-' and '_' only."""
    cleaned = re.sub(r"[^A-Za-z0-9:_-]+", "-", run_id).strip("-") or "run"
    return f"{TAG_RUN_PREFIX}{cleaned}"[:255]


def _one_line(text: Any, limit: int = 300) -> str:
    return " ".join(str(text or "").split())[:limit]


class ApiRefused(ProviderError):
    """The API refused a request for a reason other than auth/capacity/quota (4xx, 5xx)."""

    def __init__(self, message: str, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


class _Retry(Exception):
    """A transient failure (429, 5xx, connection): `error` is raised if we give up.

    `safe` means the server certainly did not act on the request (429, no connection),
    so even a droplet create may be sent again.
    """

    def __init__(
        self, error: GpuctlError, status: int, headers: Mapping[str, str], safe: bool
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status
        self.headers = headers
        self.safe = safe


class DigitalOceanProvider:
    """Provider for DigitalOcean-API clouds; see the module docstring for the rules."""

    kind: ClassVar[str] = "digitalocean"
    billing: ClassVar[Billing] = Billing(
        per_second=True, minimum_seconds=300, billed_when_stopped=True
    )
    launch_flags: ClassVar[frozenset[str]] = frozenset(
        {"spot", "fallback", "instance_type", "region", "regions", "max_price", "image"}
    )
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SELF_DESTROY, Capability.BOOT_GUARD, Capability.BILLED_PRICE}
    )
    default_type: ClassVar[str | None] = None  # the cheapest size that fits
    setup_seconds: ClassVar[float] = 360.0
    gpu_hints: ClassVar[tuple[tuple[str, str], ...]] = (
        ("gpu-mi300x", "MI300X"),
        ("gpu-h100", "H100"),
        ("gpu-h200", "H100"),
        ("gpu-l40s", "L40S"),
        ("gpu-6000ada", "RTX 6000 Ada"),
        ("gpu-4000adax", "L4"),
    )

    def __init__(self, profile: Profile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.name = profile.name
        default_endpoint = DEFAULT_ENDPOINTS.get(profile.name, DO_ENDPOINT)
        self.endpoint = str(profile.get("endpoint") or default_endpoint).rstrip("/")
        default_env = DEFAULT_TOKEN_ENVS.get(profile.name, "DIGITALOCEAN_TOKEN")
        self.token_env = str(profile.get("token_env") or default_env)
        self.vendor: str | None = profile.get("gpu_vendor") or None
        self.allowed_regions: list[str] = list(profile.value("regions") or [])
        self.page_size = int(profile.value("page_size"))
        self.poll_interval = float(profile.value("poll_seconds"))
        self.boot_timeout = float(profile.value("launch_timeout"))
        self.action_timeout = float(profile.value("action_timeout"))
        self.max_attempts = int(profile.value("api_attempts"))
        self.max_rate_wait = float(profile.value("max_rate_wait"))
        self.offers_ttl = float(profile.value("offers_cache_seconds"))
        # Seams for tests: no real sleeping, a controllable clock.
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic
        self._sizes_mem: tuple[float, list[dict[str, Any]]] | None = None
        self._images_mem: list[dict[str, Any]] | None = None
        self._key_id: int | None = None

    @property
    def host_label(self) -> str:
        return urlsplit(self.endpoint).netloc or self.endpoint

    # -- client, token, errors ----------------------------------------------------------

    def _token(self) -> str:
        token = os.environ.get(self.token_env, "").strip()
        if not token:
            raise CredentialsError(
                f"no API token for provider '{self.name}': {self.token_env} is not set",
                hint=f"create a token with read and write scope for {self.host_label} "
                f"and export {self.token_env}=<token>",
            )
        return token

    def _client(self) -> Any:
        """The pydo client for this profile, built once per (profile, endpoint, token)."""
        token = self._token()
        key = (self.name, self.endpoint, hash(token))
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                from .do_client import build_client  # pydo + azure: only when needed

                client = build_client(self.endpoint, token)
                _CLIENTS[key] = client
            return client

    def _scrub(self, text: str) -> str:
        token = os.environ.get(self.token_env, "").strip()
        return text.replace(token, "***") if token else text

    def api_error(
        self, what: str, status: int, body: Mapping[str, Any] | None, headers: Mapping[str, str]
    ) -> GpuctlError:
        """The one map from a DigitalOcean API failure to gpuctl's error hierarchy."""
        body = body or {}
        api_msg = self._scrub(_one_line(body.get("message") or body.get("id") or ""))
        said = f": {api_msg}" if api_msg else ""
        host = self.host_label
        if status == 401:
            token = os.environ.get(self.token_env, "").strip()
            do_token = token.startswith("dop_v1_")
            if do_token and urlsplit(self.endpoint).hostname != "api.digitalocean.com":
                hint = (
                    f"{self.token_env} holds a DigitalOcean token (dop_v1_...), which "
                    "api.digitalocean.com serves; use the 'digitalocean' profile for it, "
                    f"or put an AMD Developer Cloud token in {self.token_env}"
                )
            elif not do_token and urlsplit(self.endpoint).hostname == "api.digitalocean.com":
                hint = (
                    f"{self.token_env} does not look like a DigitalOcean token (dop_v1_...); "
                    "an AMD Developer Cloud token belongs to the 'amd' profile"
                )
            else:
                hint = f"create a new token for {host} and export {self.token_env}=<token>"
            return CredentialsError(
                f"{host} rejected the token in {self.token_env} (401) while trying to "
                f"{what}: it is wrong or expired, or it belongs to the other endpoint",
                hint=hint,
            )
        if status == 403:
            return CredentialsError(
                f"{host} refused to {what} (403): the token in {self.token_env} lacks write "
                f"scope or access to this resource{said}",
                hint=f"create a token with read and write scope and export {self.token_env}",
            )
        if status == 404:
            return NotFoundError(f"cannot {what}: not found on {host}{said}")
        if status == 422:
            low = api_msg.lower()
            if "not available in this region" in low or "capacity" in low:
                return CapacityError(f"cannot {what}{said}")
            if "limit" in low and "droplet" in low:
                return QuotaError(
                    f"cannot {what}{said}",
                    hint="destroy droplets you no longer need, or ask DigitalOcean support "
                    "to raise the droplet limit",
                )
            return ApiRefused(f"{host} refused to {what} (422){said}", 422)
        if status == 429:
            reset = headers.get("ratelimit-reset")
            when = ""
            if reset and reset.isdigit() and int(reset) > 1e9:
                when = " until " + time.strftime("%H:%M:%S", time.localtime(int(reset)))
            return QuotaError(
                f"{host} rate-limited gpuctl{when} while trying to {what} (429)",
                hint="wait a minute and retry; other tools using the same token share the limit",
            )
        if status >= 500:
            return ApiRefused(
                f"{host} failed to {what} ({status}){said}",
                status,
                hint="DigitalOcean's API had an error; retry shortly (status.digitalocean.com)",
            )
        return ApiRefused(f"{host} refused to {what} ({status}){said}", status)

    def _retry_wait(self, status: int, headers: Mapping[str, str], attempt: int) -> float:
        """Seconds to wait before retrying: ratelimit-reset / Retry-After, else backoff."""
        if status == 429:
            for name in ("retry-after", "ratelimit-reset"):
                value = headers.get(name)
                if value and value.strip().isdigit():
                    n = float(value)
                    return max(1.0, n - time.time() if n > 1e9 else n)
        return min(2.0 ** (attempt - 1), 30.0)

    def _once(self, what: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """One API call; maps exceptions and error bodies (raises _Retry if transient)."""
        from azure.core.exceptions import (
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            result = fn(*args, **kwargs)
        except HttpResponseError as exc:
            status = int(exc.status_code or 0)
            headers: dict[str, str] = {}
            body: Mapping[str, Any] | None = None
            if exc.response is not None:
                headers = {k.lower(): v for k, v in exc.response.headers.items()}
                try:
                    parsed = exc.response.json()
                    body = parsed if isinstance(parsed, Mapping) else None
                except Exception:
                    body = {"message": _one_line(exc.response.text(), 200)}
            error = self.api_error(what, status, body, headers)
            if status == 429 or status >= 500:
                raise _Retry(error, status, headers, safe=status == 429) from None
            raise error from None
        except ServiceRequestError as exc:  # never reached the server
            error = ProviderError(
                f"cannot reach {self.host_label} to {what}: {self._scrub(_one_line(exc, 200))}",
                hint=f"check the network, or the profile's endpoint ({self.endpoint})",
            )
            raise _Retry(error, 0, {}, safe=True) from None
        except ServiceResponseError as exc:  # sent, but the answer was lost
            error = ProviderError(
                f"lost the answer from {self.host_label} while trying to {what}: "
                f"{self._scrub(_one_line(exc, 200))}",
                hint="retry; `gpuctl ls` shows whether anything was created",
            )
            raise _Retry(error, 0, {}, safe=False) from None
        return result

    def _call(
        self,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        expect: str | None,
        retry: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Call pydo with bounded retries; return the body, which must hold `expect`.

        retry=False (droplet create): only failures the server certainly did not act
        on (429, connection refused) are retried here; other transient failures are
        raised as _Retry so the caller can look for what was created before retrying.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                result = self._once(what, fn, args, kwargs)
                break
            except _Retry as transient:
                if not (transient.safe or retry):
                    raise
                wait = self._retry_wait(transient.status, transient.headers, attempt)
                if attempt >= self.max_attempts or wait > self.max_rate_wait:
                    raise transient.error from None
                log.info("%s: %s; retrying in %.1fs", self.name, transient.error.message, wait)
                self._sleep(wait)
        error_body = isinstance(result, Mapping) and "message" in result and "id" in result
        if error_body and (expect is None or expect not in result):
            status = _BODY_STATUS.get(str(result.get("id", "")).lower(), 400)
            raise self.api_error(what, status, result, {})
        if expect is not None and (not isinstance(result, Mapping) or expect not in result):
            raise ProviderError(
                f"unexpected answer from {self.host_label} to {what} (no '{expect}')",
                hint="is the profile's endpoint a DigitalOcean v2 API?",
            )
        return result

    def _paged(self, what: str, fn: Callable[..., Any], key: str, **kwargs: Any) -> list[Any]:
        """All items of a listing, following links.pages.next."""
        items: list[Any] = []
        page, per_page = 1, self.page_size
        for _ in range(10_000):
            body = self._call(what, fn, expect=key, page=page, per_page=per_page, **kwargs)
            items.extend(body.get(key) or [])
            nxt = ((body.get("links") or {}).get("pages") or {}).get("next")
            if not nxt:
                return items
            query = parse_qs(urlsplit(nxt).query)
            next_page = int(query.get("page", [page + 1])[0])
            if next_page <= page:  # a broken link must not loop forever
                return items
            page = next_page
            per_page = int(query.get("per_page", [per_page])[0])
        return items

    # -- catalog ----------------------------------------------------------------------

    def _sizes(self, *, fresh: bool = False) -> list[dict[str, Any]]:
        """All sizes, cached briefly in memory and in the state store."""
        now = time.time()
        if not fresh and self._sizes_mem and now - self._sizes_mem[0] < min(self.offers_ttl, 60):
            return self._sizes_mem[1]
        cache_key = f"digitalocean:{self.name}:{self.endpoint}:sizes"
        store = None
        try:
            from gpuctl.state import Store

            store = Store(self.settings.state_path)
        except GpuctlError as exc:  # a broken cache never blocks a listing
            log.warning("state store unavailable for the sizes cache: %s", exc)
        try:
            if store is not None and not fresh:
                cached = store.cache_get(cache_key, max_age=self.offers_ttl)
                if isinstance(cached, dict) and isinstance(cached.get("sizes"), list):
                    asked = float(cached.get("fetched_at") or now)
                    self._sizes_mem = (asked, cached["sizes"])
                    return cached["sizes"]
            sizes = self._paged("list sizes", self._client().sizes.list, "sizes")
            if store is not None:
                store.cache_put(cache_key, {"fetched_at": now, "sizes": sizes})
        finally:
            if store is not None:
                store.close()
        self._sizes_mem = (now, sizes)
        return sizes

    @property
    def _sizes_at(self) -> float | None:
        """When the sizes (and their prices) in hand were asked of the API."""
        return self._sizes_mem[0] if self._sizes_mem else None

    def _offer(self, size: Mapping[str, Any]) -> Offer:
        regions = tuple(size.get("regions") or ())
        allowed = [r for r in regions if not self.allowed_regions or r in self.allowed_regions]
        if self.allowed_regions:
            allowed.sort(key=self.allowed_regions.index)
        note = ""
        if regions and not allowed:
            note = (
                f"only in {', '.join(regions)} (profile allows {', '.join(self.allowed_regions)})"
            )
        elif not regions:
            note = "no region has capacity now"
        price = size.get("price_hourly")
        return Offer(
            provider=self.name,
            instance_type=str(size.get("slug")),
            gpu_name=catalog.gpu_name(size),
            gpu_count=catalog.gpu_count(size),
            gpu_memory_gb=catalog.gpu_memory_gb(size),
            vcpus=int(size.get("vcpus") or 0),
            memory_gb=round(float(size.get("memory") or 0) / 1024, 1),
            price_per_hour=float(price) if price is not None else None,
            region=(allowed or list(regions) or [""])[0],
            regions=regions,
            available=bool(size.get("available", True)) and bool(allowed),
            note=note,
            price_source="live API",
            priced_at=self._sizes_at,
        )

    def offers(self, *, gpu: str | None = None, region: str | None = None) -> list[Offer]:
        """GPU sizes with hourly prices and the regions that have them, cheapest first."""
        out = []
        for size in self._sizes():
            if not catalog.is_gpu(size):
                continue
            if self.vendor and catalog.gpu_vendor(size) != self.vendor:
                continue
            if gpu:
                text = f"{size.get('slug')} {catalog.gpu_name(size)}".lower()
                if gpu.lower().replace(" ", "") not in text.replace(" ", ""):
                    continue
            if region and region not in (size.get("regions") or []):
                continue
            out.append(self._offer(size))
        out.sort(key=lambda o: (o.price_per_hour is None, o.price_per_hour or 0, o.instance_type))
        return out

    def _images(self) -> list[dict[str, Any]]:
        """Distribution, application (1-Click) and the account's private images."""
        if self._images_mem is None:
            client = self._client()
            images: list[dict[str, Any]] = []
            for label, kwargs in (
                ("distribution", {"type": "distribution"}),
                ("application", {"type": "application"}),
                ("private", {"private": True}),
            ):
                images += self._paged(
                    f"list {label} images", client.images.list, "images", **kwargs
                )
            self._images_mem = images
        return self._images_mem

    # -- instances --------------------------------------------------------------------

    def _instance(self, droplet: Mapping[str, Any]) -> Instance:
        tags = [str(t) for t in droplet.get("tags") or []]
        run_id = next(
            (t[len(TAG_RUN_PREFIX) :] for t in tags if t.startswith(TAG_RUN_PREFIX)), None
        )
        ip = next(
            (
                n.get("ip_address")
                for n in (droplet.get("networks") or {}).get("v4") or []
                if n.get("type") == "public"
            ),
            None,
        )
        size = droplet.get("size") or {}
        gpu = droplet.get("gpu_info") or size.get("gpu_info") or {}
        sized = {**size, "gpu_info": gpu, "slug": droplet.get("size_slug") or size.get("slug")}
        status = str(droplet.get("status") or "")
        launched = None
        if droplet.get("created_at"):
            try:
                launched = datetime.fromisoformat(
                    str(droplet["created_at"]).replace("Z", "+00:00")
                ).timestamp()
            except ValueError:
                launched = None
        price = size.get("price_hourly")
        return Instance(
            provider=self.name,
            id=str(droplet.get("id")),
            name=str(droplet.get("name") or ""),
            region=str((droplet.get("region") or {}).get("slug") or ""),
            instance_type=str(sized["slug"] or ""),
            state=STATE_MAP.get(status, InstanceState.UNKNOWN),
            public_ip=ip,
            launched_at=launched,
            price_per_hour=float(price) if price is not None else None,
            market=Market.ON_DEMAND,
            gpu_name=catalog.gpu_name(sized) if catalog.is_gpu(sized) else "",
            gpu_count=catalog.gpu_count(sized),
            run_id=run_id,
            managed=TAG_MANAGED in tags and run_id is not None,  # a bare `gpuctl` tag is no proof
            raw_state=status,
            ssh_user=str(self.profile.value("ssh_user")),
            ssh_port=int(self.profile.value("ssh_port")),
            disk_gb=float(droplet["disk"]) if droplet.get("disk") is not None else None,
            tags={t: "" for t in tags},
            owner=installation_from_tags(tags),
        )

    def list_instances(self, *, include_unmanaged: bool = False) -> Listing:
        """Droplets tagged `gpuctl` (every droplet with include_unmanaged), all pages."""
        kwargs = {} if include_unmanaged else {"tag_name": TAG_MANAGED}
        droplets = self._paged("list droplets", self._client().droplets.list, "droplets", **kwargs)
        return Listing(provider=self.name, instances=tuple(self._instance(d) for d in droplets))

    @staticmethod
    def _droplet_id(instance_id: str) -> int | None:
        return int(instance_id) if str(instance_id).isdigit() else None

    def _get_droplet(self, droplet_id: int) -> dict[str, Any] | None:
        try:
            body = self._call(
                f"get droplet {droplet_id}",
                self._client().droplets.get,
                droplet_id,
                expect="droplet",
            )
        except NotFoundError:
            return None
        return body["droplet"]

    def get_instance(self, instance_id: str) -> Instance | None:
        """Current view of one droplet; None when the API says 404 (gone)."""
        droplet_id = self._droplet_id(instance_id)
        if droplet_id is None:
            return None
        droplet = self._get_droplet(droplet_id)
        return None if droplet is None else self._instance(droplet)

    def billed_price(self, instance: Instance, max_age: float | None = 0.0) -> BilledPrice | None:
        """The droplet's size and its hourly price as the API describes the droplet now
        (DigitalOcean has no spot market: the figure moves only with its price list)."""
        droplet_id = self._droplet_id(instance.id)
        droplet = None if droplet_id is None else self._get_droplet(droplet_id)
        if droplet is None:
            return None
        size = droplet.get("size") or {}
        price = size.get("price_hourly")
        if price is None:
            return None
        slug = str(droplet.get("size_slug") or size.get("slug") or instance.instance_type)
        region = str((droplet.get("region") or {}).get("slug") or instance.region) or None
        return BilledPrice(
            slug,
            Market.ON_DEMAND.value,
            region,
            float(price),
            "droplet size, live API",
            time.time(),
        )

    # -- checks -------------------------------------------------------------------------

    def check(self) -> None:
        """Token present and accepted, account usable (reads only: write scope shows later)."""
        body = self._call("read the account", self._client().account.get, expect="account")
        account = body["account"] or {}
        status = str(account.get("status") or "active")
        if status != "active":
            message = _one_line(account.get("status_message")) or "no reason given"
            raise CredentialsError(
                f"the account behind {self.token_env} on {self.host_label} is {status}: {message}",
                hint="resolve it in the cloud console (billing, verification)",
            )

    # -- ssh keys -----------------------------------------------------------------------

    def _key_path(self) -> str:
        from .do_keys import key_paths

        override = self.profile.get("ssh_key")
        if override:
            return str(os.path.expanduser(str(override)))
        return str(key_paths(self.settings.keys_dir)[0])

    def _ensure_account_key(self) -> int:
        """gpuctl's public key on the account: found by fingerprint, else created once."""
        if self._key_id is not None:
            return self._key_id
        from .do_keys import ensure_keypair, md5_fingerprint

        _private, public = ensure_keypair(self.settings.keys_dir)
        fp = md5_fingerprint(public)
        keys = self._client().ssh_keys

        def find() -> int | None:
            try:
                body = self._call("look up gpuctl's ssh key", keys.get, fp, expect="ssh_key")
            except NotFoundError:
                return None
            return int(body["ssh_key"]["id"])

        key_id = find()
        if key_id is None:
            try:
                body = self._call(
                    "register gpuctl's ssh key",
                    keys.create,
                    {"name": f"gpuctl {fp[-11:]}", "public_key": public},
                    expect="ssh_key",
                )
                key_id = int(body["ssh_key"]["id"])
            except ProviderError as exc:
                # Another gpuctl registered the same key meanwhile ("already in use").
                key_id = find()
                if key_id is None:
                    raise exc from None
        self._key_id = key_id
        return key_id

    # -- launch -------------------------------------------------------------------------

    def _pick_size(self, spec: LaunchSpec, sizes: list[dict[str, Any]]) -> dict[str, Any]:
        if spec.instance_type:
            size = next((s for s in sizes if s.get("slug") == spec.instance_type), None)
            if size is None:
                gpu_slugs = [str(s.get("slug")) for s in sizes if catalog.is_gpu(s)]
                raise ConfigError(
                    f"size '{spec.instance_type}' does not exist on {self.host_label}",
                    hint=f"GPU sizes there: {', '.join(gpu_slugs) or 'none'} "
                    f"(gpuctl offers --provider {self.name})",
                )
            return size
        candidates = [
            s
            for s in sizes
            if catalog.is_gpu(s)
            and (not self.vendor or catalog.gpu_vendor(s) == self.vendor)
            and s.get("available", True)
            and s.get("price_hourly") is not None
        ]
        if not candidates:
            vendor = f"{self.vendor.upper()} " if self.vendor else ""
            raise CapacityError(
                f"{self.host_label} offers no {vendor}GPU size right now",
                hint="pass --instance-type, or try another provider",
            )
        allowed = [
            s
            for s in candidates
            if not self.allowed_regions or set(s.get("regions") or []) & set(self.allowed_regions)
        ]
        pool = allowed or candidates
        return min(pool, key=lambda s: (float(s["price_hourly"]), str(s.get("slug"))))

    def _regions_to_try(self, spec: LaunchSpec, size: Mapping[str, Any]) -> list[str]:
        wanted = [spec.region] if spec.region else list(spec.regions)
        if wanted and self.allowed_regions:
            outside = [r for r in wanted if r not in self.allowed_regions]
            if outside:
                raise ConfigError(
                    f"region {', '.join(outside)} is not allowed by profile '{self.name}' "
                    f"(regions = {self.allowed_regions})",
                    hint=f"add it to regions under [profiles.{self.name}] in config.toml",
                )
        if not wanted:
            wanted = list(self.allowed_regions) or list(size.get("regions") or [])
        return list(dict.fromkeys(w for w in wanted if w))

    def _pick_image(
        self, spec: LaunchSpec, size: Mapping[str, Any], region: str
    ) -> dict[str, Any] | None:
        images = self._images()
        vendor = catalog.gpu_vendor(size)
        if spec.image:
            image = catalog.find_image(images, spec.image)
            if image is None:
                options = catalog.suitable_images(images, vendor, str(size.get("slug")))
                raise ConfigError(
                    f"image '{spec.image}' not found on {self.host_label}",
                    hint=f"images for {size.get('slug')}: {', '.join(options) or 'none'}",
                )
            return image if catalog.usable_in(image, region) else None
        preferred = self.profile.get("image")
        if preferred:
            image = catalog.find_image(images, str(preferred))
            if image is not None and catalog.usable_in(image, region):
                return image
        return catalog.choose_image(images, vendor, str(size.get("slug")), region)

    def _find_by_tag(self, tag: str) -> dict[str, Any] | None:
        droplets = self._paged(
            f"look for droplets tagged {tag}",
            self._client().droplets.list,
            "droplets",
            tag_name=tag,
        )
        return droplets[0] if droplets else None

    def launch(self, spec: LaunchSpec) -> Generator[Event, None, Instance]:
        """A tagged GPU droplet for spec, active with an IPv4 (gpuctl.provision drives
        the region failover, the boot wait and the clean-up)."""
        return provision.launch(self, spec)

    def placements(self, spec: LaunchSpec) -> Iterator[Event | Placement | Failure]:
        """Size, price and spot checks, the account key and the firewall, then one
        placement per region to try (a region without the size or an image is ruled out)."""
        rid = spec.run_id
        self._token()  # fail on a missing token before anything else
        user_data = self._user_data(spec)
        yield Provisioning(rid, self.name, f"reading sizes and images from {self.host_label}")
        sizes = self._sizes(fresh=True)
        size = self._pick_size(spec, sizes)
        slug = str(size.get("slug"))
        price = size.get("price_hourly")
        if spec.spot:
            if spec.fallback != "on-demand":
                raise ConfigError(
                    f"{self.host_label} has no spot market; {slug} is on-demand only",
                    hint="drop --spot, or pass --fallback on-demand to accept the on-demand price",
                )
            yield Notice(rid, f"no spot market here; {slug} runs on-demand", level="warning")
        if spec.max_price is not None and price is not None and float(price) > spec.max_price:
            raise CapacityError(
                f"{slug} costs {rate(float(price))}, above your max price {rate(spec.max_price)}",
                hint=f"raise --max-price or pick a cheaper size (gpuctl offers -p {self.name})",
            )
        regions = self._regions_to_try(spec, size)
        offered = list(size.get("regions") or [])
        key_id = self._ensure_account_key()
        from . import do_firewall

        firewall_tag = yield from do_firewall.ensure_firewall(self, spec)  # before any droplet
        name = droplet_name(rid)
        sized = (slug, tuple(offered))  # for explain()
        for region in regions:
            if region not in offered:
                yield Failure(region, CAPACITY, f"{slug} is not offered in {region}", data=sized)
                continue
            image = self._pick_image(spec, size, region)
            if image is None:
                which = f"image {spec.image}" if spec.image else "no suitable image"
                reason = f"{which} is not available in {region}"
                yield Failure(region, CAPACITY, reason, data=sized)
                continue
            label = catalog.image_label(image)
            yield Provisioning(
                rid,
                self.name,
                f"creating {name}: {slug} ({rate(None if price is None else float(price))}) in "
                f"{region}, image {label}",
            )
            if not catalog.has_torch(image):
                yield Notice(
                    rid,
                    f"image {label} has no PyTorch; gpuctl will install torch on the machine "
                    "(slower first start)",
                    level="warning",
                )
            body = {
                "name": name,
                "region": region,
                "size": slug,
                "image": image.get("slug") or image.get("id"),
                "ssh_keys": [key_id],
                "tags": [
                    TAG_MANAGED,
                    run_tag(rid),
                    TAG_INSTALLATION_PREFIX + self.settings.installation_id,
                ],
                "user_data": user_data,
                "monitoring": True,
            }
            if firewall_tag:
                body["tags"].append(firewall_tag)  # the firewall covers it from its first boot
            yield Placement(
                region,
                Market.ON_DEMAND,
                None if price is None else float(price),
                data=(body, f"create droplet {name} ({slug}) in {region}", sized),
            )

    def create(self, spec: LaunchSpec, placement: Placement) -> str:
        """POST one droplet, never retried blindly: a lost answer is Ambiguous, and the
        core looks for the run's tag before it sends the create again."""
        body, what, sized = placement.data
        try:
            created = self._call(
                what, self._client().droplets.create, body, expect="droplet", retry=False
            )
        except _Retry as transient:
            waits = [
                self._retry_wait(transient.status, transient.headers, attempt)
                for attempt in range(1, self.max_attempts)
            ]
            raise Ambiguous(transient.error, waits=waits) from None
        except CapacityError as exc:
            failure = Failure(placement.where, CAPACITY, exc.message, exc, data=sized)
            raise Unplaced(failure) from None
        return str(created["droplet"]["id"])

    def find_created(self, spec: LaunchSpec, placement: Placement) -> str | None:
        droplet = self._find_by_tag(run_tag(spec.run_id))
        return None if droplet is None else str(droplet["id"])

    def describe(self, instance_id: str, placement: Placement) -> Look:
        """Up once active with a public IPv4; gone (404) or archived ends the try."""
        droplet = self._get_droplet(int(instance_id))
        if droplet is None:
            return Look(ended="it disappeared (the API answers 404)")
        inst = self._instance(droplet)
        if inst.state == InstanceState.TERMINATED:
            return Look(inst, ended=f"it was {inst.raw_state}")
        return Look(inst, up=inst.raw_state == "active" and bool(inst.public_ip))

    def end(self, instance_id: str, placement: Placement) -> None:
        self._destroy(int(instance_id), wait=False)

    def pacing(self) -> Pacing:
        return Pacing(
            self.boot_timeout, self.poll_interval, 1.5, 15.0, sleep=self._sleep, clock=self._clock
        )

    def explain(self, spec: LaunchSpec, failures: Sequence[Failure]) -> GpuctlError | None:
        """Where the size is offered instead, when no region had room for it."""
        sized = next((f.data for f in failures if f.data), None)
        if sized is None or any(f.kind != CAPACITY for f in failures):
            return None
        slug, offered = sized
        tried = [f.where for f in failures]
        elsewhere = [r for r in offered if r not in tried]
        where = f"it is offered in {', '.join(elsewhere)}" if elsewhere else "no other region"
        if elsewhere and self.allowed_regions:
            where += f" (profile '{self.name}' allows {', '.join(self.allowed_regions)})"
        return CapacityError(
            f"{slug} is not available in {', '.join(tried) or 'any region'}; {where}",
            hint=f"pass --region {elsewhere[0]}"
            if elsewhere
            else "try another size (gpuctl offers) or later",
        )

    def _user_data(self, spec: LaunchSpec) -> str:
        from gpuctl.bootguard import boot_guard_script

        script = boot_guard_script(spec.run_id, spec.max_hours)
        extra = spec.options.get("user_data")
        if extra:
            script += "\n" + str(extra)
        size = len(script.encode())
        if size > USER_DATA_LIMIT:
            raise ConfigError(
                f"user_data is {size} bytes; DigitalOcean accepts at most {USER_DATA_LIMIT} "
                "(64 KiB)",
                hint="ship large files with the work directory instead of user_data",
            )
        return script

    # -- power and destroy --------------------------------------------------------------

    def _action(self, instance: Instance, kind: str, done_status: str) -> None:
        droplet_id = self._droplet_id(instance.id)
        droplet = None if droplet_id is None else self._get_droplet(droplet_id)
        if droplet is None or droplet_id is None:
            raise NotFoundError(
                f"droplet {instance.id} no longer exists on {self.host_label}",
                hint="`gpuctl ls` refreshes the listing",
            )
        if droplet.get("status") == done_status:
            return
        verb = kind.replace("_", " ")
        client = self._client()
        body = self._call(
            f"{verb} droplet {droplet_id}",
            client.droplet_actions.post,
            droplet_id,
            {"type": kind},
            expect="action",
        )
        action_id = int(body["action"]["id"])
        start, delay = self._clock(), min(self.poll_interval, 2.0)
        status = str(body["action"].get("status"))
        while status == "in-progress":
            if self._clock() - start > self.action_timeout:
                raise ProviderError(
                    f"{verb} of droplet {droplet_id} still in progress after "
                    f"{self.action_timeout:.0f}s",
                    hint="check the cloud console",
                )
            self._sleep(delay)
            delay = min(delay * 1.5, 10.0)
            action = self._call(
                f"follow {verb} of droplet {droplet_id}",
                client.droplet_actions.get,
                droplet_id,
                action_id,
                expect="action",
            )["action"]
            status = str(action.get("status"))
        if status != "completed":
            raise ProviderError(f"{verb} of droplet {droplet_id} ended {status}")

    def stop(self, instance: Instance) -> None:
        """Power off. DigitalOcean still bills a powered-off droplet: only destroy stops it."""
        self._action(instance, "power_off", "off")

    def start(self, instance: Instance) -> None:
        self._action(instance, "power_on", "active")

    def terminate(self, instance: Instance, *, wait: bool = True) -> None:
        """Destroy; with wait, return only once GET answers 404 (bounded)."""
        droplet_id = self._droplet_id(instance.id)
        if droplet_id is None:
            raise NotFoundError(f"'{instance.id}' is not a droplet id")
        self._destroy(droplet_id, wait=wait)

    def _destroy(self, droplet_id: int, *, wait: bool) -> None:
        client = self._client()
        for attempt in range(1, 4):
            try:
                self._call(
                    f"destroy droplet {droplet_id}",
                    client.droplets.destroy,
                    droplet_id,
                    expect=None,
                )
                break
            except NotFoundError:
                log.info("%s: droplet %s was already gone", self.name, droplet_id)
                break
            except ApiRefused as exc:
                # e.g. 422 while the droplet still has an event in progress (being created)
                if exc.status >= 500 or attempt == 3:
                    raise
                self._sleep(min(self.poll_interval * attempt, 10.0))
        if not wait:
            return
        start, delay = self._clock(), min(self.poll_interval, 2.0)
        while self._get_droplet(droplet_id) is not None:
            if self._clock() - start > self.action_timeout:
                raise ProviderError(
                    f"droplet {droplet_id} still exists {self.action_timeout:.0f}s after destroy "
                    "(and may still be billed)",
                    hint=f"check the console; `gpuctl down {droplet_id}` retries",
                )
            self._sleep(delay)
            delay = min(delay * 1.5, 10.0)

    # -- reaching the machine -----------------------------------------------------------

    def ssh_target(self, instance: Instance) -> SshTarget | None:
        """The droplet's public IPv4 as root, unless the profile overrides (emulators)."""
        user = str(self.profile.value("ssh_user"))
        target = provision.ssh_target(self.profile, instance, user=user, key_path=self._key_path())
        if target is None:
            raise ProviderError(
                f"droplet {instance.id} has no public IPv4 yet ({instance.raw_state or 'unknown'})",
                hint="wait until it is active (`gpuctl ls`)",
            )
        return target

    def host(self, instance: Instance) -> Host:
        from gpuctl.remote.ssh_host import SshHost

        target = self.ssh_target(instance)
        assert target is not None
        return SshHost(target, self.settings)

    @property
    def agent_token_env(self) -> str:
        """Where the droplet-scoped token for the agent is (never the full-access one)."""
        default = self.token_env.removesuffix("_TOKEN") + "_AGENT_TOKEN"
        return str(self.profile.get("agent_token_env") or default)

    def agent_shutdown(self, instance: Instance) -> dict[str, Any]:
        """Destroy through the API when a droplet-scoped agent token is set here (or
        `agent_destroy = true`), else power off (still billed: gpuctl destroys it at its
        next listing). The caller hands the token to the agent on a pipe, never in this
        dict; `agent_destroy = false` turns the destroy off.
        """
        command = list(self.profile.value("shutdown_command"))
        wanted = self.profile.get("agent_destroy")
        if wanted is None:
            wanted = bool(os.environ.get(self.agent_token_env, "").strip())
        if wanted:
            return {
                "action": SHUTDOWN_DESTROY,
                "api": self.endpoint,
                "droplet_id": instance.id,
                "token_env": self.agent_token_env,
                "command": command,  # fallback when the API call fails
            }
        return {"action": SHUTDOWN_POWEROFF, "command": command}
