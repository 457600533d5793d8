"""A log tail that renders only the lines on screen (Line API), with follow and search.

Tens of thousands of lines cost nothing until they are scrolled into view (toolong's
approach). Follow keeps the end in view; scrolling up turns it off, End turns it back
on. Search highlights every hit and n / N jump between matching lines. Long lines wrap
to the pane's width (a narrow terminal shows all of a traceback); `w` turns wrapping off
and the view scrolls sideways instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.cells import get_character_cell_size
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

HIT = Style(reverse=True, bold=True)
CURRENT = Style(underline=True, bold=True)
NOTICE = Style(dim=True, italic=True)


class LogView(ScrollView, can_focus=True):
    """Lines of one run's train.log as they arrive."""

    DEFAULT_CSS = """
    LogView { background: $surface; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("end", "follow_on", "Follow", show=False),
        Binding("home", "top", "Top", show=False),
        Binding("w", "toggle_wrap", "Wrap", show=False),
    ]

    follow: reactive[bool] = reactive(True)
    wrap: reactive[bool] = reactive(True)

    class StateChanged(Message):
        """Follow or search state changed (for the title bar)."""

    def __init__(self, lines: Iterable[str] = (), **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.lines: list[str] = []
        self._width = 0
        # What is drawn: one (line index, start, end) per screen row, and each line's first
        # row. Without wrapping a row is a whole line; with it, a line spans several rows.
        self._rows: list[tuple[int, int, int]] = []
        self._first_row: list[int] = []
        self._wrap_width = 0
        self.pattern: re.Pattern[str] | None = None
        self.term = ""
        self.matches: list[int] = []
        self.match_index = -1
        self.extend(lines)

    # -- content -------------------------------------------------------------------------------

    def extend(self, lines: Sequence[str] | Iterable[str]) -> None:
        new = list(lines)
        if not new:
            return
        start = len(self.lines)
        self.lines.extend(new)
        self._width = max(self._width, *(len(line) for line in new))
        if self.pattern is not None:
            self.matches.extend(
                start + i for i, line in enumerate(new) if self.pattern.search(line)
            )
        self._add_rows(start)
        self._set_virtual_size()
        if self.follow:
            self._to_end()
        self.refresh()

    def _to_end(self) -> None:
        """Scroll to the last row now and again after layout (a new scrollbar moves it).

        `force`: before layout has shown the scrollbar, Textual's scroll methods ignore a
        widget that cannot scroll yet, and follow mode would stay at the top."""
        self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        self.call_after_refresh(
            self.scroll_end, animate=False, immediate=True, x_axis=False, force=True
        )

    def replace(self, lines: Iterable[str]) -> None:
        self.lines = []
        self._width = 0
        self._rows = []
        self._first_row = []
        self.matches = []
        self.extend(lines)
        if not self.lines:
            self.virtual_size = Size(0, 0)
            self.refresh()

    # -- wrapping ----------------------------------------------------------------------------------

    def _add_rows(self, start: int) -> None:
        width = self._wrap_width if self.wrap else 0
        for index in range(start, len(self.lines)):
            self._first_row.append(len(self._rows))
            self._rows.extend((index, a, b) for a, b in _chunks(self.lines[index], width))

    def _rewrap(self) -> None:
        """Lay the rows out again for a new width (or wrap turned on or off)."""
        top_line = self._rows[int(self.scroll_y)][0] if self._rows[int(self.scroll_y) :] else 0
        self._wrap_width = self._fit_width()
        self._rows = []
        self._first_row = []
        self._add_rows(0)
        self._set_virtual_size()
        if self.follow:
            self._to_end()
        elif self._first_row:
            self.scroll_to(y=self._first_row[top_line], animate=False, immediate=True)
        self.refresh()

    def _set_virtual_size(self) -> None:
        width = self._wrap_width if self.wrap and self._wrap_width else self._width
        self.virtual_size = Size(width, len(self._rows))

    def _fit_width(self) -> int:
        """The pane's width less the vertical scrollbar's, shown or not: the rows must not
        change when a growing log brings the scrollbar in."""
        return max(1, self.content_region.width - self.styles.scrollbar_size_vertical)

    def on_resize(self) -> None:
        if self._fit_width() != self._wrap_width:
            self._rewrap()

    def watch_wrap(self, _wrap: bool) -> None:
        if self.is_mounted:
            self._rewrap()

    def action_toggle_wrap(self) -> None:
        self.wrap = not self.wrap

    # -- search ----------------------------------------------------------------------------------

    def search(self, term: str) -> int:
        """Highlight term (case-insensitive); jump to the first hit from the view's top."""
        self.term = term
        if not term:
            self.pattern = None
            self.matches = []
            self.match_index = -1
            self.refresh()
            self.post_message(self.StateChanged())
            return 0
        self.pattern = re.compile(re.escape(term), re.IGNORECASE)
        self.matches = [i for i, line in enumerate(self.lines) if self.pattern.search(line)]
        self.match_index = -1
        if self.matches:
            top = int(self.scroll_y)
            after = [n for n, i in enumerate(self.matches) if i >= top]
            self._goto(after[0] if after else 0)
        self.refresh()
        self.post_message(self.StateChanged())
        return len(self.matches)

    def next_match(self, step: int = 1) -> None:
        if not self.matches:
            return
        self._goto((self.match_index + step) % len(self.matches))

    def _goto(self, index: int) -> None:
        self.match_index = index
        line = self.matches[index]
        self.follow = False
        height = max(1, self.scrollable_content_region.height)
        row = self._first_row[line] if line < len(self._first_row) else line
        self.scroll_to(y=max(0, row - height // 2), animate=False, immediate=True)
        self.refresh()
        self.post_message(self.StateChanged())

    @property
    def match_label(self) -> str:
        if not self.term:
            return ""
        if not self.matches:
            return f"/{self.term}: no match"
        return f"/{self.term}: {self.match_index + 1}/{len(self.matches)}"

    # -- follow ---------------------------------------------------------------------------------

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self._to_end()
        self.post_message(self.StateChanged())

    def action_follow_on(self) -> None:
        self.follow = True

    def action_top(self) -> None:
        self.follow = False
        self.scroll_home(animate=False)

    def action_scroll_up(self) -> None:
        self.follow = False
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self.follow = False
        super().action_page_up()

    def on_mouse_scroll_up(self) -> None:
        self.follow = False

    # -- rendering -------------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if row >= len(self._rows):
            return Strip.blank(width, base)
        index, start, end = self._rows[row]
        line = self.lines[index]
        text = Text(line, no_wrap=True, end="")
        if line.startswith("── "):
            text.stylize(NOTICE)
        if self.pattern is not None:
            for m in self.pattern.finditer(line):
                text.stylize(HIT, m.start(), m.end())
            current = 0 <= self.match_index < len(self.matches)
            if current and self.matches[self.match_index] == index:
                text.stylize(CURRENT)
        if (start, end) != (0, len(line)):
            text = text[start:end]
        segments = list(text.render(self.app.console))
        strip = Strip(segments, text.cell_len)
        strip = strip.crop_extend(scroll_x, scroll_x + width, base)
        return strip.apply_style(base)

    def render_lines_plain(self) -> list[str]:
        """What is on screen, one entry a screen row (tests and the tmux smoke test)."""
        top = int(self.scroll_y)
        rows = self._rows[top : top + self.size.height]
        return [self.lines[i][a:b] for i, a, b in rows]


def _chunks(line: str, width: int) -> list[tuple[int, int]]:
    """(start, end) character spans of at most `width` cells; width 0: the whole line."""
    if width <= 0 or (len(line) <= width and line.isascii()):
        return [(0, len(line))]
    if line.isascii():
        return [(a, min(a + width, len(line))) for a in range(0, len(line), width)]
    spans, start, cells = [], 0, 0
    for i, char in enumerate(line):
        size = get_character_cell_size(char)
        if cells + size > width and i > start:
            spans.append((start, i))
            start, cells = i, 0
        cells += size
    spans.append((start, len(line)))
    return spans
