"""HTTP failures, error bodies pydo does not raise, endpoints, redirects and token hygiene."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from gpuctl.errors import (
    CredentialsError,
    GpuctlError,
    NotFoundError,
    ProviderError,
    QuotaError,
)
from gpuctl.models import LaunchSpec
from gpuctl.providers.digitalocean import DigitalOceanProvider
from gpuctl.settings import Settings
from tests.conftest import REPO
from tests.do.conftest import MakeProvider
from tests.do.util import AMD_TOKEN, DO_TOKEN, Clock
from tests.events import drain
from tests.fakes.do_api import FakeDigitalOcean, Redirector


def spec(run_id: str = "validate-261123-a1b2", **kw: object) -> LaunchSpec:
    return LaunchSpec(run_id=run_id, preset="validate", provider="amd", max_hours=1.0, **kw)  # type: ignore[arg-type]


def one_line(err: GpuctlError) -> str:
    text = err.one_line()
    assert "\n" not in text
    return text


# -- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "variable"), [("amd", "AMD_DEVCLOUD_TOKEN"), ("digitalocean", "DIGITALOCEAN_TOKEN")]
)
def test_missing_token_names_the_variable(profile: str, variable: str, settings: Settings):
    provider = DigitalOceanProvider(settings.profile(profile), settings)
    with pytest.raises(CredentialsError) as err:
        provider.offers()
    assert variable in err.value.message and variable in err.value.hint
    with pytest.raises(CredentialsError):
        drain(provider.launch(spec()))


def test_custom_token_env_is_used(fake: FakeDigitalOcean, make_provider: MakeProvider):
    provider = make_provider(fake, token_env="MY_AMD_TOKEN", token=AMD_TOKEN)
    assert provider.offers()
    assert fake.calls()[0].authorization == f"Bearer {AMD_TOKEN}"


def test_401_says_token_wrong_or_other_endpoint(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake, token="amddev_expired")
    with pytest.raises(CredentialsError) as err:
        provider.check()
    text = one_line(err.value)
    assert "401" in text and "AMD_DEVCLOUD_TOKEN" in text
    assert "wrong or expired" in text and "other endpoint" in text


def test_401_with_a_do_token_against_the_amd_endpoint(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake, token=DO_TOKEN)  # a dop_v1_ token on the AMD profile
    with pytest.raises(CredentialsError) as err:
        provider.offers()
    assert "DigitalOcean token (dop_v1_...)" in err.value.hint
    assert "'digitalocean' profile" in err.value.hint
    assert DO_TOKEN not in one_line(err.value)


def test_403_read_only_token_says_write_scope(fake: FakeDigitalOcean, make_provider: MakeProvider):
    fake.readonly_tokens.add(AMD_TOKEN)
    provider = make_provider(fake)
    assert provider.offers()  # reads work
    with pytest.raises(CredentialsError) as err:
        drain(provider.launch(spec()))
    text = one_line(err.value)
    assert "403" in text and "lacks write scope" in text and "AMD_DEVCLOUD_TOKEN" in text
    assert fake.droplets == {}


def test_check_passes_and_reports_a_locked_account(
    fake: FakeDigitalOcean, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
):
    provider = make_provider(fake)
    provider.check()
    original = fake._account

    def locked() -> dict:
        return {**original(), "status": "locked", "status_message": "payment overdue"}

    monkeypatch.setattr(fake, "_account", locked)
    with pytest.raises(CredentialsError) as err:
        provider.check()
    assert "locked: payment overdue" in err.value.message


# -- rate limits and server errors -----------------------------------------------------------


def test_429_waits_until_ratelimit_reset(
    fake: FakeDigitalOcean, make_provider: MakeProvider, clock: Clock
):
    fake.inject_rate_limit(reset_in=5, times=2)
    assert make_provider(fake).offers()
    assert len(clock.sleeps) == 2 and all(3 <= s <= 6 for s in clock.sleeps)
    assert len(fake.calls("GET", "/v2/sizes")) == 3


def test_429_with_a_distant_reset_fails_fast_and_clearly(
    fake: FakeDigitalOcean, make_provider: MakeProvider, clock: Clock
):
    fake.inject_rate_limit(reset_in=3600)
    with pytest.raises(QuotaError) as err:
        make_provider(fake).offers()
    assert "rate-limited" in one_line(err.value) and "429" in err.value.message
    assert clock.sleeps == []


def test_5xx_is_retried_with_bounded_backoff(
    fake: FakeDigitalOcean, make_provider: MakeProvider, clock: Clock
):
    fake.inject(503, times=2)
    assert make_provider(fake).offers()
    assert clock.sleeps == [1.0, 2.0]

    fake.inject(500, times=50, message="Server was unable to give you a response.")
    with pytest.raises(ProviderError) as err:
        make_provider(fake).list_instances()
    text = one_line(err.value)
    assert "(500)" in text and "unable to give you a response" in text
    assert len(clock.sleeps) == 2 + 4  # 5 attempts in all


def test_create_answered_500_after_creating_adopts_the_droplet(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    """A create that succeeded but answered 500 must not lead to a second droplet."""
    fake.inject(500, method="POST", path_prefix="/v2/droplets", after=True)
    _, inst = drain(make_provider(fake).launch(spec()))
    assert len(fake.droplets) == 1 and len(fake.calls("POST", "/v2/droplets")) == 1
    assert inst.run_id == "validate-261123-a1b2"


def test_create_500_before_creating_is_retried(fake: FakeDigitalOcean, make_provider: MakeProvider):
    fake.inject(502, method="POST", path_prefix="/v2/droplets")
    drain(make_provider(fake).launch(spec()))
    assert len(fake.droplets) == 1 and len(fake.calls("POST", "/v2/droplets")) == 2


def test_droplet_limit_is_a_quota_error(fake: FakeDigitalOcean, make_provider: MakeProvider):
    fake.droplet_limit = 0
    with pytest.raises(QuotaError) as err:
        drain(make_provider(fake).launch(spec()))
    assert "droplet limit" in err.value.message


def test_error_bodies_returned_by_pydo_are_never_success(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake)
    client = provider._client()
    with pytest.raises(ProviderError) as err:  # pydo returns the 400 body of tags.create
        provider._call("create tag", client.tags.create, {"name": "bad tag"}, expect="tag")
    assert "(400)" in err.value.message and "letters, numbers" in err.value.message
    with pytest.raises(NotFoundError):  # ...and the 404 bodies of get/destroy/actions
        provider._call("get droplet", client.droplets.get, 42, expect="droplet")
    with pytest.raises(NotFoundError):
        provider._call("destroy droplet", client.droplets.destroy, 42, expect=None)
    with pytest.raises(NotFoundError):
        provider._call(
            "power off", client.droplet_actions.post, 42, {"type": "power_off"}, expect="action"
        )
    with pytest.raises(NotFoundError):
        provider._call("get key", client.ssh_keys.get, "aa:bb", expect="ssh_key")


# -- endpoints and redirects ---------------------------------------------------------------


def test_builtin_profiles_pick_their_own_endpoint_and_token(settings: Settings):
    amd = DigitalOceanProvider(settings.profile("amd"), settings)
    do = DigitalOceanProvider(settings.profile("digitalocean"), settings)
    assert (amd.endpoint, amd.token_env) == (
        "https://api-amd.digitalocean.com",
        "AMD_DEVCLOUD_TOKEN",
    )
    assert (do.endpoint, do.token_env) == ("https://api.digitalocean.com", "DIGITALOCEAN_TOKEN")
    assert amd.vendor == "amd" and amd.allowed_regions == ["atl1"]


def test_amd_and_digitalocean_profiles_talk_to_their_own_endpoints(
    fake: FakeDigitalOcean,
    do_fake: FakeDigitalOcean,
    make_provider: MakeProvider,
):
    amd = make_provider(fake, "amd")
    do = make_provider(do_fake, "digitalocean")
    drain(amd.launch(spec()))
    assert do.offers()
    assert amd.list_instances().instances and not do.list_instances().instances
    assert fake.calls() and do_fake.calls()
    assert {r.authorization for r in fake.calls()} == {f"Bearer {AMD_TOKEN}"}
    assert {r.authorization for r in do_fake.calls()} == {f"Bearer {DO_TOKEN}"}
    assert len(fake.droplets) == 1 and do_fake.droplets == {}


def test_redirected_endpoint_is_followed_with_the_token(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    """api-amd.digitalocean.com is reported to redirect; POSTs must survive it too."""
    redirect = Redirector(fake.url, status=301).start()
    try:
        provider = make_provider(redirect.url)
        _, inst = drain(provider.launch(spec()))
        assert inst.public_ip and redirect.hits > 0
        assert all(r.authorization == f"Bearer {AMD_TOKEN}" for r in fake.calls())
        assert len(fake.calls("POST", "/v2/droplets")) == 1
    finally:
        redirect.close()


def test_token_only_goes_to_trusted_hosts():
    from gpuctl.providers.do_client import BearerPolicy

    policy = BearerPolicy("secret", "https://api-amd.digitalocean.com")
    assert policy.trusted("https://api.devcloud.amd.com/v2/sizes")
    assert policy.trusted("https://api-amd.digitalocean.com/v2/sizes")
    assert not policy.trusted("https://evil.example.com/v2/sizes")
    assert not policy.trusted("http://api.devcloud.amd.com/v2/sizes")  # downgrade
    assert "secret" not in repr(policy)


# -- hygiene -----------------------------------------------------------------------------------


def test_token_never_in_errors_or_logs(
    fake: FakeDigitalOcean, make_provider: MakeProvider, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    noisy = ("azure", "azure.core.pipeline.policies.http_logging_policy", "urllib3")
    for name in noisy:
        caplog.set_level(logging.DEBUG, logger=name)  # restored after the test
    texts: list[str] = []
    provider = make_provider(fake)
    drain(provider.launch(spec()))
    provider.list_instances()
    fake.inject(500, times=1)
    fake.inject_rate_limit(reset_in=1)
    provider.offers()
    fake.readonly_tokens.add(AMD_TOKEN)
    for action in (
        lambda: drain(provider.launch(spec("fast-1-x"))),
        lambda: make_provider(fake, token=AMD_TOKEN + "x").check(),
    ):
        try:
            action()
        except GpuctlError as exc:
            texts += [str(exc), exc.one_line(), repr(exc)]
    assert len(texts) == 6
    texts += [r.getMessage() for r in caplog.records]
    texts += [str(r.args) for r in caplog.records]
    assert any("Authorization" in t for t in texts)  # the request logs were captured...
    assert not [t for t in texts if AMD_TOKEN in t]  # ...with the token redacted
    settings_files = [p for p in provider.settings.home.rglob("*") if p.is_file()]
    for path in settings_files:
        assert AMD_TOKEN.encode() not in path.read_bytes(), path


def test_importing_the_provider_does_not_import_pydo():
    code = (
        "import sys, gpuctl.providers.digitalocean as d; "
        "assert 'pydo' not in sys.modules and 'azure' not in sys.modules, 'eager import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
