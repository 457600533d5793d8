"""A user's project file, `gpuctl.toml`: their own training command by mode, checked up front.

The file sits at the root of the user's project and is checked in with their code. Every
mistake in it is reported with the file and line before anything is created or paid for:
a typo here must never cost a machine.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .models import frozen_map
from .ownership import NAME_MAX, NAME_RULE, suggest_name

FILE_NAME = "gpuctl.toml"
COMMAND_MODE = "command"  # the mode name of an ad-hoc `--command` run

PROJECT_KEYS = {
    "name": str,
    "exclude": list,
    "outputs": list,
    "checkpoint": str,
    "resume": str,
    "grace_seconds": float,
    "secrets": list,
}
SETUP_KEYS = {"commands": list, "depends": list}
DATA_KEYS = {"src": str, "target": str}
# What a mode may set besides its command: defaults for the launch, a flag still wins.
MODE_LAUNCH_KEYS = {
    "provider": str,
    "type": str,
    "region": str,
    "spot": bool,
    "budget": float,
    "max_hours": float,
    "idle_minutes": float,
    "stall_minutes": float,
    "disk_gb": int,
    "teardown": str,
}
MODE_KEYS = {
    "description": str,
    "command": str,
    "preset": str,
    "train": dict,
    "epochs": int,
    **MODE_LAUNCH_KEYS,
}
TOP_KEYS = {"project", "setup", "env", "data", "modes"}
# The most a number may say: beyond these it is a typo, and a limit too big to print or
# to add to a clock (1e308 hours) would fail the launch after the run was recorded.
LIMITS: dict[str, tuple[bool, float, str]] = {  # key: (zero allowed, most, unit)
    "grace_seconds": (True, 600, "s"),
    "budget": (False, 1_000_000, "USD"),
    "max_hours": (False, 8760, "h"),
    "idle_minutes": (True, 525_600, "min"),
    "stall_minutes": (True, 525_600, "min"),
    "disk_gb": (False, 65_536, "GB"),
    "epochs": (False, 1_000_000, "epochs"),
}
_PATTERN = re.compile(r"[A-Za-z0-9_.*?/\[\]-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_REF = re.compile(r"\$\{?[A-Za-z_]")  # $HOME, ${HOME}


@dataclass(frozen=True)
class DataSource:
    """A dataset the script reads: a local directory synced once and cached on the machine
    across runs, or an s3:// prefix the machine fetches through presigned URLs."""

    name: str
    src: str  # absolute local directory, or s3://bucket/prefix
    target: str  # where the script finds it, relative to the project root
    where: str = ""  # file:line of its src, for the error when it is missing at launch

    @property
    def from_s3(self) -> bool:
        return self.src.startswith("s3://")

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "src": self.src, "target": self.target}

    def check_present(self) -> None:
        """At launch (not when the file is read, so `gpuctl presets` works before the data
        is made): a local dataset must exist."""
        if not self.from_s3 and not Path(self.src).is_dir():
            raise ConfigError(
                f"{self.where or FILE_NAME}: dataset {self.name}: {self.src} does not exist",
                hint="create it first, or fix [data] in gpuctl.toml",
            )


@dataclass(frozen=True)
class Mode:
    """One way to run the project: a command line, or a bundled-trainer preset with overrides."""

    name: str
    description: str = ""
    command: str | None = None
    preset: str | None = None
    train: Mapping[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    launch: Mapping[str, Any] = field(default_factory=dict)  # MODE_LAUNCH_KEYS given
    line: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", frozen_map(self.train))
        object.__setattr__(self, "launch", frozen_map(self.launch))


@dataclass(frozen=True)
class Project:
    root: Path
    file: Path
    name: str
    modes: Mapping[str, Mode]
    setup: tuple[str, ...] = ()
    setup_depends: tuple[str, ...] = ()
    data: tuple[DataSource, ...] = ()
    outputs: tuple[str, ...] = ()
    checkpoint: str = ""
    resume: str = ""
    grace_seconds: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", frozen_map(self.modes))
        object.__setattr__(self, "env", frozen_map(self.env))

    def mode(self, name: str) -> Mode | None:
        return self.modes.get(name)

    def setup_key(self) -> str:
        """Changes when the setup commands or a file they depend on change: set up again."""
        digest = hashlib.blake2b(digest_size=8)
        for command in self.setup:
            digest.update(b"cmd\0" + command.encode() + b"\0")
        for rel in self.setup_depends:
            path = self.root / rel
            digest.update(b"dep\0" + rel.encode() + b"\0")
            # A directory (a local package, a conda env spec folder): every file in it.
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                digest.update(str(file.relative_to(self.root)).encode() + b"\0")
                try:
                    digest.update(file.read_bytes())
                except OSError:
                    digest.update(b"<missing>")
        return digest.hexdigest()

    def upload_excludes(self) -> tuple[str, ...]:
        """The code upload leaves out the declared excludes, the local datasets (those go
        to the machine's data cache once, not with every run) and the checkpoint."""
        data = tuple(d.target.rstrip("/") for d in self.data if not d.from_s3)
        # A checkpoint left here by a local run must not reach a fresh run as its own.
        checkpoint = (self.checkpoint,) if self.checkpoint else ()
        return (*self.exclude, *data, *checkpoint)


def secret_values(names: Sequence[str], source: str = "") -> dict[str, str]:
    """The values of a project's named secrets from this environment; a missing or empty
    one is refused (at launch, before anything is created, and again at each start)."""
    import os

    values: dict[str, str] = {}
    for name in names:
        value = os.environ.get(name, "")
        if not value:
            state = "is empty" if name in os.environ else "is not set"
            named = f" named in {source}" if source else ""
            raise ConfigError(
                f"secret {name}{named} {state} in your environment",
                hint=f"export {name}=... here (it travels to the machine on a pipe, "
                "never to its disk), or drop it from secrets",
            )
        values[name] = value
    return values


# -- finding ---------------------------------------------------------------------------------


def find(start: Path) -> Path | None:
    """The gpuctl.toml of the project that holds `start`: that directory or a parent,
    up to the first directory with a .git (a repository's root ends the search)."""
    try:
        here = start.expanduser().resolve()
    except OSError:
        return None
    for directory in (here, *here.parents):
        candidate = directory / FILE_NAME
        if candidate.is_file():
            return candidate
        if os.path.lexists(candidate):  # a directory, a dangling link or a link loop
            # Passing it by would run the bundled preset of that name instead of the script.
            raise ConfigError(
                f"{candidate} is not a readable file",
                hint=f"make {FILE_NAME} a file (or remove it to run the bundled presets)",
            )
        if (directory / ".git").exists():
            return None
    return None


def discover(start: Path | None = None) -> Project | None:
    """The project at or above `start` (default the current directory), or None."""
    path = find(start if start is not None else Path.cwd())
    return load(path) if path is not None else None


# -- loading ---------------------------------------------------------------------------------


def load(path: Path) -> Project:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", hint=f"save {path} as UTF-8") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the file's permissions"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"at line (\d+)", str(exc))
        where = f"{path}:{line.group(1)}" if line else str(path)
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(f"{where}: not valid TOML: {message}", hint=f"fix {path}") from None
    return _Reader(path, text).project(raw)


def _dotted(key: str) -> tuple[str, ...]:
    """`modes."big.one".train` -> ("modes", "big.one", "train")."""
    parts = re.findall(r'"[^"]*"|\'[^\']*\'|[^.\s]+', key)
    return tuple(p.strip("\"'") for p in parts)


class _Reader:
    """Turns the parsed table into a Project; every error names the file and its line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    # -- errors --------------------------------------------------------------------------

    def line_of(self, table: tuple[str, ...], key: str | None = None) -> int:
        """The line that sets `key` in `table` (or the table's header); 0 if not found."""
        current: tuple[str, ...] = ()
        header_line = 0
        for number, line in enumerate(self.lines, 1):
            stripped = line.strip()
            header = re.fullmatch(r"\[\[?\s*([^\]]+?)\s*\]\]?(\s*#.*)?", stripped)
            if header:
                current = _dotted(header.group(1))
                if current == table:
                    header_line = number
                elif key is not None and current[: len(table) + 1] == (*table, key):
                    return number  # the key is a table of its own: [modes.fast]
                continue
            if key is None:
                continue
            match = re.match(r"([A-Za-z0-9_.\"' -]+?)\s*=", stripped)
            if not match:
                continue
            dotted = _dotted(match.group(1))
            if (*current, *dotted) == (*table, key):
                return number
        return header_line

    def error(
        self, table: tuple[str, ...], key: str | None, message: str, hint: str = ""
    ) -> ConfigError:
        line = self.line_of(table, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {message}", hint=hint or f"fix {self.path}")

    # -- values --------------------------------------------------------------------------

    def table(self, raw: Any, where: tuple[str, ...], key: str | None = None) -> dict[str, Any]:
        if not isinstance(raw, dict):
            name = ".".join(where)
            raise self.error(where[:-1], where[-1], f"[{name}] must be a table, got {raw!r}")
        return raw

    def check_keys(
        self, data: Mapping[str, Any], known: Mapping[str, type], where: tuple[str, ...]
    ) -> None:
        for key, value in data.items():
            if key not in known:
                import difflib

                close = difflib.get_close_matches(key, list(known), n=1)
                raise self.error(
                    where,
                    key,
                    f"unknown key '{key}' in [{'.'.join(where)}]",
                    hint=(f"did you mean '{close[0]}'? " if close else "")
                    + f"known: {', '.join(sorted(known))}",
                )
            self.check_type(value, known[key], where, key)

    def check_type(self, value: Any, kind: type, where: tuple[str, ...], key: str) -> None:
        label = f"{'.'.join(where)}.{key}"
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if ok and (not math.isfinite(value) or value < 0):
                raise self.error(where, key, f"{label} must be a finite number >= 0, got {value}")
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            if ok and value <= 0:
                raise self.error(where, key, f"{label} must be a whole number > 0, got {value}")
        elif kind is list:
            ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        else:
            ok = isinstance(value, kind)
        if ok and kind in (float, int) and key in LIMITS:
            zero_ok, most, unit = LIMITS[key]
            if value == 0 and not zero_ok:
                raise self.error(where, key, f"{label} must be more than 0, got {value}")
            if value > most:
                message = f"{label} must be at most {most:,} {unit}, got {value:g}"
                raise self.error(where, key, message)
        if ok and kind is str and not value.strip() and key in ("command", "preset", "resume"):
            raise self.error(where, key, f"{label} is blank")
        strings = value if kind is list else [value]
        if ok and any(isinstance(v, str) and "\0" in v for v in strings):
            raise self.error(where, key, f"{label} holds a NUL character")
        if not ok:
            want = {float: "a number", int: "a whole number", list: "a list of strings"}.get(
                kind, {str: "a string", bool: "true or false", dict: "a table"}.get(kind, "?")
            )
            raise self.error(where, key, f"{label} must be {want}, got {value!r}")

    def name(self, value: str, where: tuple[str, ...], key: str | None, what: str) -> str:
        if len(value) > NAME_MAX or not NAME_RULE.fullmatch(value):
            raise self.error(
                where,
                key,
                f"{what} '{value}' must be lowercase letters, digits and '-' "
                f"(at most {NAME_MAX}); it becomes part of run ids and machine names",
                hint=f"call it '{suggest_name(value)}'",
            )
        return value

    def relative(self, value: str, where: tuple[str, ...], key: str) -> str:
        """A path inside the project: relative, and never climbing out of it."""
        parts = Path(value).parts
        # "." is the project itself: no checkpoint, output or dataset target can be that.
        if Path(value).is_absolute() or ".." in parts or not value.strip() or not parts:
            raise self.error(
                where,
                key,
                f"{'.'.join(where)}.{key} = '{value}' must be a path inside the project",
                hint="write it relative to the directory that holds gpuctl.toml",
            )
        return value.rstrip("/")

    def pattern(self, value: str) -> str:
        """An output path or glob: inside the project, no shell syntax (sh expands it)."""
        value = self.relative(value, ("project",), "outputs")
        if not _PATTERN.fullmatch(value):
            raise self.error(
                ("project",),
                "outputs",
                f"outputs: '{value}' may hold letters, digits, . _ - / and the globs * ? [ ]",
                hint="name the files your script writes, e.g. checkpoints/*.pt",
            )
        return value

    # -- sections ------------------------------------------------------------------------

    def project(self, raw: dict[str, Any]) -> Project:
        for key in raw:
            if key not in TOP_KEYS:
                raise self.error(
                    (),
                    key,
                    f"unknown section '{key}'",
                    hint=f"a project file has {', '.join(sorted(TOP_KEYS))}",
                )
        root = self.path.parent.resolve()
        meta = self.table(raw.get("project", {}), ("project",))
        self.check_keys(meta, PROJECT_KEYS, ("project",))
        default_name = suggest_name(root.name) or "project"
        name = self.name(str(meta.get("name", default_name)), ("project",), "name", "name")
        resume = str(meta.get("resume", ""))
        if resume:
            self.check_template(resume, ("project",), "resume")
        checkpoint = meta.get("checkpoint", "")
        if checkpoint:
            checkpoint = self.relative(checkpoint, ("project",), "checkpoint")
        if resume and not checkpoint:
            raise self.error(
                ("project",),
                "resume",
                "resume is set but checkpoint is not: gpuctl would have nothing to hand back",
                hint="name the file or directory your script saves, e.g. checkpoint = "
                '"checkpoints/last.pt"',
            )
        secrets = tuple(meta.get("secrets", ()))
        for secret in secrets:
            if not _ENV_NAME.fullmatch(secret):
                raise self.error(
                    ("project",), "secrets", f"secrets: '{secret}' is not an environment name"
                )
        setup = self.table(raw.get("setup", {}), ("setup",))
        self.check_keys(setup, SETUP_KEYS, ("setup",))
        depends = tuple(self.relative(d, ("setup",), "depends") for d in setup.get("depends", ()))
        env = self.env(self.table(raw.get("env", {}), ("env",)), secrets)
        data = self.data(self.table(raw.get("data", {}), ("data",)), root)
        modes_raw = self.table(raw.get("modes", {}), ("modes",))
        if not modes_raw:
            raise self.error(
                (),
                "modes",
                "the project declares no modes",
                hint='add one, e.g. [modes.validate] command = "python train.py --epochs 1"',
            )
        modes = {n: self.mode(n, m) for n, m in modes_raw.items()}
        return Project(
            root=root,
            file=self.path.resolve(),
            name=name,
            modes=modes,
            setup=tuple(setup.get("commands", ())),
            setup_depends=depends,
            data=data,
            outputs=tuple(self.pattern(o) for o in meta.get("outputs", ())),
            checkpoint=checkpoint,
            resume=resume,
            grace_seconds=float(meta["grace_seconds"]) if "grace_seconds" in meta else None,
            env=env,
            secrets=secrets,
            exclude=tuple(meta.get("exclude", ())),
        )

    def check_template(self, value: str, where: tuple[str, ...], key: str) -> None:
        try:
            value.format(checkpoint="x")
        except (KeyError, IndexError, ValueError):
            raise self.error(
                where,
                key,
                f"{key} = '{value}': only {{checkpoint}} may appear in braces",
                hint='e.g. resume = "--resume {checkpoint}"',
            ) from None

    def env(self, raw: dict[str, Any], secrets: tuple[str, ...]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in raw.items():
            if not _ENV_NAME.fullmatch(key):
                raise self.error(("env",), key, f"[env] '{key}' is not an environment name")
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise self.error(("env",), key, f"[env] {key} must be a string or a number")
            if isinstance(value, float) and not math.isfinite(value):
                raise self.error(("env",), key, f"[env] {key} must be a finite number")
            if isinstance(value, str) and "\0" in value:
                raise self.error(("env",), key, f"[env] {key} holds a NUL character")
            # Taken literally: "$HOME/bin:$PATH" would reach the command as those characters
            # (and a PATH without the system's directories fails with `sh` not found).
            if key == "PATH" or (isinstance(value, str) and _ENV_REF.search(value)):
                raise self.error(
                    ("env",),
                    key,
                    f"[env] {key}: values are set as written, never expanded"
                    + (" (and PATH replaces the machine's own)" if key == "PATH" else ""),
                    hint=f'set it in the command instead: command = "{key}=...:${key} python '
                    'train.py"',
                )
            if key in secrets:
                raise self.error(
                    ("env",),
                    key,
                    f"[env] {key} is also named in secrets",
                    hint="a secret's value comes from your environment, never from this file",
                )
            if key.startswith("GPUCTL_"):
                raise self.error(("env",), key, f"[env] {key}: GPUCTL_ names are gpuctl's own")
            out[key] = str(value)
        return out

    def data(self, raw: dict[str, Any], root: Path) -> tuple[DataSource, ...]:
        out = []
        for name, entry in raw.items():
            where = ("data", name)
            entry = self.table(entry, where)
            self.name(name, ("data",), name, "data set name")
            self.check_keys(entry, DATA_KEYS, where)
            src = entry.get("src")
            if not src:
                raise self.error(where, None, f"[data.{name}] needs src = a directory or s3://…")
            if src.startswith("s3://"):
                bucket = src[5:].split("/", 1)[0]
                if not bucket:
                    raise self.error(where, "src", f"[data.{name}] src '{src}' names no bucket")
                target = self.relative(entry.get("target", f"data/{name}"), where, "target")
            else:
                path = Path(src).expanduser()
                path = path if path.is_absolute() else root / path
                if path.exists() and not path.is_dir():
                    raise self.error(
                        where,
                        "src",
                        f"[data.{name}] src '{src}' is not a directory",
                        hint="name a local directory (relative to the project) or s3://bucket/prefix",
                    )
                default = src if not Path(src).is_absolute() else f"data/{name}"
                target = self.relative(entry.get("target", default), where, "target")
                src = str(path.resolve())
            line = self.line_of(where, "src")
            out.append(DataSource(name, src, target, f"{self.path}:{line}" if line else ""))
        return tuple(out)

    def mode(self, name: str, raw: Any) -> Mode:
        where = ("modes", name)
        entry = self.table(raw, where)
        self.name(name, ("modes",), name, "mode name")
        self.check_keys(entry, MODE_KEYS, where)
        line = self.line_of(where)
        command, preset = entry.get("command"), entry.get("preset")
        if bool(command) == bool(preset):
            raise self.error(
                where,
                None,
                f"mode '{name}' needs exactly one of command = \"...\" (your script) or "
                'preset = "..." (the bundled trainer)',
            )
        train = dict(entry.get("train", {}))
        if train and not preset:
            raise self.error(where, "train", f"[modes.{name}.train] applies to preset modes only")
        if preset:
            from gpuctl.presets.loader import BUNDLED
            from gpuctl.trainer import config as train_config

            if preset not in BUNDLED:
                raise self.error(
                    where,
                    "preset",
                    f"mode '{name}': unknown preset '{preset}'",
                    hint=f"bundled presets: {', '.join(BUNDLED)}",
                )
            try:
                train_config.validate(train)
            except train_config.ConfigError as exc:
                raise self.error((*where, "train"), None, f"mode '{name}': {exc}") from None
        teardown = entry.get("teardown")
        if teardown is not None and teardown not in ("terminate", "stop", "keep"):
            raise self.error(where, "teardown", f"mode '{name}': unknown teardown '{teardown}'")
        launch = {k: entry[k] for k in MODE_LAUNCH_KEYS if k in entry}
        return Mode(
            name=name,
            description=str(entry.get("description", "")),
            command=command,
            preset=preset,
            train=train,
            epochs=entry.get("epochs"),
            launch=launch,
            line=line,
        )


__all__ = ["COMMAND_MODE", "FILE_NAME", "DataSource", "Mode", "Project", "discover", "find", "load"]
