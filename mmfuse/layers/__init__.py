"""Reusable pure blocks."""

from mmfuse.layers.attention import CrossAttention, CrossAttentionBlock
from mmfuse.layers.pooling import masked_mean

__all__ = ["CrossAttention", "CrossAttentionBlock", "masked_mean"]
