"""Image corruptions: every one at every severity keeps shape, dtype and range, is seeded, and grows with severity."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from mmfuse.data.shapes import generate_split
from mmfuse.probes.corruptions import IMAGE_CORRUPTIONS, SEVERITIES, corrupt_image
from tests.conftest import TINY_WORLD

NAMES = IMAGE_CORRUPTIONS.names()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """(8, 3, 48, 48) shapes-world images in [0, 1]."""
    columns = generate_split(dataclasses.replace(TINY_WORLD, seed=5), "val", 8)
    arrays = [np.asarray(Image.open(io.BytesIO(i["bytes"])).convert("RGB")) for i in columns["image"]]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255  # (B, H, W, 3) -> (B, 3, H, W)


def test_every_corruption_is_registered_with_five_severities() -> None:
    assert set(NAMES) == {"gaussian_noise", "gaussian_blur", "brightness", "contrast", "jpeg", "occlusion"}
    assert all(len(SEVERITIES[name]) == 5 for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_shape_dtype_range_and_seed(images: torch.Tensor, name: str, severity: int) -> None:
    out = corrupt_image(name, images, severity, seed=1)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0 and torch.isfinite(out).all()
    assert not torch.equal(out, images)
    torch.testing.assert_close(out, corrupt_image(name, images, severity, seed=1))
    assert torch.equal(images, images.clamp(0, 1))  # the input is not modified in place


@pytest.mark.parametrize("name", NAMES)
def test_strength_grows_with_severity(images: torch.Tensor, name: str) -> None:
    """The mean squared distance from the clean images (PSNR falls) rises at every step of severity."""
    distance = [float((corrupt_image(name, images, s, seed=0) - images).pow(2).mean()) for s in range(1, 6)]
    assert all(a < b for a, b in zip(distance, distance[1:])), distance


def test_random_corruptions_depend_on_the_seed(images: torch.Tensor) -> None:
    for name in ("gaussian_noise", "occlusion"):
        assert not torch.equal(corrupt_image(name, images, 3, seed=0), corrupt_image(name, images, 3, seed=1))
    for name in ("gaussian_blur", "brightness", "contrast", "jpeg"):  # deterministic by nature
        assert torch.equal(corrupt_image(name, images, 3, seed=0), corrupt_image(name, images, 3, seed=1))


def test_known_values() -> None:
    grey = torch.full((1, 3, 8, 8), 0.5)
    black = torch.zeros(1, 3, 4, 4)
    torch.testing.assert_close(corrupt_image("brightness", black, 2, seed=0), torch.full((1, 3, 4, 4), 0.2))
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 0.5
    bright = corrupt_image("brightness", red, 1, seed=0)  # V 0.5 -> 0.6, hue and saturation kept
    torch.testing.assert_close(bright[:, 0], torch.full((1, 4, 4), 0.6))
    torch.testing.assert_close(bright[:, 1:], red[:, 1:])
    torch.testing.assert_close(corrupt_image("contrast", grey, 5, seed=0), grey)  # a flat image has no contrast
    occluded = corrupt_image("occlusion", torch.zeros(1, 3, 20, 20), 5, seed=0)
    assert float((occluded[0, 0] == 0.5).float().mean()) == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="severity must be 1..5"):
        corrupt_image("jpeg", grey, 6, seed=0)
