"""The provider conformance suite: every driver checked the same way.

Run against local, ssh (the test sshd), aws (moto), digitalocean and amd (the fake API)
and the skeleton driver of providers/README.md. What a driver legitimately cannot do is
asserted through what it declares, never skipped: a flag it does not honour is refused
by the lifecycle before anything starts (`launch_flags`), and a machine it did not create
(`managed=False`, the ssh provider) is forgotten by terminate, never powered off.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpuctl.errors import CapacityError, ConfigError, GpuctlError
from gpuctl.events import Provisioning
from gpuctl.models import Instance, InstanceState, Offer
from gpuctl.providers.base import FLAGS, Listing
from gpuctl.remote.ssh_host import SshHost
from gpuctl.resolve import refuse_unsupported
from gpuctl.trainer.protocol import ShutdownAction
from tests.events import drain
from tests.unit.test_capabilities import assert_declares_what_it_has, assert_verbs_match_protocols

from .conftest import RUN, WITH_API, Driver

pytestmark = pytest.mark.sshd

LIVE = (InstanceState.PENDING, InstanceState.RUNNING)
BAD = {"region": "nowhere-9", "instance_type": "no-such-type-9"}


def launched(driver: Driver) -> tuple[Any, Instance]:
    provider = driver.make()
    events, instance = drain(provider.launch(driver.spec()))
    assert events and isinstance(events[0], Provisioning), events
    assert all(e.run_id == RUN for e in events)
    driver.record(instance)
    return provider, instance


def assert_one_line(error: GpuctlError) -> None:
    """What the CLI prints: `error: <message>` and `hint: <hint>`, one line each."""
    assert type(error).__module__.startswith("gpuctl."), type(error)  # never a raw SDK error
    assert error.message and "\n" not in error.message, error.message
    assert "\n" not in (error.hint or ""), error.hint


def owned_by_us(instance: Instance, driver: Driver) -> None:
    assert instance.run_id == RUN
    if instance.managed:
        assert instance.owner == driver.settings.installation_id
    else:  # not created by gpuctl: nobody's installation owns it
        assert instance.owner is None


def test_offers_are_priced_placed_and_cheapest_first(driver: Driver) -> None:
    offers = driver.make().offers()
    assert offers and all(isinstance(o, Offer) for o in offers)
    for offer in offers:
        assert offer.provider == driver.profile.name and offer.instance_type
        # Unknown is None, never 0: a $0 offer would make the meter and budgets blind.
        assert offer.price_per_hour is None or offer.price_per_hour > 0, offer
        assert isinstance(offer.region, str)
    known = [o.price_per_hour for o in offers if o.price_per_hour is not None]
    assert known == sorted(known)
    assert all(o.price_per_hour is None for o in offers[len(known) :])  # unknown ones last


def test_offers_filter_by_region(driver: Driver) -> None:
    provider = driver.make()
    if driver.region is None:  # ssh: your own box has no region, so no region offers one
        assert all(o.region == "" for o in provider.offers())
    else:
        where: dict[str, set[str]] = {}  # type -> the regions the unfiltered offers name
        for offer in provider.offers():
            where.setdefault(offer.instance_type, set()).update((offer.region, *offer.regions))
        there = provider.offers(region=driver.region)
        assert there
        assert all(driver.region in where[o.instance_type] for o in there), (where, there)
    try:
        nowhere = provider.offers(region=BAD["region"])
    except ConfigError as exc:  # an unknown region may be refused, in one clear line
        assert_one_line(exc)
        assert BAD["region"] in exc.message
    else:
        assert nowhere == []


def test_launch_then_find_it_with_its_tags(driver: Driver) -> None:
    _, instance = launched(driver)
    assert instance.provider == driver.profile.name and instance.state in LIVE
    owned_by_us(instance, driver)

    again = driver.make()  # a new process: only the provider's own inventory is left
    found = again.get_instance(instance.id)
    assert found is not None and found.id == instance.id and found.state in LIVE
    owned_by_us(found, driver)
    assert found.managed == instance.managed

    listing = again.list_instances()
    assert isinstance(listing, Listing) and listing.complete, listing.errors
    listed = {i.id: i for i in listing.instances}
    assert instance.id in listed, sorted(listed)
    owned_by_us(listed[instance.id], driver)
    assert listed[instance.id].managed == instance.managed


def test_the_machine_is_reachable_where_the_driver_says(driver: Driver) -> None:
    provider, instance = launched(driver)
    target = provider.ssh_target(instance)
    if target is not None:  # only loopback is dialled: the profile's host override
        assert target.host == "127.0.0.1", target
    host = provider.host(instance)
    try:
        assert host.exec("echo conformance").stdout == "conformance\n"
    finally:
        host.close()
    shutdown = provider.agent_shutdown(instance)
    assert ShutdownAction(shutdown["action"]) in ShutdownAction


def test_terminate_then_verify_it_is_gone(driver: Driver) -> None:
    provider, instance = launched(driver)
    provider.terminate(instance)
    provider.terminate(instance)  # already gone: recovery and `down` may ask twice
    again = driver.make()
    if instance.managed:
        gone = again.get_instance(instance.id)
        assert gone is None or gone.state == InstanceState.TERMINATED, gone
        still = [i for i in again.list_instances().instances if i.id == instance.id]
        assert all(i.state not in LIVE for i in still), still
    else:
        # The driver declared it did not create the machine (ssh): terminating forgets
        # it, and the box, which is the user's, still answers.
        target = again.ssh_target(instance)
        assert target is not None
        box = SshHost(target, driver.settings)
        try:
            assert box.exec("true").ok
        finally:
            box.close()


@pytest.mark.parametrize("flag", sorted(BAD))
def test_a_bad_region_or_type_is_one_clear_error(driver: Driver, flag: str) -> None:
    provider = driver.make()
    value = BAD[flag]
    if flag not in provider.launch_flags:
        # Not a flag of this driver: the lifecycle refuses it before anything starts.
        with pytest.raises(ConfigError, match=FLAGS[flag]) as refused:
            refuse_unsupported(provider.profile, **{flag: value})
        assert_one_line(refused.value)
        return
    with pytest.raises(GpuctlError) as raised:
        drain(provider.launch(driver.spec(**{flag: value})))
    assert isinstance(raised.value, ConfigError | CapacityError), repr(raised.value)
    assert_one_line(raised.value)
    assert value in raised.value.message
    left = [i for i in driver.make().list_instances().instances if i.run_id == RUN]
    assert all(i.state not in LIVE for i in left), left  # nothing billed was left behind


def test_capabilities_declared_are_the_ones_implemented(driver: Driver) -> None:
    provider = driver.make()
    assert_declares_what_it_has(provider)
    assert_verbs_match_protocols(provider)


@pytest.mark.parametrize("driver", WITH_API, indirect=True)
def test_an_api_outage_is_one_clear_error_never_gone(driver: Driver) -> None:
    """local and ssh call no cloud API (this machine; the state store), so they have no
    outage to map; every driver that does says what failed and never reports a machine it
    cannot see as gone, nor a terminate it could not send as done."""
    _, instance = launched(driver)
    assert driver.outage is not None
    driver.outage()
    during = driver.make()
    for call in (
        lambda: during.get_instance(instance.id),  # None here would mean "gone, not billed"
        lambda: during.terminate(instance),
        lambda: drain(during.launch(driver.spec(run_id=RUN + "x"))),
    ):
        with pytest.raises(GpuctlError) as raised:
            call()
        assert_one_line(raised.value)
    try:
        listing = during.list_instances()
    except GpuctlError as exc:
        assert_one_line(exc)
    else:  # a listing may report the failed part beside the rest, never hide it
        assert not listing.complete and instance.id not in {i.id for i in listing.instances}
        assert all("\n" not in why for _, why in listing.errors), listing.errors
