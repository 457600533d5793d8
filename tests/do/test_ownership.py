"""Droplets gpuctl may end: tagged by this installation, with a run tag, and no other.

The real CLI and the real pydo client against the stateful fake API; a destroy shows up
as a DELETE the fake received, and a droplet left alone is still in the fake's state.
"""

from __future__ import annotations

from pathlib import Path

from gpuctl.ownership import installation_id
from gpuctl.settings import Settings
from tests.cli import gpuctl, json_lines
from tests.do.conftest import MakeProvider
from tests.do.test_cli import configure
from tests.do.test_offers_launch import spec
from tests.events import drain
from tests.fakes.do_api import FakeDigitalOcean

COLLEAGUE = "0123456789abcdef"


def test_run_id_and_installation_round_trip_through_droplet_tags(
    fake: FakeDigitalOcean, make_provider: MakeProvider, settings: Settings
) -> None:
    run_id = "bert-base-260101-0a1b"
    provider = make_provider(fake)
    _, inst = drain(provider.launch(spec(run_id=run_id)))
    (listed,) = provider.list_instances().instances
    assert (listed.run_id, listed.owner, listed.managed) == (run_id, settings.installation_id, True)
    assert inst.name == f"gpuctl-{run_id}"


def test_only_this_installations_orphans_are_destroyed(
    gpuctl_home: Path, fake: FakeDigitalOcean
) -> None:
    mine = installation_id(gpuctl_home)
    ours = fake.seed_droplet(
        "gpuctl-fast-260101-cafe",
        tags=["gpuctl", "gpuctl-run-fast-260101-cafe", f"gpuctl-inst-{mine}"],
    )
    colleague = fake.seed_droplet(
        "gpuctl-fast-260101-beef",
        tags=["gpuctl", "gpuctl-run-fast-260101-beef", f"gpuctl-inst-{COLLEAGUE}"],
    )
    older = fake.seed_droplet(  # an older gpuctl's, no installation tag, run unknown here
        "gpuctl-fast-260101-dead", tags=["gpuctl", "gpuctl-run-fast-260101-dead"]
    )
    bare = fake.seed_droplet("my-web-server", tags=["gpuctl"])  # a tag is no proof
    env = configure(gpuctl_home, fake)

    listed = gpuctl("ls", "--refresh", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json_lines(listed.stdout)}
    assert str(bare["id"]) not in rows  # not gpuctl's: only `ls --all` shows it
    assert rows[str(ours["id"])]["orphan"] and not rows[str(ours["id"])]["foreign"]
    for droplet in (colleague, older):
        row = rows[str(droplet["id"])]
        assert row["foreign"] and not row["orphan"], row
    assert rows[str(colleague["id"])]["owner"] == COLLEAGUE

    down = gpuctl("down", "--orphans", "--yes", env=env)
    assert down.returncode == 0, down.stderr
    assert f"owner={COLLEAGUE}" in down.stdout and "owner=unknown" in down.stdout
    deleted = {r.path for r in fake.calls("DELETE", "/v2/droplets")}
    assert deleted == {f"/v2/droplets/{ours['id']}"}
    assert {colleague["id"], older["id"], bare["id"]} <= set(fake.droplets)
