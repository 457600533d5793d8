"""The launch modal: mode or preset, provider, offer, spot, budget, max hours, and the estimate.

Everything is checked here, before anything is rented: inputs inline as they are typed,
then the engine's own resolve() (the same checks as the CLI) on confirm. Offers may
come from a cloud API, so they load in a worker; the form stays usable meanwhile. Inside
a project (a gpuctl.toml at or above the current directory) its modes come first, and a
mode's launch defaults fill the form as `gpuctl run MODE` would apply them.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, DataTable, Input, Label, Select, Static
from textual.worker import get_current_worker

from gpuctl import project, resolve
from gpuctl.console import plural
from gpuctl.errors import GpuctlError
from gpuctl.format import BLANK, money, percent, price_origin, rate, rough_duration
from gpuctl.models import LaunchSpec, Offer
from gpuctl.presets import loader

from ..launch_choices import (
    Choice,
    choices,
    command_info,
    preset_mode_info,
    shadow_note,
    trainer_facts,
)
from ..messages import OffersLoaded
from ..widgets.tickbox import TickBox

if TYPE_CHECKING:
    from ..ports import ControlCenter

OFFER_COLUMNS = (("TYPE", 16), ("GPU", 12), ("$/H", 7), ("SPOT", 7), ("SAVE", 5), ("REGION", 12))


def parse_positive(text: str, what: str) -> tuple[float | None, str]:
    """(value, error): empty means no limit; anything else must be a positive number."""
    text = text.strip().lstrip("$")
    if not text:
        return None, ""
    try:
        value = float(text)
    except ValueError:
        return None, f"{what} must be a number, got '{text}'"
    if value <= 0 or value != value or value == float("inf"):
        return None, f"{what} must be more than 0"
    return value, ""


class LaunchScreen(ModalScreen[LaunchSpec | None]):
    """Dismisses with a resolved LaunchSpec (launch it) or None (cancelled)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "launch", "Launch", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.presets: dict[str, loader.Preset] = {}
        self.project: project.Project | None = None
        self.choices: dict[str, Choice] = {}
        self.offers: list[Offer] = []
        self.offers_error = ""
        self.edited: set[str] = set()  # fields the user typed in: a mode's defaults keep off
        self.errors: dict[str, str] = {}
        self.estimate: Any = None  # gpuctl.estimate.Estimate
        self.refusal: GpuctlError | None = None
        self.presets_error = ""
        self.project_error = ""
        self.launch_tried = False

    @property
    def gpuctl(self) -> ControlCenter:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        settings = self.gpuctl.engine.settings
        try:
            self.presets = loader.load_all(settings.presets_dir)
        except GpuctlError as exc:  # a broken user preset: say which, do not crash
            self.presets = {}
            self.errors["presets"] = self.presets_error = exc.message
        try:  # the project's gpuctl.toml, found from the current directory as the CLI does
            self.project = project.discover()
        except GpuctlError as exc:  # a broken file: its file:line in the form, no launch
            self.project = None
            self.errors["project"] = self.project_error = exc.message + (
                f" ({exc.hint})" if exc.hint else ""
            )
        self.choices = {c.name: c for c in choices(self.project, self.presets)}
        names = list(self.choices)
        providers = list(settings.providers)
        default_provider = (
            settings.default_provider if settings.default_provider in providers else providers[0]
        )
        with VerticalScroll(id="dialog", classes="launch"):
            yield Static(Text("Launch a run", style="bold"), id="dialog-title")
            with Horizontal(classes="row"):
                yield Label("Preset", classes="label")
                yield Select(
                    [(c.label, c.name) for c in self.choices.values()],
                    value=names[0] if names else Select.NULL,
                    allow_blank=not names,
                    compact=True,
                    id="preset",
                )
                yield Label("Provider", classes="label")
                yield Select(
                    [(p, p) for p in providers],
                    value=default_provider,
                    allow_blank=False,
                    compact=True,
                    id="provider",
                )
            yield Static("", id="preset-info")
            table: DataTable[Text] = DataTable(cursor_type="row", id="offers")
            yield table
            with Horizontal(classes="row"):
                yield TickBox("Spot", compact=True, id="spot")
                yield Label("Budget $", classes="label")
                yield Input(placeholder="no limit", compact=True, id="budget")
                yield Label("Max hours", classes="label")
                yield Input(compact=True, id="max-hours")
            with Horizontal(classes="row"):
                yield Label("Overrides", classes="label")
                yield Input(
                    placeholder="key=value … e.g. epochs=5 lr=0.01", compact=True, id="overrides"
                )
                yield Label("At the end", classes="label")
                yield Select(
                    [(p, p) for p in ("terminate", "stop", "keep")],
                    value=settings.teardown
                    if settings.teardown in ("terminate", "stop", "keep")
                    else "terminate",
                    allow_blank=False,
                    compact=True,
                    id="teardown",
                    tooltip="what happens to the machine when the run ends (results are "
                    "downloaded first); keep lets you resume a stopped run",
                )
            yield Static("", id="errors")
            yield Static("", id="estimate")
            yield TickBox("Launch anyway, over budget", compact=True, id="force")
            with Horizontal(classes="buttons"):
                yield Button("Cancel (esc)", compact=True, id="cancel")
                yield Button("Launch (ctrl+s)", variant="success", compact=True, id="go")

    def on_resize(self) -> None:
        self.set_class(self.size.height < 28, "-short")

    def on_mount(self) -> None:
        self.set_class(self.app.size.height < 28, "-short")
        table = self.query_one("#offers", DataTable)
        for label, width in OFFER_COLUMNS:
            table.add_column(label, key=label, width=width)
        self._preset_changed()
        self._load_offers(self.provider)
        self.query_one("#preset", Select).focus()

    # -- current values -------------------------------------------------------------------------

    @property
    def provider(self) -> str:
        value = self.query_one("#provider", Select).value
        return str(value) if value is not Select.NULL else self.gpuctl.engine.settings.providers[0]

    @property
    def preset_name(self) -> str | None:
        value = self.query_one("#preset", Select).value
        return None if value is Select.NULL else str(value)

    @property
    def choice(self) -> Choice | None:
        return self.choices.get(self.preset_name or "")

    @property
    def mode(self) -> project.Mode | None:
        choice = self.choice
        return choice.mode if choice is not None else None

    def mode_default(self, key: str) -> Any:
        """What the chosen mode's gpuctl.toml entry sets for `key` (None: not set)."""
        mode = self.mode
        return mode.launch.get(key) if mode is not None else None

    @property
    def offer(self) -> Offer | None:
        table = self.query_one("#offers", DataTable)
        if not self.offers or not 0 <= table.cursor_row < len(self.offers):
            return None
        return self.offers[table.cursor_row]

    # -- offers ---------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="offers", exit_on_error=False)
    def _fetch_offers(self, provider: str) -> None:
        """Offers can come from a cloud API: never on the UI thread."""
        try:
            offers = self.gpuctl.engine.provider(provider).offers()
        except GpuctlError as exc:
            self.post_message(OffersLoaded(provider, (), exc.message, exc.hint))
            return
        except Exception as exc:  # a driver bug must not take the form down
            self.post_message(OffersLoaded(provider, (), f"{type(exc).__name__}: {exc}"))
            return
        if not get_current_worker().is_cancelled:
            self.post_message(OffersLoaded(provider, tuple(offers)))

    def _load_offers(self, provider: str) -> None:
        cached = self.gpuctl.offers_cache.get(provider)
        if cached is not None:
            self._show_offers(provider, cached, "")
            return
        self.offers = []
        self.offers_error = ""
        table = self.query_one("#offers", DataTable)
        table.clear()
        table.border_subtitle = f"loading offers from {provider}…"
        self._revalidate()
        self._fetch_offers(provider)

    def on_offers_loaded(self, message: OffersLoaded) -> None:
        message.stop()
        if message.error:
            error = message.error + (f" ({message.hint})" if message.hint else "")
            self._show_offers(message.provider, (), error)
            return
        self.gpuctl.offers_cache[message.provider] = tuple(message.offers)
        self._show_offers(message.provider, message.offers, "")

    def _show_offers(self, provider: str, offers: Sequence[Offer], error: str) -> None:
        if provider != self.provider:
            return
        self.offers = list(offers)
        self.offers_error = error
        table = self.query_one("#offers", DataTable)
        table.clear()
        for o in self.offers:
            saving = o.spot_saving
            table.add_row(
                Text(o.instance_type),
                Text(o.gpu_label),
                Text(
                    money(o.price_per_hour, digits=3, symbol=False, unknown="N/A"),
                    justify="right",
                ),
                Text(
                    money(o.spot_price_per_hour, digits=3, symbol=False, unknown=BLANK),
                    justify="right",
                ),
                Text(BLANK if saving is None else percent(saving), justify="right"),
                Text(o.region or ",".join(o.regions[:2]) or "-"),
            )
        table.border_subtitle = (
            f"{plural(len(self.offers), 'offer')} from {provider}"
            if self.offers
            else (error or "no offers")
        )
        self._select_mode_type()
        self._offer_changed()

    def _select_mode_type(self) -> None:
        """The offer of the mode's `type`, where this provider lists it."""
        wanted = self.mode_default("type")
        table = self.query_one("#offers", DataTable)
        for row, offer in enumerate(self.offers):
            if wanted and offer.instance_type == wanted:
                table.move_cursor(row=row)
                return

    # -- reacting to edits ------------------------------------------------------------------------

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == "preset":
            self._preset_changed()
        elif event.select.id == "provider":
            self._load_offers(self.provider)
        else:
            self._revalidate()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._offer_changed()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.query_one("#spot", Checkbox).focus()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self._revalidate()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if event.input.has_focus and event.input.id:
            self.edited.add(event.input.id)
        if event.input.id == "overrides":
            self._preset_info()
        self._revalidate()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_launch()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "go":
            self.action_launch()
        else:
            self.action_cancel()

    def _preset_changed(self) -> None:
        """A new choice: its limits, and a mode's launch defaults, fill the form."""
        preset = self._base_preset()
        mode = self.mode
        hours_box = self.query_one("#max-hours", Input)
        hours = self.mode_default("max_hours")
        if "max-hours" not in self.edited and preset is not None:
            with hours_box.prevent(Input.Changed):
                # the preset's limit under config.toml's [defaults] cap, as a launch gets it
                if hours is None:
                    hours = self.gpuctl.engine.capped("max_hours", preset.max_hours)
                hours_box.value = f"{hours:g}" if hours else ""
        # blank falls back to the mode's own value (a flag wins, none given: the mode's)
        given = self.mode_default("max_hours")
        hours_box.placeholder = f"{given:g} (mode)" if given is not None else ""
        budget_box = self.query_one("#budget", Input)
        budget = self.mode_default("budget")
        if "budget" not in self.edited:
            with budget_box.prevent(Input.Changed):
                budget_box.value = f"{budget:g}" if budget is not None else ""
        budget_box.placeholder = f"{budget:g} (mode)" if budget is not None else "no limit"
        spot = self.query_one("#spot", Checkbox)
        if not self.mode_default("spot") and spot.disabled and spot.value:
            with spot.prevent(Checkbox.Changed):  # a spot mode's tick goes with the mode
                spot.value = False
        overrides = self.query_one("#overrides", Input)
        overrides.placeholder = (
            f"none: mode '{mode.name}' runs your command"
            if mode is not None and mode.command
            else "key=value … e.g. epochs=5 lr=0.01"
        )
        provider = self.mode_default("provider")
        if provider in self.gpuctl.engine.settings.providers and provider != self.provider:
            self.query_one("#provider", Select).value = provider  # its offers load next
        teardown = self.mode_default("teardown")
        if teardown in ("terminate", "stop", "keep"):
            self.query_one("#teardown", Select).value = teardown
        self._select_mode_type()
        self._preset_info()
        self._offer_changed()

    def _base_preset(self) -> loader.Preset | None:
        """The chosen entry's limits before any override (None: it cannot be read)."""
        choice = self.choice
        if choice is None:
            return None
        settings = self.gpuctl.engine.settings
        if choice.mode is not None and choice.mode.command:
            return resolve.command_preset(choice.mode, settings)
        name = str(choice.mode.preset) if choice.mode is not None else choice.name
        try:
            return loader.resolve(name, (), user_dir=settings.presets_dir)
        except GpuctlError:
            return self.presets.get(name)

    def _resolved_preset(self) -> tuple[loader.Preset | None, str]:
        choice = self.choice
        if choice is None:
            return None, self.presets_error or self.project_error or "choose a preset"
        try:
            overrides = shlex.split(self.query_one("#overrides", Input).value)
        except ValueError as exc:
            return self._base_preset(), f"overrides: {exc}"
        mode = choice.mode
        if mode is not None and mode.command:
            if overrides:  # the same refusal as `gpuctl run MODE --set ...`
                where = self.project.file if self.project is not None else project.FILE_NAME
                return self._base_preset(), (
                    f"overrides change the bundled trainer; mode '{mode.name}' runs your "
                    f"command: clear them, or edit [modes.{mode.name}] in {where}"
                )
            return self._base_preset(), ""
        settings = self.gpuctl.engine.settings
        try:
            if mode is not None:  # the bundled trainer with the mode's [train], then these
                base = loader.resolve(str(mode.preset), (), user_dir=settings.presets_dir)
                return resolve.resolve_preset_overrides(base, mode, overrides), ""
            return loader.resolve(choice.name, overrides, user_dir=settings.presets_dir), ""
        except GpuctlError as exc:
            return self._base_preset(), exc.message

    def _preset_info(self) -> None:
        preset, _ = self._resolved_preset()
        choice = self.choice
        mode = self.mode
        idle = self.mode_default("idle_minutes")
        if idle is None and preset is not None:
            idle = self.gpuctl.engine.capped("idle_minutes", preset.idle_minutes)
        if mode is not None and mode.command:  # the user's script: no trainer facts
            out = command_info(mode, self.project)
        elif mode is not None:
            out = preset_mode_info(mode, preset, self.project, idle)
        else:
            out = Text(no_wrap=False)
            if preset is not None:
                out.append(preset.description + "\n", style="italic")
                out.append(trainer_facts(preset, idle), style="dim")
        note = shadow_note(choice, self.presets) if choice is not None else ""
        if note:
            out.append(f"\n{note}", style="yellow")
        self.query_one("#preset-info", Static).update(out)

    def _offer_changed(self) -> None:
        offer = self.offer
        spot = self.query_one("#spot", Checkbox)
        has_spot = offer is not None and offer.spot_price_per_hour is not None
        if self.mode_default("spot"):  # the mode launches spot (as `gpuctl run` does)
            spot.disabled = True
            with spot.prevent(Checkbox.Changed):
                spot.value = True
            price = offer.spot_price_per_hour if offer is not None else None
            spot.label = f"Spot {rate(price)} (mode)" if price is not None else "Spot (mode)"
            self._revalidate()
            return
        spot.disabled = not has_spot
        if not has_spot:
            with spot.prevent(Checkbox.Changed):
                spot.value = False
            spot.label = "Spot (n/a)"
        else:
            assert offer is not None and offer.spot_price_per_hour is not None
            saving = offer.spot_saving
            spot.label = f"Spot {rate(offer.spot_price_per_hour)}" + (
                f" −{percent(saving)}" if saving else ""
            )
        self._revalidate()

    # -- validation and estimate ------------------------------------------------------------------

    def _values(self) -> dict[str, Any]:
        budget, budget_err = parse_positive(self.query_one("#budget", Input).value, "budget")
        hours, hours_err = parse_positive(self.query_one("#max-hours", Input).value, "max hours")
        preset, preset_err = self._resolved_preset()
        errors = {}
        if self.project_error:
            errors["project"] = self.project_error
        if self.presets_error:
            errors["presets"] = self.presets_error
        if budget_err:
            errors["budget"] = budget_err
        if hours_err:
            errors["max-hours"] = hours_err
        if preset_err:
            errors["preset"] = preset_err
        if self.offers_error:
            errors["offer"] = f"offers: {self.offers_error}"
        elif self.offers and self.offer is None:
            errors["offer"] = "choose an offer"
        return {"budget": budget, "max_hours": hours, "preset": preset, "errors": errors}

    def _revalidate(self) -> None:
        if not self.is_mounted:
            return
        values = self._values()
        self.errors = values["errors"]
        for field in ("budget", "max-hours"):
            self.query_one(f"#{field}", Input).set_class(field in self.errors, "-invalid")
        self._show_estimate(values)
        shown = list(dict.fromkeys(self.errors.values()))  # one line per distinct error
        if self.launch_tried and self.refusal is not None and not self._forced():
            shown.append(
                f"{self.refusal.message} (raise the budget, choose a smaller preset or a "
                "cheaper offer, or tick 'Launch anyway, over budget')"
            )
        errors = Text()
        for message in shown:
            if errors:
                errors.append("\n")
            errors.append("✗ ", style="bold red")
            errors.append(message, style="red")
        box = self.query_one("#errors", Static)
        box.update(errors)
        box.display = bool(shown)
        self.query_one("#go", Button).disabled = bool(self.errors)

    def _forced(self) -> bool:
        return bool(self.query_one("#force", Checkbox).value)

    def _spec(self, values: dict[str, Any]) -> LaunchSpec:
        """The engine's own resolve: the same checks and defaults as `gpuctl launch`."""
        offer = self.offer
        kind = self.gpuctl.engine.settings.profile(self.provider).provider
        cloud = kind not in ("local", "ssh")
        return self.gpuctl.engine.resolve(
            self.preset_name or "",
            provider=self.provider,
            overrides=shlex.split(self.query_one("#overrides", Input).value),
            budget=values["budget"],
            max_hours=values["max_hours"],
            instance_type=offer.instance_type if offer and cloud else None,
            region=(offer.region or None) if offer and cloud else None,
            spot=bool(self.query_one("#spot", Checkbox).value),
            teardown=str(self.query_one("#teardown", Select).value),
            options={"force": True} if self._forced() else None,
        )

    def _show_estimate(self, values: dict[str, Any]) -> None:
        """Hours and dollars from gpuctl.estimate (throughput table + past runs here)."""
        box = self.query_one("#estimate", Static)
        self.estimate = None
        self.refusal = None
        self.query_one("#force", Checkbox).display = False
        offer = self.offer
        if values["errors"] or offer is None:
            box.update(
                Text(
                    "Estimate: fix the form first"
                    if values["errors"]
                    else "Estimate: choose an offer",
                    style="dim italic",
                )
            )
            return
        from gpuctl import cost
        from gpuctl import estimate as estimates

        engine = self.gpuctl.engine
        try:
            spec = self._spec(values)
            est = estimates.estimate_spec(
                engine.store, engine.settings, spec, engine.provider(self.provider), offer=offer
            )
            self.refusal = cost.launch_refusal(
                engine.store,
                engine.settings,
                spec,
                est.cost,
                price_per_hour=est.price_per_hour,
                now=self.gpuctl.now(),
            )
        except GpuctlError as exc:
            box.update(Text(f"Estimate unavailable: {exc.message}", style="yellow"))
            return
        except Exception as exc:  # an estimate must never break the form
            box.update(Text(f"Estimate unavailable: {type(exc).__name__}", style="dim"))
            return
        self.estimate = est
        if self.refusal is None:  # an override ticked for another choice must not carry over
            force = self.query_one("#force", Checkbox)
            with force.prevent(Checkbox.Changed):
                force.value = False
        out = Text(no_wrap=False)
        out.append("Estimate ", style="bold")
        if est.basis == estimates.NO_BASIS:  # a command nobody has timed yet: no pace
            out.append("no estimate yet (first run of this mode here)", style="bold")
            if est.price_per_hour is not None:
                out.append(f" · {rate(est.price_per_hour)}", style="dim")
        else:
            out.append(f"~{rough_duration(est.hours * 3600)}", style="bold")
            out.append(" · ")
            out.append("$ N/A" if est.cost is None else f"~{money(est.cost)}", style="bold")
            if est.price_per_hour is not None:
                out.append(f" at {rate(est.price_per_hour)}", style="dim")
                if est.price_source:  # where the price came from, and how old it is
                    origin = price_origin(est.price_source, est.priced_at, self.gpuctl.now())
                    out.append(f" ({origin})", style="dim")
            runs = plural(est.runs_used, "past run")
            source = {
                "history": f"{runs} here",
                estimates.MODE_HISTORY: f"{runs} of this mode",
            }.get(est.basis, f"{est.gpu_class} throughput table, rough")
            out.append(f" ({source})", style="dim")
        out.append("\n")
        if est.max_hours:
            out.append(f"stops at {est.max_hours:g} h", style="yellow" if est.capped else "dim")
            if est.max_cost is not None:
                out.append(f" = {money(est.max_cost)} at most", style="dim")
            out.append(" (max hours, enforced on the machine)", style="dim")
        if est.capped:
            out.append(" ⚠ the run would hit it", style="bold yellow")
        if self.refusal is not None:
            out.append("\n✗ budget: ", style="bold red")
            out.append(self.refusal.message, style="red")
            self.query_one("#force", Checkbox).display = True
        elif values["budget"] and (lasts := est.seconds_for(values["budget"])) is not None:
            buys = rough_duration(lasts)
            out.append(f"\nbudget {money(values['budget'])} buys {buys}", style="dim")
        box.update(out)

    # -- confirm -----------------------------------------------------------------------------------

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_launch(self) -> None:
        values = self._values()
        if values["errors"]:
            self._revalidate()
            return
        try:
            spec = self._spec(values)
        except (GpuctlError, ValueError) as exc:
            message = exc.message if isinstance(exc, GpuctlError) else f"overrides: {exc}"
            hint = exc.hint if isinstance(exc, GpuctlError) else ""
            self.errors["resolve"] = message + (f" ({hint})" if hint else "")
            box = self.query_one("#errors", Static)
            box.update(Text.assemble(("✗ ", "bold red"), (self.errors["resolve"], "red")))
            box.display = True
            return
        if self.refusal is not None and not self._forced():
            self.launch_tried = True  # from now on the form shows why it will not launch
            self._revalidate()
            return
        self.dismiss(spec)
