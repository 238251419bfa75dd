"""Plain image classifiers to explain on photos: built by name from timm or torchvision, with their preprocessing
(input size, mean, std) and their class names.

Models are built with random weights (timm ``pretrained=False``, torchvision ``weights=None``: nothing is ever
downloaded); trained weights come from a local file, read with ``torch.load(..., weights_only=True)`` or safetensors.
The input size and mean/std come from the model's own metadata: timm's :func:`timm.data.resolve_model_data_config`,
and for torchvision the transforms of the architecture's default weights enum (metadata only, no download); timm's
ImageNet defaults (``timm.data.IMAGENET_DEFAULT_MEAN`` / ``IMAGENET_DEFAULT_STD``, 224 px) stand in for a model that
states none. Class names: torchvision's ``meta["categories"]``, or timm's :class:`~timm.data.ImageNetInfo` for a
head whose size matches an ImageNet label set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import timm.data
from torch import nn

from mmfuse._weights import (
    TORCHVISION_PREFIX,
    load_state_dict_strict,
    read_state_dict,
    torchvision_meta,
    torchvision_names,
)
from mmfuse.errors import ConfigError
from mmfuse.registry import close_matches

__all__ = [
    "TORCHVISION_PREFIX",
    "PhotoClassifier",
    "load_classifier",
    "load_weights",
    "preprocessing_of",
    "imagenet_class_names",
]


@dataclass(frozen=True)
class PhotoClassifier:
    """An image classifier and how to feed it.

    Attributes:
        name: what it was built from (a timm name or ``torchvision:<name>``).
        model: the classifier, in eval mode: ``model(images) -> (B, K)`` logits for normalised (B, 3, H, W) images.
        image_size: square input side in pixels.
        mean: per-channel mean subtracted from [0, 1] pixels.
        std: per-channel standard deviation they are divided by.
        class_names: class index -> name, or None when unknown.
    """

    name: str
    model: nn.Module
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None


def load_classifier(name: str, weights: str | Path | None = None) -> PhotoClassifier:
    """Build a classifier by name, with random weights unless ``weights`` gives a local file.

    Args:
        name: a timm model name (``resnet50``, ``vit_small_patch16_224``...) or ``torchvision:<name>``
            (``torchvision:mobilenet_v2``), built with ``torchvision.models.get_model(name, weights=None)``.
        weights: a state dict saved with ``torch.save`` (read with ``weights_only=True``) or a ``.safetensors`` file.

    Returns:
        The classifier in eval mode, with its preprocessing and class names.

    Raises:
        ConfigError: an unknown name (with close matches), or weights that cannot be read or do not fit the model.
    """
    if name.startswith(TORCHVISION_PREFIX):
        model, size, mean, std, names = _torchvision(name[len(TORCHVISION_PREFIX) :])
    else:
        if not timm.is_model(name):
            hints = close_matches(name, timm.list_models())
            raise ConfigError(f"classifier {name!r} is not a timm model (nor torchvision:<name>); close names: {hints}")
        model = timm.create_model(name, pretrained=False)
        size, mean, std = preprocessing_of(model)
        names = None
    if weights is not None:
        load_weights(model, weights)
    num_classes = _num_classes(model)
    if names is None or len(names) != num_classes:
        names = imagenet_class_names(model, num_classes)
    return PhotoClassifier(name, model.eval(), size, mean, std, names)


def _torchvision(name: str) -> tuple[nn.Module, int, tuple[float, ...], tuple[float, ...], tuple[str, ...] | None]:
    """A torchvision classifier with random weights, and the preprocessing and classes of its default weights."""
    import torchvision

    known = torchvision_names()
    if name not in known:
        raise ConfigError(
            f"classifier '{TORCHVISION_PREFIX}{name}' is not a torchvision classification model; "
            f"close names: {close_matches(name, known)}"
        )
    model = torchvision.models.get_model(name, weights=None)
    meta = torchvision_meta(name)
    return model, meta.image_size, meta.mean, meta.std, meta.categories


def preprocessing_of(model: nn.Module) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Square input side, mean and std of a model, from :func:`timm.data.resolve_model_data_config`.

    A timm model states its own; any other model gets timm's ImageNet defaults (224 px, ImageNet mean/std), which
    are also torchvision's.

    Returns:
        (image_size, mean, std).
    """
    cfg = timm.data.resolve_model_data_config(model)
    _, height, width = cfg["input_size"]
    if height != width:
        raise ValueError(f"{type(model).__name__} expects {height}x{width} inputs; pass a square image_size")
    return int(height), tuple(float(m) for m in cfg["mean"]), tuple(float(s) for s in cfg["std"])


def imagenet_class_names(model: nn.Module, num_classes: int | None) -> tuple[str, ...] | None:
    """Short ImageNet class names (the first synonym, e.g. ``tabby``) for a head of an ImageNet label set's size.

    Args:
        model: the classifier (timm's ``infer_imagenet_subset`` reads its pretrained config, e.g. ImageNet-22k).
        num_classes: K, its number of outputs; None = unknown.

    Returns:
        K names, or None when K matches no ImageNet label set.
    """
    subset = timm.data.infer_imagenet_subset(model) or "imagenet-1k"
    for candidate in dict.fromkeys((subset, "imagenet-1k")):
        info = timm.data.ImageNetInfo(candidate)
        if num_classes is not None and info.num_classes() == num_classes:
            return tuple(d.split(",")[0] for d in info.label_descriptions())
    return None


def _num_classes(model: nn.Module) -> int | None:
    """K of a timm (``num_classes``) or torchvision (last ``nn.Linear``) classifier; None when not found."""
    num_classes = getattr(model, "num_classes", None)
    if isinstance(num_classes, int):
        return num_classes
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict from a local file into ``model`` (strict: every key must match).

    Args:
        model: the model.
        path: ``*.safetensors``, or a ``torch.save`` file of a state dict (read with ``weights_only=True``, so
            no code in it runs).

    Raises:
        ConfigError: a missing or unreadable file, a file that holds no state dict, or keys/shapes that do not fit.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"weights {str(path)!r}: no such file")
    load_state_dict_strict(model, read_state_dict(file), f"weights {str(path)!r}", type(model).__name__)
