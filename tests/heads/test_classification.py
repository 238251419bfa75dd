"""Contract of every registered head, parametrised over the registry."""

from __future__ import annotations

import pytest
import torch

from mmfuse.heads import HEADS, ClassificationHeadConfig, build_head

CONFIGS = {"classification": [ClassificationHeadConfig(), ClassificationHeadConfig(hidden_dim=8, dropout=0.1)]}


def test_every_registered_head_is_covered() -> None:
    assert sorted(CONFIGS) == HEADS.names()


@pytest.mark.parametrize("cfg", [c for configs in CONFIGS.values() for c in configs], ids=repr)
def test_logits_shape_gradients_and_eval_determinism(cfg: ClassificationHeadConfig) -> None:
    head = build_head(cfg, dim=16, num_classes=5)
    fused = torch.randn(3, 16)
    logits = head(fused)
    assert logits.shape == (3, 5) and logits.dtype == torch.float32
    logits.sum().backward()
    assert all(p.grad is not None for p in head.parameters())
    head.eval()
    torch.testing.assert_close(head(fused), head(fused), rtol=0, atol=0)
