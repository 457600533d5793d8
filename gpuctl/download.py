"""Bring a run's results home; once its machine is gone, the saved copy is the result."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import results
from .errors import ConfigError, NotFoundError, from_os_error
from .events import Downloaded, Notice
from .models import Run
from .rundir import RunDir

if TYPE_CHECKING:
    from .ports import EngineOps, Events


def download(engine: EngineOps, run_id: str, to: Path | None = None) -> Events:
    """Bring the run's results home; once its machine is gone, copy the saved ones."""
    run = engine.store.get_run(run_id)
    if not run.remote_dir:
        raise NotFoundError(
            f"run {run.id} never started, so it has no results",
            hint=f"`gpuctl status {run.id}` says why",
        )
    target = Path(to).expanduser() if to else engine.settings.results_dir / run.id
    try:
        _, host = engine.locate(run)
    except NotFoundError as gone:
        return (yield from copy_saved(engine, run, Path(to).expanduser() if to else None, gone))
    results.check_writable(target, "--to" if to else "results_dir")
    rd = RunDir(host, run.id, run.remote_dir)
    try:
        stats = yield from rd.download(target)
        outputs = run.launch_spec.job.get("outputs") or ()
        if outputs:  # the project's own results, beside gpuctl's files
            more = yield from rd.download_outputs(target, [str(p) for p in outputs])
            stats = stats.plus(more)
        files = sum(1 for p in target.rglob("*") if p.is_file())
    except OSError as exc:  # the results dir here: read-only, full, a file in the way
        raise from_os_error(exc, f"save results in {target}") from None
    engine.store.update_run(run.id, results_dir=str(target))
    engine.record_event(run.id, results.DOWNLOADED, {"to": str(target), "files": files})
    yield Downloaded(run.id, str(target), files, stats.bytes)
    return target


def copy_saved(engine: EngineOps, run: Run, to: Path | None, gone: NotFoundError) -> Events:
    """The machine is gone: the results saved here are the results (copied to `to`)."""
    import shutil

    saved = results.saved_dir(run)
    if saved is None:
        raise NotFoundError(
            f"run {run.id} has no live machine and no saved results "
            f"(instance {run.instance_id or 'never created'})",
            hint=gone.hint,
        )
    target = saved if to is None else to
    if target != saved:
        results.check_writable(target, "--to")
    names = results.saved_files(run)
    size = 0
    try:
        if target.resolve() != saved.resolve():
            target.mkdir(parents=True, exist_ok=True)
            for name in names:
                shutil.copy2(saved / name, target / name)
        size = sum((target / name).stat().st_size for name in names)
    except OSError as exc:
        raise ConfigError(
            f"cannot copy the results of {run.id} to {target} ({exc.strerror or exc})",
            hint="pass --to a writable directory with free space",
        ) from None
    if target.resolve() == saved.resolve():
        yield Notice(run.id, f"its machine is gone; the results were saved in {saved}")
    else:
        yield Notice(run.id, f"its machine is gone; copying the results saved in {saved}")
    yield Downloaded(run.id, str(target), len(names), size)
    return target
