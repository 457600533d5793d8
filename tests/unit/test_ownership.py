"""Ownership on this machine: the installation id, names that survive every tag, and the
local provider's records of who created a run directory."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuctl import ownership
from gpuctl.lifecycle import Engine
from gpuctl.models import Instance, InstanceState, LaunchSpec
from gpuctl.providers.local import LocalProvider
from gpuctl.reconcile import is_orphan
from tests.cli import gpuctl, json_lines
from tests.events import drain

COLLEAGUE = "0123456789abcdef"


def test_installation_id_is_made_once_per_data_directory(gpuctl_home: Path) -> None:
    path = gpuctl_home / "installation"
    assert not path.exists()
    first = ownership.installation_id(gpuctl_home)
    assert path.read_text().strip() == first and len(first) == 16
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Another process (no in-memory cache) reads the same id back.
    code = "import sys, pathlib, gpuctl.ownership as o; "
    code += "print(o.installation_id(pathlib.Path(sys.argv[1])))"
    again = subprocess.run(
        [sys.executable, "-c", code, str(gpuctl_home)], capture_output=True, text=True, check=True
    )
    assert again.stdout.strip() == first
    other = gpuctl_home / "elsewhere"
    assert ownership.installation_id(other) != first


def test_a_corrupt_installation_file_is_one_clear_error(gpuctl_home: Path) -> None:
    (gpuctl_home / "installation").write_text("not an id\n")
    proc = gpuctl("launch", "validate")
    assert proc.returncode == 2, proc.stderr
    assert "does not hold a gpuctl installation id" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_preset_name_that_tags_would_change_is_refused_before_anything(
    gpuctl_home: Path,
) -> None:
    presets = gpuctl_home / "presets"
    presets.mkdir()
    (presets / "bert.base.toml").write_text('base = "validate"\ndescription = "mine"\n')
    proc = gpuctl("run", "bert.base")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "bert.base.toml" in lines[0] and "[a-z0-9][a-z0-9-]*" in lines[0]
    assert "bert-base" in proc.stderr  # the hint names a name that works
    assert "Traceback" not in proc.stderr
    assert json_lines(gpuctl("ls", "--runs", "--json").stdout) == []  # nothing was created
    assert not (gpuctl_home / "local" / "runs").exists()


@pytest.mark.parametrize("name", ["Bert", "-fast", "a_b", "x" * 41, ""])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ownership.ConfigError, match=r"\[a-z0-9\]\[a-z0-9-\]\*"):
        ownership.check_name(name, "preset")


def test_run_id_and_installation_round_trip_through_local_records(gpuctl_home: Path) -> None:
    engine = Engine()
    spec = engine.resolve("validate")
    provider = engine.provider("local")
    assert isinstance(provider, LocalProvider)
    _, made = drain(provider.launch(spec))
    (listed,) = provider.list_instances().instances
    assert listed.run_id == spec.run_id == made.run_id
    assert listed.owner == engine.settings.installation_id


def test_a_run_directory_another_installation_made_is_foreign_not_an_orphan(
    gpuctl_home: Path,
) -> None:
    """A `local` root shared by two data directories: each leaves the other's alone."""
    engine = Engine()
    theirs = gpuctl_home / "local" / "runs" / "fast-260101-beef"
    theirs.mkdir(parents=True)
    (theirs / ".launched").write_text(str(time.time()))
    (theirs / ".installation").write_text(COLLEAGUE + "\n")
    engine.refresh(["local"])
    (found,) = engine.store.events("fast-260101-beef", kinds=["run_reconciled"])
    assert found["action"] == "foreign" and COLLEAGUE in found["message"]
    inst = engine.store.get_instance("local", "local-fast-260101-beef")
    assert inst is not None and inst.owner == COLLEAGUE
    assert not is_orphan(inst, None, installation=engine.settings.installation_id)
    assert engine.store.segments(instance_id=inst.id) == []  # not on this meter either
    proc = gpuctl("down", "--orphans", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "foreign: local local-fast-260101-beef" in proc.stdout
    assert theirs.is_dir()


def test_an_attached_machine_gets_no_shutdown_action(gpuctl_home: Path) -> None:
    """created_for: an --instance run is never the agent's to power off."""
    engine = Engine()
    spec = engine.resolve("validate")
    _, inst = drain(engine.provider("local").launch(spec))
    assert engine.created_for(spec, inst)
    attached = LaunchSpec.from_dict({**spec.to_dict(), "instance_id": inst.id})
    assert not engine.created_for(attached, inst)
    foreign = inst.evolve(owner=COLLEAGUE)
    assert not engine.created_for(spec, foreign)


def test_one_end_rule_for_every_front_end() -> None:
    """What ending a machine asks: a yes for this installation's own, the typed name for
    anything else, and a release for a run's machine it did not create."""
    from gpuctl.models import LaunchSpec
    from gpuctl.ownership import end_rule

    me, other = "a" * 16, "b" * 16
    base = Instance(
        provider="aws",
        id="i-1",
        name="box",
        region="us-east-1",
        instance_type="g5.xlarge",
        state=InstanceState.RUNNING,
        managed=True,
        owner=me,
        run_id="r1",
    )
    assert end_rule(base, me).typed is None
    assert end_rule(base.evolve(owner=other), me).why.startswith("was created by another")
    assert end_rule(base.evolve(owner=other), me).typed == "box"
    assert end_rule(base.evolve(managed=False, owner=None), me).why == "was NOT created by gpuctl"
    untagged = base.evolve(owner=None)  # tagged before installations were: its run decides
    assert end_rule(untagged, me, run_known=True).typed is None
    assert end_rule(untagged, me, run_known=False).typed == "box"
    own = LaunchSpec(run_id="r1", preset="fast", provider="aws")
    assert end_rule(base, me, spec=own) == end_rule(base, me)  # created for this run
    attached = LaunchSpec(run_id="r1", preset="fast", provider="aws", instance_id="i-1")
    rule = end_rule(base, me, spec=attached)
    assert rule.release and rule.typed == "box" and "for run r1" in rule.why
