"""Where gpuctl keeps its files, and the user's config.toml.

``GPUCTL_HOME`` moves everything gpuctl writes (config, state, keys, results) under one
directory; tests and people with several accounts use it. Without it, config lives in
platformdirs' config dir and data in its data dir.

Credentials are never read from or written to these files: each cloud's own chain
(AWS profiles/env/SSO, ``DIGITALOCEAN_TOKEN``...) is the single source of secrets.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checks, notify_kinds, profile_options
from .checks import Check
from .driver_registry import kinds
from .errors import ConfigError
from .models import frozen_map

APP = "gpuctl"

# Profiles every installation has; config.toml may override their options or add more.
BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    "local": {"provider": "local", "price_per_hour": 0.0},
    "ssh": {"provider": "ssh"},
    "aws": {"provider": "aws", "regions": ["us-east-1"]},
    "digitalocean": {
        "provider": "digitalocean",
        "endpoint": "https://api.digitalocean.com",
        "token_env": "DIGITALOCEAN_TOKEN",
        "regions": [],
    },
    "amd": {
        "provider": "digitalocean",
        "endpoint": "https://api-amd.digitalocean.com",
        "token_env": "AMD_DEVCLOUD_TOKEN",
        "regions": ["atl1"],
        "gpu_vendor": "amd",
    },
}

# Every key config.toml may hold, with its check: a value's type, range and finiteness
# are checked when the file is loaded, so a mistake names its file and line before any
# command runs, instead of being ignored or failing later without either. A profile's
# keys are its provider kind's (gpuctl/profile_options.py).
TOP_LEVEL_KEYS: dict[str, Check] = {
    "default_provider": checks.string,
    "providers": checks.strings,  # profiles listed/refreshed by `ls` and the TUI
    "results_dir": checks.string,
    "budget": checks.table,
    "tui": checks.table,
    "profiles": checks.table,
    "defaults": checks.table,
    "notify": checks.table,
}
BUDGET_KEYS: dict[str, Check] = {
    "monthly": checks.monthly,
    "per_provider": checks.per_provider,
    "warn_fraction": checks.number(above=0.0, below=1.0),
    "on_exceed": checks.choice(
        "terminate", "stop", hint="terminate ends billing; stop keeps the disk (still billed)"
    ),
    "currency": checks.currency,
}
TUI_KEYS: dict[str, Check] = {
    "refresh_seconds": checks.number(at_least=1.0),
    "theme": checks.string,
}
NOTIFY_KEYS: dict[str, Check] = {
    "urls": checks.notify_urls,
    "events": checks.names_of(notify_kinds.KINDS),
}
DEFAULTS_KEYS: dict[str, Check] = {
    "max_hours": checks.number(above=0.0),
    "idle_minutes": checks.number(at_least=0.0),
    "teardown": checks.choice("terminate", "stop", "keep"),
    "stall_minutes": checks.number(at_least=0.0),
}


@dataclass(frozen=True)
class Profile:
    """A named way to reach one provider: `aws-prod`, `amd`, an emulator endpoint..."""

    name: str
    provider: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", frozen_map(self.options))

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value as config.toml set it (for a key with no declared default)."""
        return self.options.get(key, default)

    def value(self, key: str) -> Any:
        """A declared option of this profile's kind: as set (checked when config.toml
        was read; an old spelling counts), else its default from profile_options."""
        declared = profile_options.option(self.provider, key)
        if declared is None:
            if profile_options.schema(self.provider) is not None:
                raise KeyError(f"{self.provider} profiles have no option '{key}'")
            return self.options.get(key)  # a driver with no table reads its own keys
        for name in (key, *declared.old_names):
            if name in self.options:
                return self.options[name]
        return declared.default

    def launch_options(self) -> dict[str, Any]:
        """The options this profile sets that a launch flag could set for one run
        (AWS: key_name, checkpoint_bucket): a launch starts from these, its flags win."""
        declared = profile_options.schema(self.provider) or {}
        return {k: self.options[k] for k, o in declared.items() if o.flag and k in self.options}


@dataclass(frozen=True)
class Budget:
    monthly: float | None = None
    per_provider: Mapping[str, float] = field(default_factory=dict)
    warn_fraction: float = 0.8
    on_exceed: str = "terminate"  # terminate | stop

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_provider", frozen_map(self.per_provider))


@dataclass(frozen=True)
class Notify:
    """[notify]: where notifications go (apprise URLs) and which ones (default: all)."""

    urls: tuple[str, ...] = ()
    events: frozenset[str] = frozenset(notify_kinds.KINDS)

    def wants(self, kind: str) -> bool:
        return bool(self.urls) and kind in self.events


@dataclass(frozen=True)
class Settings:
    home: Path  # data: state.db, keys, local runs, caches
    config_path: Path
    results_dir: Path
    default_provider: str = "local"
    providers: tuple[str, ...] = ("local",)
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)
    refresh_seconds: float = 30.0
    max_hours: float = 12.0
    idle_minutes: float = 30.0
    teardown: str = "terminate"
    # The [defaults] keys config.toml sets: max_hours and idle_minutes given there cap
    # every preset's (the smaller wins); left out, each preset keeps its own.
    defaults_given: frozenset[str] = frozenset()
    stall_minutes: float = 20.0  # the agent stops a trainer without progress this long
    notify: Notify = field(default_factory=Notify)

    @property
    def state_path(self) -> Path:
        return self.home / "state.db"

    @property
    def installation_id(self) -> str:
        """This data directory's id, tagged on everything gpuctl creates (made once)."""
        from .ownership import installation_id

        return installation_id(self.home)

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def known_hosts(self) -> Path:
        return self.home / "known_hosts"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def presets_dir(self) -> Path:
        return self.config_path.parent / "presets"

    def config_age(self) -> float | None:
        """Seconds since config.toml last changed (None without one)."""
        try:
            return time.time() - self.config_path.stat().st_mtime
        except OSError:
            return None

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise ConfigError(
                f"unknown provider '{name}'",
                hint=_did_you_mean(name, self.profiles)
                or f"choose one of: {', '.join(sorted(self.profiles))}",
            ) from None


def _did_you_mean(name: str, choices: Mapping[str, Any] | list[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def home_dirs() -> tuple[Path, Path]:
    """(data dir, config dir) honouring GPUCTL_HOME."""
    override = os.environ.get("GPUCTL_HOME")
    if override:
        root = Path(override).expanduser()
        return root, root
    import platformdirs

    return Path(platformdirs.user_data_dir(APP)), Path(platformdirs.user_config_dir(APP))


def _key_path(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


def _locate(text: str, keys: tuple[str, ...]) -> int | None:
    """The line of a key (or a table header) in config.toml, tables and dotted keys aware;
    for a key inside an inline table, the line of that table."""
    table: tuple[str, ...] = ()
    best = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
        if header:
            table = _key_path(header.group(1))
            if table == keys:
                return number
            continue
        assign = re.match(r"^([A-Za-z0-9_\-.\"' ]+?)\s*=", line)
        if not assign:
            continue
        full = (*table, *_key_path(assign.group(1)))
        if full == keys:
            return number
        if best is None and len(full) < len(keys) and keys[: len(full)] == full:
            best = number
    return best


def _located(path: Path, text: str, keys: tuple[str, ...], message: str, hint: str) -> ConfigError:
    line = _locate(text, keys) if keys else None
    at = f" (line {line})" if line else ""
    return ConfigError(f"{path}{at}: {message}", hint=hint or f"fix the value in {path}")


def _check_table(
    table: Mapping[str, Any],
    schema: Mapping[str, Check],
    prefix: tuple[str, ...],
    path: Path,
    text: str,
    *,
    strict: bool = True,
) -> dict[str, Any]:
    """Each key's value checked (type, range, finite); an unknown key is a mistake."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        keys = (*prefix, key)
        what = ".".join(keys)
        if key not in schema:
            if strict:
                raise _located(
                    path,
                    text,
                    keys,
                    f"unknown setting '{what}'",
                    _did_you_mean(key, list(schema)) or f"known: {', '.join(sorted(schema))}",
                )
            out[key] = value
            continue
        try:
            out[key] = schema[key](value, what)
        except ConfigError as exc:
            raise _located(path, text, keys, exc.message, exc.hint) from None
    return out


def load(config_path: Path | None = None) -> Settings:
    """Read config.toml (absent file = defaults); any mistake is a one-line ConfigError
    naming the file and the line."""
    data_dir, config_dir = home_dirs()
    path = config_path or config_dir / "config.toml"
    raw: dict[str, Any] = {}
    text = ""
    try:
        exists = path.exists()
    except OSError as exc:  # a parent is not a directory we may enter
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}", hint=f"check {path.parent}"
        ) from None
    if exists:
        if path.is_dir():
            raise ConfigError(
                f"{path} is a directory, not a config file",
                hint=f"move it aside; gpuctl reads its settings from the file {path}",
            )
        try:
            text = path.read_text(encoding="utf-8")
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"{path} is not valid TOML: {exc}",
                hint=f"fix that line, or move {path} away to start from defaults",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read {path}: {reason}", hint="check the file") from None
    top = _check_table(raw, TOP_LEVEL_KEYS, (), path, text)
    budget_raw = _check_table(top.get("budget", {}), BUDGET_KEYS, ("budget",), path, text)
    tui_raw = _check_table(top.get("tui", {}), TUI_KEYS, ("tui",), path, text)
    defaults_raw = _check_table(top.get("defaults", {}), DEFAULTS_KEYS, ("defaults",), path, text)
    notify_raw = _check_table(top.get("notify", {}), NOTIFY_KEYS, ("notify",), path, text)

    profiles = _profiles(top.get("profiles", {}), path, text)
    default_provider = top.get("default_provider", "local")
    if default_provider not in profiles:
        raise _located(
            path,
            text,
            ("default_provider",),
            f"default_provider '{default_provider}' is not a known profile",
            _did_you_mean(default_provider, profiles)
            or f"choose one of: {', '.join(sorted(profiles))}",
        )
    providers = tuple(top.get("providers", [default_provider]))
    for name in providers:
        if name not in profiles:
            raise _located(
                path,
                text,
                ("providers",),
                f"providers lists unknown profile '{name}'",
                _did_you_mean(name, profiles) or f"known: {', '.join(sorted(profiles))}",
            )
    for name in budget_raw.get("per_provider", {}):
        if name not in profiles:  # a typo would leave that budget unenforced: money
            raise _located(
                path,
                text,
                ("budget", "per_provider"),
                f"[budget] per_provider names unknown profile '{name}'",
                _did_you_mean(name, profiles) or f"known: {', '.join(sorted(profiles))}",
            )
    budget = _budget(budget_raw)
    results = top.get("results_dir")
    return Settings(
        home=data_dir,
        config_path=path,
        results_dir=Path(results).expanduser() if results else data_dir / "results",
        default_provider=default_provider,
        providers=providers,
        profiles=profiles,
        budget=budget,
        refresh_seconds=float(tui_raw.get("refresh_seconds", 30.0)),
        max_hours=float(defaults_raw.get("max_hours", 12.0)),
        idle_minutes=float(defaults_raw.get("idle_minutes", 30.0)),
        teardown=str(defaults_raw.get("teardown", "terminate")),
        defaults_given=frozenset(defaults_raw),
        stall_minutes=float(defaults_raw.get("stall_minutes", 20.0)),
        notify=Notify(
            urls=tuple(notify_raw.get("urls", ())),
            events=frozenset(notify_raw.get("events", notify_kinds.KINDS)),
        ),
    )


def _profiles(raw: Mapping[str, Any], path: Path, text: str) -> dict[str, Profile]:
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BUILTIN_PROFILES.items()}
    for name, options in raw.items():
        keys = ("profiles", name)
        if not isinstance(options, dict):
            raise _located(
                path, text, keys, f"[profiles.{name}] must be a table", "see README: Configuration"
            )
        base = merged.get(name, {})
        kind = options.get("provider", base.get("provider"))
        if kind is None:
            raise _located(
                path,
                text,
                keys,
                f'profile \'{name}\' needs provider = "aws" | "digitalocean" | "ssh" | "local"',
                f"add provider = ... under [profiles.{name}]",
            )
        if not isinstance(kind, str) or kind not in kinds():
            raise _located(
                path,
                text,
                (*keys, "provider"),
                f"profile '{name}': unknown provider '{kind}'",
                (isinstance(kind, str) and _did_you_mean(kind, kinds()))
                or f"known: {', '.join(kinds())}",
            )
        options = _check_profile(kind, _renamed(kind, options, keys, path, text), keys, path, text)
        merged[name] = {**base, **options}
    return {
        name: Profile(name=name, provider=str(opts.pop("provider")), options=opts)
        for name, opts in merged.items()
    }


_warned: set[str] = set()


def _warn(message: str) -> None:
    """One line on stderr, once per process (config.toml is read more than once)."""
    if message not in _warned:
        _warned.add(message)
        logging.getLogger("gpuctl").info(message)
        print(f"warning: {message}", file=sys.stderr)


def _renamed(
    kind: str, options: Mapping[str, Any], keys: tuple[str, ...], path: Path, text: str
) -> dict[str, Any]:
    """Old key names (poll_interval, boot_timeout) read as their new ones, with a warning."""
    old_to_new = profile_options.renamed(kind)
    out: dict[str, Any] = {}
    for key, value in options.items():
        new = old_to_new.get(key)
        if new is None:
            out.setdefault(key, value)
            continue
        where = (*keys, key)
        if new in options:
            raise _located(
                path,
                text,
                where,
                f"[{'.'.join(keys)}] sets both {key} and {new}, its new name",
                f"keep only {new}",
            )
        option = profile_options.option(kind, new)
        if option is not None:  # a bad value is reported under the name the user wrote
            _check_table({key: value}, {key: option.check}, keys, path, text, strict=False)
        line = _locate(text, where)
        at = f" (line {line})" if line else ""
        _warn(f"{path}{at}: [{'.'.join(keys)}] {key} is now called {new}; the old name still works")
        out[new] = value
    return out


def _check_profile(
    kind: str, options: Mapping[str, Any], keys: tuple[str, ...], path: Path, text: str
) -> dict[str, Any]:
    """Each key checked against the kind's options; an unknown one names its kind."""
    declared = profile_options.schema(kind)
    table = declared or profile_options.COMMON
    for key in options:
        if declared is None or key in declared:
            continue
        elsewhere = profile_options.kinds_of(key)
        hint = (
            f"{key} is an option of {' and '.join(elsewhere)} profiles"
            if elsewhere
            else _did_you_mean(key, list(declared))
            or "see the profile keys in README: Configuration"
        )
        raise _located(
            path,
            text,
            (*keys, key),
            f"unknown setting '{'.'.join((*keys, key))}' for provider {kind}",
            hint,
        )
    schema = {k: o.check for k, o in table.items()}
    return _check_table(options, schema, keys, path, text, strict=declared is not None)


def _budget(raw: Mapping[str, Any]) -> Budget:
    """Values already checked by BUDGET_KEYS; defaults filled in."""
    monthly = raw.get("monthly")
    return Budget(
        monthly=float(monthly) if monthly is not None else None,
        per_provider=raw.get("per_provider", {}),
        warn_fraction=float(raw.get("warn_fraction", 0.8)),
        on_exceed=raw.get("on_exceed", "terminate"),
    )
