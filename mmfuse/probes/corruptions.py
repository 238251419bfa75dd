"""Image corruptions at five severities, after ImageNet-C, for images of any size.

Each corruption takes one image batch (B, 3, H, W) float in [0, 1], a severity 1..5 and a seeded generator, and returns
a batch of the same shape and dtype in [0, 1]. Parameters follow ImageNet-C where a corruption is defined there
(noise std, brightness shift, contrast factor, JPEG quality are independent of the image size; the blur sigma is
ImageNet-C's, given for 224 px images, scaled by H / 224); occlusion (not in ImageNet-C) covers 5..25 % of the image
with one grey square at a random place.

Reference: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
ICLR 2019 (https://github.com/hendrycks/robustness, ``make_imagenet_c.py``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from mmfuse.registry import Registry

__all__ = ["IMAGE_CORRUPTIONS", "SEVERITIES", "ImageCorruption", "corrupt_image"]

ImageCorruption = Callable[[Tensor, int, torch.Generator], Tensor]
IMAGE_CORRUPTIONS: Registry[ImageCorruption] = Registry("image_corruption")
"""name -> ``(images (B, 3, H, W) in [0, 1], severity 1..5, generator) -> images``."""

SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # std on [0, 1] pixels (ImageNet-C)
    "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),  # sigma in pixels of a 224 px image (ImageNet-C), scaled by H / 224
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added to V of HSV (ImageNet-C)
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # factor towards the per-channel mean (ImageNet-C)
    "jpeg": (25, 18, 15, 10, 7),  # JPEG quality (ImageNet-C)
    "occlusion": (0.05, 0.10, 0.15, 0.20, 0.25),  # share of the image area covered by one grey square
}
"""Corruption name -> its parameter at severities 1..5."""


def _level(name: str, severity: int) -> float:
    if not 1 <= severity <= len(SEVERITIES[name]):
        raise ValueError(f"{name}: severity must be 1..{len(SEVERITIES[name])}, got {severity}")
    return float(SEVERITIES[name][severity - 1])


@IMAGE_CORRUPTIONS.register("gaussian_noise")
def gaussian_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Additive Gaussian pixel noise."""
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float32).to(images)
    return (images + noise * _level("gaussian_noise", severity)).clamp(0.0, 1.0)


@IMAGE_CORRUPTIONS.register("gaussian_blur")
def gaussian_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Gaussian blur, sigma scaled to the image height (kernel of ±3 sigma)."""
    sigma = _level("gaussian_blur", severity) * images.shape[-2] / 224.0
    kernel = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma]).clamp(0.0, 1.0)


@IMAGE_CORRUPTIONS.register("brightness")
def brightness(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Raise the HSV value channel by a constant, keeping hue and saturation.

    For a fixed hue and saturation, RGB is proportional to V = max(R, G, B), so scaling the pixel by (V + c) / V
    (clipped at 1) is exactly ImageNet-C's HSV round trip; black pixels (V = 0) become grey c.
    """
    shift = _level("brightness", severity)
    value = images.amax(dim=1, keepdim=True)  # (B, 1, H, W) HSV value
    scaled = images * ((value + shift).clamp(max=1.0) / value.clamp(min=1e-8))
    return torch.where(value > 0, scaled, torch.full_like(images, shift)).clamp(0.0, 1.0)


@IMAGE_CORRUPTIONS.register("contrast")
def contrast(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Pull every pixel towards its image's per-channel mean (ImageNet-C's contrast)."""
    factor = _level("contrast", severity)
    means = images.mean(dim=(-2, -1), keepdim=True)  # (B, 3, 1, 1)
    return ((images - means) * factor + means).clamp(0.0, 1.0)


@IMAGE_CORRUPTIONS.register("jpeg")
def jpeg(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """JPEG compression at a low quality (encoded and decoded with PIL)."""
    quality = int(_level("jpeg", severity))
    out = []
    for image in images:
        pixels = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))  # (H, W, 3) uint8
        out.append(torch.from_numpy(decoded.copy()).permute(2, 0, 1))  # (H, W, 3) -> (3, H, W)
    return torch.stack(out).to(images).div(255.0)


@IMAGE_CORRUPTIONS.register("occlusion")
def occlusion(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """One mid-grey square per image covering a fixed share of its area, at a random place."""
    height, width = images.shape[-2:]
    side = max(1, round(math.sqrt(_level("occlusion", severity) * height * width)))
    side_h, side_w = min(side, height), min(side, width)
    out = images.clone()
    for k in range(images.shape[0]):
        top, left = (
            torch.rand(2, generator=generator) * torch.tensor([height - side_h + 1, width - side_w + 1])
        ).long()
        out[k] = TF.erase(out[k], int(top), int(left), side_h, side_w, torch.tensor(0.5).to(images))
    return out


def corrupt_image(name: str, images: Tensor, severity: int, seed: int) -> Tensor:
    """Apply the registered corruption ``name`` with a generator seeded by ``seed`` (same seed, same output)."""
    generator = torch.Generator().manual_seed(seed)
    return IMAGE_CORRUPTIONS.get(name)(images, severity, generator)
