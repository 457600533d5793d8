"""What the launch form offers and says about it: the project's modes, then presets, then custom.

A mode of the project's gpuctl.toml shadows a bundled preset of the same name (as
`gpuctl run NAME` does), so every name is listed once, and its label says whether it runs
the user's own command or the bundled trainer. Pure: no widgets, only values and text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from gpuctl.console import plural
from gpuctl.format import money
from gpuctl.presets.loader import BUNDLED, CUSTOM, Preset
from gpuctl.project import Mode, Project


@dataclass(frozen=True)
class Choice:
    """One entry of the preset select: the name resolve() is given, and how it reads."""

    name: str
    label: str
    mode: Mode | None = None

    @property
    def runs_command(self) -> bool:
        return self.mode is not None and bool(self.mode.command)


def mode_label(mode: Mode) -> str:
    return f"{mode.name} · your command" if mode.command else f"{mode.name} · preset {mode.preset}"


def choices(project: Project | None, presets: Mapping[str, Preset]) -> tuple[Choice, ...]:
    """The project's modes first, then the presets no mode shadows, then `custom`."""
    modes = dict(project.modes) if project is not None else {}
    out = [Choice(m.name, mode_label(m), m) for m in modes.values()]
    out += [Choice(name, name) for name in presets if name not in modes]
    if CUSTOM not in modes:
        out.append(Choice(CUSTOM, CUSTOM))
    return tuple(out)


def launch_defaults(launch: Mapping[str, Any]) -> list[str]:
    """A mode's launch defaults as a user reads them ('type g5.xlarge', 'spot', 'budget $5')."""
    parts = []
    if "provider" in launch:
        parts.append(f"provider {launch['provider']}")
    if "type" in launch:
        parts.append(f"type {launch['type']}")
    if "region" in launch:
        parts.append(f"region {launch['region']}")
    if launch.get("spot"):
        parts.append("spot")
    if "budget" in launch:
        parts.append(f"budget {money(float(launch['budget']))}")
    if "max_hours" in launch:
        parts.append(f"max {float(launch['max_hours']):g} h")
    if "idle_minutes" in launch:
        parts.append(f"idle stop {float(launch['idle_minutes']):g} min")
    if "stall_minutes" in launch:
        parts.append(f"stall stop {float(launch['stall_minutes']):g} min")
    if "disk_gb" in launch:
        parts.append(f"disk {launch['disk_gb']} GB")
    if "teardown" in launch:
        parts.append(f"then {launch['teardown']}")
    return parts


def trainer_facts(preset: Preset, idle_minutes: float | None) -> str:
    """The bundled trainer's shape: only ever shown for a run of the bundled trainer."""
    return (
        f"{plural(preset.epochs, 'epoch')} · {preset.image_size} px images · "
        f"{preset.train.get('train_samples', '?')} samples/epoch · "
        f"batch {preset.train.get('batch_size', '?')} · idle stop {idle_minutes or 0:g} min"
    )


def mode_source(project: Project | None, mode: Mode) -> str:
    name = project.file.name if project is not None else "gpuctl.toml"
    return f"{name}:{mode.line}" if mode.line else name


def command_info(mode: Mode, project: Project | None) -> Text:
    """A command mode: what it is for, the command line, its epochs and launch defaults."""
    out = Text(no_wrap=False)
    if mode.description:
        out.append(mode.description + "\n", style="italic")
    out.append("runs ", style="dim")
    out.append(mode.command or "", style="bold")
    out.append("\n")
    facts = [plural(mode.epochs, "epoch") if mode.epochs else "epochs not declared"]
    defaults = launch_defaults(mode.launch)
    if defaults:
        facts.append("mode defaults: " + ", ".join(defaults))
    facts.append(mode_source(project, mode))
    out.append(" · ".join(facts), style="dim")
    return out


def preset_mode_info(
    mode: Mode, preset: Preset | None, project: Project | None, idle_minutes: float | None
) -> Text:
    """A preset mode: the bundled trainer's shape with the mode's [train], and its defaults."""
    out = Text(no_wrap=False)
    description = mode.description or (preset.description if preset else "")
    if description:
        out.append(description + "\n", style="italic")
    if preset is not None:
        out.append(trainer_facts(preset, idle_minutes), style="dim")
        out.append("\n")
    facts = [f"bundled trainer, preset {mode.preset}"]
    defaults = launch_defaults(mode.launch)
    if defaults:
        facts.append("mode defaults: " + ", ".join(defaults))
    facts.append(mode_source(project, mode))
    out.append(" · ".join(facts), style="dim")
    return out


def shadow_note(choice: Choice, presets: Mapping[str, Preset]) -> str:
    """'' unless the mode hides a preset of the same name (say so: it surprises)."""
    if choice.mode is None:
        return ""
    if choice.name in BUNDLED:
        return f"this project's mode, not the bundled preset '{choice.name}'"
    if choice.name in presets:
        return f"this project's mode, not your preset '{choice.name}'"
    return ""


__all__ = [
    "Choice",
    "choices",
    "command_info",
    "launch_defaults",
    "mode_label",
    "preset_mode_info",
    "shadow_note",
    "trainer_facts",
]
