"""Multi-head cross-attention on ``F.scaled_dot_product_attention``, with an opt-in path that returns weights.

The fast path (SDPA) is used whenever weights are not requested, so training keeps fused kernels; the explicit
softmax path exists for attribution (gradient-weighted attention needs the weights and their gradients).
"""

from __future__ import annotations

import torch.nn.functional as F
from timm.layers import Mlp
from torch import Tensor, nn

__all__ = ["CrossAttention", "CrossAttentionBlock"]


class CrossAttention(nn.Module):
    """Queries from one sequence attend to keys/values of another.

    Args:
        dim: model width D.
        num_heads: number of heads nh; ``dim`` must be divisible by it.
        dropout: dropout on attention probabilities (training only) and on the output projection.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(
        self, query: Tensor, context: Tensor, context_mask: Tensor | None = None, return_attn_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``context``.

        Args:
            query: (B, L, D) query tokens.
            context: (B, N, D) key/value tokens.
            context_mask: (B, N) bool, True where a context token is valid; None = all valid.
            return_attn_weights: compute attention explicitly and return its weights (slower; for attribution).

        Returns:
            (B, L, D) attended features and, if asked, (B, nh, L, N) attention probabilities (else None).
        """
        B, L, D = query.shape
        N = context.shape[1]
        q = self.q(query).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, L, D) -> (B, nh, L, hd)
        kv = self.kv(context).view(B, N, 2, self.num_heads, self.head_dim)  # (B, N, 2D) -> (B, N, 2, nh, hd)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, N, hd)
        attn_mask = None if context_mask is None else context_mask[:, None, None, :]  # (B, N) -> (B, 1, 1, N)
        drop = self.dropout if self.training else 0.0
        weights = None
        if return_attn_weights:
            scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, nh, L, N)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, p=drop, training=self.training) @ v  # (B, nh, L, hd)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        out = out.transpose(1, 2).reshape(B, L, D)  # (B, nh, L, hd) -> (B, L, D)
        return self.proj_drop(self.proj(out)), weights


class CrossAttentionBlock(nn.Module):
    """Pre-norm residual block: ``x + CrossAttn(LN(x), LN(ctx))`` then ``x + MLP(LN(x))``.

    Args:
        dim: model width D.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        dropout: dropout in attention and MLP.
        norm_layer: normalisation layer class.
        act_layer: MLP activation class.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.norm_q = norm_layer(dim)
        self.norm_ctx = norm_layer(dim)
        self.attn = CrossAttention(dim, num_heads, dropout)
        self.norm_mlp = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=dropout)

    def forward(
        self, x: Tensor, context: Tensor, context_mask: Tensor | None = None, return_attn_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Update ``x`` from ``context``.

        Args:
            x: (B, L, D) tokens being updated.
            context: (B, N, D) tokens attended to.
            context_mask: (B, N) bool, True = valid.
            return_attn_weights: also return (B, nh, L, N) attention weights.

        Returns:
            (B, L, D) updated tokens and the weights or None.
        """
        attended, weights = self.attn(self.norm_q(x), self.norm_ctx(context), context_mask, return_attn_weights)
        x = x + attended
        x = x + self.mlp(self.norm_mlp(x))
        return x, weights
