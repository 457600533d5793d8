"""Headless commands (click). `gpuctl` with no command opens the control center.

Every command takes --json (one JSON object per line for streams). Exit codes:
0 ok, 1 run failed, 2 usage/config, 3 provider/remote, 4 budget/guard stop,
130 interrupted (the run keeps going on its machine). Errors are one line plus a hint,
never a traceback. Heavy modules (boto3, pydo, torch, textual) load only on the paths
that need them, so `gpuctl --help` and a cached `gpuctl ls` start fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .console import echo, fail, guarded
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, ConfigError, GpuctlError, NotFoundError
from .events import Event, Failed

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# -- output ----------------------------------------------------------------------------------


class Out:
    """Where events and tables go: text for people, JSON lines for scripts."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def event(self, ev: Event, *, err: bool = False) -> None:
        if self.json:
            echo(json.dumps(ev.to_dict(), default=str))
            return
        text = ev.text()
        if not text:
            return
        echo(text, err=err or isinstance(ev, Failed))

    def obj(self, data: Any) -> None:
        echo(json.dumps(data, default=str))

    def line(self, text: str = "", *, err: bool = False) -> None:
        if not self.json:
            echo(text, err=err)


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def money(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"${value:.{digits}f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _interrupted(_kwargs: dict[str, Any]) -> None:
    echo(
        "\ninterrupted: started runs keep going on their machines (`gpuctl ls`, "
        "`gpuctl logs -f`); a launch cut short was undone",
        err=True,
    )
    sys.exit(EXIT_INTERRUPTED)


handled = guarded(_interrupted)


def engine():  # -> lifecycle.Engine
    from .lifecycle import Engine

    _setup_logging()
    return Engine()


def _setup_logging() -> None:
    """Internal details go to GPUCTL_HOME/gpuctl.log, never to the terminal."""
    from .settings import PRIVATE_UMASK, home_dirs, private_dir, private_file

    root = logging.getLogger("gpuctl")
    if root.handlers:
        return
    # Everything gpuctl (and a local run's agent and trainer) writes is the user's only.
    os.umask(PRIVATE_UMASK)
    data_dir, _ = home_dirs()
    try:
        private_dir(data_dir)
        handler: logging.Handler = logging.FileHandler(private_file(data_dir / "gpuctl.log"))
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def drive(out: Out, events: Any, *, err: bool = False) -> tuple[Any, Failed | None]:
    """Print a lifecycle generator's events; return (its return value, last failure)."""
    failure = None
    try:
        while True:
            try:
                ev = next(events)
            except StopIteration as stop:
                return stop.value, failure
            if isinstance(ev, Failed):
                failure = ev
            out.event(ev, err=err)
    except BaseException:
        # Ctrl-C while printing: close the generator now, so a launch cut short is undone
        # (its machine terminated) instead of waiting for a garbage collection that may
        # never come before the process exits.
        events.close()
        raise


# -- common launch options ---------------------------------------------------------------------


def launch_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("-p", "--provider", help="Provider profile: local, ssh, aws, amd, ..."),
        click.option(
            "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Trainer override."
        ),
        click.option("--base", help="Preset a `custom` run starts from (default validate)."),
        click.option("--budget", type=float, help="Run budget in USD: stop at 100%, warn at 80%."),
        click.option("--max-hours", type=float, help="Hard limit enforced on the machine."),
        click.option("--idle-minutes", type=float, help="Shut down after this long idle."),
        click.option("-w", "--workdir", help="Your project directory to upload."),
        click.option("--exclude", multiple=True, help="Pattern to leave out of the upload."),
        click.option(
            "--include-secret", multiple=True, help="Upload a secret-looking file anyway."
        ),
        click.option("--type", "instance_type", help="Instance type / size slug."),
        click.option("--region", help="Region to launch in."),
        click.option("--regions", help="Comma-separated regions to try in order."),
        click.option("--spot", is_flag=True, help="Spot / preemptible capacity (managed)."),
        click.option("--max-price", type=float, help="Spot max $/h (default on-demand)."),
        click.option(
            "--fallback",
            type=click.Choice(["none", "on-demand"]),
            default="none",
            show_default=True,
            help="What to do when spot capacity is gone everywhere.",
        ),
        click.option("--image", help="Machine image id/slug override."),
        click.option("--disk", "disk_gb", type=int, help="Root disk size in GB."),
        click.option("--host", help="ssh provider: user@host[:port]."),
        click.option("--identity", help="ssh provider: private key file."),
        click.option("--instance", "instance_id", help="Use this existing instance."),
        click.option("--managed/--unmanaged", default=None, help="Recover from interruptions."),
        click.option(
            "--teardown",
            type=click.Choice(["terminate", "stop", "keep"]),
            help="What `run` does with the instance at the end.",
        ),
        click.option("--require-gpu", is_flag=True, help="Refuse a machine without a GPU."),
        click.option("--key-name", help="AWS: use this existing key pair."),
        click.option("--ssh-cidr", help="Allow SSH from this CIDR (default your IP/32)."),
        click.option(
            "--allow-open-ssh", is_flag=True, help="Accept an --ssh-cidr wider than a /24."
        ),
        click.option("--aws-profile", help="AWS: named profile from ~/.aws/config."),
        click.option("--checkpoint-bucket", help="S3 bucket for spot checkpoints."),
        click.option("--force", is_flag=True, help="Launch even if the estimate exceeds budget."),
        click.option("--json", "as_json", is_flag=True, help="One JSON object per line."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


LAUNCH_KEYS = (
    "provider",
    "overrides",
    "base",
    "budget",
    "max_hours",
    "idle_minutes",
    "workdir",
    "exclude",
    "include_secret",
    "instance_type",
    "region",
    "regions",
    "spot",
    "max_price",
    "fallback",
    "image",
    "disk_gb",
    "host",
    "identity",
    "instance_id",
    "managed",
    "teardown",
    "require_gpu",
    "key_name",
    "ssh_cidr",
    "allow_open_ssh",
    "aws_profile",
    "checkpoint_bucket",
    "force",
)


def build_spec(eng: Any, preset: str, opts: dict[str, Any]):  # -> LaunchSpec
    options = {
        k: opts[k]
        for k in ("key_name", "ssh_cidr", "allow_open_ssh", "aws_profile", "checkpoint_bucket")
        if opts.get(k)
    }
    if opts.get("force"):
        options["force"] = True
    regions = [r.strip() for r in (opts.get("regions") or "").split(",") if r.strip()]
    return eng.resolve(
        preset,
        provider=opts.get("provider"),
        overrides=opts.get("overrides") or (),
        base=opts.get("base"),
        budget=opts.get("budget"),
        max_hours=opts.get("max_hours"),
        idle_minutes=opts.get("idle_minutes"),
        workdir=opts.get("workdir"),
        excludes=opts.get("exclude") or (),
        include_secrets=opts.get("include_secret") or (),
        instance_type=opts.get("instance_type"),
        region=opts.get("region"),
        regions=regions,
        spot=bool(opts.get("spot")),
        max_price=opts.get("max_price"),
        fallback=opts.get("fallback") or "none",
        image=opts.get("image"),
        disk_gb=opts.get("disk_gb"),
        host=opts.get("host"),
        identity=opts.get("identity"),
        instance_id=opts.get("instance_id"),
        managed=opts.get("managed"),
        teardown=opts.get("teardown"),
        require_gpu=bool(opts.get("require_gpu")),
        options=options,
    )


# -- commands ------------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT, invoke_without_command=True)
@click.version_option(__version__, prog_name="gpuctl")
@click.pass_context
def main(ctx: click.Context) -> None:
    """gpuctl: every GPU you pay for, every run, one cost meter.

    With no command, opens the control center (a terminal UI). The commands below are
    the same engine, headless, for scripts.
    """
    if ctx.invoked_subcommand is None:
        open_tui()


def open_tui() -> None:
    try:
        from gpuctl.tui.app import run_app
    except ImportError as exc:
        if exc.name and exc.name.startswith("gpuctl.tui"):
            click.echo(
                "The control center is not part of this build yet; use the commands in "
                "`gpuctl --help`.",
                err=True,
            )
            sys.exit(EXIT_USAGE)
        raise
    try:
        run_app()
    except GpuctlError as exc:
        fail(exc, False)


@main.command()
@click.option("--keys", is_flag=True, help="List every trainer key `--set` accepts.")
@click.option("--json", "as_json", is_flag=True)
@handled
def presets(keys: bool, as_json: bool) -> None:
    """Training presets: what each is for, epochs, image size, limits."""
    from gpuctl.presets import loader

    out = Out(as_json)
    if keys:
        fields = loader.keys()
        if as_json:
            out.obj(
                {
                    k: {"type": f.type, "default": f.default, "help": f.help}
                    for k, f in fields.items()
                }
            )
            return
        rows = [[k, f.type, repr(f.default), f.help] for k, f in fields.items()]
        click.echo(table(rows, ["KEY", "TYPE", "DEFAULT", "MEANING"]))
        return
    from .settings import load

    found = loader.load_all(load().presets_dir)
    if as_json:
        for p in found.values():
            out.obj(
                {
                    "name": p.name,
                    "description": p.description,
                    "purpose": p.purpose,
                    "train": dict(p.train),
                    "max_hours": p.max_hours,
                    "idle_minutes": p.idle_minutes,
                    "disk_gb": p.disk_gb,
                    "source": p.source,
                }
            )
        return
    rows = [
        [
            p.name,
            str(p.epochs),
            str(p.image_size),
            str(p.train.get("train_samples", "")),
            str(p.train.get("batch_size", "")),
            f"{p.max_hours:g}h",
            p.description,
        ]
        for p in found.values()
    ]
    rows.append(["custom", "", "", "", "", "", "any preset + --set key=value (--base PRESET)"])
    click.echo(table(rows, ["PRESET", "EPOCHS", "IMAGE", "SAMPLES", "BATCH", "MAX", "FOR"]))


@main.command()
@click.option("-p", "--provider", help="Provider profile (default: all configured).")
@click.option("--gpu", help="Filter by GPU model, e.g. A10G, H100, MI300X.")
@click.option("--region", help="Only this region.")
@click.option("--json", "as_json", is_flag=True)
@handled
def offers(provider: str | None, gpu: str | None, region: str | None, as_json: bool) -> None:
    """Machine types you can rent, cheapest first, with spot savings."""
    eng = engine()
    names = [provider] if provider else list(eng.settings.providers)
    found = []
    for name in names:
        found.extend(eng.provider(name).offers(gpu=gpu, region=region))
    found.sort(key=lambda o: (o.price_per_hour is None, o.price_per_hour or 0.0))
    out = Out(as_json)
    if as_json:
        for o in found:
            out.obj({**o.to_dict(), "spot_saving": o.spot_saving})
        return
    rows = []
    for o in found:
        saving = "" if o.spot_saving is None else f"-{o.spot_saving:.0%}"
        rows.append(
            [
                o.provider,
                o.instance_type,
                o.gpu_label,
                f"{o.gpu_memory_gb:g}" if o.gpu_memory_gb else "-",
                str(o.vcpus),
                f"{o.memory_gb:g}",
                money(o.price_per_hour, 3),
                money(o.spot_price_per_hour, 3),
                saving,
                o.region or ",".join(o.regions[:3]),
            ]
        )
    headers = [
        "PROVIDER",
        "TYPE",
        "GPU",
        "GPU GB",
        "VCPU",
        "RAM GB",
        "$/H",
        "SPOT",
        "SAVE",
        "REGION",
    ]
    click.echo(table(rows, headers) if rows else "no offers match")


@main.command()
@click.argument("preset")
@launch_options
@handled
def launch(preset: str, as_json: bool, **opts: Any) -> None:
    """Launch PRESET detached: prints the run id; the run goes on without gpuctl."""
    eng = engine()
    spec = build_spec(eng, preset, opts)
    out = Out(as_json)
    _started, failure = drive(out, eng.launch(spec), err=True)
    if failure:
        sys.exit(failure.exit_code)
    if as_json:
        out.obj({"event": "launched", "run_id": spec.run_id})
    else:
        click.echo(spec.run_id)


@main.command()
@click.argument("preset")
@launch_options
@handled
def run(preset: str, as_json: bool, **opts: Any) -> None:
    """Launch PRESET and follow it to the end: results downloaded, instance torn down."""
    from .lifecycle import exit_code_for

    eng = engine()
    spec = build_spec(eng, preset, opts)
    out = Out(as_json)
    status, failure = drive(out, eng.run(spec))
    if failure:
        sys.exit(failure.exit_code)
    sys.exit(exit_code_for(status))


@main.command(name="ls")
@click.option(
    "--all", "include_unmanaged", is_flag=True, help="Also instances gpuctl did not create."
)
@click.option("--refresh", is_flag=True, help="Ask the providers now (default: cache if fresh).")
@click.option("--cached", is_flag=True, help="Never ask the providers; print the cache.")
@click.option("--runs", "show_runs", is_flag=True, help="List runs instead of instances.")
@click.option("--json", "as_json", is_flag=True)
@handled
def ls(
    include_unmanaged: bool, refresh: bool, cached: bool, show_runs: bool, as_json: bool
) -> None:
    """Instances you pay for across providers (from the cache first, refreshed if stale)."""
    from .models import InstanceState

    eng = engine()
    out = Out(as_json)
    if show_runs:
        return _print_runs(eng, out)
    names = list(eng.settings.providers)
    stale = [
        n
        for n in names
        if (age := eng.store.listing_age(n)) is None or age > eng.settings.refresh_seconds
    ]
    if (refresh or stale or include_unmanaged) and not cached:
        eng.refresh(
            names if refresh or include_unmanaged else stale, include_unmanaged=include_unmanaged
        )
    else:
        from .reconcile import without_listing

        without_listing(eng)  # a launch whose gpuctl was killed shows its orphan even from cache
    from .reconcile import is_orphan

    runs = {r.id: r for r in eng.store.list_runs()}
    now = time.time()
    instances = [
        i
        for i in eng.store.instances()
        if i.provider in names
        and i.state != InstanceState.TERMINATED
        and (include_unmanaged or i.managed)
    ]
    statuses = eng.store.provider_statuses()
    if as_json:
        for inst in instances:
            run = runs.get(inst.run_id or "")
            out.obj(
                {
                    **inst.to_dict(),
                    "uptime_seconds": inst.uptime(now),
                    "run_status": run.status.value if run else None,
                    "orphan": is_orphan(inst, run),
                }
            )
        for name in names:
            ok, message, _checked = statuses.get(name, (True, "", 0.0))
            if not ok:
                out.obj({"event": "provider_error", "provider": name, "error": message})
        return
    rows = []
    for inst in instances:
        run = runs.get(inst.run_id or "")
        state = inst.state.value
        if is_orphan(inst, run):
            state += " (orphan)"
        rows.append(
            [
                inst.provider,
                inst.region,
                inst.id,
                inst.run_id or "-",
                inst.instance_type,
                (f"{inst.gpu_count}x {inst.gpu_name}" if inst.gpu_count else "-"),
                state,
                duration(inst.uptime(now)),
                money(inst.price_per_hour, 3),
                run.status.value if run else "-",
            ]
        )
    if rows:
        click.echo(
            table(
                rows,
                [
                    "PROVIDER",
                    "REGION",
                    "INSTANCE",
                    "RUN",
                    "TYPE",
                    "GPU",
                    "STATE",
                    "UP",
                    "$/H",
                    "RUN STATE",
                ],
            )
        )
    else:
        click.echo("no instances (gpuctl run validate starts one on this machine)")
    for name in names:
        ok, message, _ = statuses.get(name, (True, "", 0.0))
        if not ok:
            click.echo(f"{name}: {message}", err=True)


def _print_runs(eng: Any, out: Out) -> None:
    runs = eng.store.list_runs()
    if out.json:
        for r in runs:
            out.obj(r.to_dict())
        return
    rows = [
        [
            r.id,
            r.provider,
            r.status.value,
            f"{r.epoch}/{r.epochs}",
            "-" if r.metric is None else f"{r.metric:.3f}",
            duration(r.eta_seconds),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)),
        ]
        for r in runs
    ]
    click.echo(
        table(rows, ["RUN", "PROVIDER", "STATUS", "EPOCH", "METRIC", "ETA", "CREATED"])
        if rows
        else "no runs yet"
    )


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@handled
def status(run_id: str, as_json: bool) -> None:
    """One run: status, progress, cost, where it runs, watchdog limits."""
    from . import cost
    from .rundir import RunDir

    eng = engine()
    run = eng.store.get_run(run_id)
    spent, burn = cost.spent(eng.store, eng.settings, run_id=run.id)
    agent: dict[str, Any] = {}
    if run.status.active and run.remote_dir:
        try:
            _, host = eng.locate(run)
            agent = RunDir(host, run.id, run.remote_dir).status()
        except GpuctlError as exc:
            agent = {"error": exc.one_line()}
    line = cost.run_line(eng.store, eng.settings, run.id)
    estimate = next(iter(eng.store.events(run.id, kinds=["estimate"])[-1:]), None)
    info = {
        **run.to_dict(),
        "spent": round(spent, 4),
        "burn_per_hour": burn,
        "projected_total": line.projected_total,
        "estimate": estimate,
        "agent": agent,
    }
    if as_json:
        Out(True).obj(info)
        return
    spec = run.launch_spec
    lines = [
        f"run       {run.id}  ({run.preset} on {run.provider})",
        f"status    {run.status.value}" + (f": {run.reason}" if run.reason else ""),
        f"progress  epoch {run.epoch}/{run.epochs}"
        + ("" if run.metric is None else f", metric {run.metric:.4f}")
        + ("" if run.eta_seconds is None else f", eta {duration(run.eta_seconds)}"),
        f"cost      {money(spent)} spent, {money(burn, 3)}/h now"
        + ("" if run.budget is None else f", budget {money(run.budget)}")
        + (
            f", ~{money(line.projected_total)} projected at the end"
            if run.status.active and line.projected_total is not None
            else ""
        ),
        "estimate  "
        + (
            f"~{estimate['hours']:.2f} h, ~{money(estimate.get('cost'))} before launch "
            f"({'from past runs' if estimate.get('basis') == 'history' else 'rough, table'})"
            if estimate
            else "-"
        ),
        f"instance  {run.instance_id or '-'}",
        f"machine   {run.remote_dir or '-'}",
        f"results   {run.results_dir or '-'}",
        f"watchdog  max {spec.max_hours:g} h, idle stop {spec.idle_minutes:g} min"
        if spec.max_hours and spec.idle_minutes is not None
        else "watchdog  -",
    ]
    if agent.get("error"):
        lines.append(f"agent     unreachable: {agent['error']}")
    elif agent:
        lines.append(
            f"agent     {agent.get('state', '?')}, trainer "
            + ("alive" if agent.get("trainer_alive") else "not running")
            + f", shutdown action {agent.get('shutdown_action', 'none')}"
        )
        if agent.get("spot"):
            notice = agent["spot"]
            lines.append(f"spot      notice: {notice.get('action')} at {notice.get('time')}")
        elif agent.get("rebalance"):
            lines.append("spot      rebalance recommendation: elevated risk of interruption")
    if run.attempt > 1:
        lines.append(f"attempts  {run.attempt} (recovered {run.attempt - 1} time(s))")
    click.echo("\n".join(lines))


@main.command()
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines of history first.")
@click.option("--json", "as_json", is_flag=True)
@handled
def logs(run_id: str, follow: bool, lines: int, as_json: bool) -> None:
    """The training log of RUN (with -f, follow it; Ctrl-C leaves the run going)."""
    from .rundir import RunDir
    from .tail import last_lines

    eng = engine()
    run = eng.store.get_run(run_id)
    out = Out(as_json)
    if not run.remote_dir:
        raise NotFoundError(
            f"run {run.id} never started, so it has no log ({run.status.value}"
            + (f": {run.reason}" if run.reason else "")
            + ")",
            hint=f"`gpuctl status {run.id}` says why",
        )
    if follow:
        _, failure = drive(out, eng.follow(run.id, tail_lines=lines))
        if failure:
            sys.exit(failure.exit_code)
        return
    try:
        _, host = eng.locate(run)
        text_lines, _ = last_lines(host, RunDir(host, run.id, run.remote_dir).p("train.log"), lines)
    except NotFoundError:
        if not run.results_dir:
            raise
        path = Path(run.results_dir) / "train.log"
        text_lines = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
    if as_json:
        out.obj({"event": "log", "run_id": run.id, "lines": text_lines})
    else:
        click.echo("\n".join(text_lines))


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@handled
def stop(run_id: str, as_json: bool) -> None:
    """Stop training gracefully: the trainer checkpoints (last.pt) and exits."""
    eng = engine()
    drive(Out(as_json), eng.stop(run_id))


@main.command()
@click.argument("target", required=False)
@click.option("--orphans", is_flag=True, help="Remove gpuctl-tagged instances with no live run.")
@click.option("--yes", is_flag=True, help="Do not ask (gpuctl-created instances only).")
@click.option("--json", "as_json", is_flag=True)
@handled
def down(target: str | None, orphans: bool, yes: bool, as_json: bool) -> None:
    """Terminate RUN's instance (results stay in the results dir); or --orphans."""
    eng = engine()
    out = Out(as_json)
    if orphans:
        return _down_orphans(eng, out, yes)
    if not target:
        raise ConfigError("say which run to take down", hint="gpuctl down RUN, or --orphans")
    run = eng.store.find_run(target)
    if run is None:
        inst = _find_instance(eng, target)
        if inst is None:
            raise NotFoundError(f"no run or instance '{target}'", hint="`gpuctl ls` lists them")
        _confirm_instance(inst, yes)
        drive(out, eng.teardown(inst.run_id, inst, "terminate"))
        return
    drive(out, eng.down(run.id))


def _find_instance(eng: Any, target: str):
    for inst in eng.store.instances():
        if target in (inst.id, inst.name):
            return inst
    return None


def _confirm_instance(inst: Any, yes: bool) -> None:
    """Money safety: something gpuctl did not create needs its name typed back."""
    if inst.managed and yes:
        return
    if not sys.stdin.isatty():
        raise (
            ConfigError(
                f"{inst.id} was not created by gpuctl; refusing to terminate it without a typed "
                "confirmation",
                hint="run this in a terminal and type the instance name when asked",
            )
            if not inst.managed
            else ConfigError(f"terminating {inst.id} needs confirmation", hint="add --yes")
        )
    word = inst.name or inst.id
    prompt = (
        f"{inst.id} ({inst.instance_type}, {inst.provider}) was NOT created by gpuctl. "
        f"Type its name '{word}' to terminate it"
        if not inst.managed
        else f"Terminate {inst.id}? Type '{word}'"
    )
    answer = click.prompt(prompt, default="", show_default=False)
    if answer.strip() != word:
        raise ConfigError("not confirmed; nothing was terminated")


def _down_orphans(eng: Any, out: Out, yes: bool) -> None:
    from .reconcile import is_orphan

    eng.refresh()
    runs = {r.id: r for r in eng.store.list_runs()}
    orphans = [i for i in eng.store.instances() if is_orphan(i, runs.get(i.run_id or ""))]
    if not orphans:
        out.line("no orphaned instances: everything gpuctl created belongs to a live run")
        if out.json:
            out.obj({"event": "orphans", "count": 0})
        return
    for inst in orphans:
        out.line(
            f"orphan: {inst.provider} {inst.id} run={inst.run_id} "
            f"{inst.instance_type} {inst.state.value}"
        )
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"{len(orphans)} orphaned instance(s) found; nothing terminated",
                hint="re-run with --yes to terminate them",
            )
        if not click.confirm(f"Terminate these {len(orphans)} instance(s)?", default=False):
            raise ConfigError("not confirmed; nothing was terminated")
    for inst in orphans:
        drive(out, eng.teardown(inst.run_id, inst, "terminate"))


@main.command()
@click.argument("run_id")
@click.option(
    "--to", "to", type=click.Path(file_okay=False), help="Directory (default results dir)."
)
@click.option("--json", "as_json", is_flag=True)
@handled
def download(run_id: str, to: str | None, as_json: bool) -> None:
    """Download RUN's results: best.pt, last.pt, history.json, logs."""
    eng = engine()
    drive(Out(as_json), eng.download(run_id, Path(to) if to else None))


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@handled
def resume(run_id: str, as_json: bool) -> None:
    """Continue RUN from its last checkpoint and follow it to the end."""
    from .lifecycle import exit_code_for

    eng = engine()
    status_, failure = drive(Out(as_json), eng.resume(run_id))
    if failure:
        sys.exit(failure.exit_code)
    sys.exit(exit_code_for(status_))


@main.command()
@click.argument("run_id")
@handled
def ssh(run_id: str) -> None:
    """Open a shell on RUN's machine, in its run directory."""
    eng = engine()
    run = eng.store.get_run(run_id)
    _, host = eng.locate(run)
    sys.exit(host.shell(run.remote_dir or host.base_dir()))


from .cost_cli import cost_group  # noqa: E402 - registered last: it imports nothing from here

main.add_command(cost_group)
