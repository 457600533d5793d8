"""`gpuctl cost`: the meter (once, or --watch), and `gpuctl cost report` from the ledger.

Everything here reads the local state store only (instant, no network) unless --refresh
asks the providers first, which also reconciles the ledger with what really runs.
Registered on the main group by cli.py; it imports nothing from cli.py at load time so
either module can be imported first.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from . import cost
from .cli_engine import engine
from .console import Number, guarded
from .errors import EXIT_INTERRUPTED, GpuctlError
from .format import BLANK, money, percent, rate, rough_duration
from .models import CostLine

if TYPE_CHECKING:
    from .views import CostView

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _watch_ends_quietly(kwargs: dict[str, Any]) -> None:
    """Ctrl-C is how a user ends --watch: exit 0 then; 130 otherwise. A SIGTERM or SIGHUP
    (a script's timeout, a closed terminal) keeps its own code (143, 129)."""
    from .console import Terminated

    by_signal = isinstance(sys.exc_info()[1], Terminated)
    sys.exit(0 if kwargs.get("watch") and not by_signal else EXIT_INTERRUPTED)


_handled = guarded(_watch_ends_quietly)


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _budget(line: CostLine) -> str:
    if not line.budget:
        return "-"
    return f"{money(line.budget)} ({percent(line.spent / line.budget)})"


def render_meter(view: CostView) -> str:
    """The meter as text: burn now, today, month, per provider, per live run, budgets."""
    m, t, runs = view.meter, view.totals, view.runs
    live = len([i for i in m.instances if i.burn_per_hour > 0]) + len(t.unmetered)
    out = [
        f"now     {rate(t.burn_now)} burning on {live} instance{'s' if live != 1 else ''}"
        + (
            f" ({rate(t.unmetered_per_hour)} of it on {len(t.unmetered)} listed machine"
            f"{'s' if len(t.unmetered) != 1 else ''} gpuctl does not meter)"
            if t.unmetered
            else ""
        ),
        f"today   {money(t.spent_today)}",
        f"month   {money(t.spent_month)}"
        + (f" of {money(t.budget)} ({percent(t.fraction or 0.0)})" if t.budget else ""),
    ]
    if m.providers:
        rows = [
            [
                p.key,
                rate(p.burn_per_hour),
                money(p.spent_today),
                money(p.spent_month),
                _budget(p),
            ]
            for p in m.providers
        ]
        out += ["", _table(rows, ["PROVIDER", "NOW", "TODAY", "MONTH", "BUDGET"])]
    today = cost.day_start(m.now)

    def recent(key: str) -> bool:
        run = runs.get(key)
        return run is not None and (run.status.active or run.updated_at >= today)

    shown = [r for r in m.runs if r.burn_per_hour > 0 or r.spent_today > 0 or recent(r.key)]
    if shown:
        rows = []
        for r in shown:
            run = runs.get(r.key)
            rows.append(
                [
                    r.key,
                    run.provider if run else "-",
                    run.status.value if run else "-",
                    rough_duration(r.hours * 3600),
                    money(r.spent),
                    money(r.burn_per_hour, digits=3) if r.burn_per_hour else BLANK,
                    _budget(r),
                    money(r.projected_total, unknown=BLANK),
                ]
            )
        headers = ["RUN", "PROVIDER", "STATUS", "ELAPSED", "SPENT", "$/H", "BUDGET", "PROJECTED"]
        out += ["", _table(rows, headers)]
    for b in m.budgets:
        if b.level != "ok":
            word = "over budget" if b.level == "exceeded" else "warning"
            out.append(
                f"{word}: {b.label} has spent {money(b.spent)} of {money(b.budget)} "
                f"({percent(b.fraction)})"
            )
    for name, error in view.unlisted:
        out.append(
            f"unknown: {name} could not be listed ({error}); what runs there beyond "
            "gpuctl's own ledger is not counted (`gpuctl cost --refresh` asks again)"
        )
    for key in m.flagged:
        out.append(
            f"flagged: {key} was found billing with no open ledger entry; metered from its "
            "launch time (`gpuctl cost report` marks it)"
        )
    return "\n".join(out)


def watch_lines(view: CostView) -> list[str]:
    """One line per thing burning money, fresnel_cost style, then the total."""
    m, runs, runless = view.meter, view.runs, view.runless
    lines = []
    for r in m.runs:
        run = runs.get(r.key)
        if r.burn_per_hour <= 0 and not (run is not None and run.status.active):
            continue
        lines.append(f"{r.key}: {cost.describe(r)}")
    for inst in m.instances:
        if inst.burn_per_hour > 0 and inst.key in runless:
            lines.append(f"{inst.key}: {cost.describe(inst)}")
    t = view.totals
    for key in t.unmetered:
        lines.append(f"{key}: listed and billing, not metered by gpuctl")
    month = money(t.spent_month) + (f" of {money(t.budget)}" if t.budget else "")
    lines.append(f"total: {rate(t.burn_now)} now, {money(t.spent_today)} today, {month} this month")
    return lines


@click.group(name="cost", invoke_without_command=True, context_settings=CONTEXT)
@click.option("--watch", is_flag=True, help="Refresh in place every few seconds (Ctrl-C ends).")
@click.option(
    "--interval", type=Number(above=0), default=5.0, show_default=True, help="--watch period."
)
@click.option("--refresh", is_flag=True, help="Ask the providers first (reconciles the ledger).")
@click.option("--iterations", type=int, hidden=True, help="Stop --watch after N frames.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (per frame).")
@click.pass_context
@_handled
def cost_group(
    ctx: click.Context,
    watch: bool,
    interval: float,
    refresh: bool,
    iterations: int | None,
    as_json: bool,
) -> None:
    """What you spend: $/h burning now, today, this month, per provider and run, budgets."""
    if ctx.invoked_subcommand is not None:
        return
    if interval <= 0:
        raise GpuctlError("--interval must be positive", hint="e.g. --interval 5")
    from .views import cost_view  # loaded here: `gpuctl --help` does not pay for it

    eng = engine()
    frames = 0
    tty = sys.stdout.isatty()
    while True:
        if refresh:
            for item in _refresh(eng):
                if not as_json:
                    word = "flagged" if item.action == "metered" else "reconciled"
                    click.echo(f"{word}: {item.message}", err=True)
        eng.settle_ended_billing()
        view = cost_view(eng.store, eng.settings)
        if as_json:
            click.echo(json.dumps(view.to_dict(), default=str))
        elif watch:
            stamp = time.strftime("%H:%M:%S", time.localtime(view.meter.now))
            text = "\n".join([f"gpuctl cost  {stamp}", *watch_lines(view)])
            click.echo(("\x1b[H\x1b[2J" if tty else "") + text + ("" if tty else "\n"))
        else:
            click.echo(render_meter(view))
        frames += 1
        if not watch or (iterations is not None and frames >= iterations):
            return
        time.sleep(interval)
        refresh = False  # the providers once; the ledger every frame


def _refresh(eng: Any) -> list[cost.LedgerFix]:
    """Refresh every provider; return what reconciliation flagged just now."""
    before = {e["id"] for e in eng.store.events(kinds=["reconciled"])}
    eng.refresh()
    return [
        cost.LedgerFix(
            e.get("provider", ""),
            e.get("instance_id", ""),
            e.get("run_id"),
            e.get("action", ""),
            float(e.get("at") or 0.0),
            e.get("message", ""),
        )
        for e in eng.store.events(kinds=["reconciled"])
        if e["id"] not in before
    ]


@cost_group.command(name="report")
@click.option("--since", default="30d", show_default=True, help="30d, 12h, 2w, month, a date.")
@click.option(
    "--by",
    type=click.Choice(cost.REPORT_BY),
    default="run",
    show_default=True,
    help="Group the cost by run, day or provider.",
)
@click.option("--csv", "as_csv", is_flag=True, help="CSV rows for a spreadsheet.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row, then a total.")
@_handled
def report_cmd(since: str, by: str, as_csv: bool, as_json: bool) -> None:
    """Cost from the ledger, runs whose instances are gone included; rows add to the total."""
    eng = engine()
    now = time.time()
    rep = cost.report(eng.store, eng.settings, since=cost.parse_since(since, now), by=by, now=now)
    if as_json:
        for row in rep.rows:
            click.echo(json.dumps(row.to_dict()))
        click.echo(
            json.dumps(
                {
                    "event": "total",
                    "by": by,
                    "since": rep.since,
                    "cost": round(rep.total, 6),
                    "hours": round(rep.hours, 6),
                }
            )
        )
        return
    if as_csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([by, "provider", "preset", "status", "hours", "cost_usd", "flagged"])
        for row in rep.rows:
            writer.writerow(
                [
                    row.key,
                    row.provider,
                    row.preset,
                    row.status,
                    f"{row.hours:.4f}",
                    f"{row.cost:.4f}",
                    "yes" if row.flagged else "",
                ]
            )
        click.echo(buf.getvalue(), nl=False)
        return
    since_text = time.strftime("%Y-%m-%d %H:%M", time.localtime(rep.since))
    if not rep.rows:
        click.echo(f"no cost since {since_text}")
        return
    rows = [
        [
            row.key + (" (flagged)" if row.flagged else ""),
            *([row.provider, row.preset, row.status] if by == "run" else []),
            f"{row.hours:.2f}",
            money(row.cost),
        ]
        for row in rep.rows
    ]
    headers = [by.upper(), *(["PROVIDER", "PRESET", "STATUS"] if by == "run" else [])]
    headers += ["HOURS", "COST"]
    click.echo(_table(rows, headers))
    click.echo(f"total {money(rep.total)} over {rep.hours:.2f} instance-hours since {since_text}")
