"""Pooling over token sequences with a validity mask."""

from __future__ import annotations

from torch import Tensor

__all__ = ["masked_mean"]


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over valid tokens.

    Args:
        tokens: (B, N, D) features.
        mask: (B, N) bool, True = valid; None = all valid.

    Returns:
        (B, D) mean of the valid tokens.
    """
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, N) -> (B, N, 1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
