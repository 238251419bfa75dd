"""The contrastive head: unit-norm embeddings and a clamped, learnable logit scale."""

from __future__ import annotations

import math

import pytest
import torch

from mmfuse.errors import ConfigError
from mmfuse.heads import ContrastiveHead, ContrastiveHeadConfig


def test_embeddings_are_unit_norm_and_logits_scaled() -> None:
    head = ContrastiveHead(ContrastiveHeadConfig(embed_dim=8, temperature=0.5), dim=16)
    image_pooled, text_pooled = torch.randn(3, 16), torch.randn(5, 16)
    image, text = head.embed_image(image_pooled), head.embed_text(text_pooled)
    assert image.shape == (3, 8) and text.shape == (5, 8)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(3))
    logits = head(image_pooled, text_pooled)
    assert logits.shape == (5, 3)
    torch.testing.assert_close(logits, 2.0 * text @ image.T)  # 1 / temperature
    logits.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_learned_scale_is_clamped_and_a_fixed_one_does_not_train() -> None:
    head = ContrastiveHead(ContrastiveHeadConfig(max_logit_scale=20.0), dim=4)
    with torch.no_grad():
        head.logit_scale.fill_(math.log(1000.0))
    assert float(head.scale().detach()) == pytest.approx(20.0)
    assert not ContrastiveHead(ContrastiveHeadConfig(learn_temperature=False), dim=4).logit_scale.requires_grad


def test_a_temperature_beyond_the_clamp_is_refused() -> None:
    with pytest.raises(ConfigError, match="temperature=0.001"):
        ContrastiveHeadConfig(temperature=0.001)
