"""A run's directory on a machine, and what gpuctl does in it, over any Host.

Layout on the machine (base = Host.base_dir(), `~/gpuctl` over SSH):

    base/code/<hash>/trainer/     the bundled trainer, shared by runs with the same code
    base/code/<hash>/agent/agent.py   (imports ../trainer/protocol.py: the shared names)
    base/runs/<run>/run.json      resolved trainer config
    base/runs/<run>/agent.json    watchdog limits and shutdown action
    base/runs/<run>/work/         the user's work directory (if any)
    base/runs/<run>/train.log, events.jsonl, status.json, history.json, last.pt, best.pt
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import RemoteError
from .events import Event, Notice, Synced
from .files import FileEntry, walk_tree
from .host import Host, SyncStats
from .private import private_dir
from .trainer.protocol import (
    AGENT_CONFIG_FILE,
    AGENT_LOG_FILE,
    AGENT_STATUS_FILE,
    BEST_CHECKPOINT_FILE,
    EVENTS_FILE,
    HISTORY_FILE,
    LAST_CHECKPOINT_FILE,
    RUN_CONFIG_FILE,
    STATUS_FILE,
    TRAIN_LOG_FILE,
    TRAINER_OUT_FILE,
    StopReason,
)

log = logging.getLogger(__name__)

# What `download` brings home by default: small, and everything needed to resume or report.
RESULT_FILES: tuple[str, ...] = (
    BEST_CHECKPOINT_FILE,
    LAST_CHECKPOINT_FILE,
    HISTORY_FILE,
    TRAIN_LOG_FILE,
    EVENTS_FILE,
    STATUS_FILE,
    RUN_CONFIG_FILE,
    AGENT_STATUS_FILE,
    AGENT_LOG_FILE,
    TRAINER_OUT_FILE,
)


def _package_dir(module: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RemoteError(f"gpuctl installation is incomplete: {module} not found")
    return Path(next(iter(spec.submodule_search_locations)))


def code_bundle(cache_dir: Path) -> tuple[Path, list[FileEntry], str]:
    """Stage trainer/ and agent/ in one local tree; returns (root, files, content hash).

    The hash names the remote code dir, so runs with the same gpuctl version share it
    and an upgrade never mixes old and new files.
    """
    sources = {
        "trainer": _package_dir("gpuctl.trainer"),
        "agent": _package_dir("gpuctl.agent"),
    }
    entries: list[tuple[str, Path]] = []
    for prefix, src in sources.items():
        for entry in walk_tree(src, excludes=("*.pyc",)):
            entries.append((f"{prefix}/{entry.rel}", src / entry.rel))
    digest = hashlib.blake2b(digest_size=8)
    for rel, path in sorted(entries):
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    code_hash = digest.hexdigest()
    root = cache_dir / "code" / code_hash
    if not (root / ".complete").exists():
        # A staging dir of this process's own: two first launches at once each build one,
        # and the first to finish wins (a shared one was wiped under the other's feet).
        private_dir(root.parent)
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
        try:
            for rel, path in entries:
                private_dir((tmp / rel).parent)
                shutil.copy2(path, tmp / rel)
                os.chmod(tmp / rel, 0o600)  # the cache is in the data dir: the user's only
            (tmp / ".complete").write_text(code_hash)
            if root.exists() and not (root / ".complete").exists():
                shutil.rmtree(root, ignore_errors=True)  # a half one from before
            try:
                tmp.rename(root)
            except OSError:
                if not (root / ".complete").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    files = [e for e in walk_tree(root) if e.rel != ".complete"]
    return root, files, code_hash


class RunDir:
    """Operations on one run's directory; every remote round trip is named here."""

    def __init__(self, host: Host, run_id: str, path: str | None = None) -> None:
        self.host = host
        self.run_id = run_id
        self.path = path or f"{host.base_dir()}/runs/{run_id}"

    def p(self, name: str) -> str:
        return f"{self.path}/{name}"

    @property
    def work(self) -> str:
        return self.p("work")

    # -- sync ------------------------------------------------------------------------------

    def upload_code(self, cache_dir: Path) -> Generator[Event, None, str]:
        root, files, code_hash = code_bundle(cache_dir)
        code_dir = f"{self.host.base_dir()}/code/{code_hash}"
        marker = f"{code_dir}/.complete"
        if self.host.file_size(marker) is None:
            yield from self.host.put_tree(self.run_id, root, files, code_dir)
            self.host.write_bytes(marker, code_hash.encode())
        return code_dir

    def upload_workdir(
        self, workdir: Path, excludes: Sequence[str] = (), include_secrets: Sequence[str] = ()
    ) -> Generator[Event, None, SyncStats]:
        refused: list[str] = []
        files = walk_tree(workdir, excludes, include_secrets, refused)
        if refused:
            shown = ", ".join(refused[:5]) + (
                f" and {len(refused) - 5} more" if len(refused) > 5 else ""
            )
            yield Notice(self.run_id, f"not uploaded: symlink {shown}", "warning")
        stats = yield from self.host.put_tree(self.run_id, workdir, files, self.work)
        yield Synced(
            self.run_id, stats.files, stats.bytes, stats.seconds, stats.skipped, stats.method
        )
        return stats

    def download(
        self, local_dir: Path, names: Sequence[str] | None = RESULT_FILES
    ) -> Generator[Event, None, SyncStats]:
        private_dir(local_dir)
        stats = yield from self.host.get_tree(self.run_id, self.path, local_dir, names)
        return stats

    def download_outputs(
        self, local_dir: Path, patterns: Sequence[str]
    ) -> Generator[Event, None, SyncStats]:
        """The project's declared outputs (paths or globs inside its copy), kept relative."""
        names = self.outputs(patterns)
        return (yield from self.host.get_tree(self.run_id, self.work, local_dir, names))

    def outputs(self, patterns: Sequence[str]) -> list[str]:
        """The files the patterns match in the project's copy now, directories walked (globs
        expanded by sh; the patterns were checked to hold no shell syntax when gpuctl.toml
        was read)."""
        if not patterns:
            return []
        script = (
            f"cd {shlex.quote(self.work)} 2>/dev/null || exit 0; for p in "
            + " ".join(patterns)
            # A directory comes as the files in it (a copy of the name alone fails); NUL
            # ends each name, so one with a newline in it is not lost.
            + '; do if [ -d "$p" ]; then find "$p" -type f -print0; '
            + 'elif [ -e "$p" ]; then printf "%s\\0" "$p"; fi; done; exit 0'
        )
        result = self.host.exec(script, timeout=60)
        result.check("list the outputs")
        names = result.stdout.split("\0")
        return [n for n in names if n and ".." not in PurePosixPath(n).parts]

    # -- files ---------------------------------------------------------------------------

    def write_json(self, name: str, data: Mapping[str, Any], mode: int = 0o644) -> None:
        self.host.write_bytes(
            self.p(name), json.dumps(dict(data), indent=1, sort_keys=True).encode(), mode
        )

    def read_json(self, name: str) -> dict[str, Any]:
        data = self.host.read_bytes(self.p(name))
        if not data:
            return {}
        try:
            value = json.loads(data)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def exists(self) -> bool:
        return self.host.file_size(self.p(RUN_CONFIG_FILE)) is not None

    # -- agent -----------------------------------------------------------------------------

    def _agent(
        self,
        code_dir: str,
        python: str,
        command: str,
        *extra: str,
        env: Mapping[str, str] | None = None,
        wait: float = 180.0,
    ) -> dict[str, Any]:
        agent = f"{code_dir}/agent/agent.py"
        argv = [python, agent, command, "--run-dir", self.path, *extra]
        result = self.host.exec(shlex.join(argv), timeout=max(wait, 180.0), env=env)
        result.check(f"agent {command}")
        for line in reversed([ln for ln in result.stdout.splitlines() if ln.startswith("{")]):
            try:
                answer = json.loads(line)
            except (ValueError, RecursionError):
                log.warning("agent %s: skipped a malformed answer line %r", command, line[:200])
                continue
            if isinstance(answer, dict):
                return answer
        raise RemoteError(
            f"agent {command} gave no readable answer", hint="see agent.log in the run dir"
        )

    def start(
        self,
        *,
        code_dir: str,
        python: str,
        train: Mapping[str, Any],
        agent: Mapping[str, Any],
        resume: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Write the configs and start the supervisor detached; returns its pids."""
        self.write_json(RUN_CONFIG_FILE, train)
        agent_cfg = {
            **agent,
            "python": python,
            "code_dir": code_dir,
            "resume": resume,
            "run_id": self.run_id,
        }
        self.write_json(AGENT_CONFIG_FILE, agent_cfg)
        answer = self._agent(code_dir, python, "start", env=env)  # secrets: env only
        if answer.get("error"):
            raise RemoteError(f"agent: {answer['error']}", hint="`gpuctl status` shows the run")
        return answer

    def stop(self, *, reason: str = StopReason.USER, timeout: float = 90.0) -> dict[str, Any]:
        cfg = self.read_json(AGENT_CONFIG_FILE)
        if not cfg:
            raise RemoteError(
                f"run {self.run_id} was never started on {self.host.label}",
                hint="nothing to stop",
            )
        grace = cfg.get("grace_seconds")
        if isinstance(grace, int | float):  # the script's own grace, and its second ask
            timeout = max(timeout, float(grace) + min(float(grace), 10.0) + 5.0)
        return self._agent(
            cfg["code_dir"],
            cfg["python"],
            "stop",
            "--reason",
            reason,
            "--timeout",
            str(timeout),
            wait=timeout + 60.0,
        )

    def status(self) -> dict[str, Any]:
        """Agent status (state, pids, exit code, reason) with the trainer's status.json."""
        cfg = self.read_json(AGENT_CONFIG_FILE)
        if not cfg:
            return {}
        return self._agent(cfg["code_dir"], cfg["python"], "status")
