"""Per-GPU utilisation and memory meters: current value plus a sparkline of history.

Sparklines are drawn on a fixed 0-100% scale (a flat line at 30% must not look like a
full bar), and a value the tool did not report is shown as N/A with an empty track,
never as zero (nvitop's rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.widget import Widget

from ..feed import GpuTrack

BLOCKS = " ▁▂▃▄▅▆▇█"


def spark(values: Sequence[float], width: int, lo: float = 0.0, hi: float = 100.0) -> str:
    """The last `width` values as block characters on a fixed scale, right-aligned."""
    if width <= 0:
        return ""
    tail = list(values)[-width:]
    span = (hi - lo) or 1.0
    chars = []
    for v in tail:
        level = (min(hi, max(lo, v)) - lo) / span
        chars.append(BLOCKS[max(1, round(level * (len(BLOCKS) - 1)))])
    return " " * (width - len(chars)) + "".join(chars)


def _pct_style(value: float | None) -> str:
    if value is None:
        return "dim"
    return "green" if value >= 60 else ("yellow" if value >= 20 else "red")


class GpuPanel(Widget):
    """Renders the GpuTracks of one run; the screen hands them over with show()."""

    DEFAULT_CSS = """
    GpuPanel { height: auto; min-height: 2; }
    """

    def __init__(self, *, detailed: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.detailed = detailed
        self.tracks: list[GpuTrack] = []
        self.note = "no GPU sample yet"

    def show(self, tracks: Mapping[int, GpuTrack], note: str = "") -> None:
        self.tracks = [tracks[i] for i in sorted(tracks)]
        if note:
            self.note = note
        self.refresh(layout=True)

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        if not self.tracks:
            return 1
        per = 4 if self.detailed else 2
        return per * len(self.tracks)

    def render(self) -> Text:
        if not self.tracks:
            return Text(self.note, style="dim italic")
        width = self.size.width or 40
        out = Text(no_wrap=True, overflow="ellipsis")
        for n, track in enumerate(self.tracks):
            if n:
                out.append("\n\n" if self.detailed else "\n")
            last = track.last
            label = (track.name or track.kind.upper()) if track.kind != "gpu" else track.name
            head = f"{'CPU' if track.kind == 'cpu' else 'GPU'}{track.index} {label}".strip()
            util = None if last is None else last.util_pct
            used = None if last is None else last.mem_used_mb
            total = None if last is None else last.mem_total_mb
            extra = []
            if last is not None and self.detailed:
                extra.append("temp " + ("N/A" if last.temp_c is None else f"{last.temp_c:.0f}°C"))
                extra.append(
                    "power " + ("N/A" if last.power_w is None else f"{last.power_w:.0f} W")
                )
            out.append(head[: max(8, width - 2)], style="bold")
            if extra:
                out.append("  " + "  ".join(extra), style="dim")
            out.append("\n")
            util_text = "util  N/A" if util is None else f"util {util:4.0f}%"
            if used is None:
                mem_text = "mem N/A"
            elif total:
                mem_text = f"mem {used / 1024:.1f}/{total / 1024:.0f}G"
            else:
                mem_text = f"mem {used / 1024:.1f}G"
            if self.detailed:
                line_w = max(4, width - 12)
                out.append(f"{util_text:<10}", style=_pct_style(util))
                out.append(spark(track.util, line_w) if track.util else " " * line_w)
                out.append("\n")
                out.append(f"{mem_text:<10}")
                out.append(spark(track.mem, line_w) if track.mem else " " * line_w)
                continue
            half = max(4, (width - 22) // 2)
            out.append(f"{util_text} ", style=_pct_style(util))
            out.append(spark(track.util, half) if track.util else "".ljust(half), style="green")
            out.append(f" {mem_text} ")
            out.append(spark(track.mem, half) if track.mem else "".ljust(half), style="cyan")
        return out
