"""Files and directories only the user may read: state, logs, keys, results.

Low in the stack so the store, the log and the hosts share one rule without importing
the config loader.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077  # what gpuctl writes (state, logs, keys, results) is the user's only


def private_dir(path: Path) -> Path:
    """mkdir -p with every directory it creates 0700; an existing one of ours made 0700.

    The data directory holds run history, keys and results: no other local user may
    read it. A directory someone else owns (a shared results root) is left alone.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError:
        pass
    return path


def private_file(path: Path) -> Path:
    """Create path 0600 if missing (before sqlite or logging open it with 0644).

    An existing file is never opened here: closing any descriptor of a file drops every
    POSIX lock this process holds on it, and sqlite's locks on state.db (held by another
    handle in this process) would silently vanish, letting another process write under
    them.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError:
        return path
    try:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass
    return path
