"""Fusion modules; the imports below fill the registry."""

from mmfuse.fusion.base import FUSIONS, FusionConfig, build_fusion
from mmfuse.fusion.concat import ConcatFusion
from mmfuse.fusion.cross_attention import CrossAttentionFusion
from mmfuse.fusion.unimodal import ImageOnlyFusion, TextOnlyFusion

__all__ = [
    "FUSIONS",
    "FusionConfig",
    "build_fusion",
    "CrossAttentionFusion",
    "ConcatFusion",
    "ImageOnlyFusion",
    "TextOnlyFusion",
]
