"""Presets are data with a typed loader; overrides fail on the laptop, not on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuctl.errors import ConfigError
from gpuctl.presets import loader


def test_bundled_presets_scale_up_in_cost_and_quality() -> None:
    presets = loader.load_all()
    assert list(presets)[:4] == ["validate", "fast", "standard", "full"]
    samples = [presets[n].samples() for n in loader.BUNDLED]
    sizes = [presets[n].image_size for n in loader.BUNDLED]
    hours = [presets[n].max_hours for n in loader.BUNDLED]
    assert samples == sorted(samples) and len(set(samples)) == 4
    assert sizes == sorted(sizes) and sizes[-1] >= 224
    assert hours == sorted(hours)
    assert presets["validate"].epochs <= 3 and presets["validate"].train["train_samples"] <= 512
    for preset in presets.values():
        assert preset.description and preset.purpose


def test_user_preset_overrides_and_adds(tmp_path: Path) -> None:
    (tmp_path / "validate.toml").write_text(
        'description = "mine"\npurpose = "p"\n[train]\nepochs = 1\n'
    )
    (tmp_path / "tiny.toml").write_text(
        'base = "fast"\ndescription = "fast but 2 epochs"\n[train]\nepochs = 2\n'
    )
    presets = loader.load_all(tmp_path)
    assert presets["validate"].description == "mine"
    assert presets["validate"].epochs == 1
    assert presets["tiny"].epochs == 2
    assert presets["tiny"].image_size == presets["fast"].image_size  # inherited from base


def test_custom_applies_typed_overrides_to_its_base() -> None:
    preset = loader.resolve("custom", ["epochs=7", "lr=0.01", "batch_size=auto"], base="fast")
    assert preset.name == "custom"
    assert preset.train["epochs"] == 7
    assert preset.train["lr"] == pytest.approx(0.01)
    assert preset.train["batch_size"] == "auto"
    assert preset.train["image_size"] == loader.load("fast").image_size


@pytest.mark.parametrize(
    ("pairs", "needle"),
    [
        (["epoch=3"], "did you mean 'epochs'"),
        (["epochs=three"], "'epochs' must be a positive integer"),
        (["epochs"], "expects key=value"),
        (["amp=fp8"], "'amp' must be one of"),
        (["image_size=8", "depth=5"], "image_size"),
    ],
)
def test_bad_overrides_name_the_key(pairs: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        loader.resolve("validate", pairs)
    assert needle in str(info.value)


def test_unknown_preset_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError) as info:
        loader.resolve("standrd")
    assert "unknown preset 'standrd'" in str(info.value)
    assert "did you mean 'standard'" in info.value.hint


def test_broken_user_preset_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[train\nepochs = 1\n")
    with pytest.raises(ConfigError) as info:
        loader.load("bad", tmp_path)
    assert "bad.toml" in str(info.value) and "not valid TOML" in str(info.value)


def test_a_base_cycle_is_one_error_naming_the_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('base = "b"\ndescription = "a"\n')
    (tmp_path / "b.toml").write_text('base = "c"\ndescription = "b"\n')
    (tmp_path / "c.toml").write_text('base = "a"\ndescription = "c"\n')
    for load in (lambda: loader.load_all(tmp_path), lambda: loader.load("b", tmp_path)):
        with pytest.raises(ConfigError) as info:
            load()
        assert "in a circle" in info.value.message
        assert all(name in info.value.message for name in ("a", "b", "c"))
    (tmp_path / "self.toml").write_text('base = "self"\n')
    with pytest.raises(ConfigError, match="self -> self"):
        loader.load("self", tmp_path)


def test_base_custom_is_refused_without_suggesting_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        loader.resolve("custom", base="custom")
    assert "did you mean 'custom'" not in info.value.hint
    assert "validate" in info.value.hint
    (tmp_path / "mine.toml").write_text('base = "custom"\n')
    with pytest.raises(ConfigError) as info:
        loader.load("mine", tmp_path)
    assert "base 'custom' is not a preset" in info.value.message
    assert "did you mean 'custom'" not in info.value.hint


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-2"])
def test_preset_limits_must_be_finite_and_positive(tmp_path: Path, value: str) -> None:
    (tmp_path / "mine.toml").write_text(f"[run]\nmax_hours = {value}\n")
    with pytest.raises(ConfigError) as info:
        loader.load("mine", tmp_path)
    assert "max_hours" in info.value.message and str(tmp_path / "mine.toml") in info.value.message


def test_a_preset_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.toml").write_bytes(b"\xff\xfe not text")
    with pytest.raises(ConfigError) as info:
        loader.load("junk", tmp_path)
    assert "is not UTF-8 text" in info.value.message and info.value.hint


def test_a_directory_named_like_a_preset_breaks_no_preset(tmp_path: Path) -> None:
    (tmp_path / "foo.toml").mkdir()
    presets = loader.load_all(tmp_path)
    assert "foo" not in presets and "validate" in presets
