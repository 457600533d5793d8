"""The names the trainer, the agent and gpuctl share: events, phases, states, reasons, files.

One definition for both ends of every file in a run directory, so a rename cannot leave
one side reading a word the other no longer writes. Standard library only and free of
the rest of the trainer: gpuctl imports it as `gpuctl.trainer.protocol`, the trainer as
`.protocol`, and the agent (run as a script on the machine) from the `trainer/` folder
that ships next to `agent/` in every code bundle. Python 3.11+, like the trainer
(tomllib) and the agent (process_group).

The values are what the files hold: machines may still run an older bundle, so add
names, never change a value.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class TrainerEvent(StrEnum):
    """`event` of one line of events.jsonl, written by the trainer."""

    START = "start"
    EPOCH_END = "epoch_end"
    CHECKPOINT = "checkpoint"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"
    FAILED = "failed"


class Phase(StrEnum):
    """`phase` in the trainer's status.json."""

    STARTING = "starting"
    WARMUP = "warmup"
    TRAINING = "training"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"
    FAILED = "failed"


class AgentState(StrEnum):
    """`state` in agent_status.json. LOST is never written: `agent.py status` says it
    when the file claims a live state and the supervisor's pid is gone."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"
    LOST = "lost"


# A supervisor should be alive in these; after these the trainer no longer runs.
AGENT_ACTIVE: Final = (AgentState.STARTING, AgentState.RUNNING, AgentState.STOPPING)
AGENT_ENDED: Final = (AgentState.EXITED, AgentState.LOST)


class StopReason(StrEnum):
    """How a stop reason (agent_status.json `reason`, the STOP file's text) begins.

    The words after the prefix are for people; gpuctl decides the run's outcome from the
    prefix alone (runstate.outcome, recovery), so these are matched with startswith,
    except SPOT, which is the whole reason.
    """

    SPOT = "spot interruption"  # the cloud's notice: checkpoint now, resume elsewhere
    STALL = "stalled"  # the agent's stall guard: no training progress
    BUDGET = "budget"  # the agent's time limit from the budget, or gpuctl's budget stop
    MAX_HOURS = "max hours reached"
    USER = "stopped by user"  # `gpuctl stop`, `down`, the control center
    SIGNAL = "agent got signal"  # the supervisor was signalled: the machine shuts down
    STOP_FILE = "STOP file"  # the trainer's own reason when it found the STOP file


class ShutdownAction(StrEnum):
    """`action` of agent.json's `shutdown` (and `budget_shutdown`): what the agent does to
    the machine once a limit has stopped the trainer. gpuctl's provider chooses it."""

    NONE = "none"  # local, ssh, keep: stop the trainer only, leave the machine alone
    POWEROFF = "poweroff"  # run the given command (`shutdown -h now`)
    DESTROY = "destroy"  # DigitalOcean: delete its own droplet through the API


# Files in a run directory (base/runs/<run>/ on the machine, results/<run>/ at home).
RUN_CONFIG_FILE: Final = "run.json"  # the trainer's resolved config, written by gpuctl
AGENT_CONFIG_FILE: Final = "agent.json"  # limits and shutdown action, written by gpuctl
AGENT_STATUS_FILE: Final = "agent_status.json"  # the agent's state, pids, exit code, reason
AGENT_LOG_FILE: Final = "agent.log"
TRAINER_OUT_FILE: Final = "trainer.out"  # the trainer's stdout and stderr
STATUS_FILE: Final = "status.json"  # the trainer's phase, epoch, step, ETA
EVENTS_FILE: Final = "events.jsonl"  # one TrainerEvent per line
TRAIN_LOG_FILE: Final = "train.log"
HISTORY_FILE: Final = "history.json"  # one row per finished epoch
LAST_CHECKPOINT_FILE: Final = "last.pt"  # what --resume continues from
BEST_CHECKPOINT_FILE: Final = "best.pt"
STOP_FILE: Final = "STOP"  # its text is the stop reason; the trainer stops when it appears


# A user's own training command reports its progress as JSON lines, one object each, in
# REPORTS_FILE (its path in the REPORTS_ENV variable) or on its stdout; the agent turns
# them into the files above. gpuctl/agent/helper/gpuctl_report.py writes them (it runs
# inside the user's script, where this module is not importable: it spells the same
# words, and a test keeps the two equal).
REPORTS_FILE: Final = "reports.jsonl"
REPORT_KEY: Final = "gpuctl"  # {"gpuctl": <ReportKind>, ...}: a line is a report
REPORTS_ENV: Final = "GPUCTL_EVENTS"  # where the helper appends its reports
RUN_ID_ENV: Final = "GPUCTL_RUN_ID"
RUN_DIR_ENV: Final = "GPUCTL_RUN_DIR"
CHECKPOINT_ENV: Final = "GPUCTL_CHECKPOINT"  # the project's checkpoint, absolute
RESUME_ENV: Final = "GPUCTL_RESUME"  # "1" when the command should continue a checkpoint


class ReportKind(StrEnum):
    """The value of REPORT_KEY in one report line of a user's command."""

    START = "start"  # {"epochs": 100}
    STEP = "step"  # {"step": 40, "steps": 100, "epoch": 3}
    EPOCH = "epoch"  # {"epoch": 3, "epochs": 100, "loss": .., "val_loss": .., "metric": ..}
    CHECKPOINT = "checkpoint"  # {"path": "checkpoints/last.pt"}: written, mirror it now
