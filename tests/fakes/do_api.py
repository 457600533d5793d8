"""A small stateful fake of the DigitalOcean v2 API, for driving the real pydo client.

Only the endpoints gpuctl uses, shaped like the public OpenAPI spec: droplets (with
tag filter and links/meta pagination), droplet actions, sizes, regions, images, account,
account/keys, tags and firewalls (applied by tag or droplet id, replaced whole by PUT).
Error bodies are `{"id": ..., "message": ..., "request_id": ...}`
with the real status codes, so pydo behaves exactly as against the real API (including
returning some 404/400 bodies as plain dicts instead of raising).

Knobs for tests: `token` (401 for anything else), `readonly_tokens` (403 on writes),
`inject()` (429 with ratelimit-reset, 5xx, any status), `unavailable` (size, region)
pairs that answer 422 like DO does when a region has no capacity, `max_per_page`,
`active_after` (GETs before a new droplet is active), `destroy_lag`, `droplet_limit`,
`firewalls_supported` (False: /v2/firewalls answers 404, as on a cloud without them).
`ssh_sources(droplet_id)` says which addresses the firewalls let reach its port 22.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

JSON = dict[str, Any]

NAME_RE = re.compile(r"^[a-zA-Z0-9.-]+$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_:-]+$")
FIREWALL_NAME_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,255}$")
USER_DATA_LIMIT = 64 * 1024

_CPU_REGIONS = ["nyc1", "nyc3", "sfo3", "ams3", "fra1", "tor1", "atl1"]


def _size(
    slug: str,
    hourly: float,
    vcpus: int,
    memory_mb: int,
    disk: int,
    regions: list[str],
    description: str,
    gpu: tuple[int, str, int] | None = None,
) -> JSON:
    size: JSON = {
        "slug": slug,
        "memory": memory_mb,
        "vcpus": vcpus,
        "disk": disk,
        "transfer": 15.0 if gpu else 1.0,
        "price_monthly": round(hourly * 672, 2),
        "price_hourly": hourly,
        "regions": list(regions),
        "available": True,
        "description": description,
        "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
    }
    if gpu:
        count, model, vram = gpu
        size["gpu_info"] = {"count": count, "model": model, "vram": {"amount": vram, "unit": "gib"}}
        size["disk_info"].append({"type": "scratch", "size": {"amount": 5120, "unit": "gib"}})
    return size


def default_sizes() -> list[JSON]:
    """A realistic catalog: CPU basics, NVIDIA H100 and AMD MI300X GPU droplets."""
    return [
        _size("s-1vcpu-1gb", 0.00893, 1, 1024, 25, _CPU_REGIONS, "Basic"),
        _size("s-2vcpu-4gb", 0.03571, 2, 4096, 80, _CPU_REGIONS, "Basic"),
        _size("c-4", 0.125, 4, 8192, 50, _CPU_REGIONS, "CPU-Optimized"),
        _size(
            "gpu-h100x1-80gb",
            3.39,
            20,
            245760,
            720,
            ["nyc2", "tor1"],
            "H100 GPU - 1X",
            (1, "nvidia_h100", 80),
        ),
        _size(
            "gpu-h100x8-640gb",
            23.92,
            160,
            1966080,
            2046,
            ["nyc2", "tor1"],
            "H100 GPU - 8X",
            (8, "nvidia_h100", 640),
        ),
        _size(
            "gpu-mi300x1-192gb",
            1.99,
            20,
            245760,
            720,
            ["atl1", "nyc2"],
            "AMD MI300X - 1X",
            (1, "amd_mi300x", 192),
        ),
        _size(
            "gpu-mi300x8-1536gb",
            15.92,
            160,
            1966080,
            2046,
            ["atl1"],
            "AMD MI300X - 8X",
            (8, "amd_mi300x", 1536),
        ),
    ]


def _image(
    image_id: int, slug: str, name: str, kind: str, distribution: str, description: str
) -> JSON:
    return {
        "id": image_id,
        "name": name,
        "type": "base" if kind == "distribution" else "snapshot",
        "distribution": distribution,
        "slug": slug,
        "public": True,
        "regions": [],
        "created_at": "2025-01-15T10:00:00Z",
        "min_disk_size": 20,
        "size_gigabytes": 8.5,
        "description": description,
        "tags": [],
        "status": "available",
        "_kind": kind,  # distribution | application | private (query filter, not shown)
    }


def default_images() -> list[JSON]:
    return [
        _image(
            100, "ubuntu-22-04-x64", "22.04 (LTS) x64", "distribution", "Ubuntu", "Ubuntu 22.04"
        ),
        _image(
            101, "ubuntu-24-04-x64", "24.04 (LTS) x64", "distribution", "Ubuntu", "Ubuntu 24.04"
        ),
        _image(
            200,
            "gpu-h100x1-base",
            "AI/ML Ready",
            "distribution",
            "Ubuntu",
            "GPU-ready Ubuntu 22.04 with NVIDIA drivers and CUDA",
        ),
        _image(
            300,
            "gpu-amd-base",
            "AMD ROCm base",
            "distribution",
            "Ubuntu",
            "Ubuntu 22.04 with AMD ROCm drivers",
        ),
        _image(
            301,
            "amd-pytorchrocm7",
            "PyTorch (ROCm 7)",
            "application",
            "Ubuntu",
            "PyTorch 2.7 on ROCm 7 for AMD Instinct GPUs",
        ),
        _image(
            302,
            "amd-rocm71software",
            "ROCm 7.1 Software",
            "application",
            "Ubuntu",
            "ROCm 7.1 software stack",
        ),
    ]


def default_regions() -> list[JSON]:
    names = {
        "nyc1": "New York 1",
        "nyc2": "New York 2",
        "nyc3": "New York 3",
        "sfo3": "San Francisco 3",
        "ams3": "Amsterdam 3",
        "fra1": "Frankfurt 1",
        "tor1": "Toronto 1",
        "atl1": "Atlanta 1",
    }
    return [
        {
            "slug": slug,
            "name": name,
            "features": ["backups", "ipv6", "metadata", "install_agent"],
            "available": True,
            "sizes": [],
        }
        for slug, name in names.items()
    ]


def fingerprint(public_key: str) -> str:
    """MD5 colon-hex of the key blob: the fingerprint DigitalOcean reports."""
    blob = base64.b64decode(public_key.split()[1])
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@dataclass
class Injection:
    status: int
    method: str | None = None
    path_prefix: str | None = None
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: JSON | None = None
    after: bool = False  # act on the request first, then answer with the error


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None
    host: str


ERROR_IDS = {
    400: "bad_request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "not_found",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "server_error",
    502: "bad_gateway",
    503: "service_unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class FakeDigitalOcean:
    """The fake API's state and routes; `start()` serves it on 127.0.0.1:<random>."""

    def __init__(
        self,
        *,
        token: str | None = None,
        name: str = "digitalocean",
        sizes: list[JSON] | None = None,
        images: list[JSON] | None = None,
    ) -> None:
        self.name = name
        self.token = token
        self.readonly_tokens: set[str] = set()
        # Custom-scoped tokens: droplet:read + droplet:delete may GET and DELETE droplets only.
        self.droplet_delete_tokens: set[str] = set()
        self.sizes = sizes if sizes is not None else default_sizes()
        self.images = images if images is not None else default_images()
        self.regions = default_regions()
        self.droplets: dict[int, JSON] = {}
        self.user_data: dict[int, str] = {}
        self.keys: dict[int, JSON] = {}
        self.tags: dict[str, JSON] = {}
        self.actions: dict[int, JSON] = {}
        self.firewalls: dict[str, JSON] = {}
        self.firewalls_supported = True
        self.requests: list[Request] = []
        self.injections: list[Injection] = []
        self.unavailable: set[tuple[str, str]] = set()
        self.max_per_page = 200
        self.active_after = 2  # observations (GET/list) before a new droplet is active
        self.action_after = 1  # observations before an action completes
        self.destroy_lag = 0  # GETs that still see a destroyed droplet
        self.droplet_limit = 25
        self._seen: dict[int, int] = {}
        self._pending_actions: dict[int, int] = {}
        self._destroyed: dict[int, int] = {}
        self._ghosts: dict[int, JSON] = {}
        self._next_id = 3164444
        self._next_ip = 10
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- serving -------------------------------------------------------------------

    def start(self) -> FakeDigitalOcean:
        self._server = _serve(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- knobs -----------------------------------------------------------------------

    def inject(
        self,
        status: int,
        *,
        method: str | None = None,
        path_prefix: str | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
        message: str | None = None,
        after: bool = False,
    ) -> None:
        """Answer the next `times` matching requests with `status` and an error body.

        after=True performs the request before answering with the error: the "created,
        but the answer was a 500" case that must not lead to a second droplet.
        """
        body = {
            "id": ERROR_IDS.get(status, "error"),
            "message": message or f"injected {status}",
            "request_id": str(uuid.uuid4()),
        }
        with self._lock:
            self.injections.append(
                Injection(status, method, path_prefix, times, dict(headers or {}), body, after)
            )

    def inject_rate_limit(self, *, reset_in: float = 1.0, times: int = 1) -> None:
        reset = str(int(time.time() + reset_in))
        self.inject(
            429,
            times=times,
            headers={
                "ratelimit-limit": "5000",
                "ratelimit-remaining": "0",
                "ratelimit-reset": reset,
            },
            message="API Rate limit exceeded.",
        )

    def calls(self, method: str | None = None, path_prefix: str = "") -> list[Request]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and r.path.startswith(path_prefix)
            ]

    def seed_droplet(
        self,
        name: str,
        *,
        size: str = "gpu-mi300x1-192gb",
        region: str = "atl1",
        tags: list[str] | None = None,
        status: str = "active",
    ) -> JSON:
        """A droplet created outside gpuctl (or by an earlier gpuctl), already booted."""
        with self._lock:
            image = next(i for i in self.images if i["slug"] == "ubuntu-22-04-x64")
            droplet = self._create(
                {
                    "name": name,
                    "size": size,
                    "region": region,
                    "image": image["slug"],
                    "tags": tags or [],
                }
            )
            self._seen[droplet["id"]] = self.active_after
            self._observe(droplet["id"])
            droplet["status"] = status
            return droplet

    def power_off(self, droplet_id: int) -> None:
        """Power a droplet off behind gpuctl's back (the boot guard firing, say)."""
        with self._lock:
            self.droplets[droplet_id]["status"] = "off"

    # -- dispatch --------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], JSON | None]:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        payload: Any = None
        if body:
            try:
                payload = json.loads(body)
            except ValueError:
                return self._error(400, "request body is not JSON")
        with self._lock:
            self.requests.append(
                Request(
                    method,
                    path,
                    query,
                    payload,
                    headers.get("authorization"),
                    headers.get("host", ""),
                )
            )
            auth = headers.get("authorization", "")
            token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
            scoped = token in self.droplet_delete_tokens
            if not token or (self.token is not None and token != self.token and not scoped):
                return self._error(401, "Unable to authenticate you")
            if scoped and not (path.startswith("/v2/droplets") and method in ("GET", "DELETE")):
                return self._error(403, "You are not authorized to perform this operation")
            for inj in self.injections:
                if inj.times <= 0:
                    continue
                if inj.method and inj.method != method:
                    continue
                if inj.path_prefix and not path.startswith(inj.path_prefix):
                    continue
                inj.times -= 1
                if inj.after:
                    try:
                        self._route(method, path, query, payload)
                    except ApiError:
                        pass
                return inj.status, dict(inj.headers), inj.body
            if method != "GET" and token in self.readonly_tokens:
                return self._error(403, "You are not authorized to perform this operation")
            try:
                status, out = self._route(method, path, query, payload)
            except ApiError as exc:
                return self._error(exc.status, exc.message, exc.headers)
            return status, {}, out

    def _error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], JSON]:
        body = {"id": ERROR_IDS.get(status, "error"), "message": message}
        body["request_id"] = str(uuid.uuid4())
        return status, dict(headers or {}), body

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        seg = [unquote(part) for part in path.strip("/").split("/")]
        if not seg or seg[0] != "v2":
            raise ApiError(404, "The resource you were accessing could not be found.")
        seg = seg[1:]
        key = (method, seg[0] if seg else "", len(seg))
        if key == ("GET", "account", 1):
            return 200, {"account": self._account()}
        if seg[:2] == ["account", "keys"]:
            return self._keys(method, seg[2:], query, body)
        if key == ("GET", "sizes", 1):
            return 200, self._page("sizes", self.sizes, query, path)
        if key == ("GET", "regions", 1):
            return 200, self._page("regions", self.regions, query, path)
        if seg and seg[0] == "images":
            return self._images(method, seg[1:], query, path)
        if seg and seg[0] == "tags":
            return self._tags(method, seg[1:], body)
        if seg and seg[0] == "droplets":
            return self._droplets(method, seg[1:], query, body, path)
        if seg and seg[0] == "firewalls" and self.firewalls_supported:
            return self._firewalls(method, seg[1:], query, body, path)
        if key == ("GET", "actions", 2):
            action = self._observe_action(int(seg[1]))
            return 200, {"action": action}
        raise ApiError(404, "The resource you were accessing could not be found.")

    # -- resources -------------------------------------------------------------------

    def _account(self) -> JSON:
        return {
            "droplet_limit": self.droplet_limit,
            "floating_ip_limit": 3,
            "volume_limit": 100,
            "email": "sammy@example.com",
            "name": "Sammy the Shark",
            "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
            "email_verified": True,
            "status": "active",
            "status_message": "",
            "team": {"uuid": "5df3e3004a17e242b7c20ca6c9fc25b701a47ece", "name": "My Team"},
        }

    def _page(self, key: str, items: list[JSON], query: dict[str, str], path: str) -> JSON:
        per_page = max(1, min(int(query.get("per_page", 20)), self.max_per_page))
        page = max(1, int(query.get("page", 1)))
        total = len(items)
        last = max(1, -(-total // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        extra = "".join(f"&{k}={v}" for k, v in query.items() if k not in ("page", "per_page"))

        def link(n: int) -> str:
            return f"{self.url}{path}?page={n}&per_page={per_page}{extra}"

        pages: JSON = {}
        if page > 1:
            pages["first"] = link(1)
            pages["prev"] = link(page - 1)
        if page < last:
            pages["next"] = link(page + 1)
            pages["last"] = link(last)
        clean = [{k: v for k, v in item.items() if not k.startswith("_")} for item in chunk]
        return {key: clean, "links": {"pages": pages}, "meta": {"total": total}}

    def _keys(self, method: str, rest: list[str], query: dict[str, str], body: Any) -> Any:
        if not rest and method == "GET":
            keys = sorted(self.keys.values(), key=lambda k: k["id"])
            return 200, self._page("ssh_keys", keys, query, "/v2/account/keys")
        if not rest and method == "POST":
            name = (body or {}).get("name")
            public_key = str((body or {}).get("public_key") or "")
            if not name:
                raise ApiError(422, "Name is required")
            try:
                fp = fingerprint(public_key)
            except (IndexError, ValueError):
                raise ApiError(
                    422, "Key invalid, key should be of the form `type key [comment]`"
                ) from None
            if any(k["fingerprint"] == fp for k in self.keys.values()):
                raise ApiError(422, "SSH Key is already in use on your account")
            key_id = 512189 + len(self.keys)
            self.keys[key_id] = {
                "id": key_id,
                "fingerprint": fp,
                "public_key": public_key,
                "name": name,
            }
            return 201, {"ssh_key": self.keys[key_id]}
        if len(rest) == 1:
            found = next(
                (k for k in self.keys.values() if rest[0] in (str(k["id"]), k["fingerprint"])),
                None,
            )
            if found is None:
                raise ApiError(404, "The resource you were accessing could not be found.")
            if method == "GET":
                return 200, {"ssh_key": found}
            if method == "DELETE":
                del self.keys[found["id"]]
                return 204, None
        raise ApiError(404, "The resource you were accessing could not be found.")

    def _images(self, method: str, rest: list[str], query: dict[str, str], path: str) -> Any:
        if method != "GET":
            raise ApiError(404, "The resource you were accessing could not be found.")
        if not rest:
            items = self.images
            if query.get("private") == "true":
                items = [i for i in items if i["_kind"] == "private"]
            elif "type" in query:
                items = [i for i in items if i["_kind"] == query["type"]]
            else:
                items = [i for i in items if i["_kind"] != "private"]
            return 200, self._page("images", items, query, path)
        for image in self.images:
            if rest[0] in (str(image["id"]), image["slug"]):
                return 200, {"image": {k: v for k, v in image.items() if k[0] != "_"}}
        raise ApiError(404, "The resource you were accessing could not be found.")

    def _tags(self, method: str, rest: list[str], body: Any) -> Any:
        if method == "POST" and not rest:
            name = str((body or {}).get("name") or "")
            if not TAG_RE.match(name) or len(name) > 255:
                raise ApiError(
                    400,
                    "tag names must be letters, numbers, colons, dashes and underscores",
                )
            tag = self.tags.setdefault(name, {"name": name, "resources": {"count": 0}})
            return 201, {"tag": tag}
        if method == "GET" and len(rest) == 1:
            if rest[0] not in self.tags:
                raise ApiError(404, "The resource you were accessing could not be found.")
            return 200, {"tag": self.tags[rest[0]]}
        raise ApiError(404, "The resource you were accessing could not be found.")

    # -- firewalls -------------------------------------------------------------------

    def _firewall_body(self, body: Any, firewall_id: str, created_at: str) -> JSON:
        """Validate a create/update body like DO does; returns the stored firewall."""
        body = body if isinstance(body, dict) else {}
        name = str(body.get("name") or "")
        if not FIREWALL_NAME_RE.match(name):
            raise ApiError(
                422, "name must be made up of letters, numbers, dashes, underscores and periods"
            )
        inbound = list(body.get("inbound_rules") or [])
        outbound = list(body.get("outbound_rules") or [])
        if not inbound and not outbound:
            raise ApiError(422, "a firewall must have at least one rule")
        for rule, side in [(r, "sources") for r in inbound] + [
            (r, "destinations") for r in outbound
        ]:
            if not isinstance(rule, dict) or rule.get("protocol") not in ("tcp", "udp", "icmp"):
                raise ApiError(422, "protocol must be one of tcp, udp, icmp")
            if rule["protocol"] != "icmp" and not str(rule.get("ports") or ""):
                raise ApiError(422, "ports is required for tcp and udp rules")
            where = rule.get(side)
            if not isinstance(where, dict) or not any(where.values()):
                raise ApiError(422, f"each rule needs {side}")
            for address in where.get("addresses") or []:
                try:
                    ipaddress.ip_network(str(address), strict=False)
                except ValueError:
                    raise ApiError(422, f"invalid address {address}") from None
        tags = [str(t) for t in body.get("tags") or []]
        for tag in tags:
            if tag not in self.tags:
                raise ApiError(422, f"tag {tag} does not exist")
        droplet_ids = [int(d) for d in body.get("droplet_ids") or []]
        for droplet_id in droplet_ids:
            if droplet_id not in self.droplets:
                raise ApiError(422, f"droplet {droplet_id} does not exist")
        return {
            "id": firewall_id,
            "name": name,
            "status": "succeeded",
            "inbound_rules": inbound,
            "outbound_rules": outbound,
            "created_at": created_at,
            "droplet_ids": droplet_ids,
            "tags": tags,
            "pending_changes": [],
        }

    def _firewalls(
        self, method: str, rest: list[str], query: dict[str, str], body: Any, path: str
    ) -> Any:
        if not rest and method == "GET":
            items = sorted(self.firewalls.values(), key=lambda f: f["created_at"] + f["id"])
            return 200, self._page("firewalls", items, query, path)
        if not rest and method == "POST":
            firewall_id = str(uuid.uuid4())
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            firewall = self._firewall_body(body, firewall_id, now)
            firewall["status"] = "waiting"  # DO answers before the rules are applied
            self.firewalls[firewall_id] = firewall
            return 202, {"firewall": firewall}
        firewall = self.firewalls.get(rest[0]) if rest else None
        if firewall is None:
            raise ApiError(404, "The resource you were accessing could not be found.")
        if len(rest) == 1 and method == "GET":
            firewall["status"] = "succeeded"
            return 200, {"firewall": firewall}
        if len(rest) == 1 and method == "PUT":
            updated = self._firewall_body(body, firewall["id"], firewall["created_at"])
            self.firewalls[firewall["id"]] = updated
            return 200, {"firewall": updated}
        if len(rest) == 1 and method == "DELETE":
            del self.firewalls[firewall["id"]]
            return 204, None
        if len(rest) == 2 and rest[1] in ("tags", "droplets") and method in ("POST", "DELETE"):
            field_name = "tags" if rest[1] == "tags" else "droplet_ids"
            values = list((body or {}).get(field_name) or [])
            if not values:
                raise ApiError(400, f"{field_name} is required")
            if field_name == "tags" and any(str(t) not in self.tags for t in values):
                raise ApiError(422, "tag does not exist")
            if field_name == "droplet_ids" and any(int(d) not in self.droplets for d in values):
                raise ApiError(422, "droplet does not exist")
            current = firewall[field_name]
            if method == "POST":
                current.extend(v for v in values if v not in current)
            else:
                firewall[field_name] = [v for v in current if v not in values]
            return 204, None
        raise ApiError(404, "The resource you were accessing could not be found.")

    def firewalls_of(self, droplet_id: int) -> list[JSON]:
        """The firewalls that apply to a droplet (by its id or one of its tags)."""
        droplet = self.droplets[droplet_id]
        return [
            f
            for f in self.firewalls.values()
            if droplet_id in f["droplet_ids"] or set(f["tags"]) & set(droplet["tags"])
        ]

    def ssh_sources(self, droplet_id: int) -> set[str] | None:
        """Addresses allowed to reach port 22 (None: no firewall, the whole internet)."""
        firewalls = self.firewalls_of(droplet_id)
        if not firewalls:
            return None
        allowed: set[str] = set()
        for firewall in firewalls:
            for rule in firewall["inbound_rules"]:
                ports = str(rule.get("ports"))
                low, _, high = ports.partition("-")
                covers = ports in ("0", "all") or (
                    low.isdigit() and int(low) <= 22 <= int(high or low)
                )
                if rule.get("protocol") == "tcp" and covers:
                    allowed |= set(rule["sources"].get("addresses") or [])
        return allowed

    # -- droplets --------------------------------------------------------------------

    def _droplets(
        self, method: str, rest: list[str], query: dict[str, str], body: Any, path: str
    ) -> Any:
        if not rest and method == "GET":
            items = sorted(self.droplets.values(), key=lambda d: d["id"])
            if "tag_name" in query:
                items = [d for d in items if query["tag_name"] in d["tags"]]
            for d in items:
                self._observe(d["id"])
            return 200, self._page("droplets", items, query, path)
        if not rest and method == "POST":
            return 202, {"droplet": self._create(body or {})}
        droplet_id = int(rest[0]) if rest and rest[0].isdigit() else -1
        if len(rest) == 1 and method == "GET":
            if droplet_id in self._destroyed:
                self._destroyed[droplet_id] -= 1
                if self._destroyed[droplet_id] >= 0:
                    return 200, {"droplet": dict(self._ghosts[droplet_id])}
            if droplet_id not in self.droplets:
                raise ApiError(404, "The resource you were accessing could not be found.")
            self._observe(droplet_id)
            return 200, {"droplet": self.droplets[droplet_id]}
        if len(rest) == 1 and method == "DELETE":
            if droplet_id not in self.droplets:
                raise ApiError(404, "The resource you were accessing could not be found.")
            gone = self.droplets.pop(droplet_id)
            if self.destroy_lag:
                self._destroyed[droplet_id] = self.destroy_lag
                self._ghosts[droplet_id] = gone
            return 204, None
        if len(rest) >= 2 and rest[1] == "actions":
            if droplet_id not in self.droplets:
                raise ApiError(404, "The resource you were accessing could not be found.")
            if len(rest) == 2 and method == "POST":
                return 201, {"action": self._action(droplet_id, str((body or {}).get("type")))}
            if len(rest) == 3 and method == "GET":
                return 200, {"action": self._observe_action(int(rest[2]))}
        raise ApiError(404, "The resource you were accessing could not be found.")

    def _create(self, body: JSON) -> JSON:
        name = str(body.get("name") or "")
        if not NAME_RE.match(name):
            raise ApiError(
                422, "Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)"
            )
        size = next((s for s in self.sizes if s["slug"] == body.get("size")), None)
        if size is None:
            raise ApiError(422, "You specified an invalid size for Droplet creation.")
        region = next((r for r in self.regions if r["slug"] == body.get("region")), None)
        if region is None:
            raise ApiError(422, "You specified an invalid region for Droplet creation.")
        image_ref = str(body.get("image"))
        image = next((i for i in self.images if image_ref in (str(i["id"]), i["slug"])), None)
        if image is None:
            raise ApiError(422, "You specified an invalid image for Droplet creation.")
        for key_ref in body.get("ssh_keys") or []:
            if not any(
                str(key_ref) in (str(k["id"]), k["fingerprint"]) for k in self.keys.values()
            ):
                raise ApiError(422, "You specified an invalid ssh key for Droplet creation.")
        tags = list(body.get("tags") or [])
        for tag in tags:
            if not TAG_RE.match(str(tag)):
                raise ApiError(422, f"Tag '{tag}' is invalid")
        user_data = body.get("user_data") or ""
        if len(user_data.encode()) > USER_DATA_LIMIT:
            raise ApiError(422, "user_data is too long (maximum is 64 KiB)")
        if len(self.droplets) >= self.droplet_limit:
            raise ApiError(
                422,
                "creating this/these droplet(s) will exceed your droplet limit",
            )
        if (size["slug"], region["slug"]) in self.unavailable or region["slug"] not in size[
            "regions"
        ]:
            raise ApiError(422, "Size is not available in this region.")
        droplet_id = self._next_id
        self._next_id += 1
        for tag in tags:
            self.tags.setdefault(tag, {"name": tag, "resources": {"count": 0}})
            self.tags[tag]["resources"]["count"] += 1
        clean_size = {k: v for k, v in size.items() if k != "disk_info"}
        droplet = {
            "id": droplet_id,
            "name": name,
            "memory": size["memory"],
            "vcpus": size["vcpus"],
            "disk": size["disk"],
            "locked": False,
            "status": "new",
            "kernel": None,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "features": ["monitoring"],
            "backup_ids": [],
            "next_backup_window": None,
            "snapshot_ids": [],
            "image": {k: v for k, v in image.items() if k[0] != "_"},
            "volume_ids": [],
            "size": clean_size,
            "size_slug": size["slug"],
            "networks": {"v4": [], "v6": []},
            "region": {k: v for k, v in region.items()},
            "tags": tags,
            "vpc_uuid": "760e09ef-dc84-11e8-981e-3cfdfeaae000",
        }
        if "gpu_info" in size:
            droplet["gpu_info"] = size["gpu_info"]
        self.droplets[droplet_id] = droplet
        self.user_data[droplet_id] = user_data
        self._seen[droplet_id] = 0
        return droplet

    def _observe(self, droplet_id: int) -> None:
        """Each look at a droplet moves time on: new -> active, actions complete."""
        droplet = self.droplets.get(droplet_id)
        if droplet is None:
            return
        self._seen[droplet_id] = self._seen.get(droplet_id, 0) + 1
        if droplet["status"] == "new" and self._seen[droplet_id] >= self.active_after:
            droplet["status"] = "active"
            ip = self._next_ip
            self._next_ip += 1
            droplet["networks"]["v4"] = [
                {
                    "ip_address": f"10.110.0.{ip}",
                    "netmask": "255.255.240.0",
                    "gateway": "10.110.0.1",
                    "type": "private",
                },
                {
                    "ip_address": f"203.0.113.{ip}",
                    "netmask": "255.255.240.0",
                    "gateway": "203.0.113.1",
                    "type": "public",
                },
            ]
        for action_id, left in list(self._pending_actions.items()):
            if self.actions[action_id]["resource_id"] == droplet_id:
                self._tick_action(action_id, left)

    def _action(self, droplet_id: int, kind: str) -> JSON:
        if kind not in ("power_off", "power_on", "shutdown", "reboot", "power_cycle"):
            raise ApiError(422, f"Invalid action type '{kind}'")
        action_id = 36804636 + len(self.actions)
        droplet = self.droplets[droplet_id]
        self.actions[action_id] = {
            "id": action_id,
            "status": "in-progress",
            "type": kind,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "completed_at": None,
            "resource_id": droplet_id,
            "resource_type": "droplet",
            "region": droplet["region"],
            "region_slug": droplet["region"]["slug"],
        }
        self._pending_actions[action_id] = self.action_after
        if self.action_after <= 0:
            self._tick_action(action_id, 0)
        return dict(self.actions[action_id])

    def _tick_action(self, action_id: int, left: int) -> None:
        left -= 1
        self._pending_actions[action_id] = left
        if left > 0:
            return
        del self._pending_actions[action_id]
        action = self.actions[action_id]
        action["status"] = "completed"
        action["completed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        droplet = self.droplets.get(action["resource_id"])
        if droplet is not None:
            if action["type"] in ("power_off", "shutdown"):
                droplet["status"] = "off"
            elif action["type"] in ("power_on", "reboot", "power_cycle"):
                droplet["status"] = "active"

    def _observe_action(self, action_id: int) -> JSON:
        if action_id not in self.actions:
            raise ApiError(404, "The resource you were accessing could not be found.")
        if action_id in self._pending_actions:
            self._tick_action(action_id, self._pending_actions[action_id])
        return dict(self.actions[action_id])


class Redirector:
    """A host that answers every request with a redirect to another base URL.

    Stands in for api-amd.digitalocean.com, which is reported to redirect to the AMD
    Developer Cloud's own host.
    """

    def __init__(self, target: str, status: int = 301) -> None:
        self.target = target.rstrip("/")
        self.status = status
        self.hits = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Redirector:
        self._server = _serve(self)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], JSON | None]:
        self.hits += 1
        return self.status, {"Location": self.target + raw_path}, None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _serve(app: Any) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in separate writes: without this, Nagle plus
            # delayed ACKs add 40 ms to every call.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, out = app.handle(self.command, self.path, headers, body)
            data = b"" if out is None or status == 204 else json.dumps(out).encode()
            self.send_response(status)
            reset = str(int(time.time()) + 60)
            base = {
                "ratelimit-limit": "5000",
                "ratelimit-remaining": "4999",
                "ratelimit-reset": reset,
            }
            for key, value in {**base, **extra}.items():
                self.send_header(key, value)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server
