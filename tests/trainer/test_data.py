"""Synthetic data, the PPM/PGM reader, ImageFolder, and resumable sampling."""

from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path

import pytest
import torch

from trainer.data import (
    ResumableSampler,
    ShardSampler,
    SyntheticImages,
    open_image_folder,
    read_pnm,
)
from trainer.errors import TrainerError


def test_synthetic_is_deterministic_per_index() -> None:
    a = SyntheticImages(64, 10, 16, seed=3, split=0)
    b = SyntheticImages(64, 10, 16, seed=3, split=0)
    for i in (0, 5, 63):
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and ya == yb
    assert a[0][0].shape == (3, 16, 16)
    other_split = SyntheticImages(64, 10, 16, seed=3, split=1)
    other_seed = SyntheticImages(64, 10, 16, seed=4, split=0)
    assert not torch.equal(a[0][0], other_split[0][0])
    assert not torch.equal(a[0][0], other_seed[0][0])
    with pytest.raises(IndexError):
        a[64]


def test_synthetic_classes_are_separable() -> None:
    """A nearest-class-mean classifier fit on train must beat chance by far on val."""
    train = SyntheticImages(400, 5, 16, seed=0, split=0)
    val = SyntheticImages(200, 5, 16, seed=0, split=1)
    xs = torch.stack([train[i][0] for i in range(len(train))])
    ys = torch.tensor([train[i][1] for i in range(len(train))])
    assert len(set(ys.tolist())) == 5
    blur = torch.nn.AvgPool2d(4)  # shifts are small: compare coarse patterns
    means = torch.stack([blur(xs[ys == c]).mean(0).flatten() for c in range(5)])
    xv = torch.stack([val[i][0] for i in range(len(val))])
    yv = torch.tensor([val[i][1] for i in range(len(val))])
    pred = torch.cdist(blur(xv).flatten(1), means).argmin(1)
    accuracy = (pred == yv).float().mean().item()
    assert accuracy > 0.5, accuracy  # chance is 0.2


def write_ppm(path: Path, rgb: list[tuple[int, int, int]], width: int, height: int) -> None:
    header = f"P6\n# a comment\n{width} {height}\n255\n".encode()
    path.write_bytes(header + bytes(v for px in rgb for v in px))


def test_read_binary_ppm_and_pgm(tmp_path: Path) -> None:
    write_ppm(tmp_path / "a.ppm", [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)], 2, 2)
    x = read_pnm(tmp_path / "a.ppm")
    assert x.shape == (3, 2, 2)
    assert x[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert x[:, 0, 1].tolist() == [0.0, 1.0, 0.0]
    assert x[:, 1, 1].tolist() == [1.0, 1.0, 1.0]
    (tmp_path / "g.pgm").write_bytes(b"P5 3 1 255\n" + bytes([0, 51, 255]))
    g = read_pnm(tmp_path / "g.pgm")
    assert g.shape == (1, 1, 3)
    assert g.flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_read_ascii_and_16_bit(tmp_path: Path) -> None:
    (tmp_path / "a.pgm").write_text("P2\n2 1\n# max\n10\n0 5\n")
    assert read_pnm(tmp_path / "a.pgm").flatten().tolist() == [0.0, 0.5]
    (tmp_path / "c.ppm").write_text("P3 1 1 255 255 0 51\n")
    assert read_pnm(tmp_path / "c.ppm").flatten().tolist() == pytest.approx([1.0, 0.0, 0.2])
    (tmp_path / "w.pgm").write_bytes(b"P5\n1 1\n65535\n" + struct.pack(">H", 32768))
    assert read_pnm(tmp_path / "w.pgm").item() == pytest.approx(32768 / 65535)


def test_read_rejects_garbage(tmp_path: Path) -> None:
    (tmp_path / "bad.ppm").write_bytes(b"GIF89a")
    with pytest.raises(TrainerError, match="not a PGM/PPM"):
        read_pnm(tmp_path / "bad.ppm")
    (tmp_path / "short.ppm").write_bytes(b"P6 4 4 255\n\x00\x01")
    with pytest.raises(TrainerError, match="truncated"):
        read_pnm(tmp_path / "short.ppm")


def make_tree(root: Path, split_dirs: bool, per_class: int = 6, size: int = 12) -> None:
    """Two colour classes, red and blue, as PPM files (PGM for a few)."""
    for split in ("train", "val") if split_dirs else ("",):
        for name, colour in (("blue", (0, 0, 255)), ("red", (255, 0, 0))):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                write_ppm(folder / f"{i}.ppm", [colour] * (size * (size + 2)), size + 2, size)
            (folder / "notes.txt").write_text("ignored")
        (root / split / "red" / "gray.pgm").write_bytes(b"P5 4 4 255\n" + bytes([200] * 16))


def test_image_folder_with_train_and_val(tmp_path: Path) -> None:
    make_tree(tmp_path, split_dirs=True)
    train, val, classes = open_image_folder(str(tmp_path), 8, 100, 100, seed=0)
    assert classes == ["blue", "red"]
    assert len(train) == 13 and len(val) == 13
    x, y = train[0]
    assert x.shape == (3, 8, 8) and y == 0  # blue sorts first
    assert x[2].mean() > x[0].mean()  # blue channel brighter
    xg, yg = train[len(train) - 1]  # red/gray.pgm sorts last: one channel, expanded to 3
    assert yg == 1 and torch.equal(xg[0], xg[2])
    assert xg[0, 0, 0].item() == pytest.approx((200 / 255 - 0.5) / 0.25)
    xr, yr = train[len(train) - 2]
    assert yr == 1 and xr[0].mean() > xr[2].mean()


def test_image_folder_without_val_and_with_caps(tmp_path: Path) -> None:
    make_tree(tmp_path, split_dirs=False, per_class=10)
    train, val, classes = open_image_folder(str(tmp_path), 8, 5, 3, seed=1)
    assert classes == ["blue", "red"]
    assert (len(train), len(val)) == (5, 3)
    train_paths = {p for p, _ in train.samples}
    assert not train_paths & {p for p, _ in val.samples}
    again, _, _ = open_image_folder(str(tmp_path), 8, 5, 3, seed=1)
    assert [p for p, _ in again.samples] == [p for p, _ in train.samples]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainerError, match="does not exist"):
        open_image_folder(str(tmp_path / "nope"), 8, 10, 10, 0)
    with pytest.raises(TrainerError, match="no class folders"):
        open_image_folder(str(tmp_path), 8, 10, 10, 0)
    (tmp_path / "cat").mkdir()
    with pytest.raises(TrainerError, match="no images found"):
        open_image_folder(str(tmp_path), 8, 10, 10, 0)


def write_png(path: Path, width: int, height: int, rgb: tuple[int, int, int]) -> None:
    """A minimal valid RGB PNG, written with the standard library only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(png + chunk(b"IEND", b""))


def test_png_needs_pillow(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            write_png(tmp_path / split / name / "x.png", 4, 4, (0, 255, 0))
    if importlib.util.find_spec("PIL") is None:
        with pytest.raises(TrainerError, match="Pillow is not installed"):
            open_image_folder(str(tmp_path), 4, 10, 10, 0)
    else:
        train, _, _ = open_image_folder(str(tmp_path), 4, 10, 10, 0)
        x, _ = train[0]
        assert x.shape == (3, 4, 4) and x[1].mean() > x[0].mean()


def test_resumable_sampler_continues_the_same_order() -> None:
    data = list(range(50))
    full = ResumableSampler(data, num_replicas=1, rank=0, seed=7)  # type: ignore[arg-type]
    full.set_position(epoch=2, start=0)
    order = list(full)
    assert sorted(order) == data
    resumed = ResumableSampler(data, num_replicas=1, rank=0, seed=7)  # type: ignore[arg-type]
    resumed.set_position(epoch=2, start=20)
    assert list(resumed) == order[20:] and len(resumed) == 30
    full.set_position(epoch=3, start=0)
    assert list(full) != order  # a new epoch, a new shuffle


def test_resumable_sampler_shards_ranks_disjointly() -> None:
    data = list(range(41))
    shards = []
    for rank in range(2):
        s = ResumableSampler(data, num_replicas=2, rank=rank, seed=0)  # type: ignore[arg-type]
        s.set_position(0, 0)
        shards.append(list(s))
    assert len(shards[0]) == len(shards[1]) == 20
    assert not set(shards[0]) & set(shards[1])


def test_shard_sampler_covers_validation_once() -> None:
    parts = [list(ShardSampler(11, 3, r)) for r in range(3)]
    assert sorted(i for part in parts for i in part) == list(range(11))
