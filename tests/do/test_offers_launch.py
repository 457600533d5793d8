"""Offers, images, key registration and launch against the fake DO API, via real pydo."""

from __future__ import annotations

import os
import stat

import pytest

from gpuctl.errors import CapacityError, ConfigError
from gpuctl.events import Attempt, Notice, Provisioning
from gpuctl.models import InstanceState, LaunchSpec
from gpuctl.providers.digitalocean import DigitalOceanProvider, droplet_name, run_tag
from gpuctl.providers.do_keys import key_paths, md5_fingerprint
from gpuctl.settings import Settings
from tests.do.conftest import MakeProvider
from tests.events import drain
from tests.fakes.do_api import FakeDigitalOcean

RUN = "validate-261123-a1b2"


def spec(**kw: object) -> LaunchSpec:
    base: dict[str, object] = {
        "run_id": RUN,
        "preset": "validate",
        "provider": "amd",
        "max_hours": 2.0,
    }
    base.update(kw)
    return LaunchSpec(**base)  # type: ignore[arg-type]


# -- offers -------------------------------------------------------------------------------


def test_amd_offers_are_mi300x_sorted_by_price(fake: FakeDigitalOcean, make_provider: MakeProvider):
    offers = make_provider(fake, "amd").offers()
    assert [o.instance_type for o in offers] == ["gpu-mi300x1-192gb", "gpu-mi300x8-1536gb"]
    one, eight = offers
    assert (one.gpu_name, one.gpu_count, one.gpu_memory_gb) == ("MI300X", 1, 192.0)
    assert one.price_per_hour == 1.99 and one.region == "atl1" and one.available
    assert (eight.gpu_count, eight.gpu_memory_gb, eight.price_per_hour) == (8, 192.0, 15.92)
    assert one.provider == "amd" and one.vcpus == 20 and one.memory_gb == 240.0


def test_digitalocean_offers_list_nvidia_and_amd_gpus_only(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake, "digitalocean", token_env="AMD_DEVCLOUD_TOKEN")
    offers = provider.offers()
    slugs = [o.instance_type for o in offers]
    assert slugs == [
        "gpu-mi300x1-192gb",
        "gpu-h100x1-80gb",
        "gpu-mi300x8-1536gb",
        "gpu-h100x8-640gb",
    ]
    h100 = offers[1]
    assert (h100.gpu_name, h100.gpu_memory_gb, h100.regions) == ("H100", 80.0, ("nyc2", "tor1"))
    assert [o.instance_type for o in provider.offers(gpu="h100")] == slugs[1::2]
    assert [o.instance_type for o in provider.offers(region="atl1")] == [
        "gpu-mi300x1-192gb",
        "gpu-mi300x8-1536gb",
    ]


def test_offers_are_cached_briefly(fake: FakeDigitalOcean, make_provider: MakeProvider):
    make_provider(fake).offers()
    make_provider(fake).offers()  # a new process would also hit the state-store cache
    assert len(fake.calls("GET", "/v2/sizes")) == 1


def test_offer_outside_allowed_regions_is_unavailable(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    offers = make_provider(fake, "amd", regions=["tor1"]).offers()
    assert not any(o.available for o in offers)
    assert "profile allows tor1" in offers[0].note


# -- launch -------------------------------------------------------------------------------


def test_launch_registers_key_tags_and_user_data(
    fake: FakeDigitalOcean, make_provider: MakeProvider, settings: Settings
):
    events, inst = drain(make_provider(fake).launch(spec()))

    assert inst.state == InstanceState.RUNNING and inst.raw_state == "active"
    assert inst.public_ip and inst.public_ip.startswith("203.0.113.")
    assert (inst.provider, inst.instance_type, inst.region) == ("amd", "gpu-mi300x1-192gb", "atl1")
    assert inst.price_per_hour == 1.99 and inst.gpu_name == "MI300X" and inst.gpu_count == 1
    assert inst.run_id == RUN and inst.managed and inst.name == f"gpuctl-{RUN}"

    (create,) = fake.calls("POST", "/v2/droplets")
    body = create.body
    mine = settings.installation_id
    assert sorted(body["tags"]) == sorted(
        ["gpuctl", f"gpuctl-run-{RUN}", "gpuctl-ssh", f"gpuctl-inst-{mine}"]
    )
    assert inst.owner == mine
    assert body["image"] == "amd-pytorchrocm7"  # PyTorch + ROCm preferred over the base
    assert "shutdown -P" in body["user_data"] and RUN in body["user_data"]
    assert fake.user_data[int(inst.id)] == body["user_data"]

    private, public = key_paths(settings.keys_dir)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    (key,) = fake.keys.values()
    assert key["fingerprint"] == md5_fingerprint(public.read_text())
    assert body["ssh_keys"] == [key["id"]]

    assert all(e.run_id == RUN for e in events)
    assert any(isinstance(e, Provisioning) for e in events)
    assert [(e.where, e.ok) for e in events if isinstance(e, Attempt)] == [("atl1", True)]
    assert not any(isinstance(e, Notice) for e in events)  # the image has torch


def test_second_launch_reuses_the_registered_key(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    drain(make_provider(fake).launch(spec()))
    drain(make_provider(fake).launch(spec(run_id="fast-261123-b2c3")))
    assert len(fake.keys) == 1
    assert len(fake.calls("POST", "/v2/account/keys")) == 1
    assert len(fake.droplets) == 2


def test_key_race_already_in_use_is_adopted(fake: FakeDigitalOcean, make_provider: MakeProvider):
    """Another gpuctl registered the key between our lookup and our create."""
    drain(make_provider(fake).launch(spec()))
    fake.inject(404, method="GET", path_prefix="/v2/account/keys/")  # lookup misses it
    _, inst = drain(make_provider(fake).launch(spec(run_id="fast-261123-b2c3")))
    assert inst.state == InstanceState.RUNNING and len(fake.keys) == 1
    assert len(fake.calls("POST", "/v2/account/keys")) == 2  # the second got 422 in use


def test_nvidia_size_gets_the_ai_ml_image_and_a_torch_warning(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake, "digitalocean", token_env="AMD_DEVCLOUD_TOKEN")
    events, inst = drain(provider.launch(spec(instance_type="gpu-h100x1-80gb")))
    (create,) = fake.calls("POST", "/v2/droplets")
    assert create.body["image"] == "gpu-h100x1-base"
    assert inst.region == "nyc2" and inst.price_per_hour == 3.39
    (notice,) = [e for e in events if isinstance(e, Notice)]
    assert notice.level == "warning" and "install torch" in notice.message


def test_amd_falls_back_to_rocm_base_when_no_pytorch_image(make_provider: MakeProvider):
    from tests.fakes.do_api import default_images

    images = [i for i in default_images() if "pytorch" not in i["slug"]]
    api = FakeDigitalOcean(images=images).start()
    try:
        events, _ = drain(make_provider(api).launch(spec()))
        (create,) = api.calls("POST", "/v2/droplets")
        assert create.body["image"] in ("gpu-amd-base", "amd-rocm71software")
        assert any(isinstance(e, Notice) for e in events)
    finally:
        api.close()


def test_image_override_and_profile_preference(fake: FakeDigitalOcean, make_provider: MakeProvider):
    drain(make_provider(fake).launch(spec(image="gpu-amd-base")))
    drain(make_provider(fake, image="amd-rocm71software").launch(spec(run_id="fast-1-x")))
    first, second = fake.calls("POST", "/v2/droplets")
    assert first.body["image"] == "gpu-amd-base"
    assert second.body["image"] == "amd-rocm71software"


def test_image_not_found_lists_suitable_images(fake: FakeDigitalOcean, make_provider: MakeProvider):
    with pytest.raises(ConfigError) as err:
        drain(make_provider(fake).launch(spec(image="amd-pytorch-rocm99")))
    assert "image 'amd-pytorch-rocm99' not found" in err.value.message
    assert "amd-pytorchrocm7" in err.value.hint and "gpu-amd-base" in err.value.hint
    assert fake.calls("POST", "/v2/droplets") == []


def test_unknown_size_lists_gpu_sizes(fake: FakeDigitalOcean, make_provider: MakeProvider):
    with pytest.raises(ConfigError) as err:
        drain(make_provider(fake).launch(spec(instance_type="gpu-mi999x1")))
    assert "gpu-mi300x1-192gb" in err.value.hint


def test_user_data_too_large_is_refused_before_anything_is_created(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    big = spec(options={"user_data": "#" * (64 * 1024)})
    with pytest.raises(ConfigError) as err:
        drain(make_provider(fake).launch(big))
    assert "64 KiB" in err.value.message and "\n" not in err.value.message
    assert fake.calls("POST") == []


def test_size_unavailable_tries_next_region(fake: FakeDigitalOcean, make_provider: MakeProvider):
    fake.unavailable.add(("gpu-mi300x1-192gb", "atl1"))
    provider = make_provider(fake, "amd", regions=["atl1", "nyc2"])
    events, inst = drain(provider.launch(spec()))
    attempts = [(e.where, e.ok, e.reason) for e in events if isinstance(e, Attempt)]
    assert attempts[0][:2] == ("atl1", False)
    assert "not available in this region" in attempts[0][2]
    assert attempts[1] == ("nyc2", True, "")
    assert inst.region == "nyc2" and len(fake.droplets) == 1


def test_droplet_gone_while_booting_is_destroyed_and_the_next_region_tried(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    fake.inject(404, method="GET", path_prefix="/v2/droplets/", times=1)  # the first look
    provider = make_provider(fake, "amd", regions=["atl1", "nyc2"])
    events, inst = drain(provider.launch(spec()))
    attempts = [(e.where, e.ok, e.reason) for e in events if isinstance(e, Attempt)]
    assert [a[:2] for a in attempts] == [("atl1", False), ("nyc2", True)]
    assert attempts[0][2].endswith("ended while booting: it disappeared (the API answers 404)")
    assert inst.region == "nyc2" and list(fake.droplets) == [int(inst.id)]


def test_size_unavailable_everywhere_says_where_it_is(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    fake.unavailable.add(("gpu-mi300x1-192gb", "atl1"))
    with pytest.raises(CapacityError) as err:
        drain(make_provider(fake, "amd").launch(spec()))
    msg = err.value.message
    assert "gpu-mi300x1-192gb is not available in atl1" in msg and "offered in nyc2" in msg
    assert "\n" not in msg and "--region nyc2" in err.value.hint
    assert fake.droplets == {}


def test_region_where_size_is_not_offered_is_skipped_without_a_call(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake, "digitalocean", token_env="AMD_DEVCLOUD_TOKEN")
    with pytest.raises(CapacityError) as err:
        drain(provider.launch(spec(instance_type="gpu-mi300x8-1536gb", region="tor1")))
    assert "offered in atl1" in err.value.message
    assert fake.calls("POST", "/v2/droplets") == []


def test_region_outside_profile_is_refused(fake: FakeDigitalOcean, make_provider: MakeProvider):
    with pytest.raises(ConfigError) as err:
        drain(make_provider(fake, "amd").launch(spec(region="nyc2")))
    assert "not allowed by profile 'amd'" in err.value.message


def test_boot_timeout_destroys_the_droplet(fake: FakeDigitalOcean, make_provider: MakeProvider):
    from gpuctl.errors import ProviderError

    fake.active_after = 10**6
    provider = make_provider(fake, boot_timeout=60)
    with pytest.raises(ProviderError) as err:
        drain(provider.launch(spec()))
    assert "destroyed it" in err.value.message
    assert fake.droplets == {}


def test_names_and_tags_follow_do_rules():
    assert droplet_name("validate-261123-a1b2") == "gpuctl-validate-261123-a1b2"
    assert droplet_name("My run_1!") == "gpuctl-My-run-1"
    assert run_tag("My run_1!") == "gpuctl-run-My-run_1"
    assert run_tag("a:b") == "gpuctl-run-a:b"


def test_provider_is_registered_and_satisfies_the_protocol(settings: Settings):
    from gpuctl.providers.base import Provider, get_provider

    amd = get_provider(settings.profile("amd"), settings)
    assert isinstance(amd, DigitalOceanProvider) and isinstance(amd, Provider)
    assert amd.name == "amd" and amd.kind == "digitalocean"
    assert amd.billing.billed_when_stopped and amd.billing.minimum_seconds == 300


def test_spot_is_refused_unless_on_demand_fallback(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    with pytest.raises(ConfigError) as err:
        drain(make_provider(fake).launch(spec(spot=True)))
    assert "no spot market" in err.value.message
    events, inst = drain(make_provider(fake).launch(spec(spot=True, fallback="on-demand")))
    assert any(isinstance(e, Notice) and "on-demand" in e.message for e in events)
    assert inst.market.value == "on-demand"


def test_max_price_is_enforced(fake: FakeDigitalOcean, make_provider: MakeProvider):
    with pytest.raises(CapacityError) as err:
        drain(make_provider(fake).launch(spec(instance_type="gpu-mi300x8-1536gb", max_price=5.0)))
    assert "$15.920/h" in err.value.message
    assert fake.calls("POST", "/v2/droplets") == []
