"""The trainer's config schema: the single source of truth for every key.

Standard library only (no torch): gpuctl's preset loader imports this module to
validate user overrides quickly, and the trainer validates a config before it pays
for `import torch`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

CONFIG_VERSION = 1
AMP_MODES = ("auto", "bf16", "fp16", "off")
_TASK_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class ConfigError(ValueError):
    """A config value is unknown, mistyped or out of range; the message names the key."""


class Field(NamedTuple):
    """Public description of one key: what gpuctl shows in help and override errors."""

    type: str
    default: object
    help: str


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How one key is checked; kept next to the dataclass field it describes."""

    kind: str  # int | float | bool | str | choice
    help: str
    optional: bool = False  # None allowed
    auto: bool = False  # the string "auto" allowed
    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo excluded
    hi_open: bool = False  # hi excluded

    def type_name(self) -> str:
        """Human type, e.g. "int | 'auto'" (shown in FIELDS and error messages)."""
        base = " | ".join(repr(c) for c in self.choices) if self.kind == "choice" else self.kind
        if self.auto:
            base += " | 'auto'"
        if self.optional:
            base += " | None"
        return base

    def expected(self) -> str:
        """What a valid value looks like, in words, for error messages."""
        if self.kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "str":
            text = "a string"
        else:
            noun = "integer" if self.kind == "int" else "number"
            text = _range_words(noun, self)
        if self.auto:
            text += " or 'auto'"
        if self.optional:
            text += " or null"
        return text


def _range_words(noun: str, s: _Spec) -> str:
    """'a positive integer', 'a number between 0 and 1', ... from the spec's bounds."""
    if s.lo == 0 and s.hi is None:
        return f"a positive {noun}" if s.lo_open else f"a non-negative {noun}"
    if noun == "integer" and s.lo == 1 and s.hi is None and not s.lo_open:
        return "a positive integer"
    if s.lo is not None and s.hi is not None:
        lo = "(excluded)" if s.lo_open else ""
        hi = "(excluded)" if s.hi_open else ""
        return f"a {noun} between {_num(s.lo)}{lo} and {_num(s.hi)}{hi}"
    if s.lo is not None:
        return f"a {noun} {'>' if s.lo_open else '>='} {_num(s.lo)}"
    return f"a {noun}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _f(default: Any, help: str, kind: str, **spec: Any) -> Any:
    """A dataclass field carrying its checking spec (keeps one source of truth)."""
    return dataclasses.field(default=default, metadata={"spec": _Spec(kind, help, **spec)})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One resolved training run; stored verbatim in every checkpoint."""

    version: int = _f(1, "config format version; newer than the trainer is refused", "int", lo=1)
    run_id: str = _f("local", "run name, echoed in events", "str")
    preset: str = _f("custom", "preset the config came from (validate/fast/standard/full)", "str")
    task: str = _f(
        "image", "'image' (bundled CNN) or 'module:factory' imported from workdir/cwd", "str"
    )
    workdir: str | None = _f(
        None,
        "user project dir put on sys.path for the task (relative: to the config)",
        "str",
        optional=True,
    )
    data_dir: str | None = _f(
        None,
        "ImageFolder root (train/ and val/ or class dirs); None: synthetic data",
        "str",
        optional=True,
    )
    train_samples: int = _f(512, "training samples (synthetic size, or subset cap)", "int", lo=1)
    val_samples: int = _f(128, "validation samples (synthetic size, or subset cap)", "int", lo=1)
    num_classes: int = _f(10, "classes of the bundled task (ImageFolder: from dirs)", "int", lo=2)
    image_size: int = _f(32, "square image side the bundled task trains at", "int", lo=4)
    width: int = _f(16, "base channels of the bundled CNN", "int", lo=1)
    depth: int = _f(2, "conv stages of the bundled CNN (each halves the image)", "int", lo=1)
    epochs: int = _f(3, "epochs to train", "int", lo=1)
    batch_size: int | str = _f(
        32, "per-device batch, or 'auto' to probe GPU memory (scales lr)", "int", lo=1, auto=True
    )
    lr: float = _f(
        0.003, "peak AdamW learning rate (for lr_ref_batch)", "float", lo=0, lo_open=True
    )
    weight_decay: float = _f(0.05, "AdamW weight decay (not on norms/biases)", "float", lo=0)
    warmup_epochs: float = _f(0.5, "linear warmup length before the cosine decay", "float", lo=0)
    min_lr_ratio: float = _f(0.05, "final lr as a fraction of the peak", "float", lo=0, hi=1)
    grad_accum: int = _f(1, "micro-batches per optimizer step", "int", lo=1)
    label_smoothing: float = _f(
        0.0, "cross-entropy label smoothing", "float", lo=0, hi=1, hi_open=True
    )
    amp: str = _f(
        "auto",
        "mixed precision: auto=bf16 if supported, else fp16; off on CPU",
        "choice",
        choices=AMP_MODES,
    )
    compile: bool = _f(False, "torch.compile the model (first epoch pays the compile)", "bool")
    seed: int = _f(0, "seed for init, data order and synthetic data", "int", lo=0)
    deterministic: bool = _f(False, "deterministic kernels (slower); exact resume on CPU", "bool")
    workers: int | str = _f(
        "auto", "DataLoader workers; auto picks per device", "int", lo=0, auto=True
    )
    checkpoint_every_epochs: int = _f(
        1, "write last.pt every N epochs (and at the end)", "int", lo=1
    )
    checkpoint_every_minutes: float = _f(
        10.0, "also write last.pt mid-epoch every N minutes; 0 disables", "float", lo=0
    )
    max_steps_per_epoch: int | None = _f(
        None, "cap optimizer steps per epoch (tests, smoke runs)", "int", lo=1, optional=True
    )
    sync_bn: bool = _f(False, "SyncBatchNorm under multi-GPU DDP (CPU: ignored)", "bool")
    auto_batch_target: float = _f(
        0.85, "fraction of GPU memory batch_size='auto' aims for", "float", lo=0, hi=1, lo_open=True
    )
    out_dir: str | None = _f(
        None,
        "run dir for outputs (None: the config's dir; relative: to the config)",
        "str",
        optional=True,
    )
    lr_ref_batch: int = _f(
        32,
        "global batch `lr` is tuned for; 'auto' batches scale lr by sqrt(global/this)",
        "int",
        lo=1,
    )


_SPECS: dict[str, _Spec] = {f.name: f.metadata["spec"] for f in dataclasses.fields(TrainConfig)}
FIELDS: dict[str, Field] = {
    f.name: Field(_SPECS[f.name].type_name(), f.default, _SPECS[f.name].help)
    for f in dataclasses.fields(TrainConfig)
}
PATH_KEYS = ("workdir", "data_dir", "out_dir")


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(FIELDS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown key '{key}'{hint}")


def _bad(key: str, spec: _Spec, value: object) -> ConfigError:
    return ConfigError(f"'{key}' must be {spec.expected()}, got {value!r}")


def _in_range(x: float, s: _Spec) -> bool:
    if s.lo is not None and (x <= s.lo if s.lo_open else x < s.lo):
        return False
    return not (s.hi is not None and (x >= s.hi if s.hi_open else x > s.hi))


INT_LIMIT = 2**31


def _check(key: str, value: object) -> object:
    """Return the value in its canonical type, or raise ConfigError naming the key."""
    spec = _SPECS[key]
    if value is None and spec.optional:
        return None
    if spec.auto and value == "auto":
        return "auto"
    if spec.kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not _in_range(value, spec):
            raise _bad(key, spec, value)
        if not -INT_LIMIT < value < INT_LIMIT:  # past any real run, and past SQLite and JSON
            raise ConfigError(f"'{key}' must be below {INT_LIMIT:,}, got {value}")
        return value
    if spec.kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(float(value)) or not _in_range(float(value), spec):  # type: ignore[arg-type]
            raise _bad(key, spec, value)
        return float(value)  # type: ignore[arg-type]
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise _bad(key, spec, value)
        return value
    if spec.kind == "choice":
        if value not in spec.choices:
            raise _bad(key, spec, value)
        return value
    if not isinstance(value, str) or not value:
        raise ConfigError(f"'{key}' must be a non-empty string, got {value!r}")
    if key == "task" and value != "image" and not _TASK_RE.match(value):
        raise ConfigError(f"'task' must be 'image' or 'module:factory', got {value!r}")
    return value


def _check_version(raw: Mapping[str, Any]) -> None:
    version = raw.get("version", CONFIG_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > CONFIG_VERSION:
        raise ConfigError(
            f"config from a newer gpuctl (version {version}); update the trainer "
            f"(it reads version {CONFIG_VERSION})"
        )


def validate(raw: Mapping[str, Any]) -> TrainConfig:
    """Check a raw mapping against the schema; missing keys take their defaults."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config must be a mapping of key to value, got {type(raw).__name__}")
    _check_version(raw)
    errors: list[str] = []
    values: dict[str, object] = {}
    for key, value in raw.items():
        try:
            if key not in _SPECS:
                raise _unknown(str(key))
            values[key] = _check(key, value)
        except ConfigError as exc:
            errors.append(str(exc))
    if not errors:
        depth = values.get("depth", FIELDS["depth"].default)
        size = values.get("image_size", FIELDS["image_size"].default)
        if isinstance(depth, int) and isinstance(size, int) and size < 2**depth:
            errors.append(
                f"'image_size' must be at least 2**depth = {2**depth} (depth={depth}), got {size}"
            )
    if errors:
        raise ConfigError("; ".join(errors))
    return TrainConfig(**values)  # type: ignore[arg-type]


def coerce(key: str, text: str) -> object:
    """Convert a `--set key=value` string to the key's type (and check its range)."""
    if key not in _SPECS:
        raise _unknown(key)
    spec = _SPECS[key]
    t = text.strip()
    low = t.lower()
    if spec.optional and low in ("null", "none"):
        return None
    if spec.auto and low == "auto":
        return "auto"
    value: object
    try:
        if spec.kind == "int":
            value = int(t)
        elif spec.kind == "float":
            value = float(t)
        elif spec.kind == "bool":
            value = _BOOL_WORDS[low]
        elif spec.kind == "choice":
            value = low
        else:
            value = t
    except (ValueError, KeyError):
        raise _bad(key, spec, text) from None
    return _check(key, value)


def read_raw(path: str | Path) -> dict[str, Any]:
    """Parse a JSON or (by extension) TOML config file without checking it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from None
    try:
        raw = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot parse config {p}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {p} must hold a mapping of key to value")
    return raw


def load(path: str | Path) -> TrainConfig:
    """Read and validate a JSON or TOML config file."""
    return validate(read_raw(path))


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain dict of every key (JSON-serialisable; what checkpoints store)."""
    return dataclasses.asdict(cfg)


def resolve_paths(cfg: TrainConfig, base_dir: str | Path) -> TrainConfig:
    """Make workdir/data_dir/out_dir absolute (relative to the config's dir); fill out_dir."""
    base = Path(base_dir).resolve()
    changes: dict[str, str] = {}
    for key in PATH_KEYS:
        value = getattr(cfg, key)
        if value is not None:
            changes[key] = str((base / Path(value).expanduser()).resolve())
    changes.setdefault("out_dir", str(base))
    return dataclasses.replace(cfg, **changes)
