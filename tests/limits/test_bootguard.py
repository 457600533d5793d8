"""The boot guard's user data quotes what it puts in shell lines."""

from __future__ import annotations

import shlex

from gpuctl.bootguard import MARKER, boot_guard_script


def test_boot_guard_quotes_the_run_id_in_every_shell_line() -> None:
    hostile = "r1'; touch /tmp/owned; echo '"
    script = boot_guard_script(hostile, 2.0)
    lines = [ln for ln in script.splitlines() if ln and not ln.startswith("#")]
    shutdown, marker = lines
    words = shlex.split(shutdown)
    assert words[:3] == ["shutdown", "-P", "+125"]
    assert words[3] == f"gpuctl: max hours reached for run {hostile}"  # one word
    assert shlex.split(marker) == [
        "mkdir",
        "-p",
        "/var/lib/gpuctl",
        "&&",
        "echo",
        hostile,
        ">",
        MARKER,
    ]
    # A newline stays inside the quotes: still one word, no second command.
    tail = boot_guard_script("a\nreboot", 1.0).split("\n", 3)[3]
    assert "reboot" not in [w for w in shlex.split(tail) if w != "a\nreboot"]
