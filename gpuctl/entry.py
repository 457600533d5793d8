"""The `gpuctl` command's first frame.

Importing the CLI takes a moment; a Ctrl-C (or a script's SIGTERM) in that moment must end
the command like one landing later, with its exit code and no traceback. Nothing has been
created yet, so there is nothing to undo.
"""

from __future__ import annotations

import os
import signal
import sys


def run() -> None:
    def quit_now(signum: int, _frame: object) -> None:
        os.write(2, b"\ninterrupted\n")
        os._exit(128 + signum)  # nothing exists yet: no clean-up to wait for

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, quit_now)
    try:
        from gpuctl.cli import main
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    main()


if __name__ == "__main__":
    sys.exit(run())
