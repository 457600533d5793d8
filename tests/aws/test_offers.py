"""Offers: GPU facts from describe_instance_types, catalog prices, spot per zone."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from gpuctl.errors import ConfigError

from .helpers import inject, on


def test_offers_have_gpu_facts_prices_and_spot_saving(make_provider: Any, spot_prices: Any) -> None:
    spot_prices[("us-east-1", "g5.xlarge", "us-east-1a")] = 0.41
    spot_prices[("us-east-1", "g5.xlarge", "us-east-1b")] = 0.35
    spot_prices[("us-east-1", "g4dn.xlarge", "us-east-1c")] = 0.21
    provider = make_provider(regions=["us-east-1"])

    offers = provider.offers()

    by_type = {o.instance_type: o for o in offers}
    g5 = by_type["g5.xlarge"]
    assert (g5.gpu_name, g5.gpu_count, g5.vcpus, g5.memory_gb) == ("A10G", 1, 4, 16.0)
    assert 20 < g5.gpu_memory_gb <= 24
    assert g5.price_per_hour == pytest.approx(1.006)  # bundled catalog, us-east-1
    assert "catalog" in g5.note
    # the latest record per zone counts (the seeded older one is 30% dearer)
    assert (g5.spot_price_per_hour, g5.spot_zone) == (pytest.approx(0.35), "us-east-1b")
    assert g5.spot_saving == pytest.approx(1 - 0.35 / 1.006)
    assert by_type["g4dn.xlarge"].spot_price_per_hour == pytest.approx(0.21)
    assert by_type["g6e.xlarge"].gpu_name == "L40S"
    assert by_type["p4d.24xlarge"].gpu_count == 8
    assert all(o.gpu_count > 0 for o in offers)  # CPU types never appear
    assert "m5.large" not in by_type and "g5.xlarge" in by_type
    priced = [o.price_per_hour for o in offers if o.price_per_hour is not None]
    assert priced == sorted(priced) and priced[0] < 1.0


def test_gpu_filter_and_multi_region(make_provider: Any, spot_prices: Any) -> None:
    provider = make_provider(regions=["us-east-1", "eu-west-1"])
    offers = provider.offers(gpu="a10g")
    assert offers and {o.gpu_name for o in offers} == {"A10G"}
    assert {o.region for o in offers} == {"us-east-1", "eu-west-1"}
    dublin = next(o for o in offers if o.region == "eu-west-1" and o.instance_type == "g5.xlarge")
    assert dublin.price_per_hour == pytest.approx(1.123)

    only = provider.offers(gpu="A10G", region="eu-west-1")
    assert {o.region for o in only} == {"eu-west-1"}


def test_spot_prices_and_types_are_cached(make_provider: Any, spot_prices: Any) -> None:
    spot_prices[("us-east-1", "g5.xlarge", "us-east-1a")] = 0.4
    provider = make_provider(regions=["us-east-1"])
    calls = inject(provider, "DescribeSpotPriceHistory", lambda region, params: None)
    types = inject(provider, "DescribeInstanceTypes", lambda region, params: None)
    provider.offers()
    provider.offers(gpu="A10G")
    assert len(calls) == 1 and len(types) == 1


def test_unknown_region_is_a_config_error(make_provider: Any) -> None:
    provider = make_provider(regions=["us-east-7"])
    with pytest.raises(ConfigError) as err:
        provider.offers()
    assert "unknown AWS region 'us-east-7'" in err.value.message
    assert "did you mean 'us-east-" in err.value.hint


def test_pricing_api_refresh_overrides_catalog(make_provider: Any, spot_prices: Any) -> None:
    provider = make_provider(regions=["us-east-1"])
    product = {
        "product": {"attributes": {"instanceType": "g5.xlarge", "regionCode": "us-east-1"}},
        "terms": {
            "OnDemand": {
                "T1": {"priceDimensions": {"D1": {"unit": "Hrs", "pricePerUnit": {"USD": "0.9"}}}}
            }
        },
    }

    def answer(**_: Any) -> Any:  # moto has no Pricing API: stub the response at the SDK edge
        ok = SimpleNamespace(status_code=200, headers={})
        return (ok, {"PriceList": [json.dumps(product)], "FormatVersion": "aws_v1"})

    on(provider, "before-call.pricing.GetProducts", answer)
    fetched = provider.refresh_prices(["us-east-1"])
    assert fetched["us-east-1"]["prices"] == {"g5.xlarge": 0.9}
    g5 = next(o for o in provider.offers(gpu="A10G") if o.instance_type == "g5.xlarge")
    assert g5.price_per_hour == pytest.approx(0.9)
    assert "AWS Pricing API" in g5.note
