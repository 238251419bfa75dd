"""Image decoding: pixel limit, EXIF orientation, every valid mode to RGB, resize + centre crop, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.images import (
    BadImageError,
    check_image,
    decode_image,
    load_image,
    resize_center_crop,
    to_rgb,
    to_tensor,
)
from mmfuse.data.tokenizer import train_word_tokenizer
from tests.data._make import exif_rotated_jpeg, garbage_file, rgb_image, truncated_jpeg


def _save(image: Image.Image, path: Path, **kwargs: Any) -> Path:
    image.save(path, **kwargs)
    return path


def test_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    path = exif_rotated_jpeg(tmp_path / "rot.jpg")
    assert Image.open(path).size == (40, 20)  # as stored
    upright = decode_image(path, None)
    assert upright.size == (20, 40) and upright.mode == "RGB"
    top, bottom = np.asarray(upright)[5, 10], np.asarray(upright)[34, 10]
    assert top[2] > 200 and top[0] < 60, top  # blue on top
    assert bottom[0] > 200 and bottom[2] < 60, bottom  # red below
    tensor = load_image(path, 16)  # shorter side 20 -> 16, height 40 -> 32, centre rows 8..24 kept
    assert tensor.shape == (3, 16, 16)
    assert tensor[2, 2, 8] > 0.8 and tensor[0, 13, 8] > 0.8


@pytest.mark.parametrize(
    ("mode", "make", "expected"),
    [
        ("L", lambda: Image.new("L", (6, 6), 128), (128, 128, 128)),
        ("1", lambda: Image.new("1", (6, 6), 1), (255, 255, 255)),
        ("P", lambda: Image.new("RGB", (6, 6), (0, 255, 0)).convert("P"), (0, 255, 0)),
        ("CMYK", lambda: Image.new("CMYK", (6, 6), (0, 255, 255, 0)), (255, 0, 0)),
        ("I;16", lambda: Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16)), (255, 255, 255)),
        ("I;16-mid", lambda: Image.fromarray(np.full((6, 6), 32896, dtype=np.uint16)), (128, 128, 128)),
        ("I", lambda: Image.fromarray(np.full((6, 6), 100, dtype=np.int32)), (100, 100, 100)),
        ("I-16bit", lambda: Image.fromarray(np.full((6, 6), 65535, dtype=np.int32)), (255, 255, 255)),
        ("F", lambda: Image.fromarray(np.full((6, 6), 0.5, dtype=np.float32)), (128, 128, 128)),
        ("RGBA-opaque", lambda: Image.new("RGBA", (6, 6), (10, 20, 30, 255)), (10, 20, 30)),
        ("RGBA-clear", lambda: Image.new("RGBA", (6, 6), (10, 20, 30, 0)), (255, 255, 255)),
        ("LA-clear", lambda: Image.new("LA", (6, 6), (0, 0)), (255, 255, 255)),
    ],
)
def test_every_valid_mode_becomes_rgb(mode: str, make, expected: tuple[int, int, int]) -> None:
    rgb = to_rgb(make())
    assert rgb.mode == "RGB" and rgb.size == (6, 6)
    np.testing.assert_allclose(np.asarray(rgb)[3, 3], expected, atol=2)


def test_float_image_outside_unit_range_is_stretched() -> None:
    values = np.array([[-5.0, 5.0]], dtype=np.float32).repeat(2, axis=0)
    assert np.asarray(to_rgb(Image.fromarray(values)))[0, :, 0].tolist() == [0, 255]


def test_palette_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0] * 256)
    image.info["transparency"] = 0
    assert tuple(np.asarray(to_rgb(image))[0, 0]) == (255, 255, 255)


@pytest.mark.parametrize(
    ("name", "image", "kwargs"),
    [
        ("gray.png", Image.new("L", (12, 8), 90), {}),
        ("palette.png", Image.new("RGB", (12, 8), (1, 2, 3)).convert("P"), {}),
        ("cmyk.jpg", Image.new("CMYK", (12, 8), (0, 255, 255, 0)), {}),
        ("rgba.png", Image.new("RGBA", (12, 8), (9, 9, 9, 100)), {}),
        ("deep.png", Image.fromarray(np.full((8, 12), 40000, dtype=np.uint16)), {}),
        ("gray.tif", Image.fromarray(np.full((8, 12), 0.25, dtype=np.float32)), {}),
    ],
)
def test_files_of_awkward_modes_load_as_unit_range_tensors(tmp_path: Path, name: str, image, kwargs) -> None:
    path = _save(image, tmp_path / name, **kwargs)
    check_image(path)
    tensor = load_image(path, 8)
    assert tensor.shape == (3, 8, 8) and tensor.dtype == torch.float32
    assert 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0


def test_pixel_limit_names_the_file_and_the_limit(tmp_path: Path) -> None:
    path = _save(Image.new("L", (100, 100)), tmp_path / "big.png")
    for call in (check_image, lambda p, m: decode_image(p, 8, m)):
        with pytest.raises(BadImageError, match=r"big\.png.*10000 pixels is over the limit of 5000") as info:
            call(path, 5000)
        assert info.value.reason == "too_many_pixels"
    assert load_image(path, 8, max_pixels=None).shape == (3, 8, 8)  # configurable


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: truncated_jpeg(p / "cut.jpg"), "corrupt_image"),
        (lambda p: garbage_file(p / "junk.jpg"), "corrupt_image"),
        (lambda p: p / "absent.jpg", "missing_file"),
    ],
)
def test_unusable_files_raise_with_the_file_and_reason(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path)
    for call in (check_image, lambda p: decode_image(p, 8)):
        with pytest.raises(BadImageError, match=path.name) as info:
            call(path)
        assert info.value.reason == reason


def test_truncated_png_is_caught_by_the_cheap_check(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    path = _save(Image.fromarray(noise), tmp_path / "full.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BadImageError, match="cut.png"):
        check_image(cut)


def test_resize_center_crop_keeps_the_centre() -> None:
    image = Image.new("RGB", (30, 10), (255, 0, 0))
    image.paste((0, 255, 0), (10, 0, 20, 10))  # green middle third
    out = resize_center_crop(image, 5)
    assert out.size == (5, 5) and tuple(np.asarray(out)[2, 2]) == (0, 255, 0)


def test_tensor_matches_the_collator_arithmetic(tmp_path: Path) -> None:
    rgb = decode_image(rgb_image(tmp_path / "a.png", (20, 14), (10, 200, 77)), 8)
    batch = ImageTextCollator(train_word_tokenizer(["a"]))([{"image": rgb, "text": "a", "label": 0}])
    torch.testing.assert_close(batch.images[0], to_tensor(rgb), rtol=0, atol=0)
    torch.testing.assert_close(to_tensor(rgb)[:, 0, 0], torch.tensor([10, 200, 77]) / 255.0, rtol=0, atol=1e-6)
