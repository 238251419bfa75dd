"""Head registry and factory. A head maps the fused (B, D) vector to task outputs."""

from __future__ import annotations

from typing import Any

from torch import nn

from mmfuse.registry import Registry

__all__ = ["HEADS", "build_head"]

HEADS: Registry[type[nn.Module]] = Registry("head")


def build_head(cfg: Any, dim: int, num_classes: int) -> nn.Module:
    """Build the registered head named by ``cfg.name``."""
    return HEADS.get(cfg.name)(cfg, dim=dim, num_classes=num_classes)
