from __future__ import annotations

import torch

from mmfuse.layers import CrossAttention, CrossAttentionBlock


def test_sdpa_path_equals_explicit_weights_path() -> None:
    attn = CrossAttention(dim=16, num_heads=4).eval()
    query, context = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    fast, none = attn(query, context, mask)
    slow, weights = attn(query, context, mask, return_attn_weights=True)
    assert none is None and weights is not None
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert weights.shape == (2, 4, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))
    assert (weights[1, :, :, 3:] == 0).all(), "masked context tokens must get zero weight"


def test_masked_context_content_is_ignored() -> None:
    block = CrossAttentionBlock(dim=16, num_heads=2).eval()
    x, context = torch.randn(1, 4, 16), torch.randn(1, 6, 16)
    mask = torch.tensor([[True, True, True, False, False, False]])
    changed = context.clone()
    changed[:, 3:] = torch.randn(1, 3, 16) * 100
    torch.testing.assert_close(block(x, context, mask)[0], block(x, changed, mask)[0])
