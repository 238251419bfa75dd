"""Encoder registries and factories.

A vision encoder maps ``(B, 3, H, W)`` images in [0, 1] to an :class:`~mmfuse.types.EncoderOutput` of width
``out_dim`` and exposes ``out_dim``, ``grid_size`` and ``preprocess_cfg``. A text encoder maps ``(B, L)`` token ids
and a ``(B, L)`` bool mask to an ``EncoderOutput`` of width ``out_dim``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmfuse._weights import TORCHVISION_PREFIX
from mmfuse.registry import Registry
from mmfuse.types import EncoderOutput

__all__ = [
    "VISION_ENCODERS",
    "TEXT_ENCODERS",
    "build_vision_encoder",
    "build_text_encoder",
    "encoder_backbone",
    "image_tokens_output",
]

VISION_ENCODERS: Registry[type[nn.Module]] = Registry("vision_encoder")
TEXT_ENCODERS: Registry[type[nn.Module]] = Registry("text_encoder")


def build_vision_encoder(cfg: Any, out_dim: int, img_size: int) -> nn.Module:
    """Build the registered vision encoder named by ``cfg.name``, projecting to ``out_dim``.

    A ``model_name`` of ``torchvision:<name>`` selects the ``"torchvision"`` entry instead, so that swapping the
    backbone family is a change of model name only.
    """
    is_torchvision = str(getattr(cfg, "model_name", "")).startswith(TORCHVISION_PREFIX)
    return VISION_ENCODERS.get("torchvision" if is_torchvision else cfg.name)(cfg, out_dim=out_dim, img_size=img_size)


def build_text_encoder(cfg: Any, out_dim: int, vocab_size: int, pad_token_id: int) -> nn.Module:
    """Build the registered text encoder named by ``cfg.name``, projecting to ``out_dim``."""
    return TEXT_ENCODERS.get(cfg.name)(cfg, out_dim=out_dim, vocab_size=vocab_size, pad_token_id=pad_token_id)


def encoder_backbone(encoder: nn.Module) -> nn.Module:
    """The pretrained part of an encoder (its ``backbone``: a timm or torchvision model, a transformers model), which
    ``speed.freeze_*``, ``optim.unfreeze_after_*`` and ``optim.lr_mult`` act on. The rest of the encoder -- its
    projection to the common width and position embedding -- is new and trains like the fusion."""
    backbone = getattr(encoder, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"{type(encoder).__name__} has no backbone module: every registered encoder needs one")
    return backbone


def image_tokens_output(
    features: Tensor, proj: nn.Module, pos_embed: Tensor | None, num_prefix_tokens: int, grid_size: tuple[int, int]
) -> EncoderOutput:
    """The output every image encoder gives: native features projected to the common width, a learned position
    embedding added to the grid tokens (not the prefix tokens), pooled over the grid.

    Args:
        features: (B, C, Gh, Gw) feature map, or (B, N, C) tokens with N = num_prefix_tokens + Gh * Gw.
        proj: the projection C -> D.
        pos_embed: (1, Gh * Gw, D) or None.
        num_prefix_tokens: CLS/register tokens before the grid.
        grid_size: (Gh, Gw).

    Returns:
        EncoderOutput with tokens (B, N, D) and pooled (B, D), the mean of the grid tokens.
    """
    if features.dim() == 4:
        features = features.flatten(2).transpose(1, 2)  # (B, C, Gh, Gw) -> (B, Gh*Gw, C)
    tokens = proj(features)  # (B, N, C) -> (B, N, D)
    if pos_embed is not None:
        prefix, grid = tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:]
        tokens = torch.cat([prefix, grid + pos_embed], dim=1)  # (B, Gh*Gw, D) + (1, Gh*Gw, D)
    return EncoderOutput(
        tokens=tokens,
        mask=None,
        pooled=tokens[:, num_prefix_tokens:].mean(dim=1),
        num_prefix_tokens=num_prefix_tokens,
        grid_size=grid_size,
    )
