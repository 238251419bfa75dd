"""Single-modality baselines behind the fusion interface: they show what one modality alone can do."""

from __future__ import annotations

from torch import nn

from mmfuse.fusion.base import FUSIONS, FusionConfig
from mmfuse.types import EncoderOutput, FusionOutput

__all__ = ["ImageOnlyFusion", "TextOnlyFusion"]


@FUSIONS.register("image_only")
class ImageOnlyFusion(nn.Module):
    """``fused = LN(image.pooled)``; the model does not build a text encoder."""

    uses_image = True
    uses_text = False

    def __init__(self, cfg: FusionConfig, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, image: EncoderOutput | None, text: EncoderOutput | None, return_attn_weights: bool = False
    ) -> FusionOutput:
        """Args: image with pooled (B, D); text ignored. Returns: fused (B, D)."""
        assert image is not None
        return FusionOutput(fused=self.norm(image.pooled))


@FUSIONS.register("text_only")
class TextOnlyFusion(nn.Module):
    """``fused = LN(text.pooled)``; the model does not build a vision encoder."""

    uses_image = False
    uses_text = True

    def __init__(self, cfg: FusionConfig, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, image: EncoderOutput | None, text: EncoderOutput | None, return_attn_weights: bool = False
    ) -> FusionOutput:
        """Args: text with pooled (B, D); image ignored. Returns: fused (B, D)."""
        assert text is not None
        return FusionOutput(fused=self.norm(text.pooled))
