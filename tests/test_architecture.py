"""The dependency rules of the README's Architecture section, on the installed layout."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

FOLDERS = ("providers", "presets", "trainer", "tui")


# The one import cycle left: Engine is imported (for types) by the modules it drives;
# splitting Engine breaks it. Any other cycle is new and fails the test below.
KNOWN_CYCLES: list[list[str]] = []  # none: a new one fails this test

# Strongly connected components of the module import graph (TYPE_CHECKING imports count:
# a cycle in the types is a cycle in the design), run with the staged package on the path.
FIND_CYCLES = """
import json, sys, grimp
graph = grimp.build_graph("gpuctl")
imports = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
index, low, on_stack, stack, cycles = {}, {}, set(), [], []
for root in sorted(imports):
    if root in index:
        continue
    work = [(root, iter(imports[root]))]
    index[root] = low[root] = len(index)
    stack.append(root)
    on_stack.add(root)
    while work:
        module, todo = work[-1]
        for child in todo:
            if child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(imports[child])))
                break
            if child in on_stack:
                low[module] = min(low[module], index[child])
        else:
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
json.dump(sorted(cycles), sys.stdout)
"""


def _stage(tmp_path: Path) -> Path:
    """The package as installed: the top-level folders inside gpuctl/."""
    stage = tmp_path / "stage"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "gpuctl", stage / "gpuctl", ignore=ignore)
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, stage / "gpuctl" / folder, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", stage / "pyproject.toml")
    return stage


def _run_staged(stage: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        cwd=stage,
        env={"PYTHONPATH": str(stage), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts_hold(tmp_path: Path) -> None:
    """import-linter on the package as installed (the top-level folders inside gpuctl/)."""
    lint = Path(sys.executable).parent / "lint-imports"
    proc = _run_staged(_stage(tmp_path), str(lint))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_no_new_import_cycle(tmp_path: Path) -> None:
    """Two modules that import each other (even only for a type) can no longer be read,
    tested or layered apart: the known cycle is the only one allowed."""
    proc = _run_staged(_stage(tmp_path), sys.executable, "-c", FIND_CYCLES)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == KNOWN_CYCLES


def test_trainer_uses_relative_imports_only() -> None:
    """The trainer is shipped alone as `trainer/`: an absolute gpuctl import would break."""
    offenders = []
    for path in (REPO / "trainer").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.match(r"\s*(from|import)\s+(gpuctl|trainer)\b", line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


def test_agent_is_standard_library_only() -> None:
    """The agent runs with whatever python3 the machine has: stdlib imports only (and its
    sibling modules in agent/, which ship with it, and trainer/protocol.py, which ships
    next to agent/ and is stdlib only itself)."""
    agent_dir = REPO / "gpuctl" / "agent"
    siblings = {p.stem for p in agent_dir.glob("*.py")}
    for path in agent_dir.glob("*.py"):
        source = path.read_text()
        imported = set(re.findall(r"^\s*(?:from|import)\s+([a-zA-Z_]\w*)", source, re.M))
        allowed = set(sys.stdlib_module_names) | {"__future__", "trainer"} | siblings
        assert imported <= allowed, (path.name, imported - allowed)
        from_trainer = re.findall(r"^\s*from\s+(\.\.)?trainer\b(.*)$", source, re.M)
        names = [rest.split("#")[0].strip() for _, rest in from_trainer]
        assert all(name == "import protocol" for name in names), (path.name, names)
        assert not re.search(r"^\s*import\s+trainer\b", source, re.M), path.name


def test_every_core_module_is_under_the_no_textual_contract() -> None:
    """A new core module must join the contract, or the rule silently stops covering it."""
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    listed = set(contracts["contracts"][0]["source_modules"]) | set(
        contracts["contracts"][1]["source_modules"]
    )
    entry_points = {"gpuctl.__init__", "gpuctl.__main__"}
    core = {
        f"gpuctl.{p.stem}"
        for p in (REPO / "gpuctl").iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").exists()) and not p.name.startswith("_")
    }
    folders = {f"gpuctl.{folder}" for folder in FOLDERS if folder != "tui"}
    missing = sorted((core | folders) - listed - entry_points)
    assert missing == [], f"add to the first import contract in pyproject.toml: {missing}"


def test_screens_read_the_app_and_post_their_actions() -> None:
    """A screen reaches the app only through tui/ports.ControlCenter, which holds reads
    (the engine, the clock, the views); what it asks the app to do is a message the app
    handles, so a screen knows no method of the app."""
    ports = (REPO / "tui" / "ports.py").read_text()
    members = set(re.findall(r"^    (?:def )?(\w+)\s*[:(]", ports, re.M))
    assert {"engine", "now", "display_snapshot"} <= members
    used: dict[str, set[str]] = {}
    for path in sorted((REPO / "tui" / "screens").glob("*.py")):
        for name in re.findall(r"self\.gpuctl\.(\w+)", path.read_text()):
            used.setdefault(name, set()).add(path.name)
    unknown = {name: files for name, files in used.items() if name not in members}
    assert unknown == {}, f"screens call the app beyond tui/ports.ControlCenter: {unknown}"
    actions = {n for n in members if n.startswith(("open_", "confirm_", "watch_", "refresh"))}
    assert actions == set(), f"actions are messages, not ControlCenter methods: {actions}"
