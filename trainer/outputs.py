"""Run-dir outputs gpuctl reads: train.log, events.jsonl, history.json, status.json.

Only rank 0 writes (others get a disabled Outputs). JSON files are replaced
atomically so a reader over SSH never sees a torn file; the log and the event
stream are append-only and flushed per line so `tail` by byte offset works.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .protocol import (
    EVENTS_FILE,
    HISTORY_FILE,
    STATUS_FILE,
    TRAIN_LOG_FILE,
    Phase,
    TrainerEvent,
)

STATUS_EVERY_SECONDS = 2.0


def write_json_atomic(path: Path, data: Any) -> None:
    """tmp + fsync + os.replace."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    text = json.dumps(data, indent=1) + "\n"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Outputs:
    """Writes the run dir's human and machine outputs; a no-op when disabled."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, fresh: bool = True) -> None:
        self.dir = Path(out_dir)
        self.enabled = enabled
        self.status_fields: dict[str, Any] = {
            "phase": Phase.STARTING,
            "epoch": 0,
            "epochs_done": 0,
            "epochs": None,
            "step": 0,
            "steps_per_epoch": None,
            "eta_seconds": None,
            "updated_at": None,
            "pid": os.getpid(),
            "best_metric": None,
            "reason": None,
        }
        self._last_status = 0.0
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        mode = "w" if fresh else "a"
        self._log = open(self.dir / TRAIN_LOG_FILE, mode, buffering=1, encoding="utf-8")  # noqa: SIM115
        # Append mode (O_APPEND) even when fresh: another writer of the file (the failure
        # path in cli.py) then adds whole lines instead of overwriting ours.
        events = self.dir / EVENTS_FILE
        if fresh:
            events.write_text("", encoding="utf-8")
        self._events = open(events, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def log(self, message: str) -> None:
        """One human line to train.log and stdout."""
        if not self.enabled:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        self._log.write(line + "\n")
        print(line, flush=True)

    def event(self, name: TrainerEvent, **fields: Any) -> None:
        """One JSON object per line: {"event": name, "time": unix seconds, ...fields}."""
        if not self.enabled:
            return
        record = {"event": name, "time": time.time(), **fields}
        self._events.write(json.dumps(record, default=str) + "\n")

    def status(self, force: bool = True, **fields: Any) -> None:
        """Update status.json; with force=False at most every STATUS_EVERY_SECONDS."""
        self.status_fields.update(fields)
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_status < STATUS_EVERY_SECONDS:
            return
        self._last_status = now
        self.status_fields["updated_at"] = time.time()
        write_json_atomic(self.dir / STATUS_FILE, self.status_fields)

    def history(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite history.json with every finished epoch."""
        if self.enabled:
            write_json_atomic(self.dir / HISTORY_FILE, rows)

    def error(self, message: str) -> None:
        """A line for stderr from any rank (failures must never be silent)."""
        print(message, file=sys.stderr, flush=True)
        if self.enabled:
            self._log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def close(self) -> None:
        if self.enabled:
            self._log.close()
            self._events.close()
