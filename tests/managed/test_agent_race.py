"""The agent's budget stop fires in the second the trainer finishes its last epoch.

The stand-in trainer finishes when the agent's SIGTERM arrives (its last step was
already done): status finished, exit 0. The run the store records is finished.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from gpuctl.models import RunStatus
from gpuctl.runstate import record_end
from gpuctl.state import Store
from tests.unit.test_state import make_run

from .conftest import Machine, wait_for

FINISHES_ON_SIGTERM = """
import json, os, signal, sys, time
from pathlib import Path

cfg = json.loads(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
out = Path(cfg["out_dir"])
done = {"now": False}
signal.signal(signal.SIGTERM, lambda *_: done.update(now=True))

def status(**kw):
    (out / ".status.tmp").write_text(json.dumps(kw))
    os.replace(out / ".status.tmp", out / "status.json")

status(phase="training", epoch=3, epochs=3, epochs_done=2, step=7)
while not done["now"]:
    time.sleep(0.02)
status(phase="finished", epoch=3, epochs=3, epochs_done=3, step=8, best_metric=0.9)
"""


def test_a_budget_stop_racing_the_last_step_leaves_the_run_finished(
    machine: Machine, tmp_path: Path
) -> None:
    (machine.code / "trainer" / "__main__.py").write_text(FINISHES_ON_SIGTERM)
    machine.configure(budget_seconds=3)  # once the stand-in has long caught SIGTERM
    machine.agent("start")
    agent = wait_for(
        lambda: (s := machine.agent("status"))["state"] == "exited" and s, what="the end"
    )
    assert agent["reason"].startswith("budget") and agent["exit_code"] == 0

    store = Store(tmp_path / "state.db")
    store.add_run(make_run("validate-261203-race"))
    status, _ = record_end(SimpleNamespace(store=store), "validate-261203-race", agent)
    run = store.get_run("validate-261203-race")
    assert status == run.status == RunStatus.FINISHED
    assert (run.epoch, run.metric) == (3, 0.9)
