"""Counterfactual image edits: a user function that changes only a protected attribute in an image, the checks
every edit must pass, and the shapes world's own edit (repaint the 1 px frame that marks the protected group).

An edit is a callable ``(image, record) -> image``: ``image`` is one (3, H, W) float image in [0, 1] as the model
receives it, ``record`` the example's raw record (its ``text``, ``label`` and any metadata such as
``protected_group``); the result must have the same shape and dtype and stay in [0, 1].
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mmfuse.data.shapes import PROTECTED_FRAME_COLORS
from mmfuse.errors import ConfigError
from mmfuse.registry import Registry

__all__ = [
    "IMAGE_EDITS",
    "ImageCounterfactual",
    "check_edited_image",
    "edit_name",
    "resolve_image_edit",
    "shapes_frame_pair",
    "swap_shapes_frame",
]

ImageEdit = Callable[[Tensor, Mapping[str, Any]], Tensor]


@dataclass(frozen=True)
class ImageCounterfactual:
    """A protected attribute of the image and the edit that changes it.

    Attributes:
        name: attribute name in the report.
        edit: ``(image (3, H, W) in [0, 1], record) -> edited image`` of the same shape and dtype.
        pair: ``record -> (value before, value after)`` for the per-pair breakdown, or None when the record does not
            have the attribute (it is then skipped); None = every record, reported as ``original -> edited``.
        description: free text shown in reports.
    """

    name: str
    edit: ImageEdit
    pair: Callable[[Mapping[str, Any]], tuple[str, str] | None] | None = None
    description: str = ""

    def pair_of(self, record: Mapping[str, Any]) -> tuple[str, str] | None:
        return ("original", "edited") if self.pair is None else self.pair(record)


IMAGE_EDITS: Registry[Callable[[], ImageCounterfactual]] = Registry("image_edit")
"""Named counterfactual image edits that ``mmfuse probe counterfactual --image-edit NAME`` can use."""


def edit_name(edit: Callable[..., Any]) -> str:
    """A readable name of an edit function for messages: ``module.qualname``."""
    qualname = getattr(edit, "__qualname__", None) or type(edit).__qualname__
    return f"{getattr(edit, '__module__', '?')}.{qualname}"


def check_edited_image(edit: Callable[..., Any], image: Tensor, edited: Any) -> Tensor:
    """``edited`` if it is a valid counterfactual of ``image``; else a :class:`ConfigError` naming the function.

    Args:
        edit: the edit function (for the message).
        image: (3, H, W) the image it was given.
        edited: what it returned.
    """
    name = edit_name(edit)
    if not isinstance(edited, Tensor):
        raise ConfigError(f"image edit {name} returned {type(edited).__name__}, expected a torch.Tensor")
    if edited.shape != image.shape or edited.dtype != image.dtype:
        raise ConfigError(
            f"image edit {name} changed the image from shape {tuple(image.shape)} {image.dtype} to "
            f"{tuple(edited.shape)} {edited.dtype}; a counterfactual edit must keep the image's size and dtype"
        )
    if not torch.isfinite(edited).all():
        raise ConfigError(f"image edit {name} returned NaN or infinite values; images are floats in [0, 1]")
    if edited.min() < -1e-6 or edited.max() > 1 + 1e-6:
        raise ConfigError(
            f"image edit {name} returned values outside [0, 1] (min {float(edited.min()):.3g}, max "
            f"{float(edited.max()):.3g}); images are floats in [0, 1]"
        )
    return edited.to(image.device)


def resolve_image_edit(spec: str) -> ImageCounterfactual:
    """A registered edit (``shapes_frame``) or a ``package.module:function`` import path.

    An imported object may be an :class:`ImageCounterfactual`, a function returning one, or a plain edit function
    ``(image, record) -> image`` (then every record is probed and reported as ``original -> edited``).
    """
    if ":" not in spec:
        try:
            return IMAGE_EDITS.get(spec)()
        except KeyError as err:
            raise ConfigError(f"--image-edit {spec!r}: {err.args[0]} Or give package.module:function") from err
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"--image-edit {spec!r}: cannot import {attr!r} from {module_name!r} ({err})") from err
    if isinstance(obj, ImageCounterfactual):
        return obj
    if not callable(obj):
        raise ConfigError(f"--image-edit {spec!r} is a {type(obj).__name__}, not a function")
    return ImageCounterfactual(name=attr, edit=obj)


def _frame(image: Tensor) -> Tensor:
    """(3, 4 * (S - 1)) the outermost pixels of a square (3, S, S) image."""
    return torch.cat([image[:, 0, :-1], image[:, :-1, -1], image[:, -1, 1:], image[:, 1:, 0]], dim=1)


def shapes_frame_pair(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """(group before, group after) of a shapes-world record; None when it has no protected group."""
    group = int(record.get("protected_group", -1))
    return None if group not in (0, 1) else (f"group{group}", f"group{1 - group}")


def swap_shapes_frame(image: Tensor, record: Mapping[str, Any]) -> Tensor:
    """Repaint the shapes world's 1 px frame in the other protected group's colour; nothing else changes.

    Args:
        image: (3, S, S) float in [0, 1], a shapes-world image drawn with ``protected_frame`` on.
        record: its record (``protected_group`` 0 or 1).

    Returns:
        (3, S, S) the same image with the frame of the other group.
    """
    group = int(record.get("protected_group", -1))
    if group not in (0, 1):
        raise ConfigError(f"swap_shapes_frame: record has protected_group {group}; it needs 0 or 1")
    colors = torch.tensor(PROTECTED_FRAME_COLORS, dtype=image.dtype, device=image.device) / 255.0  # (2, 3)
    frame = _frame(image)  # (3, 4 * (S - 1))
    if not torch.allclose(frame, colors[group][:, None].expand_as(frame), atol=1.5 / 255):
        raise ConfigError(
            "swap_shapes_frame: the image has no frame of its group's colour; generate the shapes world with "
            "data.world.protected_frame: true"
        )
    edited = image.clone()
    other = colors[1 - group][:, None]  # (3, 1)
    edited[:, 0, :] = other
    edited[:, -1, :] = other
    edited[:, :, 0] = other
    edited[:, :, -1] = other
    return edited


@IMAGE_EDITS.register("shapes_frame")
def shapes_frame() -> ImageCounterfactual:
    """The shapes world's image-side protected attribute: the frame colour of ``protected_frame`` worlds."""
    return ImageCounterfactual(
        name="frame",
        edit=swap_shapes_frame,
        pair=shapes_frame_pair,
        description="shapes world: colour of the 1 px frame that marks the protected group",
    )
