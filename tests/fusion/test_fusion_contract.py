"""Contract of every registered fusion, parametrised over the registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mmfuse.errors import ConfigError
from mmfuse.fusion import FUSIONS, CrossAttentionFusion, FusionConfig, build_fusion
from mmfuse.types import EncoderOutput

D = 16


def _inputs(batch: int = 3) -> tuple[EncoderOutput, EncoderOutput]:
    image_tokens = torch.randn(batch, 9, D, requires_grad=True)
    text_tokens = torch.randn(batch, 5, D, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])
    image = EncoderOutput(image_tokens, None, image_tokens.mean(1), grid_size=(3, 3))
    text_pooled = (text_tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return image, EncoderOutput(text_tokens, mask, text_pooled)


def test_unknown_fusion_name_is_a_config_error_listing_known_names() -> None:
    with pytest.raises(ConfigError, match="cross_attention"):
        build_fusion(FusionConfig(name="cross_atention"), dim=D)


@pytest.mark.parametrize("name", FUSIONS.names())
def test_shapes_finite_and_all_parameters_get_gradients(name: str) -> None:
    fusion = build_fusion(FusionConfig(name=name), dim=D)
    out = fusion(*_inputs())
    assert out.fused.shape == (3, D) and torch.isfinite(out.fused).all()
    out.fused.pow(2).sum().backward()
    missing = [n for n, p in fusion.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing}"


@pytest.mark.parametrize("name", FUSIONS.names())
def test_eval_is_deterministic(name: str) -> None:
    fusion = build_fusion(FusionConfig(name=name), dim=D).eval()
    image, text = _inputs()
    torch.testing.assert_close(fusion(image, text).fused, fusion(image, text).fused, rtol=0, atol=0)


@pytest.mark.parametrize("co_attention", [False, True])
def test_padded_text_positions_do_not_change_the_output(co_attention: bool) -> None:
    fusion = CrossAttentionFusion(FusionConfig(co_attention=co_attention), dim=D).eval()
    image, text = _inputs()
    changed_tokens = text.tokens.detach().clone()
    changed_tokens[~text.mask] = torch.randn(int((~text.mask).sum()), D) * 50
    changed = dataclasses.replace(text, tokens=changed_tokens)
    torch.testing.assert_close(fusion(image, text).fused, fusion(image, changed).fused, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("co_attention", [False, True])
def test_attention_weights_only_when_asked_and_identical_output(co_attention: bool) -> None:
    cfg = FusionConfig(num_layers=3, num_heads=2, co_attention=co_attention)
    fusion = CrossAttentionFusion(cfg, dim=D).eval()
    image, text = _inputs()
    fast = fusion(image, text)
    slow = fusion(image, text, return_attn_weights=True)
    assert fast.attn_weights is None and fast.image_attn_weights is None
    assert slow.attn_weights is not None and len(slow.attn_weights) == 3
    assert slow.attn_weights[0].shape == (3, 2, 5, 9)
    torch.testing.assert_close(fast.fused, slow.fused, rtol=1e-5, atol=1e-5)
    if co_attention:
        assert slow.image_attn_weights is not None and slow.image_attn_weights[0].shape == (3, 2, 9, 5)
        assert (slow.image_attn_weights[0][2, :, :, 1:] == 0).all(), "image must not attend to padded text"
