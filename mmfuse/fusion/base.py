"""Fusion registry and factory.

Every fusion has ``forward(image: EncoderOutput | None, text: EncoderOutput | None) -> FusionOutput`` and two
class attributes, ``uses_image`` and ``uses_text``, so the model builds only the encoders a fusion reads.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mmfuse.registry import Registry

__all__ = ["FUSIONS", "build_fusion"]

FUSIONS: Registry[type[nn.Module]] = Registry("fusion")


def build_fusion(cfg: Any, dim: int) -> nn.Module:
    """Build the registered fusion named by ``cfg.name`` at width ``dim``."""
    return FUSIONS.get(cfg.name)(cfg, dim=dim)
