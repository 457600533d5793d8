"""Confirmation before anything destructive; a typed name where a slip would cost most.

Terminating a machine gpuctl did not create needs its name typed back (the CLI asks the
same): a stray `x` + `enter` must never end somebody's hand-built box. A dialog may offer
one other way besides (`alternative`): a harmless one (release: let go of the machine,
leave it running) or an explicit one (terminate and discard results never downloaded).
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no, or type `require` to enable the button. Dismisses with True to go ahead."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("y", "yes", "Yes", show=False),
    ]

    def __init__(
        self,
        title: str,
        body: str,
        *,
        action: str = "Confirm",
        require: str | None = None,
        danger: bool = True,
        alternative: str | None = None,
    ) -> None:
        super().__init__()
        self.alternative = alternative  # label of the button for the other way
        self.chose_alternative = False  # set when it was picked (then dismisses False)
        self.title_text = title
        self.body = body
        self.action = action
        self.require = require
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="confirm"):
            yield Static(Text(self.title_text, style="bold"), id="dialog-title")
            yield Static(self.body, id="confirm-body")
            if self.require:
                yield Static(
                    Text.assemble("Type ", (self.require, "bold"), " to confirm:"),
                    id="confirm-prompt",
                )
                yield Input(placeholder=self.require, id="confirm-input")
            with Horizontal(classes="buttons"):
                yield Button("Cancel (esc)", compact=True, id="cancel")
                if self.alternative:
                    yield Button(
                        self.alternative, compact=True, id="alternative", variant="primary"
                    )
                yield Button(
                    self.action,
                    compact=True,
                    id="confirm",
                    variant="error" if self.danger else "primary",
                    disabled=bool(self.require),
                )

    def on_mount(self) -> None:
        if self.require:
            self.query_one("#confirm-input", Input).focus()
        else:
            self.query_one("#cancel", Button).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = event.value.strip() != self.require

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.require:
            self.dismiss(True)
        else:
            self.query_one("#confirm-prompt", Static).update(
                Text.assemble(
                    ("does not match: ", "bold red"), "type ", (self.require or "", "bold")
                )
            )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "alternative":
            self.action_alternative()
            return
        self.dismiss(event.button.id == "confirm")

    def action_yes(self) -> None:
        """`y` confirms a plain yes/no; a typed-name confirmation ignores it."""
        if not self.require:
            self.dismiss(True)

    def action_alternative(self) -> None:
        self.chose_alternative = True
        self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)
