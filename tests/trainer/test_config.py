"""The config schema: validate, coerce, load, and the no-torch import promise."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from types import MappingProxyType

import pytest

from trainer import config
from trainer.config import CONFIG_VERSION, FIELDS, ConfigError, TrainConfig, coerce, validate

from .conftest import REPO

REQUIRED = {
    "version": 1,
    "run_id": "local",
    "preset": "custom",
    "task": "image",
    "workdir": None,
    "data_dir": None,
    "train_samples": 512,
    "val_samples": 128,
    "num_classes": 10,
    "image_size": 32,
    "width": 16,
    "depth": 2,
    "epochs": 3,
    "batch_size": 32,
    "lr": 0.003,
    "weight_decay": 0.05,
    "warmup_epochs": 0.5,
    "min_lr_ratio": 0.05,
    "grad_accum": 1,
    "label_smoothing": 0.0,
    "amp": "auto",
    "compile": False,
    "seed": 0,
    "deterministic": False,
    "workers": "auto",
    "checkpoint_every_epochs": 1,
    "checkpoint_every_minutes": 10.0,
    "max_steps_per_epoch": None,
    "sync_bn": False,
    "auto_batch_target": 0.85,
    "out_dir": None,
}


def test_defaults_match_the_contract() -> None:
    defaults = config.to_dict(validate({}))
    for key, value in REQUIRED.items():
        assert defaults[key] == value, key
    assert set(defaults) == set(FIELDS)
    assert set(defaults) - set(REQUIRED) == {"lr_ref_batch"}


def test_fields_describe_every_key() -> None:
    for name, field in FIELDS.items():
        assert field.help and field.type, name
        assert field.default == getattr(TrainConfig(), name)
    assert FIELDS["batch_size"].type == "int | 'auto'"
    assert FIELDS["max_steps_per_epoch"].type == "int | None"
    assert "'bf16'" in FIELDS["amp"].type


def test_config_is_frozen() -> None:
    cfg = validate({"epochs": 4})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 5  # type: ignore[misc]


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        validate({"epoch": 3})
    with pytest.raises(ConfigError, match=r"unknown key 'zzz'$"):
        validate({"zzz": 3})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"epochs": "abc"}, "'epochs' must be a positive integer, got 'abc'"),
        ({"epochs": 0}, "'epochs' must be a positive integer, got 0"),
        ({"epochs": True}, "'epochs' must be a positive integer, got True"),
        ({"epochs": 2.5}, "'epochs' must be a positive integer, got 2.5"),
        ({"batch_size": "big"}, "'batch_size' must be a positive integer or 'auto'"),
        ({"lr": 0}, "'lr' must be a positive number, got 0"),
        ({"min_lr_ratio": 2}, "'min_lr_ratio' must be a number between 0 and 1, got 2"),
        ({"amp": "fp8"}, "'amp' must be one of 'auto', 'bf16', 'fp16', 'off', got 'fp8'"),
        ({"compile": "yes"}, "'compile' must be true or false, got 'yes'"),
        ({"max_steps_per_epoch": -1}, "'max_steps_per_epoch' must be a positive integer or null"),
        ({"data_dir": 3}, "'data_dir' must be a non-empty string, got 3"),
        ({"task": "nocolon"}, "'task' must be 'image' or 'module:factory'"),
        ({"image_size": 8, "depth": 4}, "'image_size' must be at least 2**depth = 16"),
        ({"version": 0}, "'version' must be a positive integer, got 0"),
    ],
)
def test_bad_values_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(raw)
    assert message in str(info.value)


def test_every_error_is_reported_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"epochs": 0, "lr": "x", "epoch": 1})
    text = str(info.value)
    assert "\n" not in text
    assert "'epochs'" in text and "'lr'" in text and "'epoch'" in text


def test_newer_version_is_refused_before_anything_else() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"version": CONFIG_VERSION + 1, "brand_new_key": 1})
    assert f"config from a newer gpuctl (version {CONFIG_VERSION + 1}); update the trainer" in str(
        info.value
    )


def test_types_are_normalised() -> None:
    cfg = validate({"lr": 1, "epochs": 3.0, "batch_size": "auto", "workers": 2})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.batch_size == "auto" and cfg.workers == 2
    assert validate(MappingProxyType({"epochs": 2})).epochs == 2  # any read-only mapping


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("epochs", "7", 7),
        ("lr", "1e-3", 0.001),
        ("compile", "true", True),
        ("compile", "No", False),
        ("deterministic", "1", True),
        ("sync_bn", "0", False),
        ("sync_bn", "yes", True),
        ("batch_size", "auto", "auto"),
        ("batch_size", "64", 64),
        ("workers", "AUTO", "auto"),
        ("data_dir", "none", None),
        ("max_steps_per_epoch", "null", None),
        ("amp", "BF16", "bf16"),
        ("run_id", " exp-1 ", "exp-1"),
        ("task", "mypkg.tasks:build", "mypkg.tasks:build"),
    ],
)
def test_coerce(key: str, text: str, value: object) -> None:
    assert coerce(key, text) == value
    assert type(coerce(key, text)) is type(value)


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("epochs", "abc", "'epochs' must be a positive integer, got 'abc'"),
        ("epochs", "0", "'epochs' must be a positive integer, got 0"),
        ("compile", "maybe", "'compile' must be true or false, got 'maybe'"),
        ("lr", "fast", "'lr' must be a positive number, got 'fast'"),
        ("epochs", "none", "'epochs' must be a positive integer, got 'none'"),
        ("batch_size", "auto-ish", "'batch_size' must be a positive integer or 'auto'"),
        ("epoch", "3", "unknown key 'epoch' (did you mean 'epochs'?)"),
        ("lr", "nan", "'lr' must be a positive number"),
    ],
)
def test_coerce_errors_name_the_key(key: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        coerce(key, text)
    assert message in str(info.value)


def test_load_json_and_toml(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"epochs": 5, "amp": "off"}))
    (tmp_path / "b.toml").write_text('epochs = 6\nbatch_size = "auto"\n')
    assert config.load(tmp_path / "a.json").epochs == 5
    b = config.load(tmp_path / "b.toml")
    assert (b.epochs, b.batch_size) == (6, "auto")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse config"):
        config.load(tmp_path / "c.json")
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path / "missing.json")
    (tmp_path / "d.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        config.load(tmp_path / "d.json")


def test_round_trip_through_to_dict() -> None:
    cfg = validate({"epochs": 9, "batch_size": "auto", "data_dir": "/data"})
    assert validate(config.to_dict(cfg)) == cfg
    json.dumps(config.to_dict(cfg))  # serialisable, as checkpoints and events need


def test_resolve_paths_is_relative_to_the_config(tmp_path) -> None:
    cfg = config.resolve_paths(validate({"data_dir": "data", "workdir": "/abs"}), tmp_path)
    assert cfg.out_dir == str(tmp_path.resolve())
    assert cfg.data_dir == str((tmp_path / "data").resolve())
    assert cfg.workdir == "/abs"
    cfg = config.resolve_paths(validate({"out_dir": "runs/a"}), tmp_path)
    assert cfg.out_dir == str((tmp_path / "runs/a").resolve())


def test_config_and_package_import_without_torch() -> None:
    code = (
        "import sys, trainer, trainer.config as c; c.validate({'epochs': 2}); "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
