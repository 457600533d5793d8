"""Every built-in driver declares exactly the optional verbs it has.

Callers trust `Capability.X in provider.capabilities`: a declared capability without its
verb would crash a listing or a launch, and a verb without its declaration would never
run (the meter would bill a spot instance at its launch price for ever).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from gpuctl.driver_registry import kinds, provider_class
from gpuctl.providers import base
from gpuctl.providers.base import VERBS, Capability, Provider
from gpuctl.settings import Profile, Settings

# The protocol that spells each optional verb's signature.
PROTOCOLS: dict[Capability, type] = {
    Capability.SPOT_PRICE_HISTORY: base.SpotPriceHistory,
    Capability.CHECKPOINT_STORAGE: base.CheckpointStorage,
    Capability.SELF_DESTROY: base.SelfDestroy,
    Capability.BILLING_END_TIME: base.BillingEndTime,
    Capability.BILLED_PRICE: base.BilledPriceReadBack,
}


def driver(kind: str, home: Path) -> Any:
    settings = Settings(home=home, config_path=home / "config.toml", results_dir=home / "r")
    return provider_class(kind)(Profile(name=kind, provider=kind, options={}), settings)


def assert_declares_what_it_has(provider: Any) -> None:
    """A driver declares a capability exactly when it has the capability's verbs."""
    assert isinstance(provider, Provider)
    assert provider.capabilities <= set(Capability)
    for capability, verbs in VERBS.items():
        if not verbs:
            continue
        has = [hasattr(provider, verb) for verb in verbs]
        declared = capability in provider.capabilities
        assert all(has) if declared else not any(has), (provider.kind, capability, has)


def assert_verbs_match_protocols(provider: Any) -> None:
    """Each declared verb takes the arguments its protocol spells (a str attribute for
    the ones that are values)."""
    for capability in provider.capabilities:
        protocol = PROTOCOLS.get(capability)
        for verb in VERBS[capability]:
            spelled = getattr(protocol, verb, None)
            if not callable(spelled):
                assert isinstance(getattr(provider, verb), str), (provider.kind, verb)
                continue
            want = list(inspect.signature(spelled).parameters)[1:]  # without self
            got = list(inspect.signature(getattr(provider, verb)).parameters)
            assert got == want, (provider.kind, verb)


@pytest.mark.parametrize("kind", kinds())
def test_declared_capabilities_are_the_implemented_ones(kind: str, tmp_path: Path) -> None:
    assert_declares_what_it_has(driver(kind, tmp_path))


@pytest.mark.parametrize("kind", kinds())
def test_optional_verbs_take_the_protocols_arguments(kind: str, tmp_path: Path) -> None:
    assert_verbs_match_protocols(driver(kind, tmp_path))


def test_every_capability_has_its_verbs_named() -> None:
    assert set(VERBS) == set(Capability)
    assert {c for c, verbs in VERBS.items() if verbs} == set(PROTOCOLS)


def test_spot_price_history_is_declared_by_aws() -> None:
    """The README's spot re-pricing runs on a real driver, not only in a test fake."""
    assert Capability.SPOT_PRICE_HISTORY in provider_class("aws").capabilities
