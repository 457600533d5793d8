"""A checkbox whose state is a glyph, not only a colour."""

from __future__ import annotations

from textual.widgets import Checkbox


class TickBox(Checkbox):
    """Checkbox that draws `X` only when ticked: Textual's draws `X` either way and tells
    the two states apart by colour alone, so without colour every box looks ticked."""

    @property  # type: ignore[override]
    def BUTTON_INNER(self) -> str:
        return "X" if self.value else " "
