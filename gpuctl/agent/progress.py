"""Turns a user's command's output into the files the bundled trainer writes.

gpuctl on the laptop reads events.jsonl, status.json and history.json of every run; a
user's own script writes none of them. The agent calls `Adapter.poll()` every loop turn:
it reads the new bytes of train.log (the command's output) and of reports.jsonl (the
helper's reports) by offset and writes those files exactly like the trainer does.

Input, in this order of trust: JSON report lines (`{"gpuctl": "epoch", ...}`, see
trainer/protocol.py ReportKind) in either file; else, for plain scripts, text such as
`Epoch 3/100 ... loss 0.41 val_loss=0.52` and tqdm bars. One JSON report turns the text
fallback off. Standard library only: it ships with agent.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:  # imported as gpuctl.agent.progress
    from ..trainer import protocol
except ImportError:  # run as a script on the machine: agent.py put the bundle on sys.path
    from trainer import protocol  # type: ignore[no-redef]

Phase = protocol.Phase
TrainerEvent = protocol.TrainerEvent
ReportKind = protocol.ReportKind

# Report fields renamed to the trainer's words; other numeric fields are kept as they are.
RENAMED = {"loss": "train_loss", "metric": "val_metric"}
ROW_KEYS = ("train_loss", "val_loss", "val_metric")
NOT_IN_ROW = {protocol.REPORT_KEY, "epoch", "epochs", "step", "steps", "path", "time"}
NOT_IN_ROW |= {"epoch_seconds", "warmup"}
MAX_LINE = 64 * 1024  # a line longer than this without a newline is dropped, not kept

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_SEP = r"\s*[:= ]\s*"
# At most 9 digits: a longer number is no epoch (and int() of 5,000 digits raises).
EPOCH_RE = re.compile(r"\bepoch\b\s*[:=#]?\s*\[?\s*(\d{1,9})\s*/\s*(\d{1,9})\b", re.IGNORECASE)
BAR_RE = re.compile(r"(\d+)%\|[^|]*\|\s*(\d+)/(\d+)")
STEP_RE = re.compile(r"\b(?:step|batch|iter|iteration)\b\s*[:=]?\s*(\d+)\s*/\s*(\d+)", re.I)
KERAS_BAR_RE = re.compile(r"^\s*(\d+)/(\d+)\s*(?:\[[=>.]*\]|-)")  # "50/50 [===] - 2s"
# Validation words first: "val loss" must not also be read as the training loss, and a
# validation accuracy wins over the training one.
TEXT_FIELDS = (
    ("val_loss", re.compile(r"\b(?:val|valid|validation)[_ ]loss" + _SEP + _NUM, re.I)),
    ("val_metric", re.compile(r"\b(?:val_metric|val[_ ]acc(?:uracy)?)" + _SEP + _NUM, re.I)),
    ("val_metric", re.compile(r"\b(?:metric|acc(?:uracy)?)" + _SEP + _NUM, re.I)),
    ("train_loss", re.compile(r"\b(?:train[_ ])?loss" + _SEP + _NUM, re.I)),
)


def text_fields(text: str) -> dict[str, float]:
    """`loss: 0.41 - val_loss=0.52 acc 0.8` -> train_loss, val_loss, val_metric."""
    fields: dict[str, float] = {}
    for key, pattern in TEXT_FIELDS:
        match = pattern.search(text)
        if match and key not in fields:
            fields[key] = float(match.group(1))
        if match:
            text = text[: match.start()] + " " + text[match.end() :]
    return fields


def write_json(path: Path, data: Any) -> None:
    """tmp + fsync + os.replace, as the trainer's outputs.write_json_atomic."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=1) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def number(value: Any) -> float | None:
    """A finite int or float (never a bool); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


MOST_COUNT = 10**9  # more epochs or steps than this is a script's garbage, not progress


def count(value: Any) -> int | None:
    """A whole positive number (3 or 3.0) up to MOST_COUNT; None for anything else (an
    epoch of 1e308 once made every later `gpuctl ls --runs` fail on the state DB)."""
    n = number(value)
    return int(n) if n is not None and n == int(n) and 0 <= n <= MOST_COUNT else None


class LineReader:
    """New complete lines of a growing file, by offset; `\\r` ends a line too (tqdm)."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.partial = b""

    def lines(self, final: bool = False) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            data = b""
        self.offset += len(data)
        data = self.partial + data
        parts = re.split(rb"\r\n|\r|\n", data)
        self.partial = b"" if final else parts.pop()
        if len(self.partial) > MAX_LINE:
            self.partial = b""
        return [p.decode("utf-8", "replace") for p in parts if p.strip()]


class Adapter:
    """One (re)start of a user's command: its reports in, the trainer's files out."""

    def __init__(
        self,
        run_dir: Path,
        *,
        epochs: int | None,
        resume: bool,
        log_offset: int,
        on_checkpoint: Callable[[str | None], str | None] | None = None,
    ) -> None:
        self.dir = run_dir
        self.epochs = epochs
        self.on_checkpoint = on_checkpoint
        self.started = time.time()
        self.last_end = self.started  # the first epoch_seconds count from the start
        self.ignored = 0  # bad JSON, non-numbers, NaN: ignored fields
        self.json_mode = False
        self.last_line = ""
        self.steady: list[float] = []
        self.restart_epochs = 0  # epochs ended since this (re)start: the first is warm-up
        self.history: list[dict[str, Any]] = []
        reports = run_dir / protocol.REPORTS_FILE
        if resume:
            history = read_list(run_dir / protocol.HISTORY_FILE)
            self.history = [r for r in history if isinstance(r, dict) and count(r.get("epoch"))]
            report_offset = reports.stat().st_size if reports.exists() else 0
        else:
            (run_dir / protocol.EVENTS_FILE).write_text("")
            reports.write_text("")
            report_offset = 0
        reports.touch()
        self.log = LineReader(run_dir / protocol.TRAIN_LOG_FILE, log_offset)
        self.reports = LineReader(reports, report_offset)
        done = self._done = max((int(r["epoch"]) for r in self.history), default=0)
        self.text: dict[str, Any] = {"epoch": done, "fields": {}, "at": None}
        self.text.update(seen=False, bar=False)
        self.status: dict[str, Any] = {
            "phase": Phase.STARTING,
            "epoch": done,
            "epochs_done": done,
            "epochs": epochs,
            "step": 0,
            "steps_per_epoch": None,
            "eta_seconds": None,
            "updated_at": None,
            "pid": None,
            "best_metric": self.best_metric(),
            "reason": None,
        }
        self.event(TrainerEvent.START, epochs=epochs, resumed=resume, start_epoch=done + 1)
        write_json(run_dir / protocol.HISTORY_FILE, self.history)  # as the trainer: [] fresh
        self.write_status()

    def command_started(self, log_offset: int, pid: int | None = None) -> None:
        """The command starts now: its output begins at log_offset (after the setup's)."""
        self.log = LineReader(self.dir / protocol.TRAIN_LOG_FILE, log_offset)
        self.started = self.last_end = time.time()
        self.last_line = ""
        self.status["pid"] = pid

    # -- outputs ------------------------------------------------------------------------

    def event(self, name: str, **fields: Any) -> None:
        record = {"event": name, "time": time.time(), **fields}
        with open(self.dir / protocol.EVENTS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    def write_status(self, **fields: Any) -> None:
        self.status.update(fields)
        self.status["updated_at"] = time.time()
        write_json(self.dir / protocol.STATUS_FILE, self.status)

    def best_metric(self) -> float | None:
        metrics = [m for r in self.history if (m := number(r.get("val_metric"))) is not None]
        return max(metrics) if metrics else None

    def epochs_done(self) -> int:
        return self._done

    # -- input --------------------------------------------------------------------------

    def poll(self, final: bool = False) -> None:
        """Read what is new; write what it means. Never raises on what the script wrote."""
        changed = False
        for line in self.reports.lines(final):
            changed |= self.json_line(line, strict=True)
        for line in self.log.lines(final):
            self.last_line = line.strip()[-300:]
            if line.lstrip().startswith("{") and self.json_line(line, strict=False):
                changed = True
            elif not self.json_mode:
                changed |= self.text_line(line)
        if changed:
            self.write_status()

    def json_line(self, line: str, strict: bool) -> bool:
        """A report line; False when it is none (on stdout: any other JSON the script logs)."""
        try:
            doc = json.loads(line)
        except ValueError:
            if strict:
                self.ignored += 1
            return False
        if not isinstance(doc, dict) or protocol.REPORT_KEY not in doc:
            if strict:
                self.ignored += 1
            return False
        self.json_mode = True
        kind = doc.get(protocol.REPORT_KEY)
        if kind == ReportKind.START:
            self.set_epochs(doc.get("epochs"))
        elif kind == ReportKind.STEP:
            self.step_report(doc)
        elif kind == ReportKind.EPOCH:
            self.epoch_report(doc)
        elif kind == ReportKind.CHECKPOINT:
            path = doc.get("path")
            self.checkpoint(path if isinstance(path, str) and path else None)
        else:
            self.ignored += 1
            return False
        self.status["phase"] = Phase.TRAINING
        return True

    def set_epochs(self, value: Any) -> None:
        if value is None:
            return
        epochs = count(value)
        if epochs:
            self.epochs = epochs
            self.status["epochs"] = epochs
        else:
            self.ignored += 1

    def step_report(self, doc: dict[str, Any]) -> None:
        step = count(doc.get("step"))
        if step is None:
            self.ignored += 1
            return
        self.status["step"] = step
        if "steps" in doc:
            steps = count(doc["steps"])
            if steps:
                self.status["steps_per_epoch"] = steps
            else:
                self.ignored += 1
        if "epoch" in doc:
            epoch = count(doc["epoch"])
            if epoch:
                self.status["epoch"] = epoch
            else:
                self.ignored += 1

    def epoch_report(self, doc: dict[str, Any]) -> None:
        epoch = count(doc.get("epoch"))
        if not epoch:
            self.ignored += 1
            return
        self.set_epochs(doc.get("epochs"))
        fields: dict[str, float] = {}
        for key, value in doc.items():
            if key in NOT_IN_ROW:
                continue
            n = number(value)
            if n is None:
                self.ignored += value is not None
                continue
            fields[RENAMED.get(key, key)] = n
        # When the script said it (the helper stamps its lines), not when the agent read it
        at, now = number(doc.get("time")), time.time()
        if at is None or not self.last_end <= at <= now:
            at = now
        self.epoch_end(epoch, fields, at)

    def text_line(self, line: str) -> bool:
        """The fallback: `Epoch N/M` lines, tqdm and Keras bars, `loss 0.41` style fields.

        A line naming epoch N means N is in progress and the one before is done. N is
        done when its step bar is full (recorded once its losses are in: at the next
        epoch, an explicit `Epoch N/M ... loss` line, or the exit), or at once when an
        `Epoch N/M` line carries a loss and no step bar of N is still running. Lines in
        between (a Keras bar, `val loss: 0.5`) add their fields and steps to epoch N.
        """
        found = EPOCH_RE.search(line)
        state = self.text
        if found is None or int(found.group(2)) <= 0:
            if not state["seen"] or state["epoch"] <= self.epochs_done():
                return False
            return self.text_progress(line, text_fields(line), explicit=False)
        epoch, epochs = int(found.group(1)), int(found.group(2))
        if epoch <= self.epochs_done():
            return False  # recorded already (a repeat line, or from before a resume)
        if self.epochs != epochs:
            self.set_epochs(epochs)
        if epoch != state["epoch"] or not state["seen"]:
            if state["seen"] and state["epoch"] > self.epochs_done():
                self.text_epoch_done(time.time())  # a new epoch began: the one before is done
            state.update(epoch=epoch, fields={}, at=None, seen=True, bar=False)
        self.status.update(phase=Phase.TRAINING, epoch=epoch)
        self.text_progress(line, text_fields(line[found.end() :]), explicit=True)
        return True

    def text_progress(self, line: str, fields: dict[str, float], explicit: bool) -> bool:
        """Fields and steps of one line for the text epoch in progress."""
        state = self.text
        state["fields"].update(fields)
        bar = BAR_RE.search(line) or KERAS_BAR_RE.search(line) or STEP_RE.search(line)
        if bar is not None and all(len(g) <= 9 for g in bar.groups()[-2:]):  # else no int()
            step, steps = int(bar.groups()[-2]), int(bar.groups()[-1])
            state["bar"] = True
            if steps > 0:
                self.status.update(step=step, steps_per_epoch=steps)
                if step >= steps and state["at"] is None:
                    state["at"] = time.time()
            return True
        if explicit and fields and (not state["bar"] or state["at"] is not None):
            self.text_epoch_done(time.time())
        return bool(fields)

    def text_epoch_done(self, now: float) -> None:
        state = self.text
        if state["epoch"] > self.epochs_done():
            self.epoch_end(state["epoch"], dict(state["fields"]), state["at"] or now)
        state.update(fields={}, at=None)

    # -- epochs -------------------------------------------------------------------------

    def epoch_end(self, epoch: int, fields: dict[str, float], at: float) -> None:
        seconds = max(0.0, at - self.last_end)
        self.last_end = at
        warmup = self.restart_epochs == 0
        self.restart_epochs += 1
        row: dict[str, Any] = {"epoch": epoch, **{k: None for k in ROW_KEYS}}
        row.update(fields)
        row["epoch_seconds"] = round(seconds, 3)
        self.history = [r for r in self.history if int(r["epoch"]) < epoch] + [row]
        self._done = epoch
        write_json(self.dir / protocol.HISTORY_FILE, self.history)
        # epochs 0 for "not known": gpuctl reads a missing count as a malformed line
        self.event(TrainerEvent.EPOCH_END, **row, epochs=self.epochs or 0, warmup=warmup)
        if not warmup:
            self.steady.append(seconds)
        eta = None
        if self.steady and self.epochs:
            mean = sum(self.steady) / len(self.steady)
            eta = round(mean * max(0, self.epochs - epoch), 1)
        self.status.update(
            phase=Phase.TRAINING,
            epoch=epoch,
            epochs_done=epoch,
            step=self.status.get("steps_per_epoch") or self.status.get("step") or 0,
            eta_seconds=eta,
            best_metric=self.best_metric(),
        )

    def checkpoint(self, path: str | None) -> None:
        if self.on_checkpoint is None:
            return
        mirrored = self.on_checkpoint(path)
        if mirrored:
            self.event(TrainerEvent.CHECKPOINT, path=mirrored, epoch=self.epochs_done(), best=False)

    # -- the end ------------------------------------------------------------------------

    def all_reported(self) -> bool:
        return bool(self.epochs) and self.epochs_done() >= int(self.epochs or 0)

    def finish(self, code: int | None, stop_reason: str | None, failure: str | None = None) -> str:
        """The command exited (or never started: `failure`); returns the phase written."""
        if failure is None:
            self.poll(final=True)
            state = self.text
            clean = code == 0 and not stop_reason
            if not self.json_mode and (state["at"] is not None or (clean and state["seen"])):
                self.text_epoch_done(time.time())  # its bar was full, or the script is done
        seconds = round(time.time() - self.started, 3)
        # Every epoch reported only counts when a stop raced the end: a script that
        # reported its last epoch and then exited non-zero (saving its model) failed.
        raced = bool(stop_reason) and self.all_reported()
        if failure is None and ((code == 0 and not stop_reason) or raced):
            done = self.epochs_done()
            self.event(
                TrainerEvent.FINISHED,
                epochs=self.epochs or done,
                best_metric=self.best_metric(),
                seconds=seconds,
            )
            self.write_status(phase=Phase.FINISHED, epochs_done=done, eta_seconds=0.0, reason=None)
            return Phase.FINISHED
        if stop_reason and failure is None:
            epoch = self.epochs_done() + 1
            step = self.status.get("step") or 0
            self.event(TrainerEvent.INTERRUPTED, epoch=epoch, step=step, reason=stop_reason)
            self.write_status(phase=Phase.INTERRUPTED, reason=stop_reason, eta_seconds=None)
            return Phase.INTERRUPTED
        reason = failure or f"exit code {code}: {self.last_line}".rstrip(": ")
        self.event(TrainerEvent.FAILED, reason=reason)
        self.write_status(phase=Phase.FAILED, reason=reason, eta_seconds=None)
        return Phase.FAILED


def read_list(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []
