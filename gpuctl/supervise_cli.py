"""`gpuctl supervise`: the supervisor in the foreground, its status, its service unit.

Registered on the main group by cli.py; imports nothing from cli.py.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import click

from .cli_engine import engine
from .console import Number, echo, guarded
from .errors import EXIT_USAGE, ConfigError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _interrupted(_kwargs: dict[str, Any]) -> None:
    sys.exit(130)


@click.command(name="supervise", context_settings=CONTEXT)
@click.option("--status", "show_status", is_flag=True, help="Whether it runs; what it did last.")
@click.option("--install", is_flag=True, help="Start it at login (systemd user unit / launchd).")
@click.option("--uninstall", is_flag=True, help="Remove what --install registered.")
@click.option("--yes", "-y", is_flag=True, help="Write or remove the service file unasked.")
@click.option(
    "--interval",
    type=Number(above=0),
    default=30.0,
    show_default=True,
    help="Seconds between passes over the runs.",
)
@click.option("--json", "as_json", is_flag=True)
@guarded(_interrupted)
def supervise(
    show_status: bool, install: bool, uninstall: bool, yes: bool, interval: float, as_json: bool
) -> None:
    """Follow, recover and end every run nobody else drives, with no terminal open.

    One per data directory; SIGTERM or Ctrl-C stops it (the runs go on)."""
    if sum((show_status, install, uninstall)) > 1:
        raise ConfigError("--status, --install and --uninstall go one at a time")
    if install or uninstall:
        return _service(install, yes)
    if show_status:
        return _status(as_json)
    _foreground(interval, as_json)


def _foreground(interval: float, as_json: bool) -> None:
    from . import supervisor_state
    from .supervisor import Supervisor

    eng = engine()

    def emit(ev: Any) -> None:
        if as_json:
            echo(json.dumps(ev.to_dict(), default=str))
            return
        text = ev.text()
        if text:
            prefix = "" if ev.kind == "supervisor" or not ev.run_id else f"[{ev.run_id}] "
            echo(prefix + text)

    sup = Supervisor(eng.settings, emit, interval=interval, engine=eng)
    # SIGTERM, SIGINT, SIGHUP: a clean stop between two steps, never an exception in the
    # middle of a store write or a recovery; the runs go on.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: sup.stop())
    try:
        sup.run()
    except supervisor_state.AlreadyRunning as exc:
        info = exc.info
        who = f" (pid {info.pid}, since {info.since_text()})" if info else ""
        raise ConfigError(
            f"a supervisor already runs for {eng.settings.home}{who}",
            hint="`gpuctl supervise --status` says what it does",
        ) from None
    sys.exit(0)


def _status(as_json: bool) -> None:
    from . import supervisor_state
    from .supervisor import last_actions

    eng = engine()
    info = supervisor_state.current(eng.settings.home)
    actions = last_actions(eng)
    if as_json:
        echo(
            json.dumps(
                {
                    "running": info is not None,
                    "supervisor": info.to_dict() if info else None,
                    "data_dir": str(eng.settings.home),
                    "last": actions,
                },
                default=str,
            )
        )
        return
    if info is None:
        echo(f"supervisor: not running (data dir {eng.settings.home})")
        echo("`gpuctl supervise` starts it; `gpuctl supervise --install` starts it at login")
    else:
        echo(f"{info.line()}, data dir {info.data_dir}")
    if actions:
        echo("last:")
        for row in actions:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["time"]))
            extra = {k: v for k, v in row.items() if k not in ("id", "run_id", "time", "kind")}
            action = extra.pop("action", "?")
            who = f" run {row['run_id']}" if row.get("run_id") else ""
            rest = ", ".join(f"{k} {v}" for k, v in extra.items() if v not in (None, "", []))
            echo(f"  {when}{who}: {action}" + (f" ({rest})" if rest else ""))


def _service(install: bool, yes: bool) -> None:
    from . import supervisor_service as svc

    service = svc.service_file()
    present = svc.manager_present(service)
    if install:
        echo(f"{service.path}:")
        echo(service.text.rstrip("\n"))
        if not yes and not click.confirm(f"write {service.path}?", default=True):
            echo("nothing written")
            sys.exit(EXIT_USAGE)
        svc.write(service)
        echo(f"wrote {service.path}")
        steps = service.load
    else:
        if not service.path.exists():
            echo(f"not installed ({service.path} does not exist)")
            return
        if not yes and not click.confirm(f"remove {service.path}?", default=True):
            echo("nothing removed")
            sys.exit(EXIT_USAGE)
        steps = service.unload[:1] if present else ()
        failed = svc.run_manager(steps) if present else []
        service.path.unlink(missing_ok=True)
        echo(f"removed {service.path}")
        steps = service.unload[1:]
        if not present:
            echo(f"{service.manager} not found: nothing else to undo")
            return
        for line in failed + svc.run_manager(steps):
            echo(f"warning: {line}", err=True)
        return
    if not present:
        commands = "; ".join(" ".join(s) for s in steps)
        echo(f"{service.manager} not found: load it yourself with `{commands}`")
        return
    failed = svc.run_manager(steps)
    for line in failed:
        echo(f"warning: {line}", err=True)
    if not failed:
        echo(f"{service.manager}: started; `gpuctl supervise --status` says what it does")
