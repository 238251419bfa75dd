"""Cross-attention fusion: text tokens attend to image tokens, optionally the reverse too (co-attention).

Pre-norm layers in the style of the ViLBERT / LXMERT cross-modal blocks (Lu et al. 2019; Tan & Bansal 2019),
computed with ``F.scaled_dot_product_attention`` unless attention weights are requested.
"""

from __future__ import annotations

import torch
from torch import nn

from mmfuse.fusion.base import FUSIONS, FusionConfig
from mmfuse.layers import CrossAttentionBlock, masked_mean
from mmfuse.types import EncoderOutput, FusionOutput

__all__ = ["CrossAttentionFusion"]


@FUSIONS.register("cross_attention")
class CrossAttentionFusion(nn.Module):
    """N pre-norm cross-attention layers; the fused vector is the mean of the valid text tokens.

    With ``co_attention`` each layer updates both streams from the other's previous state, and the fused vector
    is a projection of both pooled streams.

    Args:
        cfg: fusion config.
        dim: model width D.
    """

    uses_image = True
    uses_text = True

    def __init__(self, cfg: FusionConfig, dim: int) -> None:
        super().__init__()

        def block() -> CrossAttentionBlock:
            return CrossAttentionBlock(dim, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)

        self.text_layers = nn.ModuleList([block() for _ in range(cfg.num_layers)])
        self.image_layers = nn.ModuleList([block() for _ in range(cfg.num_layers)]) if cfg.co_attention else None
        self.norm = nn.LayerNorm(dim)
        self.pool_proj = nn.Linear(2 * dim, dim) if cfg.co_attention else None

    def forward(
        self, image: EncoderOutput | None, text: EncoderOutput | None, return_attn_weights: bool = False
    ) -> FusionOutput:
        """Fuse image and text tokens.

        Args:
            image: tokens (B, N, D), all valid.
            text: tokens (B, L, D) with mask (B, L), True = real token.
            return_attn_weights: return per-layer attention weights (explicit softmax instead of SDPA).

        Returns:
            FusionOutput: fused (B, D), tokens (B, L, D) text tokens after fusion, attn_weights per layer
            (B, nh, L, N), and image_attn_weights per layer (B, nh, N, L) with co-attention.
        """
        assert image is not None and text is not None, "cross-attention fusion needs both modalities"
        text_tokens, image_tokens = text.tokens, image.tokens
        text_weights: list[torch.Tensor] = []
        image_weights: list[torch.Tensor] = []
        for i, text_layer in enumerate(self.text_layers):
            new_text, w_text = text_layer(text_tokens, image_tokens, image.mask, return_attn_weights)
            if self.image_layers is not None:
                image_tokens, w_image = self.image_layers[i](image_tokens, text_tokens, text.mask, return_attn_weights)
                if w_image is not None:
                    image_weights.append(w_image)
            text_tokens = new_text
            if w_text is not None:
                text_weights.append(w_text)
        text_tokens = self.norm(text_tokens)
        fused = masked_mean(text_tokens, text.mask)  # (B, L, D) -> (B, D)
        if self.pool_proj is not None:
            image_pooled = masked_mean(self.norm(image_tokens), image.mask)  # (B, N, D) -> (B, D)
            fused = self.pool_proj(torch.cat([fused, image_pooled], dim=-1))  # (B, 2D) -> (B, D)
        return FusionOutput(
            fused=fused,
            tokens=text_tokens,
            attn_weights=tuple(text_weights) if return_attn_weights else None,
            image_attn_weights=tuple(image_weights) if return_attn_weights and image_weights else None,
        )
