"""Local weights files and torchvision's weights metadata, shared by the torchvision vision encoder and the
attribution classifiers.

State dicts are read with ``torch.load(..., weights_only=True)`` (no code in the file runs) or safetensors, and loaded
strictly; a file that does not fit is reported by its first key that does not (missing, unexpected or mis-shaped).
Torchvision's preprocessing (input side, mean, std) and class names come from the transforms and meta of a model's
``DEFAULT`` weights enum: metadata only, nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.errors import ConfigError

__all__ = [
    "TORCHVISION_PREFIX",
    "TorchvisionMeta",
    "torchvision_names",
    "torchvision_meta",
    "read_state_dict",
    "load_state_dict_strict",
]

TORCHVISION_PREFIX = "torchvision:"

# ImageNet statistics (torchvision's and timm's defaults) for a model whose weights state none.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TorchvisionMeta:
    """What a torchvision model's default weights say about feeding it.

    Attributes:
        image_size: square input side of the weights' centre crop (224 when unknown).
        mean: per-channel mean subtracted from [0, 1] pixels.
        std: per-channel standard deviation they are divided by.
        categories: class names of the weights, or None.
        url: download address of the default weights, or None.
    """

    image_size: int = 224
    mean: tuple[float, ...] = _IMAGENET_MEAN
    std: tuple[float, ...] = _IMAGENET_STD
    categories: tuple[str, ...] | None = None
    url: str | None = None


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models (``torchvision.models.list_models(module=torchvision.models)``)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def torchvision_meta(name: str, weights: str | None = None) -> TorchvisionMeta:
    """Preprocessing, class names and weights URL of a torchvision classification model's weights.

    Args:
        name: a name from :func:`torchvision_names` (no ``torchvision:`` prefix).
        weights: a member of the model's weights enum (``IMAGENET1K_V1``); None = ``DEFAULT``.

    Returns:
        The metadata; ImageNet statistics at 224 px where the weights state none.
    """
    import torchvision

    default = getattr(torchvision.models.get_model_weights(name), weights or "DEFAULT", None)
    if default is None:
        return TorchvisionMeta()
    transforms = default.transforms()
    crop = getattr(transforms, "crop_size", 224)
    size = crop[0] if isinstance(crop, (list, tuple)) else crop
    categories = default.meta.get("categories")
    return TorchvisionMeta(
        image_size=int(size),
        mean=tuple(float(m) for m in getattr(transforms, "mean", _IMAGENET_MEAN)),
        std=tuple(float(s) for s in getattr(transforms, "std", _IMAGENET_STD)),
        categories=tuple(categories) if categories else None,
        url=default.url,
    )


def read_state_dict(file: Path) -> Mapping[str, Tensor]:
    """A state dict from ``*.safetensors`` or a ``torch.save`` file (read with ``weights_only=True``).

    Raises:
        ConfigError: an unreadable file, or one that holds something other than a name -> tensor mapping.
    """
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(file)
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # every reader's own error type: safetensors, pickle, zip; re-raised with the file
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise ConfigError(f"weights {str(file)!r}: not a readable state dict ({reason})") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        kind = type(state).__name__
        raise ConfigError(f"weights {str(file)!r}: expected a state dict (parameter name -> tensor), got a {kind}")
    return state


def load_state_dict_strict(model: nn.Module, state: Mapping[str, Tensor], source: str, target: str) -> None:
    """Load ``state`` into ``model``; every key must be there, with its shape.

    Args:
        model: the model.
        state: parameter name -> tensor.
        source: where the state dict came from, for the message (``weights '/path/w.pth'``).
        target: what the model is, for the message (``MobileNetV2``, ``torchvision:mobilenet_v2``).

    Raises:
        ConfigError: naming the first key (in the model's order) that is mis-shaped, missing or unexpected.
    """
    own = model.state_dict()
    for key, value in own.items():
        if key not in state and not key.endswith("num_batches_tracked"):  # BatchNorm fills that one itself
            raise ConfigError(f"{source} do not fit {target}: {key!r} is missing there")
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            found, wanted = tuple(state[key].shape), tuple(value.shape)
            raise ConfigError(f"{source} do not fit {target}: {key!r} has shape {found} there, {wanted} in the model")
    unexpected = [key for key in state if key not in own]
    if unexpected:
        raise ConfigError(f"{source} do not fit {target}: {unexpected[0]!r} is not in the model")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # anything the key and shape check above did not foresee, on one line
        detail = " ".join(str(err).split())[:600]
        raise ConfigError(f"{source} do not fit {target}: {detail}") from err
