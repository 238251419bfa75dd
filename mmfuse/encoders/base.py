"""Encoder registries and factories.

A vision encoder maps ``(B, 3, H, W)`` images in [0, 1] to an :class:`~mmfuse.types.EncoderOutput` of width
``out_dim`` and exposes ``out_dim``, ``grid_size`` and ``preprocess_cfg``. A text encoder maps ``(B, L)`` token ids
and a ``(B, L)`` bool mask to an ``EncoderOutput`` of width ``out_dim``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mmfuse._weights import TORCHVISION_PREFIX
from mmfuse.registry import Registry

__all__ = ["VISION_ENCODERS", "TEXT_ENCODERS", "build_vision_encoder", "build_text_encoder"]

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
