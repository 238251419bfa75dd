"""Tiny generated image files and dataset layouts for the file-data tests (every image a few pixels wide)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

SHARED_DATA = REPO.parent / "shared" / "data"
ORIENTATION = 0x0112


def shared_dataset(name: str) -> Path:
    """``<repo>/../shared/data/<name>``, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not found (real data for this test lives in ../shared/data/)")
    return path


def rgb_image(path: Path, size: tuple[int, int] = (16, 12), color: tuple[int, int, int] = (200, 40, 40)) -> Path:
    """A solid-colour RGB image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def truncated_jpeg(path: Path) -> Path:
    """A noisy 64x64 JPEG cut in half (the header parses, the data runs out)."""
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def garbage_file(path: Path) -> Path:
    """Bytes that are no image at all, under an image name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image " * 8)
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """A 40x20 JPEG, left half blue and right half red, tagged EXIF orientation 6 (display rotated 90 clockwise):
    shown upright it is 20 wide and 40 high, blue on top and red below."""
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif.tobytes(), quality=95)
    return path


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any] | str]) -> Path:
    """One JSON object per line (a str row is written as it is, to make a broken line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def write_captions_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """``image,caption`` rows with a header, quoted as Flickr8k's ``captions.txt`` is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)
    return path


def captions_dataset(root: Path, num_images: int, captions_per_image: int = 2) -> Path:
    """A captions CSV dataset: ``images/img{i:04d}.png`` with ``captions_per_image`` captions each."""
    rows = []
    for i in range(num_images):
        rgb_image(root / "images" / f"img{i:04d}.png", (8, 8), (i % 256, 80, 160))
        rows += [(f"img{i:04d}.png", f"picture {i} caption {k}") for k in range(captions_per_image)]
    write_captions_csv(root / "captions.txt", rows)
    return root
