from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from mmfuse.encoders import TimmVisionEncoder, TimmVisionEncoderConfig
from mmfuse.errors import ConfigError
from tests.conftest import TINY_VISION


@pytest.mark.parametrize("family", sorted(TINY_VISION))
def test_tokens_shape_grid_and_gradients(family: str) -> None:
    encoder = TimmVisionEncoder(TINY_VISION[family], out_dim=24, img_size=32)
    out = encoder(torch.rand(2, 3, 32, 32))
    gh, gw = encoder.grid_size
    assert out.tokens.shape == (2, out.num_prefix_tokens + gh * gw, 24)
    assert out.pooled.shape == (2, 24) and out.grid_size == (gh, gw)
    assert out.tokens.dtype == torch.float32 and torch.isfinite(out.tokens).all()
    out.tokens.sum().backward()
    missing = [n for n, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_vit_gives_prefix_and_patch_tokens() -> None:
    encoder = TimmVisionEncoder(TINY_VISION["vit"], out_dim=16, img_size=32)
    assert encoder.is_token_model and encoder.num_prefix_tokens == 1
    assert encoder.grid_size == (4, 4)  # 32 px / patch 8, read from the model, not assumed


def test_cnn_stage_cut_changes_grid() -> None:
    full = TimmVisionEncoder(TINY_VISION["resnet"], out_dim=16, img_size=64)
    cut = TimmVisionEncoderConfig(model_name="resnet18", num_stages=3, model_kwargs=TINY_VISION["resnet"].model_kwargs)
    assert full.grid_size == (2, 2)
    assert TimmVisionEncoder(cut, out_dim=16, img_size=64).grid_size == (8, 8)


def test_normalisation_comes_from_the_model_data_config() -> None:
    encoder = TimmVisionEncoder(TINY_VISION["vit"], out_dim=16, img_size=32)
    expected = timm.data.resolve_model_data_config(timm.create_model("vit_tiny_patch16_224"))
    assert encoder.preprocess_cfg["mean"] == tuple(expected["mean"])
    assert encoder.preprocess_cfg["std"] == tuple(expected["std"])


def test_unknown_model_name_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match="resnet18") as err:
        TimmVisionEncoder(TimmVisionEncoderConfig(model_name="resnet_18"), out_dim=8, img_size=32)
    assert "resnet_18" in str(err.value)


def test_missing_pretrained_path_is_a_clear_error(tmp_path: Path) -> None:
    cfg = TimmVisionEncoderConfig(model_name="resnet18", pretrained=str(tmp_path / "nope.safetensors"))
    with pytest.raises(ConfigError, match="nope.safetensors"):
        TimmVisionEncoder(cfg, out_dim=8, img_size=32)


def test_pretrained_loads_from_a_local_directory(tmp_path: Path) -> None:
    kwargs = TINY_VISION["resnet"].model_kwargs
    source = timm.create_model("resnet18", **kwargs)
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    cfg = TimmVisionEncoderConfig(model_name="resnet18", pretrained=str(tmp_path), model_kwargs=kwargs)
    encoder = TimmVisionEncoder(cfg, out_dim=8, img_size=32)
    torch.testing.assert_close(encoder.backbone.conv1.weight, source.conv1.weight, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_position_embedding_is_added_to_grid_tokens_only(family: str) -> None:
    import dataclasses

    cfg = dataclasses.replace(TINY_VISION[family], use_pos_embed=True)
    encoder = TimmVisionEncoder(cfg, out_dim=16, img_size=32).eval()
    gh, gw = encoder.grid_size
    assert encoder.pos_embed is not None and encoder.pos_embed.shape == (1, gh * gw, 16)
    images = torch.rand(2, 3, 32, 32)
    with_pos = encoder(images).tokens
    pos, encoder.pos_embed = encoder.pos_embed, None
    without = encoder(images).tokens
    prefix = encoder.num_prefix_tokens
    torch.testing.assert_close(with_pos[:, :prefix], without[:, :prefix])
    torch.testing.assert_close(with_pos[:, prefix:] - without[:, prefix:], pos.expand(2, -1, -1).detach())
