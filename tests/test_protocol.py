"""trainer/protocol.py is the one place the shared names are spelled, and it reaches the
machine with the agent.

The trainer writes events.jsonl and status.json, the agent writes agent_status.json and
the STOP file, gpuctl reads them all. A word spelled out on one side and renamed on the
other is a run whose end gpuctl never sees, so the check below fails on any protocol word
left as a bare literal where the protocol is written or read.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

from gpuctl.rundir import code_bundle
from gpuctl.trainer import protocol
from tests.conftest import REPO

PROTOCOL = REPO / "trainer" / "protocol.py"
CHECKED = ("gpuctl", "trainer", "tui", "providers")
WRITERS = ("trainer", "gpuctl/agent")  # where events, phases and states are written
FIELDS = {"event", "state", "phase", "action"}  # JSON keys whose values are protocol words
KEYWORDS = {"state", "phase"}  # ...that the writers also pass as keywords (save, status)

FILES = {v for k, v in vars(protocol).items() if k.endswith("_FILE")}
# Multi-word reasons say what they are wherever they appear; one-word ones ("stalled",
# "budget") are also plain words, so they are only checked where a reason is tested.
REASONS = {r.value for r in protocol.StopReason if " " in r.value}


def _python_files() -> Iterator[Path]:
    for folder in CHECKED:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path != PROTOCOL and "__snapshots__" not in path.parts:
                yield path


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _strings(node: ast.AST) -> list[str]:
    """The string literals a comparison operand is (a literal, or a tuple/list/set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for elt in node.elts for s in _strings(elt)]
    return []


def _field_read(node: ast.AST, held: dict[str, str]) -> str | None:
    """The protocol field an expression reads: `x.get("state")`, `x["state"]`, or a name
    that was assigned one of those in the module (`held`)."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and _strings(node.args[0])
    ):
        key = _strings(node.args[0])[0]
        return key if key in FIELDS else None
    if isinstance(node, ast.Subscript) and _strings(node.slice):
        key = _strings(node.slice)[0]
        return key if key in FIELDS else None
    if isinstance(node, ast.Name):
        return held.get(node.id)
    return None


def _held_fields(tree: ast.AST) -> dict[str, str]:
    """Names assigned a protocol field (`state = status.get("state")`) anywhere in a module."""
    held: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            field = _field_read(node.value, {})
            if isinstance(target, ast.Name) and field:
                held[target.id] = field
    return held


def _names_a_reason(node: ast.AST) -> bool:
    return "reason" in ast.unparse(node).lower()


def _offences(source: str, rel: str) -> Iterator[str]:
    """Bare protocol words in one module (rel: its path in the repository)."""
    tree = ast.parse(source, rel)
    docstrings = _docstrings(tree)
    held = _held_fields(tree)
    writer = rel.startswith(WRITERS)
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if id(node) in docstrings:
                continue
            if text in FILES or any(text.endswith("/" + name) for name in FILES):
                yield f"{where}: file name {text!r}"
            head = re.split(r":| \(|\{", text, maxsplit=1)[0].strip()
            if head in REASONS:
                yield f"{where}: stop reason {text!r}"
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            fields = [f for f in (_field_read(op, held) for op in operands) if f]
            literals = [s for op in operands for s in _strings(op)]
            if fields and literals:
                yield f"{where}: {fields[0]} compared with {literals}"
            elif literals and any(_names_a_reason(op) for op in operands if not _strings(op)):
                yield f"{where}: reason compared with {literals}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            startswith = node.func.attr == "startswith" and node.args
            if startswith and _strings(node.args[0]) and _names_a_reason(node.func.value):
                yield f"{where}: reason.startswith({_strings(node.args[0])})"
            if writer and node.func.attr == "event" and node.args and _strings(node.args[0]):
                yield f"{where}: event {_strings(node.args[0])[0]!r} written as a literal"
            if writer:
                for kw in node.keywords:
                    if kw.arg in KEYWORDS and _strings(kw.value):
                        yield f"{where}: {kw.arg}={_strings(kw.value)[0]!r}"
        elif writer and isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                words = _strings(key) if key is not None else []
                if words and words[0] in FIELDS and _strings(value):
                    yield f"{where}: {{{words[0]!r}: {_strings(value)[0]!r}}}"


def test_no_protocol_word_is_spelled_outside_the_protocol() -> None:
    offences = [
        o
        for path in _python_files()
        for o in _offences(path.read_text(), path.relative_to(REPO).as_posix())
    ]
    assert offences == [], "use the names in trainer/protocol.py:\n" + "\n".join(offences)


def test_the_check_catches_what_it_is_for() -> None:
    """Each kind of bare word the rule exists for is reported (the check is not vacuous)."""
    sample = (
        "def f(status, ev, out, reason, run_dir, cfg):\n"
        "    if status.get('state') in ('exited', 'lost'):\n"
        "        pass\n"
        "    phase = status['phase']\n"
        "    if phase == 'finished' or cfg.get('action') != 'destroy':\n"
        "        pass\n"
        "    if ev['event'] == 'epoch_end' or reason.startswith('stalled'):\n"
        "        pass\n"
        "    out.event('finished', epochs=1)\n"
        "    out.status(phase='failed')\n"
        "    open(run_dir / 'agent_status.json')\n"
        "    return f'agent got signal {reason}', f'{run_dir}/events.jsonl'\n"
    )
    found = list(_offences(sample, "trainer/sample.py"))
    kinds = " | ".join(found)
    for expected in (
        "state compared",
        "phase compared",
        "action compared",
        "event compared",
        "reason.startswith",
        "event 'finished'",
        "phase='failed'",
        "'agent_status.json'",
        "stop reason 'agent got signal '",
        "'/events.jsonl'",
    ):
        assert expected in kinds, (expected, found)


def test_protocol_imports_only_the_standard_library() -> None:
    """It runs inside the agent on the machine (any python3) and inside the trainer."""
    tree = ast.parse(PROTOCOL.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "protocol.py must not import the rest of the trainer"
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_protocol_values_are_plain_words_in_the_files() -> None:
    """What the files hold is the value: JSON of a member is the bare word, both ways."""
    for enum in (protocol.TrainerEvent, protocol.Phase, protocol.AgentState, protocol.StopReason):
        assert issubclass(enum, StrEnum)
        for member in enum:
            assert json.loads(json.dumps({"k": member})) == {"k": member.value}
            assert f"{member}" == member.value
    assert set(protocol.AGENT_ACTIVE).isdisjoint(protocol.AGENT_ENDED)
    assert set(protocol.AGENT_ACTIVE) | set(protocol.AGENT_ENDED) == set(protocol.AgentState)


def test_the_agent_runs_from_a_code_bundle_with_the_standard_library_alone(
    tmp_path: Path,
) -> None:
    """The bundle gpuctl uploads carries trainer/protocol.py next to agent/, and the agent
    finds it there with nothing of gpuctl installed: a run whose supervisor died reads
    `lost`, which is what gpuctl turns into the run's end."""
    root, files, _hash = code_bundle(tmp_path / "cache")
    shipped = {f.rel for f in files}
    assert {"agent/agent.py", "agent/cloud.py", "trainer/protocol.py"} <= shipped
    # a user's command: the agent's modules for it, and the helper its script imports
    assert {"agent/job.py", "agent/progress.py", "agent/fetch.py"} <= shipped
    assert "agent/helper/gpuctl_report.py" in shipped
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / protocol.AGENT_STATUS_FILE).write_text(
        json.dumps({"state": "running", "agent_pid": dead.pid, "trainer_pid": dead.pid})
    )
    (run_dir / protocol.STATUS_FILE).write_text(json.dumps({"phase": "training", "epoch": 2}))
    # -E: no PYTHONPATH; -s, -S: no site-packages at all, so no gpuctl either
    argv = [sys.executable, "-E", "-s", "-S", str(root / "agent" / "agent.py"), "status"]
    proc = subprocess.run(
        [*argv, "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status["state"] == "lost"
    assert status["trainer"] == {"phase": "training", "epoch": 2}
    assert status["trainer_alive"] is False


def test_the_report_helper_spells_the_protocols_words() -> None:
    """gpuctl_report.py runs inside the user's script, where protocol.py is not importable:
    its copies of the report words must be the protocol's, or no report is ever read."""
    helper_path = REPO / "gpuctl" / "agent" / "helper" / "gpuctl_report.py"
    spec = importlib.util.spec_from_file_location("gpuctl_report_under_test", helper_path)
    assert spec is not None and spec.loader is not None
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    assert helper.REPORT_KEY == protocol.REPORT_KEY
    assert helper.REPORTS_ENV == protocol.REPORTS_ENV
    kinds = (helper.START, helper.STEP, helper.EPOCH, helper.CHECKPOINT)
    assert set(kinds) == {k.value for k in protocol.ReportKind}
    tree = ast.parse(helper_path.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
