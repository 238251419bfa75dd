"""Image transforms of the data on disk, built with timm's ``create_transform``: random augmentation for training
(:class:`AugmentConfig`) and the vision encoder's own resize + crop for evaluation (:class:`PreprocessConfig`).

Both end in [0, 1] images: timm's ``ToTensor`` + ``Normalize`` are left out, because normalisation (mean/std) stays
inside the vision encoder. Random augmentation is made deterministic by the caller, which runs it inside
:func:`seeded` with a seed derived from (seed, epoch, index) (see :class:`mmfuse.data.loader.SampleKey`), so a
sample's augmentation is the same in the main process, in any data-loader worker and after a resume.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import MaybePILToTensor, MaybeToTensor
from torch import Tensor
from torchvision import transforms

from mmfuse.data.images import to_tensor
from mmfuse.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "PreprocessConfig",
    "ImageTransform",
    "build_train_transform",
    "build_eval_transform",
    "seeded",
]

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")  # timm's names of PIL's filters


@dataclass(frozen=True)
class PreprocessConfig:
    """How the vision encoder's weights expect an image to be resized and cropped (timm's data config, less the
    input side, which is the data's ``image_size``). The command line fills it from ``model.vision``.

    Attributes:
        interpolation: resampling filter, one of :data:`INTERPOLATIONS`.
        crop_pct: evaluation images are resized to ``floor(image_size / crop_pct)`` and the centre
            ``image_size`` square is kept (timm's ``crop_pct``; 1.0 keeps the whole shorter side).
        crop_mode: ``center`` (keep the aspect ratio, crop), ``squash`` (resize both sides, crop) or ``border``
            (fit the longer side, pad with ``mean``): timm's ``crop_mode``.
        mean: the encoder's per-channel mean, in [0, 1]: the padding colour of ``border`` and the centre of random
            erasing's noise (images themselves are not normalised here).
        std: the encoder's per-channel standard deviation (the scale of random erasing's noise).
    """

    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    crop_mode: Literal["center", "squash", "border"] = "center"
    mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, float, float] = IMAGENET_DEFAULT_STD

    def __post_init__(self) -> None:
        _check_interpolation(self.interpolation, "data.preprocess.interpolation")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"data.preprocess.crop_pct={self.crop_pct}: must be in (0, 1]")

    @classmethod
    def from_data_config(cls, data_cfg: Mapping[str, Any]) -> PreprocessConfig:
        """From a timm-style data config (``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``; e.g.
        :func:`mmfuse.encoders.timm_vision.vision_data_config`); missing keys take this class's defaults."""
        fields: dict[str, Any] = {key: data_cfg.get(key) for key in ("interpolation", "crop_pct", "crop_mode")}
        fields |= {key: tuple(float(v) for v in data_cfg[key]) for key in ("mean", "std") if key in data_cfg}
        return cls(**{key: value for key, value in fields.items() if value is not None})


@dataclass(frozen=True)
class AugmentConfig:
    """Random training augmentation, as timm's ``create_transform(is_training=True, ...)`` takes it (same names,
    same defaults): random-resized crop, flips, colour jitter or an auto-augment policy, random erasing.

    Attributes:
        scale: range of the random crop's area, as a fraction of the image's.
        ratio: range of the random crop's aspect ratio (width / height).
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        color_jitter: brightness, contrast, saturation (and hue) strength; one number = the first three; None = off.
            Left out when ``auto_augment`` is set (timm's rule).
        color_jitter_prob: apply colour jitter with this probability; None = always.
        grayscale_prob: probability of turning the image grey.
        gaussian_blur_prob: probability of a Gaussian blur.
        auto_augment: a timm policy string: ``rand-m9-mstd0.5`` (RandAugment), ``augmix-m5-w4-d2``,
            ``original`` / ``v0`` (AutoAugment), ...; None = none.
        interpolation: resampling filter of the crop: one of :data:`INTERPOLATIONS` or ``random``; None = the
            evaluation one (``data.preprocess.interpolation``).
        re_prob: probability of random erasing (a rectangle replaced by noise in the encoder's normalised space, so
            those pixels may fall outside [0, 1]).
        re_mode: what erased pixels hold: ``const`` (the encoder's mean colour), ``rand`` (one random colour per
            rectangle) or ``pixel`` (per-pixel noise).
        re_count: most rectangles erased per image.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: float | tuple[float, ...] | None = 0.4
    color_jitter_prob: float | None = None
    grayscale_prob: float = 0.0
    gaussian_blur_prob: float = 0.0
    auto_augment: str | None = None
    interpolation: str | None = None
    re_prob: float = 0.0
    re_mode: Literal["const", "rand", "pixel"] = "const"
    re_count: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"data.augment.scale={list(self.scale)}: expected 0 < low <= high")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"data.augment.ratio={list(self.ratio)}: expected 0 < low <= high")
        for name in ("hflip", "vflip", "color_jitter_prob", "grayscale_prob", "gaussian_blur_prob", "re_prob"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"data.augment.{name}={value}: a probability, in [0, 1]")
        if isinstance(self.color_jitter, tuple) and len(self.color_jitter) not in (3, 4):
            raise ConfigError(
                f"data.augment.color_jitter={list(self.color_jitter)}: one number, or 3 (brightness, contrast, "
                "saturation) or 4 (and hue)"
            )
        if self.interpolation not in (None, "random"):
            _check_interpolation(self.interpolation, "data.augment.interpolation")
        if self.re_mode not in ("const", "rand", "pixel"):
            raise ConfigError(f"data.augment.re_mode={self.re_mode!r}: one of 'const', 'rand', 'pixel'")


class ImageTransform:
    """An RGB PIL image -> a (3, H, W) float tensor in [0, 1] or a PIL image (for the collator to convert).

    Args:
        steps: the transforms, applied in order.
        decode_side: the smallest side the decoder should keep (JPEGs are decoded at a reduced scale down to it).
        is_random: whether the steps draw random numbers (the caller then runs them under :func:`seeded`).
    """

    def __init__(self, steps: Sequence[Callable[[Any], Any]], decode_side: int, is_random: bool) -> None:
        self.steps = list(steps)
        self.decode_side = decode_side
        self.is_random = is_random

    def __call__(self, image: Image.Image) -> Image.Image | Tensor:
        result: Any = image
        for step in self.steps:
            result = step(result)
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.steps}, decode_side={self.decode_side})"


def build_eval_transform(image_size: int, preprocess: PreprocessConfig) -> ImageTransform:
    """The encoder's evaluation resize + crop at ``image_size``: timm's ``create_transform(is_training=False)``
    without its ``ToTensor`` / ``Normalize``; it gives ``image_size`` square PIL images."""
    timm_steps = create_transform(
        image_size,
        is_training=False,
        interpolation=preprocess.interpolation,
        crop_pct=preprocess.crop_pct,
        crop_mode=preprocess.crop_mode,
        mean=preprocess.mean,
        std=preprocess.std,
    ).transforms
    steps = [step for step in timm_steps if not _is_tensor_step(step)]
    return ImageTransform(steps, decode_side=math.floor(image_size / preprocess.crop_pct), is_random=False)


def build_train_transform(
    image_size: int, augment: AugmentConfig, preprocess: PreprocessConfig | None = None
) -> ImageTransform:
    """Random augmentation at ``image_size``: timm's ``create_transform(is_training=True)`` split in its three
    stages; the crop/flip and colour stages are kept, then the image becomes a [0, 1] tensor, and random erasing
    (if any) runs in the encoder's normalised space (timm's semantics) and is mapped back.

    Raises:
        ConfigError: a value timm refuses (an unknown ``auto_augment`` policy or section), naming it.
    """
    preprocess = preprocess or PreprocessConfig()
    interpolation = augment.interpolation or preprocess.interpolation
    try:
        primary, secondary, final = create_transform(
            image_size,
            is_training=True,
            separate=True,
            scale=augment.scale,
            ratio=augment.ratio,
            hflip=augment.hflip,
            vflip=augment.vflip,
            color_jitter=augment.color_jitter,  # type: ignore[arg-type]  # timm accepts None: no jitter
            color_jitter_prob=augment.color_jitter_prob,
            grayscale_prob=augment.grayscale_prob,
            gaussian_blur_prob=augment.gaussian_blur_prob,
            auto_augment=augment.auto_augment,
            interpolation=interpolation,
            mean=preprocess.mean,
            std=preprocess.std,
            re_prob=augment.re_prob,
            re_mode=augment.re_mode,
            re_count=augment.re_count,
        )
    except Exception as err:  # noqa: BLE001 - timm's asserts and KeyErrors on a bad policy string become one line
        detail = " ".join(str(err).split()) or type(err).__name__
        if augment.auto_augment is not None:
            raise ConfigError(
                f"data.augment.auto_augment={augment.auto_augment!r} is not a policy timm knows ({detail}); e.g. "
                "'rand-m9-mstd0.5', 'augmix-m5-w4-d2', 'original'"
            ) from err
        raise ConfigError(f"data.augment: timm cannot build this augmentation ({detail})") from err
    steps: list[Callable[[Any], Any]] = [*primary.transforms, *secondary.transforms, to_tensor]
    steps += [_ErasingInPixelSpace(step, preprocess) for step in final.transforms if isinstance(step, RandomErasing)]
    decode_side = math.ceil(image_size / math.sqrt(augment.scale[0]))  # the smallest crop still at full resolution
    return ImageTransform(steps, decode_side=decode_side, is_random=True)


class _ErasingInPixelSpace:
    """timm's random erasing on a [0, 1] image: normalise with the encoder's mean/std, erase, map back, so the
    encoder sees exactly timm's erased input.

    Args:
        erasing: timm's ``RandomErasing`` (it works on one (3, H, W) image or a batch).
        preprocess: the encoder's mean/std.
    """

    def __init__(self, erasing: RandomErasing, preprocess: PreprocessConfig) -> None:
        self.erasing = erasing
        self.mean = torch.tensor(preprocess.mean).view(3, 1, 1)
        self.std = torch.tensor(preprocess.std).view(3, 1, 1)

    def __call__(self, image: Tensor) -> Tensor:
        """(3, H, W) float in [0, 1] -> (3, H, W) float, erased rectangles in the encoder's noise (the other pixels
        are left exactly as they were, not round-tripped through the normalisation)."""
        normalised = (image - self.mean) / self.std
        erased = self.erasing(normalised.clone())  # timm erases in place
        return torch.where(erased != normalised, erased * self.std + self.mean, image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.erasing})"


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with Python's ``random``, NumPy's global and torch's CPU generators seeded from ``seed`` (the
    three that timm's and torchvision's transforms draw from), and give the caller's generator states back after.

    Example:
        >>> with seeded(7):
        ...     a = random.random()
        >>> with seeded(7):
        ...     b = random.random()
        >>> a == b
        True
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


_TENSOR_STEPS = (MaybeToTensor, MaybePILToTensor, transforms.ToTensor, transforms.PILToTensor, transforms.Normalize)


def _is_tensor_step(step: Any) -> bool:
    """timm's conversion to a tensor or its normalisation (the encoder normalises; the collator converts)."""
    return isinstance(step, _TENSOR_STEPS)


def _check_interpolation(value: str, field_name: str) -> None:
    if value not in INTERPOLATIONS:
        raise ConfigError(f"{field_name}={value!r} is not a resampling filter timm knows; one of {INTERPOLATIONS}")
