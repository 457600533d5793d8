"""Building the pydo client: bearer auth on any scheme, safe redirects, no SDK retries.

Imported lazily by providers/digitalocean.py (it pulls in pydo and azure-core), so
`gpuctl --help` never pays for them.

Why a custom pipeline:
- azure-core's BearerTokenCredentialPolicy refuses plain http, and emulators (the fake
  DO API in the tests) speak plain http; so a SansIOHTTPPolicy sets the header itself.
- The AMD Developer Cloud host is reported to redirect to another host. azure-core
  follows only GET redirects for 301/302 and strips Authorization on any host change,
  which would turn every call into a 401. We follow redirects for every method (keeping
  the method: an API host move is not a form post) and send the token only to the
  endpoint's own host or a known DigitalOcean/AMD API host, never over a downgrade to
  plain http.
- retry_total=0: gpuctl does its own bounded retries (429 with ratelimit-reset, 5xx),
  because a blind retry of a droplet create could start a second billed machine.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import pydo
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import RedirectPolicy, SansIOHTTPPolicy

log = logging.getLogger("gpuctl.providers.digitalocean")

# Hosts that legitimately serve DigitalOcean's v2 API (AMD Developer Cloud included).
KNOWN_API_HOSTS = frozenset(
    {"api.digitalocean.com", "api-amd.digitalocean.com", "api.devcloud.amd.com"}
)


class BearerPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Set `Authorization: Bearer <token>` for trusted hosts only (http or https)."""

    def __init__(self, token: str, endpoint: str) -> None:
        super().__init__()
        self.__token = token
        parts = urlsplit(endpoint)
        self._home = (parts.hostname or "").lower()
        self._home_scheme = parts.scheme
        self._trusted = KNOWN_API_HOSTS | {self._home}

    def __repr__(self) -> str:  # never show the token, even in a debugger dump
        return f"BearerPolicy(home={self._home!r})"

    def trusted(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host not in self._trusted:
            return False
        # A redirect from https down to plain http would expose the token on the wire.
        return not (self._home_scheme == "https" and parts.scheme != "https")

    def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]
        http = request.http_request
        if self.trusted(http.url):
            http.headers["Authorization"] = f"Bearer {self.__token}"
        else:
            http.headers.pop("Authorization", None)
            log.warning("not sending the API token to untrusted host %s", urlsplit(http.url).netloc)


class FollowRedirects(RedirectPolicy):  # type: ignore[type-arg]
    """Follow 301/302/307/308 for every method, keeping method and body."""

    def get_redirect_location(self, response: PipelineResponse) -> Any:  # type: ignore[type-arg]
        status = response.http_response.status_code
        if status in (301, 302, 307, 308):
            location = response.http_response.headers.get("location")
            if location:
                log.info("API endpoint redirected (%s) to %s", status, urlsplit(location).netloc)
            return location
        return super().get_redirect_location(response)


def build_client(endpoint: str, token: str, *, timeout: float = 60.0) -> Any:
    """A pydo.Client for endpoint with gpuctl's auth, redirect and retry policies."""
    # azure-core logs every request and response at INFO; keep that out of gpuctl's
    # logs unless someone turned it on explicitly (Authorization is redacted anyway).
    http_log = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    if http_log.level == logging.NOTSET:
        http_log.setLevel(logging.WARNING)
    return pydo.Client(
        token=token,
        endpoint=endpoint,
        authentication_policy=BearerPolicy(token, endpoint),
        redirect_policy=FollowRedirects(redirect_max=5),
        # Our BearerPolicy decides per host; azure's cleanup would strip the header on
        # the (trusted) AMD redirect and turn every call into a 401.
        disable_redirect_cleanup=True,
        retry_total=0,
        connection_timeout=min(timeout, 15.0),
        read_timeout=timeout,
    )
