from __future__ import annotations

import dataclasses
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


def _hub_cache(root: Path, repo_id: str, state: dict[str, torch.Tensor]) -> Path:
    """A Hugging Face hub cache holding one model repo (the layout huggingface_hub reads offline)."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file(state, str(snapshot / "model.safetensors"))
    return root


def test_pretrained_true_reads_the_tagged_weights_from_the_hugging_face_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    kwargs = TINY_VISION["resnet"].model_kwargs
    source = timm.create_model("resnet18", **kwargs)
    monkeypatch.setattr(
        constants, "HF_HUB_CACHE", str(_hub_cache(tmp_path, "timm/resnet18.a1_in1k", source.state_dict()))
    )
    cfg = TimmVisionEncoderConfig(model_name="resnet18.a1_in1k", pretrained=True, model_kwargs=kwargs)
    encoder = TimmVisionEncoder(cfg, out_dim=8, img_size=64)
    torch.testing.assert_close(encoder.backbone.conv1.weight, source.conv1.weight, rtol=0, atol=0)
    # the tag's data config (a1_in1k: crop 0.95, bicubic), at the size the model runs
    assert encoder.data_config["crop_pct"] == 0.95 and encoder.data_config["interpolation"] == "bicubic"
    assert encoder.data_config["input_size"] == (3, 64, 64)
    with pytest.raises(ConfigError, match=r"pretrained=true: weights of resnet18.tv_in1k .*Hugging Face cache"):
        TimmVisionEncoder(dataclasses.replace(cfg, model_name="resnet18.tv_in1k"), out_dim=8, img_size=64)


def test_weights_of_another_architecture_name_the_first_key(tmp_path: Path) -> None:
    save_file(
        timm.create_model("resnet18", **TINY_VISION["resnet"].model_kwargs).state_dict(),
        str(tmp_path / "w.safetensors"),
    )
    cfg = TimmVisionEncoderConfig(model_name="resnet18", pretrained=str(tmp_path / "w.safetensors"))
    with pytest.raises(ConfigError, match=r"does not fit resnet18: first key that does not fit: '[\w.]+'"):
        TimmVisionEncoder(cfg, out_dim=8, img_size=32)


def test_unknown_tag_lists_the_tags_of_the_architecture() -> None:
    with pytest.raises(ConfigError, match=r"no pretrained tag 'nope'.*resnet18.a1_in1k"):
        TimmVisionEncoder(TimmVisionEncoderConfig(model_name="resnet18.nope"), out_dim=8, img_size=32)


def test_a_keyword_the_model_does_not_take_is_named() -> None:
    cfg = TimmVisionEncoderConfig(model_name="convnext_atto", model_kwargs={"channels": [8, 16, 32, 64]})
    expected = r"^model.vision.model_kwargs.channels is not an argument of convnext_atto \(.*model_kwargs '{}'\)$"
    with pytest.raises(ConfigError, match=expected):
        TimmVisionEncoder(cfg, out_dim=8, img_size=32)


def test_nhwc_stages_are_read_as_channels_last() -> None:
    cfg = TimmVisionEncoderConfig(
        model_name="swin_tiny_patch4_window7_224",
        model_kwargs={"embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2)},
    )
    encoder = TimmVisionEncoder(cfg, out_dim=8, img_size=64)
    assert encoder.channels_last_output and encoder.grid_size == (2, 2)
    assert encoder(torch.rand(1, 3, 64, 64)).tokens.shape == (1, 4, 8)


def test_token_model_cut_keeps_the_first_blocks_and_drops_the_head_norm() -> None:
    cfg = TimmVisionEncoderConfig(model_name="eva02_tiny_patch14_224", num_stages=2, model_kwargs={"depth": 4})
    encoder = TimmVisionEncoder(cfg, out_dim=8, img_size=56)
    assert len(encoder.backbone.blocks) == 2 and encoder.grid_size == (4, 4)
    encoder(torch.rand(2, 3, 56, 56)).tokens.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)
    with pytest.raises(ConfigError, match="num_stages=9: eva02_tiny_patch14_224 has 4 blocks"):
        TimmVisionEncoder(dataclasses.replace(cfg, num_stages=9), out_dim=8, img_size=56)


def test_branches_the_tapped_stage_does_not_use_are_frozen() -> None:
    encoder = TimmVisionEncoder(TimmVisionEncoderConfig(model_name="hrnet_w18_small"), out_dim=8, img_size=64)
    assert encoder.unused_parameters  # HRNet's later fuse layers feed branches the last stage does not read
    encoder(torch.rand(2, 3, 64, 64)).tokens.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)


def test_a_size_the_family_cannot_take_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"crossvit_tiny_240' does not run on 64 px images.*uses 240 px"):
        TimmVisionEncoder(TimmVisionEncoderConfig(model_name="crossvit_tiny_240"), out_dim=8, img_size=64)
