"""An interactive terminal over a paramiko channel, for machines without a system `ssh`.

`gpuctl ssh RUN` normally execs the system client (full terminal support, escape
keys; never agent forwarding); this is the fallback so the command still works without one.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
from collections.abc import Iterator
from typing import Any

import paramiko


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_interactive(transport: paramiko.Transport, command: str) -> int:
    """Run command in a pty on the machine, wired to this terminal; returns its exit code."""
    chan = transport.open_session()
    size = shutil.get_terminal_size()
    chan.get_pty(term=os.environ.get("TERM", "xterm"), width=size.columns, height=size.lines)
    chan.exec_command(command)
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()

    def on_resize(_sig: int, _frame: Any) -> None:
        s = shutil.get_terminal_size()
        with contextlib.suppress(Exception):
            chan.resize_pty(width=s.columns, height=s.lines)

    old = signal.signal(signal.SIGWINCH, on_resize) if hasattr(signal, "SIGWINCH") else None
    stdin_open = True
    try:
        with _raw_terminal(in_fd):
            while True:
                watch: list[Any] = [chan]
                if stdin_open:
                    watch.append(in_fd)
                try:
                    ready, _, _ = select.select(watch, [], [], 0.5)
                except InterruptedError:
                    continue
                if chan in ready or chan.recv_ready():
                    data = chan.recv(1 << 15)
                    if not data:
                        break
                    os.write(out_fd, data)
                if in_fd in ready:
                    data = os.read(in_fd, 1024)
                    if data:
                        chan.sendall(data)
                    else:
                        stdin_open = False
                        chan.shutdown_write()
                if chan.exit_status_ready() and not chan.recv_ready():
                    break
    finally:
        if old is not None:
            signal.signal(signal.SIGWINCH, old)
    status = chan.recv_exit_status()
    chan.close()
    return status
