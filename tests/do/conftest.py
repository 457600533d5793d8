"""Fixtures for the DigitalOcean / AMD provider: a fake DO API and providers pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gpuctl import settings as settings_mod
from gpuctl.providers.digitalocean import DigitalOceanProvider
from gpuctl.settings import BUILTIN_PROFILES, Profile, Settings
from tests.do.util import AMD_TOKEN, DO_TOKEN, Clock
from tests.fakes.do_api import FakeDigitalOcean


@pytest.fixture
def fake() -> Iterator[FakeDigitalOcean]:
    """The fake API as the AMD Developer Cloud (token AMD_TOKEN)."""
    api = FakeDigitalOcean(token=AMD_TOKEN, name="amd").start()
    yield api
    api.close()


@pytest.fixture
def do_fake() -> Iterator[FakeDigitalOcean]:
    """A second fake standing in for api.digitalocean.com (token DO_TOKEN)."""
    api = FakeDigitalOcean(token=DO_TOKEN, name="digitalocean").start()
    yield api
    api.close()


@pytest.fixture
def settings() -> Settings:
    return settings_mod.load()


@pytest.fixture
def clock() -> Clock:
    return Clock()


MakeProvider = Callable[..., DigitalOceanProvider]


@pytest.fixture
def make_provider(
    settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> MakeProvider:
    """make_provider(api, profile="amd", token=..., **options) -> provider on that fake."""

    def make(
        api: FakeDigitalOcean | str,
        profile: str = "amd",
        *,
        token: str | None = None,
        **options: Any,
    ) -> DigitalOceanProvider:
        base = dict(BUILTIN_PROFILES.get(profile, BUILTIN_PROFILES["digitalocean"]))
        base.pop("provider")
        url = api if isinstance(api, str) else api.url
        # SSH from a documentation address: no caller lookup leaves the machine.
        merged = {**base, "endpoint": url, "ssh_cidr": "203.0.113.7/32", **options}
        token_env = merged.get("token_env", "DIGITALOCEAN_TOKEN")
        default = AMD_TOKEN if token_env == "AMD_DEVCLOUD_TOKEN" else DO_TOKEN
        monkeypatch.setenv(token_env, token if token is not None else default)
        provider = DigitalOceanProvider(
            Profile(name=profile, provider="digitalocean", options=merged), settings
        )
        provider._sleep = clock.sleep
        provider._clock = clock
        return provider

    return make
