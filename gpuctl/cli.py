"""Headless commands (click). `gpuctl` with no command opens the control center.

Every command takes --json (one JSON object per line for streams). Exit codes:
0 ok, 1 run failed, 2 usage/config, 3 provider/remote, 4 budget/guard stop,
130 interrupted (the run keeps going on its machine; 143 SIGTERM, 129 SIGHUP).
Errors are one line plus a hint, never a traceback. Heavy modules (boto3, pydo, torch,
textual) load only on the paths that need them, so `gpuctl --help` and a cached
`gpuctl ls` start fast.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .cli_engine import attached_here, cut_short, engine
from .console import Number, echo, fail, guarded
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_PROVIDER,
    EXIT_USAGE,
    ConfigError,
    GpuctlError,
    NotFoundError,
)
from .events import Event, Failed
from .format import BLANK, duration, money, percent, rate, rough_duration

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


def _interrupted(_kwargs: dict[str, Any]) -> None:
    """Say what Ctrl-C did: a launch cut short (and what was undone) only where one was."""
    cut = cut_short()
    if cut:
        text = "; ".join(f"run {run_id}: {reason}" for run_id, reason in cut)
        echo(f"\ninterrupted: {text}", err=True)
    elif attached_here():
        echo(
            "\ninterrupted: started runs keep going on their machines (`gpuctl ls`, "
            "`gpuctl logs -f RUN`)",
            err=True,
        )
    else:
        echo("\ninterrupted", err=True)
    sys.exit(EXIT_INTERRUPTED)


handled = guarded(_interrupted)


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
            "--command",
            "command",
            metavar="CMDLINE",
            help='Run your own command (e.g. "python train.py") instead of a preset.',
        ),
        click.option(
            "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Trainer override."
        ),
        click.option("--base", help="Preset a `custom` run starts from (default validate)."),
        click.option(
            "--budget", type=Number(above=0), help="Run budget in USD: stop at 100%, warn at 80%."
        ),
        click.option(
            "--max-hours", type=Number(above=0), help="Hard limit enforced on the machine."
        ),
        click.option(
            "--idle-minutes", type=Number(at_least=0), help="Shut down after this long idle."
        ),
        click.option(
            "--stall-minutes",
            type=Number(at_least=0),
            help="Stop a trainer that makes no progress this long (default 20, 0 = off).",
        ),
        click.option("-w", "--workdir", help="Your project directory to upload."),
        click.option("--exclude", multiple=True, help="Pattern to leave out of the upload."),
        click.option(
            "--include-secret", multiple=True, help="Upload a secret-looking file anyway."
        ),
        click.option("--type", "instance_type", help="Instance type / size slug."),
        click.option("--region", help="Region to launch in."),
        click.option("--regions", help="Comma-separated regions to try in order."),
        click.option("--spot", is_flag=True, help="Spot / preemptible capacity (managed)."),
        click.option("--max-price", type=Number(above=0), help="Spot max $/h (default on-demand)."),
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
    "command",
    "overrides",
    "base",
    "budget",
    "max_hours",
    "idle_minutes",
    "stall_minutes",
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


def build_spec(eng: Any, preset: str | None, opts: dict[str, Any]):  # -> LaunchSpec
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
        stall_minutes=opts.get("stall_minutes"),
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
        command=opts.get("command"),
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
        from .console import log

        log.info("control center: %s", exc.one_line(), exc_info=True)
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
    from .project import discover
    from .settings import load

    found = loader.load_all(load().presets_dir)
    proj = discover()
    modes = list(proj.modes.values()) if proj else []
    if as_json:
        for m in modes:
            out.obj(
                {
                    "name": m.name,
                    "kind": "mode",
                    "project": proj.name if proj else None,
                    "description": m.description,
                    "command": m.command,
                    "preset": m.preset,
                    "epochs": m.epochs,
                    "launch": dict(m.launch),
                    "source": f"{proj.file if proj else ''}:{m.line}",
                }
            )
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
    if proj is not None:  # the project's own modes first: `gpuctl run NAME` picks them
        click.echo(f"modes of {proj.name} ({proj.file}):")
        mode_rows = [
            [
                m.name,
                str(m.epochs or ""),
                f"{m.launch['max_hours']:g}h" if "max_hours" in m.launch else "",
                m.description or "",
                m.command or f"bundled trainer: {m.preset}",
            ]
            for m in modes
        ]
        click.echo(table(mode_rows, ["MODE", "EPOCHS", "MAX", "FOR", "RUNS"]))
        shadowed = [m.name for m in modes if m.name in found]
        if shadowed:
            click.echo(
                f"(here {', '.join(shadowed)} run the project's mode, not the bundled preset)"
            )
        click.echo("\nbundled presets:")
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
    problems: list[tuple[str, GpuctlError]] = []
    for name in names:
        try:
            found.extend(eng.provider(name).offers(gpu=gpu, region=region))
        except GpuctlError as exc:
            if provider:
                raise  # the one provider asked for: its error is the answer
            problems.append((name, exc))  # one failing provider never hides the others
    found.sort(key=lambda o: (o.price_per_hour is None, o.price_per_hour or 0.0))
    out = Out(as_json)
    now = time.time()
    if as_json:
        for o in found:
            ages = {
                "price_age_seconds": None if o.priced_at is None else round(now - o.priced_at),
                "spot_price_age_seconds": None
                if o.spot_priced_at is None
                else round(now - o.spot_priced_at),
            }
            out.obj({**o.to_dict(), "spot_saving": o.spot_saving, **ages})
        for name, exc in problems:
            out.obj({"event": "provider_error", "provider": name, "error": exc.one_line()})
        if len(problems) == len(names):
            sys.exit(problems[0][1].exit_code)
        return
    for name, exc in problems:
        echo(f"warning: {name}: {exc.one_line()}", err=True)
    if problems and len(problems) == len(names):
        sys.exit(problems[0][1].exit_code)  # nothing to show: not a success
    rows = []
    for o in found:
        saving = "" if o.spot_saving is None else f"-{percent(o.spot_saving)}"
        rows.append(
            [
                o.provider,
                o.instance_type,
                o.gpu_label,
                f"{o.gpu_memory_gb:g}" if o.gpu_memory_gb else "-",
                str(o.vcpus),
                f"{o.memory_gb:g}",
                money(o.price_per_hour, digits=3, unknown=BLANK),
                money(o.spot_price_per_hour, digits=3, unknown=BLANK),
                saving,
                o.region or ",".join(o.regions[:3]),
                o.price_origin(now) or BLANK,
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
        "SOURCE/AGE",
    ]
    click.echo(table(rows, headers) if rows else "no offers match")


@main.command()
@click.argument("preset", required=False, metavar="PRESET|MODE")
@launch_options
@handled
def launch(preset: str | None, as_json: bool, **opts: Any) -> None:
    """Launch PRESET (or a mode of your project's gpuctl.toml, or --command) detached:
    prints the run id; the run goes on without gpuctl."""
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
@click.argument("preset", required=False, metavar="PRESET|MODE")
@launch_options
@handled
def run(preset: str | None, as_json: bool, **opts: Any) -> None:
    """Launch PRESET (or a mode of your project's gpuctl.toml, or --command) and follow it
    to the end: results downloaded, instance torn down."""
    from .follow import exit_code_for

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
    eng = engine()
    out = Out(as_json)
    if show_runs:
        return _print_runs(eng, out, cached)
    names = list(eng.settings.providers)
    # A listing (or a provider's error) from before config.toml last changed may describe
    # settings that are gone: stale, whatever its age.
    config_age = eng.settings.config_age()
    stale = [
        n
        for n in names
        if (age := eng.store.listing_age(n)) is None
        or age > eng.settings.refresh_seconds
        or (config_age is not None and age >= config_age)
    ]
    if (refresh or stale or include_unmanaged) and not cached:
        eng.refresh(
            names if refresh or include_unmanaged else stale, include_unmanaged=include_unmanaged
        )
        for finding in eng.findings:
            if finding.action in ("destroyed", "off_billed"):  # money: said where it is seen
                click.echo(f"notice: {finding.message}", err=True)
    else:
        from .reconcile import without_listing

        without_listing(eng)  # a launch whose gpuctl was killed shows its orphan even from cache
    from .views import listing

    view = listing(eng.store, eng.settings)
    lines = [line for line in view.instances if include_unmanaged or line.instance.managed]
    if as_json:
        for line in lines:
            out.obj(line.to_dict())
        for name, message in view.provider_errors():
            out.obj({"event": "provider_error", "provider": name, "error": message})
        return
    rows = []
    for line in lines:
        inst = line.instance
        state = line.state + (" (orphan)" if line.orphan else "")
        state += " (foreign)" if line.foreign else ""
        rows.append(
            [
                inst.provider,
                inst.region,
                inst.id,
                inst.run_id or "-",
                inst.instance_type,
                (f"{inst.gpu_count}x {inst.gpu_name}" if inst.gpu_count else "-"),
                state,
                duration(line.uptime_seconds),
                money(line.money.burn_per_hour, digits=3, unknown=BLANK),
                line.run.status.value if line.run else "-",
                line.money.note,
            ]
        )
    headers = ["PROVIDER", "REGION", "INSTANCE", "RUN", "TYPE", "GPU", "STATE", "UP", "$/H"]
    headers += ["RUN STATE", "METER"]
    if any(line.owner != "-" for line in lines):
        headers.append("OWNER")
        rows = [[*row, line.owner] for row, line in zip(rows, lines, strict=True)]
    errors = list(view.provider_errors())
    if rows:
        click.echo(table(rows, headers))
    elif errors:  # unknown is not none: say whose machines could not be seen
        unseen = ", ".join(dict.fromkeys(name for name, _ in errors))
        click.echo(f"no instances seen; {unseen} could not be listed, so theirs are unknown")
    else:
        click.echo("no instances (gpuctl run validate starts one on this machine)")
    for name, message in errors:
        click.echo(f"{name}: {message}", err=True)
    _supervisor_line(eng)


def _supervisor_line(eng: Any) -> None:
    """ "supervisor: running since ..." while `gpuctl supervise` drives this data dir's runs."""
    from .supervisor_state import current

    info = current(eng.settings.home)
    if info is not None:
        click.echo(info.line())


def _print_runs(eng: Any, out: Out, cached: bool = False) -> None:
    from .runstate import epoch_text, sync_runs

    runs = eng.store.list_runs()
    if not cached:
        runs = sync_runs(eng, runs)  # running ones as their machines say
    if out.json:
        for r in runs:
            out.obj(r.to_dict())
        return
    rows = [
        [
            r.id,
            r.provider,
            r.status.value,
            epoch_text(r.epoch, r.epochs),
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
    _supervisor_line(eng)


def estimate_text(estimate: dict[str, Any] | None) -> str:
    """The estimate a run was launched with, and what it was based on."""
    if not estimate:
        return "-"
    if estimate.get("basis") == "none":
        return "none before launch (the first run of this mode on its machine)"
    cost = estimate.get("cost")
    source = {"history": "from past runs", "mode-history": "from past runs of this mode"}
    return (
        f"~{rough_duration(estimate['hours'] * 3600)}, "
        + ("price unknown" if cost is None else f"~{money(cost)}")
        + (f" ({estimate['minimum_note']})" if estimate.get("minimum_note") else "")
        + f" before launch ({source.get(estimate.get('basis', ''), 'rough, table')})"
    )


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@handled
def status(run_id: str, as_json: bool) -> None:
    """One run: status, progress, cost, where it runs, watchdog limits."""
    from .rundir import RunDir
    from .runstate import epoch_text, sync_run
    from .views import run_summary

    eng = engine()
    run = eng.store.get_run(run_id)
    agent: dict[str, Any] = {}
    if run.status.active and run.remote_dir:
        try:
            _, host = eng.locate(run)
            agent = RunDir(host, run.id, run.remote_dir).status()
        except GpuctlError as exc:
            agent = {"error": exc.one_line()}
        run = sync_run(eng, run, agent)  # what the machine says, not the store's last copy
    eng.settle_ended_billing()
    view = run_summary(eng.store, eng.settings, run)
    estimate = next(iter(eng.store.events(run.id, kinds=["estimate"])[-1:]), None)
    info = {**run.to_dict(), **view.to_dict(), "estimate": estimate, "agent": agent}
    if as_json:
        Out(True).obj(info)
        return
    spec = run.launch_spec
    lines = [
        f"run       {run.id}  ({run.preset} on {run.provider})",
        f"status    {run.status.value}" + (f": {run.reason}" if run.reason else ""),
        f"progress  epoch {epoch_text(run.epoch, run.epochs)}"
        + ("" if run.metric is None else f", metric {run.metric:.4f}")
        + ("" if run.eta_seconds is None else f", eta {duration(run.eta_seconds)}"),
        f"cost      {money(view.spent)} spent, {rate(view.burn_per_hour)} now"
        + ("" if run.budget is None else f", budget {money(run.budget)}")
        + (
            f", ~{money(view.projected_total)} projected at the end"
            if run.status.active and view.projected_total is not None
            else ""
        ),
        "estimate  " + estimate_text(estimate),
        *([f"command   {spec.job['command']}"] if spec.job.get("command") else []),
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
            "agent     "
            + (
                "died (its limits are no longer enforced)"
                if agent.get("agent_alive") is False and agent.get("trainer_alive")
                else str(agent.get("state", "?"))
            )
            + ", trainer "
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
    _supervisor_line(eng)


@main.command()
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines of history first.")
@click.option("--json", "as_json", is_flag=True)
@handled
def logs(run_id: str, follow: bool, lines: int, as_json: bool) -> None:
    """The training log of RUN (with -f, follow it; Ctrl-C leaves the run going)."""
    from .runstate import sync_run
    from .views import log_history, saved_results

    eng = engine()
    run = eng.store.get_run(run_id)
    out = Out(as_json)
    if follow and run.remote_dir and saved_results(eng.store, run) is None:
        _, failure = drive(out, eng.follow(run.id, tail_lines=lines))
        if failure:
            sys.exit(failure.exit_code)
        return
    log = log_history(eng, run, lines)  # the order the run screen reads it in
    if log.from_machine:
        sync_run(eng, run)  # the log may say it ended: so does the store, from now on
    text_lines = list(log.lines)
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
@click.option(
    "--discard-results",
    is_flag=True,
    help="Terminate even if the results were never downloaded (they are lost).",
)
@click.option("--json", "as_json", is_flag=True)
@handled
def down(
    target: str | None, orphans: bool, yes: bool, discard_results: bool, as_json: bool
) -> None:
    """Terminate RUN's instance, downloading results not yet saved first; or --orphans."""
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
        typed = _confirm_instance(eng, inst, yes)
        owner = eng.store.find_run(inst.run_id) if inst.run_id else None
        if owner is not None and owner.instance_id == inst.id:
            run = owner  # the run's own machine: its results are saved first, as below
        else:
            drive(out, eng.teardown(inst.run_id, inst, "terminate", confirmed=typed))
            return
    else:
        typed = _confirm_run_machine(eng, run, yes)
    discard = discard_results or _ask_discard(eng, run, yes, as_json)
    _, failure = drive(out, eng.down(run.id, discard_results=discard, confirmed=typed))
    if failure:
        sys.exit(failure.exit_code)


def _ask_discard(eng: Any, run: Any, yes: bool, as_json: bool) -> bool:
    """In a terminal, results not yet downloaded are the user's call; elsewhere (and with
    --yes) they are downloaded first. True: terminate without them."""
    from .results import pending

    if yes or as_json or not sys.stdin.isatty() or not pending(eng.store, run):
        return False
    where = eng.settings.results_dir / run.id
    answer = _prompt(
        f"The results of {run.id} were never downloaded. download them to {where} first, "
        "discard them, or cancel?",
        type=click.Choice(["download", "discard", "cancel"]),
        default="download",
    )
    if answer == "cancel":
        raise ConfigError("not confirmed; nothing was terminated")
    return answer == "discard"


def _prompt(text: str, **kwargs: Any) -> Any:
    """click.prompt, where the end of input (a closed pipe, Ctrl-D) is a "no": one line
    and exit 2, nothing changed, never click's bare "Aborted!" with exit 1."""
    try:
        return click.prompt(text, **kwargs)
    except click.Abort:
        raise ConfigError("not confirmed (no answer); nothing was changed") from None


def _find_instance(eng: Any, target: str):
    for inst in eng.store.instances():
        if target in (inst.id, inst.name):
            return inst
    return None


def _confirm_instance(eng: Any, inst: Any, yes: bool) -> bool:
    """Money safety: something this installation did not create needs its name typed back.

    True when the name was typed (the caller may then end what is not its own)."""
    rule = eng.end_rule(inst)
    ours = rule.typed is None
    if ours and yes:
        return False
    if not sys.stdin.isatty():
        raise (
            ConfigError(
                f"{inst.id} {rule.why}; refusing to terminate it without a typed confirmation",
                hint="run this in a terminal and type the instance name when asked",
            )
            if not ours
            else ConfigError(f"terminating {inst.id} needs confirmation", hint="add --yes")
        )
    word = rule.typed or inst.name or inst.id
    prompt = (
        f"{inst.id} ({inst.instance_type}, {inst.provider}) {rule.why}. "
        f"Type its name '{word}' to terminate it"
        if not ours
        else f"Terminate {inst.id}? Type '{word}'"
    )
    answer = _prompt(prompt, default="", show_default=False)
    if answer.strip() != word:
        raise ConfigError("not confirmed; nothing was terminated")
    return not ours


def _confirm_run_machine(eng: Any, run: Any, yes: bool) -> bool:
    """`down RUN` on a machine gpuctl did not create for the run releases it; in a
    terminal (without --yes) the user may type its name to terminate it as well."""
    inst = eng.instance_of(run)
    if inst is None:
        return False
    rule = eng.end_rule(inst, run)
    if rule.typed is None or yes or not sys.stdin.isatty():
        return False
    word = rule.typed
    answer = _prompt(
        f"{inst.id} ({inst.instance_type}, {inst.provider}) {rule.why}. Press enter to "
        f"release it (it keeps running), or type its name '{word}' to terminate it",
        default="",
        show_default=False,
    ).strip()
    if answer and answer != word:
        raise ConfigError(f"'{answer}' is not '{word}'; nothing was changed")
    return answer == word


def _down_orphans(eng: Any, out: Out, yes: bool) -> None:
    from .models import InstanceState
    from .ownership import is_foreign
    from .reconcile import is_orphan
    from .results import pending

    eng.refresh()
    mine = eng.settings.installation_id
    runs = {r.id: r for r in eng.store.list_runs()}
    live = [i for i in eng.store.instances() if i.state != InstanceState.TERMINATED]
    orphans = [i for i in live if is_orphan(i, runs.get(i.run_id or ""), installation=mine)]
    for inst in live:  # a colleague's (or another data directory's): listed, left alone
        if is_foreign(inst, mine, run_known=inst.run_id in runs):
            out.line(
                f"foreign: {inst.provider} {inst.id} run={inst.run_id} owner="
                f"{inst.owner or 'unknown'} {inst.instance_type} {inst.state.value} (another "
                f"gpuctl installation's: left alone; `gpuctl down {inst.id}` asks for its name)"
            )
            if out.json:
                out.obj({"event": "foreign", **inst.to_dict()})
    if not orphans:
        out.line("no orphaned instances: everything gpuctl created belongs to a live run")
        if out.json:
            out.obj({"event": "orphans", "count": 0})
        return
    for inst in orphans:
        run = runs.get(inst.run_id or "")
        unsaved = run is not None and pending(eng.store, run, inst)
        out.line(
            f"orphan: {inst.provider} {inst.id} run={inst.run_id} "
            f"{inst.instance_type} {inst.state.value}"
            + (" (results not downloaded yet: downloaded first)" if unsaved else "")
        )
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"{len(orphans)} orphaned instance(s) found; nothing terminated",
                hint="re-run with --yes to terminate them",
            )
        if not click.confirm(f"Terminate these {len(orphans)} instance(s)?", default=False):
            raise ConfigError("not confirmed; nothing was terminated")
    left: list[GpuctlError] = []
    for inst in orphans:
        run = runs.get(inst.run_id or "")
        if run is not None and pending(eng.store, run, inst):
            try:  # a finished run's results are not orphaned with its machine
                drive(out, eng.download(run.id))
            except GpuctlError as exc:
                left.append(exc)
                if out.json:
                    out.obj(
                        {
                            "event": "left",
                            "instance": inst.id,
                            "run_id": run.id,
                            "error": exc.message,
                        }
                    )
                out.line(
                    f"left {inst.id}: the results of {run.id} are only on it and could not be "
                    f"downloaded ({exc.message}); `gpuctl down {run.id} --discard-results` "
                    "ends it without them",
                    err=True,
                )
                continue
        drive(out, eng.teardown(inst.run_id, inst, "terminate"))
    if left:
        sys.exit(left[0].exit_code)


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
    from .follow import exit_code_for

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


@main.group(name="notify", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per notification.")
@click.pass_context
@handled
def notify_group(ctx: click.Context, as_json: bool) -> None:
    """Notifications sent so far, newest first ([notify] urls and events in config.toml)."""
    if ctx.invoked_subcommand is not None:
        return
    eng = engine()
    rows = eng.store.notifications(limit=50)
    if as_json:
        for row in rows:
            echo(json.dumps(row))
        return
    if not eng.settings.notify.urls:
        echo("no [notify] urls in config.toml: nothing is sent")
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["at"]))
        echo(f"{when}  {row['event']:<18} {row['message']}  [{row['sent_by']}: {row['outcome']}]")


@notify_group.command(name="test")
@handled
def notify_test() -> None:
    """Send one test message to every configured URL; one line per URL."""
    from . import notify

    eng = engine()
    urls = eng.settings.notify.urls
    if not urls:
        raise ConfigError(
            "no notification URLs configured",
            hint='add [notify] urls = ["ntfy://my-topic"] to config.toml',
        )
    worked = 0
    for url in urls:
        error = notify.send_one(url, "gpuctl: test", "a test notification from gpuctl notify test")
        worked += error is None
        echo(f"{notify.label(url)}: " + ("ok" if error is None else f"error: {error}"))
    if not worked:
        sys.exit(EXIT_PROVIDER)


from .cost_cli import cost_group  # noqa: E402 - registered last: it imports nothing from here

main.add_command(cost_group)

from .supervise_cli import supervise  # noqa: E402 - registered last, like cost

main.add_command(supervise)
