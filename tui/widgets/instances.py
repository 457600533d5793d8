"""The instances table: every machine and run across providers, updated in place.

A refresh hands over a new tuple of rows; only the cells whose text changed are
rewritten, so the cursor and the scroll position stay where the user left them. The
table is rebuilt only when the set or order of rows changes (a launch, a terminate,
a new sort or filter), and even then the cursor follows its row by key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.coordinate import Coordinate
from textual.message import Message
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from ..model import Row


@dataclass(frozen=True)
class Column:
    """A table column; `width` leaves room for the label and the sort arrow (" ▲")."""

    key: str
    label: str
    width: int
    drop: int  # lower goes first when the terminal is narrow; 99 = always shown
    numeric: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("provider", "PROVIDER", 10, 80),
    Column("region", "REGION", 9, 20),
    Column("name", "NAME / RUN", 20, 99),
    Column("type", "TYPE", 11, 40),
    Column("gpus", "GPUS", 8, 30),
    Column("state", "STATE", 21, 99),  # "interrupted, stopping": an ended run, machine up
    Column("uptime", "UP", 6, 50),
    Column("price", "$/H", 6, 90, numeric=True),
    Column("cost", "COST $", 8, 95, numeric=True),
    Column("preset", "PRESET", 8, 10),
    Column("epoch", "EPOCH", 11, 98),
)
SORTABLE = tuple(c.key for c in COLUMNS)
_AWAY = Coordinate(-9, -9)  # "not on this row" for the line cache (no real row or header)
TONE_STYLE = {
    "ok": "green",
    "busy": "cyan",
    "warn": "yellow",
    "bad": "bold red",
    "idle": "yellow",
    "done": "dim",
}


def fit_columns(width: int, padding: int = 1) -> list[Column]:
    """The columns that fit, in display order; the name column takes what is left."""
    keep = list(COLUMNS)
    budget = max(40, width - 1)  # the vertical scrollbar

    def needed(cols: Sequence[Column]) -> int:
        return sum(c.width + 2 * padding for c in cols)

    for col in sorted(COLUMNS, key=lambda c: c.drop):
        if needed(keep) <= budget or col.drop >= 99:
            break
        keep.remove(col)
    spare = budget - needed(keep)
    out = []
    for col in keep:
        if col.key == "name" and spare > 0:
            col = Column(col.key, col.label, col.width + min(spare, 24), col.drop)
        out.append(col)
    return out


class InstancesTable(DataTable[Text]):
    """DataTable that takes Row snapshots and diffs them into its cells."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "sort_next", "Sort", show=False),
        Binding("T", "sort_reverse", "Reverse sort", show=False),
    ]

    class SortChanged(Message):
        def __init__(self, column: str, reverse: bool) -> None:
            super().__init__()
            self.column = column
            self.reverse = reverse

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self.sort_column = "state"
        self.sort_reverse = False
        self.terms: tuple[str, ...] = ()
        self._rows: tuple[Row, ...] = ()
        self._by_key: dict[str, Row] = {}
        self._order: list[str] = []
        self._cells: dict[str, dict[str, str]] = {}
        self._columns: list[Column] = []
        self._now = 0.0
        self._want_key: str | None = None
        self._strips: LRUCache[tuple[Any, ...], Strip] = LRUCache(2000)
        self.shown = 0

    # -- public ------------------------------------------------------------------------------

    def show_rows(self, rows: Sequence[Row], now: float) -> None:
        """Show these rows: in place when only values changed, else rebuild by key."""
        self._rows = tuple(rows)
        self._now = now
        self._by_key = {r.key: r for r in self._rows}
        self._sync()

    def update_row(self, row: Row, now: float) -> None:
        """One row changed (a run's event stream moved on): touch only its cells."""
        rows = list(self._rows)
        for i, old in enumerate(rows):
            if old.key == row.key:
                rows[i] = row
                break
        else:
            rows.insert(0, row)
        self.show_rows(rows, now)

    def tick(self, now: float) -> None:
        """Time moved on: uptime and cost cells change, nothing else."""
        self._now = now
        self._sync()

    def set_filter(self, text: str) -> None:
        self.terms = tuple(t for t in text.lower().split() if t)
        self._sync()

    def set_sort(self, column: str, reverse: bool | None = None) -> None:
        if column == self.sort_column and reverse is None:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column = column
            self.sort_reverse = bool(reverse)
        self._sync()
        self._relabel()  # the order may not change (equal values), the arrow must move
        self.post_message(self.SortChanged(self.sort_column, self.sort_reverse))

    @property
    def current(self) -> Row | None:
        """The row under the cursor, as the latest snapshot has it."""
        if not self._order or not 0 <= self.cursor_row < len(self._order):
            return None
        return self._by_key.get(self._order[self.cursor_row])

    @property
    def current_key(self) -> str | None:
        row = self.current
        return row.key if row else None

    def select_key(self, key: str) -> bool:
        """Put the cursor on this row; a row not shown yet gets it when it appears."""
        if key not in self._order:
            self._want_key = key
            return False
        self._want_key = None
        self.move_cursor(row=self._order.index(key))
        return True

    @property
    def order(self) -> list[str]:
        return list(self._order)

    # -- actions ---------------------------------------------------------------------------

    def action_sort_next(self) -> None:
        keys = [c.key for c in self._columns] or list(SORTABLE)
        i = keys.index(self.sort_column) if self.sort_column in keys else -1
        self.set_sort(keys[(i + 1) % len(keys)], reverse=False)

    def action_sort_reverse(self) -> None:
        self.set_sort(self.sort_column, reverse=not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.set_sort(str(event.column_key.value))

    def on_resize(self) -> None:
        fitted = fit_columns(self.size.width)
        if [(c.key, c.width) for c in fitted] != [(c.key, c.width) for c in self._columns]:
            self._rebuild(force_columns=True)

    def _update_dimensions(self, new_rows: Any) -> None:
        """Every column has a fixed width and every row one line: measuring each new
        cell (DataTable's default, 11,000 measures for 1,000 rows) would buy nothing."""
        super()._update_dimensions(())

    # -- rendering ---------------------------------------------------------------------------

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        """Cache whole lines by row, not by screen position and cursor position.

        DataTable keys its line cache on y and on where the cursor is, so a cursor move
        (and every scroll step while holding a key down) renders every visible line
        again. With a row cursor a line only changes when its own row gains or loses
        the cursor, so the key here says just that. Falls back to DataTable's own path
        if its internals ever change shape.
        """
        try:
            row_key, offset = self._get_offsets(y)
            locations = self._row_locations
            index = locations.get(row_key) if row_key in locations else -1
            key = (
                row_key,
                offset,
                x1,
                x2,
                self.size.width,
                self.cursor_type,
                self.cursor_coordinate.row == index,
                self._show_hover_cursor and self.hover_coordinate.row == index,
                base_style,
                self._update_count,
                self._pseudo_class_state,
            )
        except (LookupError, AttributeError):
            return super()._render_line(y, x1, x2, base_style)
        strip = self._strips.get(key)
        if strip is None:
            strip = super()._render_line(y, x1, x2, base_style)
            self._strips[key] = strip
        return strip

    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> Any:
        """Keep other rows' cached lines when the cursor moves (row cursor only).

        DataTable keys its line cache on the cursor's position, so every visible line is
        rendered again on each cursor move; with a row cursor only the row it leaves and
        the row it enters look different, so the others get a position-free key.
        """
        if self.cursor_type == "row":
            locations = getattr(self, "_row_locations", {})
            index = locations.get(row_key) if row_key in locations else -1
            if cursor_location.row != index:
                cursor_location = _AWAY
            if hover_location.row != index:
                hover_location = _AWAY
        return super()._render_line_in_row(
            row_key, line_no, base_style, cursor_location, hover_location
        )

    # -- internals ---------------------------------------------------------------------------

    def _visible(self) -> list[Row]:
        now = self._now
        rows = [r for r in self._rows if r.matches(self.terms, now)]
        column = self.sort_column
        rows.sort(key=lambda r: r.sort_value(column, now), reverse=self.sort_reverse)
        return rows

    def _cell(self, col: Column, row: Row, text: str) -> Text:
        if col.key == "state":
            return Text(text, style=TONE_STYLE.get(row.tone, ""), no_wrap=True)
        if col.key == "name" and not row.managed:
            return Text(text, style="italic", no_wrap=True)
        return Text(text, justify="right" if col.numeric else "left", no_wrap=True)

    def _sync(self) -> None:
        if not self.size.width:
            return  # not laid out yet: on_resize builds it once, at the right width
        visible = self._visible()
        self.shown = len(visible)
        keys = [r.key for r in visible]
        if keys != self._order or not self._columns:
            self._rebuild(visible)
            return
        now = self._now
        changes = []
        for row in visible:
            cells = row.cells(now)
            old = self._cells.get(row.key)
            if old is cells or old == cells:
                continue
            old = old or {}
            for col in self._columns:
                text = cells[col.key]
                if old.get(col.key) != text:
                    changes.append((row.key, col.key, self._cell(col, row, text)))
            self._cells[row.key] = cells
        self._apply(changes)

    def _apply(self, changes: list[tuple[str, str, Text]]) -> None:
        """Write changed cells and repaint once (update_cell repaints per call, which is
        most of the cost of a refresh with hundreds of uptime cells ticking)."""
        if not changes:
            return
        data = getattr(self, "_data", None)
        if data is None or not hasattr(self, "_update_count"):  # a newer DataTable
            for row_key, col_key, value in changes:
                self.update_cell(row_key, col_key, value)
            return
        for row_key, col_key, value in changes:
            data[RowKey(row_key)][ColumnKey(col_key)] = value
        self._update_count += 1
        self.refresh()

    def _rebuild(self, visible: list[Row] | None = None, *, force_columns: bool = False) -> None:
        if visible is None:
            visible = self._visible()
        keep_key = self._want_key if self._want_key in self._by_key else self.current_key
        keep_index = self.cursor_row
        scroll_y = self.scroll_y
        columns = fit_columns(self.size.width) if self.size.width else list(COLUMNS)
        if force_columns or [c.key for c in columns] != [c.key for c in self._columns]:
            self.clear(columns=True)
            for col in columns:
                self.add_column(self._label(col), key=col.key, width=col.width)
            self._columns = columns
        else:
            self.clear()
            self._relabel()
        now = self._now
        self._cells = {}
        for row in visible:
            cells = row.cells(now)
            self._cells[row.key] = cells
            self.add_row(*(self._cell(c, row, cells[c.key]) for c in columns), key=row.key)
        self._order = [r.key for r in visible]
        if keep_key == self._want_key and keep_key in self._order:
            self._want_key = None
        if not self._order:
            return
        target = (
            self._order.index(keep_key)
            if keep_key in self._order
            else min(keep_index, len(self._order) - 1)
        )
        self.cursor_coordinate = Coordinate(target, 0)
        self.scroll_to(y=scroll_y, animate=False, immediate=True)
        self.call_after_refresh(self._keep_cursor_visible)

    def _keep_cursor_visible(self) -> None:
        height = max(1, self.size.height - 1)
        if not self.scroll_y <= self.cursor_row < self.scroll_y + height:
            self.move_cursor(row=self.cursor_row, scroll=True)

    def _label(self, col: Column) -> Text:
        arrow = ""
        if col.key == self.sort_column:
            arrow = " ▼" if self.sort_reverse else " ▲"
        return Text(col.label + arrow, justify="right" if col.numeric else "left")

    def _relabel(self) -> None:
        for col in self._columns:
            column = self.columns.get(col.key)  # type: ignore[call-overload]
            if column is not None:
                column.label = self._label(col)
        self._update_count += 1
        self._strips.clear()
        self.refresh()

    def header_labels(self) -> dict[str, str]:
        """Column key -> header text as drawn (tests read the sort arrow here)."""
        return {str(k.value): c.label.plain for k, c in self.columns.items()}
