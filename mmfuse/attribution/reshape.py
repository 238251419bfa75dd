"""Image tokens to a 2-D grid, read from the encoder itself, and the pixel maps made from a grid.

A token model (timm ViT family) lays out ``num_prefix_tokens`` CLS/register tokens followed by a row-major
``Gh x Gw`` patch grid; a feature-map model (CNN, hierarchical transformer) already gives ``(B, C, Gh, Gw)`` maps
(``(B, Gh, Gw, C)`` when timm reports ``output_fmt == "NHWC"``). Nothing here hard-codes a grid: every number comes
from :func:`token_layout`, which reads it from an :class:`~mmfuse.encoders.TimmVisionEncoder`, a plain timm model or
a torchvision classifier (its ViT: one class token and an ``image_size / patch_size`` grid; its Swin: NHWC stages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.encoders.timm_vision import is_channels_last

__all__ = ["TokenLayout", "token_layout", "to_grid", "relevance_to_grid", "upsample", "normalize_per_example"]


@dataclass(frozen=True)
class TokenLayout:
    """Where the patch grid sits in an image encoder's activations.

    Attributes:
        num_prefix_tokens: CLS/register tokens before the grid in ``(B, N, C)`` token activations.
        grid_size: (Gh, Gw) patch grid of token activations; None for a feature-map model, whose 4-D
            activations carry their own grid.
        channels_last: 4-D activations are ``(B, H, W, C)`` (timm ``output_fmt="NHWC"``, e.g. Swin stages).
    """

    num_prefix_tokens: int = 0
    grid_size: tuple[int, int] | None = None
    channels_last: bool = False


def _grid_of(module: Any) -> tuple[int, int] | None:
    grid = getattr(module, "grid_size", None)
    if grid is None and hasattr(module, "patch_embed"):
        grid = getattr(module.patch_embed, "grid_size", None)
    return None if grid is None else (int(grid[0]), int(grid[1]))


def _torchvision_layout(model: nn.Module) -> TokenLayout | None:
    """The layout of torchvision's ViT (its ``class_token`` before the grid) or Swin (NHWC stages), else None."""
    image_size, patch_size = getattr(model, "image_size", None), getattr(model, "patch_size", None)
    if isinstance(getattr(model, "class_token", None), Tensor) and isinstance(image_size, int):
        if isinstance(patch_size, int):
            side = image_size // patch_size
            return TokenLayout(1, (side, side))
    if isinstance(getattr(model, "permute", None), nn.Module):
        from torchvision.ops import Permute

        if isinstance(model.permute, Permute):  # Swin: (B, H, W, C) stages, permuted to NCHW only before the head
            return TokenLayout(channels_last=True)
    return None


def token_layout(encoder: nn.Module) -> TokenLayout:
    """The token layout of a vision encoder, a plain timm model or a torchvision classifier.

    Reads ``num_prefix_tokens`` and ``grid_size`` (``patch_embed.grid_size`` on a plain timm ViT) and timm's
    ``output_fmt``; torchvision's ViT and Swin are recognised by their ``class_token`` and ``permute`` modules
    (an encoder's own ``grid_size`` and ``num_prefix_tokens`` win: a torchvision encoder's Swin graph keeps
    ``permute``); other models without ``num_prefix_tokens`` are feature-map models.

    Args:
        encoder: an :class:`~mmfuse.encoders.TimmVisionEncoder` (``backbone`` inside), a timm model or a
            torchvision classifier.

    Returns:
        The layout used by :func:`to_grid` and :func:`relevance_to_grid`.
    """
    backbone = getattr(encoder, "backbone", encoder)
    torchvision_layout = _torchvision_layout(backbone)
    if torchvision_layout is not None and _grid_of(encoder) is None:  # a torchvision classifier, not an encoder
        return torchvision_layout
    channels_last = is_channels_last(backbone) or (torchvision_layout is not None and torchvision_layout.channels_last)
    return TokenLayout(int(getattr(encoder, "num_prefix_tokens", 0)), _grid_of(encoder), channels_last)


def to_grid(activation: Tensor, layout: TokenLayout) -> Tensor:
    """An image encoder's activation as a channel-first grid.

    Args:
        activation: (B, N, C) tokens with N = num_prefix_tokens + Gh * Gw, or a (B, C, Gh, Gw) feature map
            ((B, Gh, Gw, C) when ``layout.channels_last``).
        layout: the encoder's :class:`TokenLayout`.

    Returns:
        (B, C, Gh, Gw) activation; prefix tokens are dropped.
    """
    if activation.dim() == 4:
        # (B, Gh, Gw, C) -> (B, C, Gh, Gw) for channels-last stages; NCHW maps pass through.
        return activation.permute(0, 3, 1, 2) if layout.channels_last else activation
    if activation.dim() != 3:
        raise ValueError(f"expected (B, N, C) tokens or a 4-D feature map, got shape {tuple(activation.shape)}")
    if layout.grid_size is None:
        raise ValueError("(B, N, C) token activations need an encoder with a grid_size (a token model)")
    gh, gw = layout.grid_size
    grid_tokens = activation[:, layout.num_prefix_tokens :]  # (B, N, C) -> (B, Gh*Gw, C)
    if grid_tokens.shape[1] != gh * gw:
        raise ValueError(
            f"{activation.shape[1]} tokens do not hold {layout.num_prefix_tokens} prefix tokens and a {gh}x{gw} grid; "
            "pick a layer whose tokens are the encoder's patch grid"
        )
    # (B, Gh*Gw, C) -> (B, Gh, Gw, C) -> (B, C, Gh, Gw)
    return grid_tokens.reshape(activation.shape[0], gh, gw, activation.shape[2]).permute(0, 3, 1, 2)


def relevance_to_grid(relevance: Tensor, layout: TokenLayout) -> Tensor:
    """Per-token relevance over an image encoder's tokens as a grid.

    Args:
        relevance: (B, N) relevance per image token, N = num_prefix_tokens + Gh * Gw.
        layout: the encoder's layout; its ``grid_size`` must be set (image encoders always expose it).

    Returns:
        (B, Gh, Gw) relevance of the patch tokens.
    """
    if layout.grid_size is None:
        raise ValueError("relevance over image tokens needs the encoder's grid_size")
    # (B, N) -> (B, N, 1) so that to_grid reads it as 1-channel tokens; (B, 1, Gh, Gw) -> (B, Gh, Gw)
    return to_grid(relevance.unsqueeze(-1), TokenLayout(layout.num_prefix_tokens, layout.grid_size))[:, 0]


def upsample(grid: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of per-example maps, on their device (half-pixel centres, like OpenCV's resize).

    Args:
        grid: (B, Gh, Gw) maps.
        size: (H, W) output size.

    Returns:
        (B, H, W) float32 maps.
    """
    # (B, Gh, Gw) -> (B, 1, Gh, Gw) -> (B, 1, H, W) -> (B, H, W)
    return F.interpolate(grid.float().unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]


def normalize_per_example(maps: Tensor, eps: float = 1e-7) -> Tensor:
    """Min-max normalise each example's map to [0, 1] (pytorch-grad-cam's ``scale_cam_image`` rule).

    Args:
        maps: (B, ...) maps.
        eps: added to the range so that a constant map becomes all zeros instead of NaN.

    Returns:
        (B, ...) maps with ``(x - min) / (max - min + eps)`` per example.
    """
    flat = maps.float().flatten(1)  # (B, ...) -> (B, P)
    low = flat.min(dim=1, keepdim=True).values
    shifted = flat - low
    scaled = shifted / (shifted.max(dim=1, keepdim=True).values + eps)
    return scaled.view(maps.shape)
