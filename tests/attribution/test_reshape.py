"""Token-to-grid layouts read from timm models and mmfuse encoders."""

from __future__ import annotations

import pytest
import timm
import torch

from mmfuse.attribution import TokenLayout, normalize_per_example, relevance_to_grid, to_grid, token_layout
from tests.attribution.conftest import make_model


def test_layouts_come_from_the_encoder() -> None:
    vit = timm.create_model("vit_tiny_patch16_224", img_size=48, depth=1, embed_dim=32, num_heads=2, reg_tokens=2)
    assert token_layout(vit) == TokenLayout(3, (3, 3))  # CLS + 2 registers, 48 / 16 = 3
    assert token_layout(timm.create_model("resnet18")) == TokenLayout(0, None)
    assert token_layout(make_model("vit").vision) == TokenLayout(1, (8, 8))  # type: ignore[arg-type]
    assert token_layout(make_model("resnet").vision) == TokenLayout(0, (2, 2))  # type: ignore[arg-type]


def test_tokens_and_feature_maps_become_channel_first_grids() -> None:
    layout = TokenLayout(2, (2, 3))
    tokens = torch.arange(2 * 8 * 4, dtype=torch.float32).view(2, 8, 4)  # (B, 2 + 2*3, C)
    grid = to_grid(tokens, layout)
    assert grid.shape == (2, 4, 2, 3)
    torch.testing.assert_close(grid[:, :, 1, 2], tokens[:, 2 + 1 * 3 + 2])  # row-major after the prefix
    nhwc = torch.randn(2, 2, 3, 4)
    torch.testing.assert_close(to_grid(nhwc, TokenLayout(channels_last=True)), nhwc.permute(0, 3, 1, 2))
    assert relevance_to_grid(torch.arange(8.0).expand(2, 8), layout).tolist()[0] == [[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]]
    with pytest.raises(ValueError, match="2 prefix tokens and a 2x3 grid"):
        to_grid(torch.randn(2, 9, 4), layout)


def test_min_max_normalisation_per_example() -> None:
    maps = torch.tensor([[[1.0, 3.0]], [[5.0, 5.0]]])
    out = normalize_per_example(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 1.0]]), rtol=0, atol=1e-6)
    assert (out[1] == 0).all()  # a constant map has no peak
