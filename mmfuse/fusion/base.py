"""Fusion registry, config and factory.

Every fusion has ``forward(image: EncoderOutput | None, text: EncoderOutput | None, return_attn_weights=False)
-> FusionOutput`` and two class attributes, ``uses_image`` and ``uses_text``, so the model builds only the encoders a
fusion reads.

All fusions share one config class: the ``name`` picks the registered fusion and each fusion reads the fields it
needs (``concat`` reads ``mlp_ratio`` and ``dropout``; ``image_only``/``text_only`` read none). One class per fusion
would be tidier, but a YAML that switches ``name`` would then have to switch the config type too, and jsonargparse
carries fields across union members and rejects later overrides; one shape keeps ``--model.fusion.name concat``
and every other override working.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from mmfuse.errors import ConfigError
from mmfuse.registry import Registry

__all__ = ["FUSIONS", "FusionConfig", "build_fusion"]

FUSIONS: Registry[type[nn.Module]] = Registry("fusion")


@dataclass(frozen=True)
class FusionConfig:
    """Config of a fusion module.

    Attributes:
        name: registered fusion: ``cross_attention``, ``concat``, ``image_only`` or ``text_only``.
        num_layers: cross-attention layers.
        num_heads: attention heads per cross-attention layer.
        mlp_ratio: MLP hidden width relative to the model width (cross-attention and concat).
        dropout: dropout in attention and MLPs.
        co_attention: cross-attention only: image tokens also attend to text tokens in every layer.
    """

    name: str = "cross_attention"
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    co_attention: bool = False


def build_fusion(cfg: FusionConfig, dim: int) -> nn.Module:
    """Build the registered fusion named by ``cfg.name`` at width ``dim``."""
    try:
        fusion_cls = FUSIONS.get(cfg.name)
    except KeyError as err:
        raise ConfigError(f"model.fusion.name: {err.args[0]}") from None
    return fusion_cls(cfg, dim=dim)
