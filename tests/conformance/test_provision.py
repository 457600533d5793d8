"""gpuctl.provision, the core every cloud driver launches through, against the skeleton
driver: the failover across placements, a lost create answer, the boot wait, and the rule
that a machine nobody will use never keeps billing (a failure, Ctrl-C, the consumer
going away). What a user would see: the Attempt lines, one error, and no machine left."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import Any

import pytest

from gpuctl.errors import CapacityError, ProviderError
from gpuctl.events import Attempt, Event, Provisioning
from gpuctl.models import Instance
from gpuctl.settings import Profile
from tests.conformance import skeleton_provider
from tests.events import drain

from .conftest import Driver

pytestmark = pytest.mark.sshd


def cloud(driver: Driver) -> skeleton_provider.InMemoryCloud:
    return skeleton_provider.cloud_for(str(driver.profile.get("endpoint")))


def live(driver: Driver) -> list[str]:
    """The machines that would bill now."""
    return sorted(m.id for m in cloud(driver).list())


def tries(events: list[Event]) -> list[tuple[str, bool]]:
    return [(e.where, e.ok) for e in events if isinstance(e, Attempt)]


def until(gen: Generator[Event, None, Instance], text: str) -> Event:
    """Run the launch until it says `text` (then it is suspended at that event)."""
    for event in gen:
        if isinstance(event, Provisioning) and text in event.detail:
            return event
    raise AssertionError(f"the launch never said {text!r}")


def tune(driver: Driver, **options: Any) -> None:
    p = driver.profile
    driver.profile = Profile(name=p.name, provider=p.provider, options={**p.options, **options})


def test_a_full_placement_moves_on_to_the_next(skeleton_driver: Driver) -> None:
    cloud(skeleton_driver).sold_out.add(("gpu-small", "zone-a"))
    events, instance = drain(skeleton_driver.make().launch(skeleton_driver.spec()))
    assert tries(events) == [("zone-a", False), ("zone-b", True)]
    assert "out of capacity in zone-a" in next(e.reason for e in events if isinstance(e, Attempt))
    assert instance.region == "zone-b" and live(skeleton_driver) == [instance.id]


def test_every_placement_full_is_one_error_naming_each_try(skeleton_driver: Driver) -> None:
    cloud(skeleton_driver).sold_out.update({("gpu-small", "zone-a"), ("gpu-small", "zone-b")})
    with pytest.raises(CapacityError) as err:
        drain(skeleton_driver.make().launch(skeleton_driver.spec()))
    message = err.value.message
    assert message.startswith("could not launch gpu-small after 2 tries: zone-a: ")
    assert "; zone-b: " in message and "\n" not in message
    assert live(skeleton_driver) == []


def test_a_lost_create_answer_adopts_the_machine_instead_of_a_second(
    skeleton_driver: Driver,
) -> None:
    cloud(skeleton_driver).lose_answers = 1
    events, instance = drain(skeleton_driver.make().launch(skeleton_driver.spec()))
    assert tries(events) == [("zone-a", True)]
    assert live(skeleton_driver) == [instance.id]  # one machine, the one the lost answer made


def test_ctrl_c_while_the_create_is_in_flight_ends_what_it_made(
    skeleton_driver: Driver,
) -> None:
    def interrupted(machine: Any) -> None:
        raise KeyboardInterrupt  # the create reached the cloud; its answer never comes back

    cloud(skeleton_driver).on_create = interrupted
    with pytest.raises(KeyboardInterrupt):
        drain(skeleton_driver.make().launch(skeleton_driver.spec()))
    assert cloud(skeleton_driver).machines  # it was made...
    assert live(skeleton_driver) == []  # ...and ended


def test_ctrl_c_during_the_boot_wait_ends_the_machine(skeleton_driver: Driver) -> None:
    cloud(skeleton_driver).boot_looks = 10**6  # it never finishes booting
    launch = skeleton_driver.make().launch(skeleton_driver.spec())
    created = until(launch, "created in")
    assert live(skeleton_driver) == [created.detail.split()[0]]
    until(launch, "is booting")
    with pytest.raises(KeyboardInterrupt):
        launch.throw(KeyboardInterrupt)
    assert live(skeleton_driver) == []


def test_the_listener_going_away_ends_the_machine(skeleton_driver: Driver) -> None:
    launch = skeleton_driver.make().launch(skeleton_driver.spec())
    until(launch, "created in")
    launch.close()  # the TUI closed, the CLI's consumer is gone
    assert live(skeleton_driver) == []


def test_a_machine_that_never_boots_is_destroyed_at_the_timeout(skeleton_driver: Driver) -> None:
    cloud(skeleton_driver).boot_looks = 10**6
    tune(skeleton_driver, launch_timeout=0.05)
    with pytest.raises(ProviderError) as err:
        drain(skeleton_driver.make().launch(skeleton_driver.spec()))
    assert "after 0s (still 'booting'); gpuctl destroyed it" in err.value.message
    assert live(skeleton_driver) == []


def test_a_machine_ended_while_booting_moves_on(skeleton_driver: Driver) -> None:
    sky = cloud(skeleton_driver)

    def taken_back(machine: Any) -> None:  # the cloud reclaims the first one at once
        if machine.region == "zone-a":
            sky.machines[machine.id] = replace(machine, status="deleted")

    sky.on_create = taken_back
    events, instance = drain(skeleton_driver.make().launch(skeleton_driver.spec()))
    assert tries(events) == [("zone-a", False), ("zone-b", True)]
    reason = next(e.reason for e in events if isinstance(e, Attempt))
    assert reason.endswith("ended while booting: it was deleted")
    assert live(skeleton_driver) == [instance.id]


def test_ctrl_c_while_the_cloud_still_makes_the_machine_ends_it_once_it_shows(
    skeleton_driver: Driver,
) -> None:
    """The request reached the cloud, the client gave up (Ctrl-C), and the cloud finishes
    the machine a moment later: gpuctl keeps asking for it and ends it."""
    import threading

    made = cloud(skeleton_driver)

    def still_in_progress(machine: Any) -> None:
        del made.machines[machine.id]  # not visible yet...
        threading.Timer(0.5, lambda: made.machines.setdefault(machine.id, machine)).start()
        raise KeyboardInterrupt  # ...and the answer never comes back

    made.on_create = still_in_progress
    with pytest.raises(KeyboardInterrupt):
        drain(skeleton_driver.make().launch(skeleton_driver.spec()))
    assert made.machines  # it was made after all...
    assert live(skeleton_driver) == []  # ...and ended
