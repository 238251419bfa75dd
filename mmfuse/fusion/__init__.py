"""Fusion modules; the imports below fill the registry."""

from mmfuse.fusion.base import FUSIONS, build_fusion
from mmfuse.fusion.concat import ConcatFusion, ConcatFusionConfig
from mmfuse.fusion.cross_attention import CrossAttentionFusion, CrossAttentionFusionConfig
from mmfuse.fusion.unimodal import ImageOnlyFusion, ImageOnlyFusionConfig, TextOnlyFusion, TextOnlyFusionConfig

__all__ = [
    "FUSIONS",
    "build_fusion",
    "CrossAttentionFusion",
    "CrossAttentionFusionConfig",
    "ConcatFusion",
    "ConcatFusionConfig",
    "ImageOnlyFusion",
    "ImageOnlyFusionConfig",
    "TextOnlyFusion",
    "TextOnlyFusionConfig",
]
