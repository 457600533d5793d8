"""Follow a file on any Host by byte offset.

The offset is the whole state: after a dropped link the next read starts exactly where
the last one ended, so no line is lost or doubled. Memory stays bounded on a multi-GB
log because only new bytes are read, a chunk at a time, and the initial view reads the
end of the file, never the whole of it.
"""

from __future__ import annotations

import json
from typing import Any

from .host import Host

CHUNK = 1 << 20  # bytes per read
MAX_PER_POLL = 8 << 20  # bytes per poll, so one poll never blocks a UI for long


class Tail:
    def __init__(self, host: Host, path: str, offset: int = 0) -> None:
        self.host = host
        self.path = path
        self.offset = offset
        self._partial = b""
        self.malformed = 0  # lines poll_json skipped: not a JSON object
        self.last_malformed = ""

    def poll(self) -> list[str]:
        """Complete new lines since the last poll (a trailing partial line waits)."""
        data = bytearray()
        while len(data) < MAX_PER_POLL:
            chunk = self.host.read_bytes(self.path, self.offset, CHUNK)
            if not chunk:
                break
            self.offset += len(chunk)
            data += chunk
            if len(chunk) < CHUNK:
                break
        if not data:
            return []
        buf = self._partial + bytes(data)
        *lines, self._partial = buf.split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]

    def flush(self) -> list[str]:
        """The trailing partial line too (the writer has finished)."""
        lines = self.poll()
        if self._partial:
            lines.append(self._partial.decode("utf-8", "replace"))
            self._partial = b""
        return lines

    def poll_json(self) -> list[dict[str, Any]]:
        """New lines that are JSON objects; anything else is counted in `malformed`.

        The file comes from a machine gpuctl does not control: one bad line must never
        end the follow (and with it the download and teardown after it).
        """
        out = []
        for line in self.poll():
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except (ValueError, RecursionError):
                value = None
            if isinstance(value, dict):
                out.append(value)
            else:
                self.malformed += 1
                self.last_malformed = line[:80]
        return out


def last_lines(host: Host, path: str, n: int = 50, window: int = 64 << 10) -> tuple[list[str], int]:
    """The last n complete lines and the offset to follow from, reading only the end."""
    size = host.file_size(path)
    if size is None:
        return [], 0
    start = max(0, size - window)
    data = host.read_bytes(path, start, size - start) or b""
    if start > 0:
        _, _, data = data.partition(b"\n")  # drop the cut first line
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
        end = size
    else:
        # Unfinished last line: follow from its start so it is shown once, whole.
        end = size - len(lines[-1].encode()) if lines else size
        lines = lines[:-1]
    return lines[-n:], end
