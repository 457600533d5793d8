"""Where gpuctl keeps its files, and the user's config.toml.

``GPUCTL_HOME`` moves everything gpuctl writes (config, state, keys, results) under one
directory; tests and people with several accounts use it. Without it, config lives in
platformdirs' config dir and data in its data dir.

Credentials are never read from or written to these files: each cloud's own chain
(AWS profiles/env/SSO, ``DIGITALOCEAN_TOKEN``...) is the single source of secrets.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

TOP_LEVEL_KEYS = {
    "default_provider": str,
    "providers": list,  # profiles listed/refreshed by `ls` and the TUI
    "results_dir": str,
    "budget": dict,
    "tui": dict,
    "profiles": dict,
    "defaults": dict,
}
BUDGET_KEYS = {
    "monthly": (int, float),
    "per_provider": dict,
    "warn_fraction": (int, float),
    "on_exceed": str,
    "currency": str,
}
TUI_KEYS = {"refresh_seconds": (int, float), "theme": str}
DEFAULTS_KEYS = {
    "max_hours": (int, float),
    "idle_minutes": (int, float),
    "teardown": str,
    "stall_minutes": (int, float),
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
        return self.options.get(key, default)


@dataclass(frozen=True)
class Budget:
    monthly: float | None = None
    per_provider: Mapping[str, float] = field(default_factory=dict)
    warn_fraction: float = 0.8
    on_exceed: str = "terminate"  # terminate | stop

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_provider", frozen_map(self.per_provider))


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
    stall_minutes: float = 20.0  # the agent stops a trainer without progress this long

    @property
    def state_path(self) -> Path:
        return self.home / "state.db"

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


def _line_of(text: str, pattern: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(pattern, line.strip()):
            return number
    return None


def _check_keys(
    table: Mapping[str, Any], schema: Mapping[str, Any], where: str, path: Path, text: str
) -> None:
    for key, value in table.items():
        if key not in schema:
            line = _line_of(text, rf"{re.escape(key)}\s*=|\[.*{re.escape(key)}\]")
            at = f" (line {line})" if line else ""
            raise ConfigError(
                f"{path}{at}: unknown setting '{where}{key}'",
                hint=_did_you_mean(key, list(schema)) or f"known: {', '.join(sorted(schema))}",
            )
        expected = schema[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            line = _line_of(text, rf"{re.escape(key)}\s*=")
            at = f" (line {line})" if line else ""
            names = expected.__name__ if isinstance(expected, type) else "number"
            raise ConfigError(
                f"{path}{at}: '{where}{key}' must be a {names}, got {value!r}",
                hint=f"fix the value in {path}",
            )


def load(config_path: Path | None = None) -> Settings:
    """Read config.toml (absent file = defaults); any mistake is a one-line ConfigError."""
    data_dir, config_dir = home_dirs()
    path = config_path or config_dir / "config.toml"
    raw: dict[str, Any] = {}
    text = ""
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"{path} is not valid TOML: {exc}",
                hint=f"fix that line, or move {path} away to start from defaults",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}", hint="check the file") from None
    _check_keys(raw, TOP_LEVEL_KEYS, "", path, text)
    budget_raw = raw.get("budget", {})
    _check_keys(budget_raw, BUDGET_KEYS, "budget.", path, text)
    tui_raw = raw.get("tui", {})
    _check_keys(tui_raw, TUI_KEYS, "tui.", path, text)
    defaults_raw = raw.get("defaults", {})
    _check_keys(defaults_raw, DEFAULTS_KEYS, "defaults.", path, text)

    profiles = _profiles(raw.get("profiles", {}), path)
    default_provider = raw.get("default_provider", "local")
    if default_provider not in profiles:
        raise ConfigError(
            f"{path}: default_provider '{default_provider}' is not a known profile",
            hint=_did_you_mean(default_provider, profiles)
            or f"choose one of: {', '.join(sorted(profiles))}",
        )
    providers = tuple(raw.get("providers", [default_provider]))
    for name in providers:
        if name not in profiles:
            raise ConfigError(
                f"{path}: providers lists unknown profile '{name}'",
                hint=_did_you_mean(name, profiles) or f"known: {', '.join(sorted(profiles))}",
            )
    budget = _budget(budget_raw, path)
    results = raw.get("results_dir")
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
        stall_minutes=float(defaults_raw.get("stall_minutes", 20.0)),
    )


def _profiles(raw: Mapping[str, Any], path: Path) -> dict[str, Profile]:
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BUILTIN_PROFILES.items()}
    for name, options in raw.items():
        if not isinstance(options, dict):
            raise ConfigError(
                f"{path}: [profiles.{name}] must be a table", hint="see README: Configuration"
            )
        base = merged.get(name, {})
        combined = {**base, **options}
        if "provider" not in combined:
            raise ConfigError(
                f'{path}: profile \'{name}\' needs provider = "aws" | "digitalocean" | '
                '"ssh" | "local"',
                hint=f"add provider = ... under [profiles.{name}]",
            )
        merged[name] = combined
    return {
        name: Profile(name=name, provider=str(opts.pop("provider")), options=opts)
        for name, opts in merged.items()
    }


def _budget(raw: Mapping[str, Any], path: Path) -> Budget:
    monthly = raw.get("monthly")
    if monthly is not None and monthly <= 0:
        raise ConfigError(
            f"{path}: budget.monthly must be positive, got {monthly}",
            hint="remove it for no monthly budget",
        )
    currency = raw.get("currency", "USD")
    if currency.upper() != "USD":
        raise ConfigError(
            f"{path}: unknown currency '{currency}'",
            hint='cloud prices are in USD; set currency = "USD" or remove it',
        )
    on_exceed = raw.get("on_exceed", "terminate")
    if on_exceed not in ("terminate", "stop"):
        raise ConfigError(
            f"{path}: budget.on_exceed must be 'terminate' or 'stop', got '{on_exceed}'",
            hint="terminate ends billing; stop keeps the disk (still billed)",
        )
    per_provider = {}
    for name, value in raw.get("per_provider", {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(
                f"{path}: budget.per_provider.{name} must be a positive number, got {value!r}",
                hint="amounts are in USD",
            )
        per_provider[name] = float(value)
    warn = float(raw.get("warn_fraction", 0.8))
    if not 0 < warn < 1:
        raise ConfigError(
            f"{path}: budget.warn_fraction must be between 0 and 1, got {warn}",
            hint="0.8 warns at 80%",
        )
    return Budget(
        monthly=float(monthly) if monthly is not None else None,
        per_provider=per_provider,
        warn_fraction=warn,
        on_exceed=on_exceed,
    )
