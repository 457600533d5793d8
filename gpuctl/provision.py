"""Provisioning, once for every cloud: try the placements a driver proposes, wait for the
machine to boot, and never leave a billed machine behind.

A cloud driver only talks to its cloud (the `Driver` verbs below): it proposes placements,
creates one machine at a placement, finds the machine a run's create may have made,
describes a booting machine and ends one. This module owns the orchestration around those
verbs that every driver would otherwise repeat: the failover loop and its events, the
combined error, adopting a machine after a create whose answer was lost, the boot wait
and its timeout, and ending the machine on every path (a failure, Ctrl-C, SIGTERM, the
consumer going away) until the caller holds it. It imports no cloud SDK and nothing of
the drivers; drivers call `launch(self, spec)` from their `launch` verb.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gpuctl.errors import CapacityError, GpuctlError, ProviderError
from gpuctl.events import Attempt, Event, Provisioning
from gpuctl.models import Instance, LaunchSpec, Market, SshTarget

if TYPE_CHECKING:
    from gpuctl.settings import Settings

log = logging.getLogger(__name__)

# Failure kinds: what the loop does next (the driver's explain hook may word them).
CAPACITY = "capacity"  # no room at this placement now: try the next
QUOTA = "quota"  # an account limit: the rest of the placement's group is skipped
REGION = "region"  # the group (a region, a region's market) cannot be used: skipped
PRICE = "price"  # the market's price is above the cap: try the next
BOOT = "boot"  # created, then ended while booting (the cloud took it back): try the next
UNKNOWN_TYPE = "unknown-type"  # the cloud does not know the type here
GROUP_ENDING = frozenset({QUOTA, REGION})
# After an interrupted create: how long the cloud is asked for the machine it may
# still be making, and how often.
CREATE_SETTLE_SECONDS = 8.0
CREATE_SETTLE_POLL = 0.25


@dataclass(frozen=True)
class Placement:
    """Where one create is tried: what Attempt events name, the market and the price the
    machine would bill at, and the driver's own data (never read here)."""

    where: str  # "us-east-1a spot", "nyc2"
    market: Market = Market.ON_DEMAND
    price_per_hour: float | None = None
    # Placements a quota or region failure ends together ("us-east-1 spot"); "" for none.
    group: str = ""
    data: Any = None


@dataclass(frozen=True)
class Failure:
    """One placement that did not give a machine, kept for the final error."""

    where: str
    kind: str  # one of the kinds above
    reason: str  # one line, shown in the Attempt event and the combined error
    error: GpuctlError | None = None  # the mapped error, when there was one
    data: Any = None  # the driver's own (AWS: the current spot price of a PRICE failure)


@dataclass(frozen=True)
class Look:
    """One look at a booting machine, in the driver's words mapped to three answers."""

    instance: Instance | None = None  # None: not visible yet (eventual consistency)
    up: bool = False  # running with an address: ready for the caller
    ended: str = ""  # ended while booting, and why: the next placement is tried

    @property
    def state(self) -> str:
        if self.instance is None:
            return "not visible yet"
        return self.instance.raw_state or self.instance.state.value


@dataclass(frozen=True)
class Pacing:
    """How the boot wait polls: the profile's timeout, the first interval and its growth,
    and the driver's clock and sleep (seams its tests replace)."""

    timeout: float
    poll: float
    backoff: float = 1.0
    max_poll: float = 15.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


class Unplaced(Exception):
    """create() certainly made nothing at this placement: the loop records `failure` and
    moves on. A signal between a driver and this module; never reaches a user."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class Ambiguous(Exception):
    """create()'s request may have reached the cloud, but its answer was lost: the loop
    looks for the machine by the run's tag before anything else.

    If nothing is found, the create is sent again after each of `waits` (the cloud API's
    own backoff), then `failure` is recorded (the next placement is tried) or, without
    one, `error` is raised.
    """

    def __init__(
        self,
        error: GpuctlError,
        *,
        waits: Sequence[float] = (),
        failure: Failure | None = None,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.waits = tuple(waits)
        self.failure = failure


class Driver(Protocol):
    """The cloud verbs provisioning needs; a driver maps its states and errors to them."""

    name: str
    settings: Settings

    def placements(self, spec: LaunchSpec) -> Iterator[Event | Placement | Failure]:
        """After the driver's own checks and preparation (image, key, firewall), the
        placements to try in order; events pass through to the user, and a Failure is
        a place that was ruled out before any create (shown as a failed Attempt)."""
        ...

    def create(self, spec: LaunchSpec, placement: Placement) -> str:
        """Create one machine, tagged with the run at create time; its id. Raises
        Unplaced (nothing made, try the next), Ambiguous (may have been made), or a
        GpuctlError (refused: nothing made, stop)."""
        ...

    def find_created(self, spec: LaunchSpec, placement: Placement) -> str | None:
        """The live machine the run's create made at this placement, found by its tag."""
        ...

    def describe(self, instance_id: str, placement: Placement) -> Look:
        """The booting machine now; raises a GpuctlError when it can never be used."""
        ...

    def end(self, instance_id: str, placement: Placement) -> None:
        """Ask the cloud to end the machine (no wait); a machine already gone is fine."""
        ...

    def pacing(self) -> Pacing: ...

    def explain(self, spec: LaunchSpec, failures: Sequence[Failure]) -> GpuctlError | None:
        """The driver's wording for its own kinds (quota names, hints), or None for the
        core's "could not launch X after N tries: ..."."""
        ...

    def ssh_target(self, instance: Instance) -> SshTarget | None: ...


def launch(driver: Driver, spec: LaunchSpec) -> Generator[Event, None, Instance]:
    """Try each placement until one gives a running machine with an address; return it.

    Every machine this creates is ended again unless it is returned: nobody else knows
    it exists until the caller holds it.
    """
    failures: list[Failure] = []
    ended: set[str] = set()
    proposals = driver.placements(spec)
    try:
        for item in proposals:
            if isinstance(item, Failure):
                failures.append(item)
                yield Attempt(spec.run_id, where=item.where, ok=False, reason=item.reason)
                continue
            if not isinstance(item, Placement):
                yield item
                continue
            if item.group and item.group in ended:
                continue
            outcome = yield from _place(driver, spec, item)
            if isinstance(outcome, Instance):
                return outcome
            failures.append(outcome)
            yield Attempt(spec.run_id, where=outcome.where, ok=False, reason=outcome.reason)
            if outcome.kind in GROUP_ENDING and item.group:
                ended.add(item.group)
    finally:
        proposals.close()
    raise driver.explain(spec, failures) or no_room(spec.instance_type or "a machine", failures)


def no_room(what: str, failures: Sequence[Failure], hint: str | None = None) -> CapacityError:
    """The one error that explains every failed try: "could not launch X after N tries"."""
    if not failures:
        return CapacityError(
            f"no place to launch {what}", hint=hint or "try another instance type or region"
        )
    tried = "; ".join(f"{f.where}: {f.reason}" for f in failures)
    tries = "1 try" if len(failures) == 1 else f"{len(failures)} tries"
    return CapacityError(
        f"could not launch {what} after {tries}: {tried}",
        hint=hint or "try another instance type or region",
    )


def _place(
    driver: Driver, spec: LaunchSpec, placement: Placement
) -> Generator[Event, None, Instance | Failure]:
    """One placement: create, boot, hand over; the machine is ended on any other way out."""
    pacing = driver.pacing()
    created = _create(driver, spec, placement, pacing)
    if isinstance(created, Failure):
        return created
    instance_id = created
    try:
        yield Provisioning(
            spec.run_id, driver.name, f"{instance_id} created in {placement.where}, booting"
        )
        look = yield from _boot(driver, spec, placement, instance_id, pacing)
        if look.up and look.instance is not None:
            yield Attempt(spec.run_id, where=placement.where, ok=True)
            _unpin(driver, look.instance)
            return look.instance
    except BaseException:
        # Failed, Ctrl-C, SIGTERM or abandoned before the caller holds it: nothing will
        # ever use this machine, so it must not keep billing.
        _end(driver, instance_id, placement)
        raise
    trouble = _end(driver, instance_id, placement)
    if look.ended:
        return Failure(placement.where, BOOT, f"{instance_id} ended while booting: {look.ended}")
    fate = "gpuctl destroyed it" if trouble is None else f"destroying it failed too ({trouble})"
    raise ProviderError(
        f"{instance_id} was not running with an address after {pacing.timeout:.0f}s "
        f"(still '{look.state}'); {fate}",
        hint="the cloud may be slow or short of capacity there; retry later or try "
        "another region" + ("" if trouble is None else "; `gpuctl down --orphans` removes it"),
    )


def _create(
    driver: Driver, spec: LaunchSpec, placement: Placement, pacing: Pacing
) -> str | Failure:
    """The new machine's id, or why this placement gave none."""
    resent = 0
    while True:
        try:
            return driver.create(spec, placement)
        except Unplaced as exc:
            return exc.failure
        except Ambiguous as exc:
            lost = exc
        except GpuctlError:
            raise  # refused: nothing was made
        except BaseException:
            # Ctrl-C (or SIGTERM, or a bug) while the create was in flight: it may have
            # gone through with its answer lost. Find it by its run tag and end it.
            _end_found(driver, spec, placement, pacing)
            raise
        try:
            found = driver.find_created(spec, placement)
            if found is not None:  # the create went through; only its answer was lost
                log.info("%s: create failed (%s) but %s exists; using it", driver.name, lost, found)
                return found
            if resent >= len(lost.waits):
                if lost.failure is not None:
                    return lost.failure
                raise lost.error from None
            pacing.sleep(lost.waits[resent])
            resent += 1
        except GpuctlError:
            raise  # the cloud cannot tell: a machine it made is tagged, `gpuctl ls` shows it
        except BaseException:
            _end_found(driver, spec, placement, pacing)  # interrupted looking or waiting
            raise


def _end_found(
    driver: Driver, spec: LaunchSpec, placement: Placement, pacing: Pacing | None = None
) -> None:
    """End the machine an interrupted create may have made, if the cloud shows one.

    The request may have reached the cloud and still be in progress there: a machine
    that appears a moment after the interruption bills all the same. So the cloud is
    asked again for a few seconds (a second Ctrl-C waits; a third quits) before gpuctl
    concludes the create made nothing; what shows up later is tagged, and reconcile
    lists it as an orphan."""
    sleep = pacing.sleep if pacing else time.sleep
    clock = pacing.clock if pacing else time.monotonic
    deadline = clock() + CREATE_SETTLE_SECONDS
    while True:
        try:
            found = driver.find_created(spec, placement)
        except Exception:
            log.warning("could not look for %s's machine after an interrupted create", spec.run_id)
            return
        if found is not None:
            _end(driver, found, placement)
            return
        if clock() >= deadline:
            return
        sleep(CREATE_SETTLE_POLL)


def _boot(
    driver: Driver, spec: LaunchSpec, placement: Placement, instance_id: str, pacing: Pacing
) -> Generator[Event, None, Look]:
    """Poll until up or ended; the last look when the timeout passes first."""
    start = pacing.clock()
    delay = pacing.poll
    shown = ""
    while True:
        look = driver.describe(instance_id, placement)
        if look.up or look.ended:
            return look
        elapsed = pacing.clock() - start
        if look.state != shown:
            shown = look.state
            yield Provisioning(
                spec.run_id, driver.name, f"{instance_id} is {shown} ({elapsed:.0f}s)"
            )
        if elapsed > pacing.timeout:
            return look
        pacing.sleep(delay)
        delay = min(delay * pacing.backoff, pacing.max_poll)


def _end(driver: Driver, instance_id: str, placement: Placement) -> str | None:
    """Ask the cloud to end a machine nobody will use; None when it accepted, else why not
    (the machine is tagged: `gpuctl ls` shows it as an orphan and `down --orphans` ends it)."""
    try:
        driver.end(instance_id, placement)
    except Exception as exc:
        log.warning("could not end %s after a failed launch", instance_id, exc_info=True)
        return exc.one_line() if isinstance(exc, GpuctlError) else f"{type(exc).__name__}: {exc}"
    return None


def _unpin(driver: Driver, instance: Instance) -> None:
    """Cloud addresses are recycled: the host key pinned for this one belonged to an
    earlier machine. Only a machine created here is unpinned."""
    target = driver.ssh_target(instance) if instance.managed else None
    if target is None:
        return
    from gpuctl.remote.hostkeys import forget_host

    forget_host(driver.settings.known_hosts, target.host, target.port)


def ssh_target(
    profile: Any, instance: Instance, *, user: str, key_path: str | None
) -> SshTarget | None:
    """Where to reach a machine a cloud driver made: its public address, unless the
    profile's `ssh_host`/`ssh_port` override it (an emulator's machine is a local sshd;
    a fake public IP is never dialed). None while it has no address yet."""
    host = profile.get("ssh_host") or instance.public_ip
    if not host:
        return None
    port = int(profile.value("ssh_port") or 22)
    return SshTarget(host=str(host), port=port, user=user, key_path=key_path)
