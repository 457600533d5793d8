"""gpuctl.deadline: a wait that can block for ever (a stalled SFTP read) ends on time."""

from __future__ import annotations

import threading
from collections.abc import Generator

import pytest

from gpuctl.deadline import within
from tests.events import drain


def test_a_generator_that_finishes_passes_on_its_events_and_value() -> None:
    def pull() -> Generator[str, None, int]:
        yield "a"
        yield "b"
        return 7

    seen, outcome = drain(within(pull(), 30))
    assert seen == ["a", "b"]
    assert outcome.finished and outcome.value == 7


def test_a_blocked_generator_is_left_at_the_deadline_with_what_it_said_so_far() -> None:
    release = threading.Event()

    def stalled() -> Generator[str, None, int]:
        yield "listing"
        release.wait()  # a socket read on a link that went quiet
        yield "never seen"
        return 1

    try:
        seen, outcome = drain(within(stalled(), 0.2))
    finally:
        release.set()
    assert seen == ["listing"]
    assert not outcome.finished and outcome.value is None


def test_an_error_in_the_generator_reaches_the_caller() -> None:
    def broken() -> Generator[str, None, int]:
        yield "x"
        raise ValueError("the link dropped")

    gen = within(broken(), 30)
    assert next(gen) == "x"
    with pytest.raises(ValueError, match="the link dropped"):
        next(gen)
