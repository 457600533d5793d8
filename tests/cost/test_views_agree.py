"""One view of the money: `gpuctl cost --json`, `gpuctl cost` and the control center's
header say the same burn for the same state, listed machines gpuctl does not meter
included (a forgotten box bills as much as a run does)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gpuctl import cost
from gpuctl.models import InstanceState
from gpuctl.settings import load
from gpuctl.state import Store
from gpuctl.tui.model import build_snapshot
from tests.cli import gpuctl
from tests.cost.conftest import inst, run


def test_cost_json_cost_text_and_the_tui_header_agree(gpuctl_home: Path) -> None:
    (gpuctl_home / "config.toml").write_text('providers = ["local"]\n')
    now = time.time()
    with Store(gpuctl_home / "state.db") as store:
        store.add_run(run("r1", provider="local", created=now - 600))
        metered = inst("local", "local-r1", price=1.2, run_id="r1", launched_at=now - 600)
        store.put_instance(metered)
        cost.open_compute(store, metered, "r1", now=now - 600)
        # Not gpuctl's and never metered: it still burns money now.
        store.put_instance(inst("local", "box-1", price=0.8, run_id=None, launched_at=now))
        # Off, on a provider where off does not bill: not burning.
        off = inst("local", "box-2", price=5.0, run_id=None, state=InstanceState.STOPPED)
        store.put_instance(off)
        header = build_snapshot(store, load(), time.time()).meter

    shown = json.loads(gpuctl("cost", "--json").stdout)
    assert shown["unmetered"] == ["local/box-1"]
    assert round(shown["burn_now"], 6) == round(1.2 + 0.8, 6)
    assert round(header.burn_per_hour, 6) == round(shown["burn_now"], 6)
    text = gpuctl("cost").stdout
    assert "$2.000/h burning on 2 instances" in text, text
    assert "$0.800/h of it on 1 listed machine gpuctl does not meter" in text, text
