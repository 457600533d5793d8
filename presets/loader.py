"""Presets are data: TOML files with a description, trainer settings and run limits.

Bundled presets live beside this file; a user's presets directory (config dir/presets)
overrides a bundled one of the same name or adds new ones. `custom` is any preset plus
`--set key=value` overrides, each checked against the trainer's own schema so a typo
fails here, on the laptop, before a GPU is rented.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gpuctl.errors import ConfigError
from gpuctl.models import frozen_map
from gpuctl.numbers import finite_positive
from gpuctl.ownership import check_name, suggest_name
from gpuctl.trainer import config as train_config

BUNDLED_DIR = Path(__file__).resolve().parent
BUNDLED = ("validate", "fast", "standard", "full")
CUSTOM = "custom"
RUN_KEYS = {"max_hours": float, "idle_minutes": float, "disk_gb": int, "stall_minutes": float}
TOP_KEYS = {"description", "purpose", "train", "run", "base"}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    train: Mapping[str, Any]  # trainer config keys (validated)
    max_hours: float = 12.0
    idle_minutes: float = 30.0
    disk_gb: int = 100
    stall_minutes: float | None = None  # None: [defaults] stall_minutes
    purpose: str = ""
    source: str = ""  # file it came from

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", frozen_map(self.train))

    @property
    def epochs(self) -> int:
        return int(self.train.get("epochs", train_config.FIELDS["epochs"].default))  # type: ignore[arg-type]

    @property
    def image_size(self) -> int:
        return int(self.train.get("image_size", train_config.FIELDS["image_size"].default))  # type: ignore[arg-type]

    def samples(self) -> int:
        """Training samples seen over the whole run (for estimates)."""
        per_epoch = int(self.train.get("train_samples", 512))
        return per_epoch * self.epochs


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"preset {path} is not valid TOML: {exc}", hint=f"fix or remove {path}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"preset {path} is not UTF-8 text", hint=f"save it as UTF-8, or remove {path}"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read preset {path}: {exc.strerror or exc}", hint=f"fix or remove {path}"
        ) from None


def _build(name: str, raw: Mapping[str, Any], source: Path, base: Preset | None) -> Preset:
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ConfigError(
            f"preset {source}: unknown section or key '{sorted(unknown)[0]}'",
            hint="a preset has description, purpose, [train] and [run]",
        )
    train = dict(base.train) if base else {}
    train.update(raw.get("train", {}))
    try:
        train_config.validate(train)
    except train_config.ConfigError as exc:
        raise ConfigError(f"preset {source}: {exc}", hint=f"fix [train] in {source}") from None
    run = raw.get("run", {})
    for key, value in run.items():
        if key not in RUN_KEYS:
            raise ConfigError(
                f"preset {source}: unknown [run] key '{key}'",
                hint=f"known: {', '.join(sorted(RUN_KEYS))}",
            )
        finite_positive(value, f"preset {source}: [run] {key}", hint=f"fix [run] in {source}")
        if RUN_KEYS[key] is int and not isinstance(value, int):
            raise ConfigError(f"preset {source}: [run] {key} must be a whole number, got {value}")
    defaults = base or Preset(name, "", {})
    return Preset(
        name=name,
        description=str(raw.get("description", defaults.description)),
        purpose=str(raw.get("purpose", defaults.purpose)),
        train=train,
        max_hours=float(run.get("max_hours", defaults.max_hours)),
        idle_minutes=float(run.get("idle_minutes", defaults.idle_minutes)),
        disk_gb=int(run.get("disk_gb", defaults.disk_gb)),
        stall_minutes=float(run["stall_minutes"])
        if "stall_minutes" in run
        else defaults.stall_minutes,
        source=str(source),
    )


def _files(user_dir: Path | None) -> dict[str, Path]:
    found = {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.toml"))}
    if user_dir and user_dir.is_dir():
        # A directory named like a preset is not one (it must not break every preset).
        found.update({p.stem: p for p in sorted(user_dir.glob("*.toml")) if not p.is_dir()})
    return found


def load_all(user_dir: Path | None = None) -> dict[str, Preset]:
    """Every preset by name, bundled first, the user's overriding or adding."""
    files = _files(user_dir)
    out: dict[str, Preset] = {}
    for name in sorted(
        files, key=lambda n: (n not in BUNDLED, BUNDLED.index(n) if n in BUNDLED else 0, n)
    ):
        out[name] = load(name, user_dir, _files_cache=files)
    return out


def _unknown(name: str, choices: list[str], what: str = "preset") -> ConfigError:
    """Never suggests the very name that was typed: only a different, close one."""
    import difflib

    others = [c for c in choices if c != name]
    close = difflib.get_close_matches(name, others, n=1)
    return ConfigError(
        f"unknown {what} '{name}'",
        hint=(f"did you mean '{close[0]}'? " if close else "")
        + f"presets: {', '.join(choices)} (`gpuctl presets` describes them)",
    )


def load(
    name: str,
    user_dir: Path | None = None,
    *,
    _files_cache: dict[str, Path] | None = None,
    _chain: tuple[str, ...] = (),
) -> Preset:
    files = _files_cache or _files(user_dir)
    if name not in files:
        if _chain:
            raise ConfigError(
                f"preset {files[_chain[-1]]}: base '{name}' is not a preset",
                hint=_unknown(name, sorted(files)).hint,
            )
        raise _unknown(name, sorted([*files, CUSTOM]))
    path = files[name]
    if name in _chain:
        cycle = " -> ".join([*_chain[_chain.index(name) :], name])
        raise ConfigError(
            f"presets inherit from each other in a circle: {cycle}",
            hint=f"change base = ... in one of them (files in {path.parent})",
        )
    try:  # the name becomes part of run ids, tags and host names
        check_name(name, "preset")
    except ConfigError as exc:
        raise ConfigError(
            f"preset file {path}: {exc.message}",
            hint=f"rename the file to {suggest_name(name)}{path.suffix}",
        ) from None
    raw = _read(path)
    base = None
    if "base" in raw:
        base_name = raw["base"]
        if not isinstance(base_name, str) or not base_name:
            raise ConfigError(f"preset {path}: base must be a preset name, got {base_name!r}")
        base = load(base_name, user_dir, _files_cache=files, _chain=(*_chain, name))
    return _build(name, raw, path, base)


# Trainer keys gpuctl fills in for every run: a --set of one would be silently replaced.
ENGINE_KEYS = {
    "run_id": "the run id is made from the preset name; drop --set run_id",
    "preset": "pick the preset by name (gpuctl run NAME); drop --set preset",
    "out_dir": "results go to the run's directory and home with `gpuctl download --to DIR`",
    "workdir": "pass your project directory with --workdir DIR",
}


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """`--set key=value` strings into typed trainer config values (errors name the key)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set expects key=value, got '{pair}'", hint="for example --set epochs=5"
            )
        if key in ENGINE_KEYS:
            raise ConfigError(f"--set {key}: gpuctl sets this itself", hint=ENGINE_KEYS[key])
        try:
            out[key] = train_config.coerce(key, value)
        except train_config.ConfigError as exc:
            raise ConfigError(
                f"--set {pair}: {exc}", hint="`gpuctl presets --keys` lists every key and type"
            ) from None
    return out


def resolve(
    name: str,
    overrides: Iterable[str] = (),
    *,
    base: str | None = None,
    user_dir: Path | None = None,
) -> Preset:
    """A preset with overrides applied; `custom` starts from `base` (default validate)."""
    if name == CUSTOM:
        if base == CUSTOM:
            files = sorted(_files(user_dir))
            raise ConfigError(
                "--base takes the preset a custom run starts from, not 'custom' itself",
                hint=f"e.g. --base validate; presets: {', '.join(files)}",
            )
        preset = load(base or "validate", user_dir)
        preset = replace(preset, name=CUSTOM, description=f"{preset.name} with overrides")
    else:
        if base:
            raise ConfigError("--base only applies to the 'custom' preset", hint="drop --base")
        preset = load(name, user_dir)
    changes = parse_overrides(overrides)
    if not changes:
        return preset
    train = {**preset.train, **changes}
    try:
        train_config.validate(train)
    except train_config.ConfigError as exc:
        raise ConfigError(f"--set: {exc}", hint="check the values you passed") from None
    return replace(preset, train=train)


def keys() -> dict[str, train_config.Field]:
    return dict(train_config.FIELDS)


__all__ = ["BUNDLED", "CUSTOM", "Preset", "keys", "load", "load_all", "parse_overrides", "resolve"]
