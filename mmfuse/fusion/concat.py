"""Late-fusion baseline: an MLP over the concatenated pooled image and text features."""

from __future__ import annotations

import torch
from timm.layers import Mlp
from torch import nn

from mmfuse.fusion.base import FUSIONS, FusionConfig
from mmfuse.types import EncoderOutput, FusionOutput

__all__ = ["ConcatFusion"]


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """``fused = MLP([image.pooled; text.pooled])``.

    Args:
        cfg: fusion config.
        dim: model width D.
    """

    uses_image = True
    uses_text = True

    def __init__(self, cfg: FusionConfig, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(2 * dim)
        self.mlp = Mlp(2 * dim, int(dim * cfg.mlp_ratio), out_features=dim, drop=cfg.dropout)

    def forward(
        self, image: EncoderOutput | None, text: EncoderOutput | None, return_attn_weights: bool = False
    ) -> FusionOutput:
        """Fuse pooled features.

        Args:
            image: pooled (B, D).
            text: pooled (B, D).
            return_attn_weights: ignored (no attention here).

        Returns:
            FusionOutput with fused (B, D).
        """
        assert image is not None and text is not None, "concat fusion needs both modalities"
        joint = torch.cat([image.pooled, text.pooled], dim=-1)  # (B, 2D)
        return FusionOutput(fused=self.mlp(self.norm(joint)))
