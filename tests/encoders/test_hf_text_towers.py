"""Contract of every kind of Hugging Face text tower: encoders, dual-encoder text towers, encoder-decoder encoders."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, CLIPModel, CLIPTextModel, SiglipModel, SiglipTextModel, T5EncoderModel, T5Model

from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.encoders import HFTextEncoder, HFTextEncoderConfig
from mmfuse.hub import from_pretrained
from mmfuse.models import ImageTextModel
from tests.conftest import TINY_SPEC, TINY_VISION, random_text_batch

_LAYER = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
# One global and one sliding-window layer (a window of 4 tokens: shorter than the test texts).
_MODERNBERT = {
    **_LAYER,
    "num_hidden_layers": 2,
    "layer_types": ["full_attention", "sliding_attention"],
    "local_attention": 4,
}
_T5 = {"d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2}

# model_type -> config_kwargs of a tiny random-init text tower (width 32, one or two layers), one per kind of tower.
TINY_TEXT_TOWERS: dict[str, dict[str, Any]] = {
    "bert": _LAYER,
    "roberta": _LAYER,
    "xlm-roberta": _LAYER,
    "electra": {**_LAYER, "embedding_size": 16},  # embeddings narrower than the layers, as in ELECTRA-small
    "distilbert": {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 64},
    "deberta-v2": {**_LAYER, "relative_attention": True, "pos_att_type": ["p2c", "c2p"]},  # eager attention only
    "modernbert": _MODERNBERT,
    "clip_text_model": _LAYER,  # causal: padding at the end never reaches the real tokens
    "siglip_text_model": {**_LAYER, "projection_size": 32},
    "t5": _T5,
    "mt5": _T5,
    "umt5": _T5,
}
_CLASSES = {"clip_text_model": CLIPTextModel, "siglip_text_model": SiglipTextModel, "t5": T5EncoderModel}
VOCAB = TINY_SPEC.vocab_size


def _cfg(model_type: str) -> HFTextEncoderConfig:
    return HFTextEncoderConfig(model_type=model_type, config_kwargs=TINY_TEXT_TOWERS[model_type])


def _image_text_model(text: HFTextEncoderConfig, spec: Any = TINY_SPEC) -> ImageTextModel:
    cfg = ModelConfig(width=16, vision=TINY_VISION["resnet"], text=text)  # cross-attention fusion
    return ImageTextModel(resolve_model_config(cfg, spec))


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, mask = random_text_batch(3, 6, VOCAB, [6, 4, 2])
    return torch.rand(3, 3, TINY_SPEC.image_size, TINY_SPEC.image_size), ids, mask


@pytest.mark.parametrize("model_type", sorted(TINY_TEXT_TOWERS))
def test_shapes_and_appended_padding_changes_nothing(model_type: str) -> None:
    encoder = HFTextEncoder(_cfg(model_type), out_dim=24, vocab_size=VOCAB, pad_token_id=0).eval()
    if model_type in _CLASSES:
        assert type(encoder.model) is _CLASSES[model_type]
    ids, mask = random_text_batch(2, 5, VOCAB, [5, 3])
    with torch.no_grad():
        out = encoder(ids, mask)
        padded = encoder(
            torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1),  # (B, L) -> (B, L + 3)
            torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1),
        )
    assert out.tokens.shape == (2, 5, 24) and out.pooled.shape == (2, 24) and padded.tokens.shape == (2, 8, 24)
    assert out.mask is not None and out.mask.dtype == torch.bool and torch.isfinite(out.tokens).all()
    torch.testing.assert_close(padded.pooled, out.pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded.tokens[:, :5][mask], out.tokens[mask], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", sorted(TINY_TEXT_TOWERS))
def test_every_parameter_gets_a_gradient_through_cross_attention(model_type: str) -> None:
    model = _image_text_model(_cfg(model_type))
    out = model(*_batch())
    assert out.logits.shape == (3, TINY_SPEC.num_classes) and torch.isfinite(out.logits).all()
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{model_type}: parameters without gradient: {missing}"


@pytest.mark.parametrize("model_type", sorted(TINY_TEXT_TOWERS))
def test_pretrained_tower_round_trips_without_its_files(model_type: str, tmp_path: Path) -> None:
    tower = tmp_path / "tower"
    HFTextEncoder(_cfg(model_type), out_dim=8, vocab_size=VOCAB, pad_token_id=0).model.save_pretrained(tower)
    spec = dataclasses.replace(TINY_SPEC, tokenizer=str(tower))
    model = _image_text_model(HFTextEncoderConfig(pretrained=str(tower)), spec).eval()
    model.save_pretrained(tmp_path / "shared")
    shutil.rmtree(tower)
    loaded = from_pretrained(tmp_path / "shared").eval()
    assert loaded.cfg.text.pretrained is None
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(*batch).logits, model(*batch).logits, rtol=0, atol=0)


@pytest.mark.parametrize(("dual", "tower"), [("clip", "clip_text_model"), ("siglip", "siglip_text_model")])
def test_a_dual_encoder_config_builds_its_text_tower(dual: str, tower: str) -> None:
    cfg = HFTextEncoderConfig(model_type=dual, config_kwargs={"text_config": TINY_TEXT_TOWERS[tower]})
    encoder = HFTextEncoder(cfg, out_dim=8, vocab_size=VOCAB, pad_token_id=0)
    assert type(encoder.model) is _CLASSES[tower]
    assert encoder.model.config.hidden_size == 32 and encoder.model.config.vocab_size == VOCAB


def _full_model(kind: str) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """A tiny dual encoder / encoder-decoder, its text tower, and where the tower sits in the loaded text model."""
    if kind == "t5":
        t5 = T5Model(AutoConfig.for_model("t5", vocab_size=VOCAB, **_T5))
        return t5, t5.encoder, "encoder"  # T5EncoderModel.encoder
    text, vision = {"vocab_size": VOCAB, **TINY_TEXT_TOWERS[f"{kind}_text_model"]}, {**_LAYER, "image_size": 32}
    dual: Any = (CLIPModel if kind == "clip" else SiglipModel)(
        AutoConfig.for_model(kind, text_config=text, vision_config=vision)
    )
    return dual, dual.text_model, ""


@pytest.mark.parametrize("kind", ["clip", "siglip", "t5"])
def test_text_tower_of_a_saved_dual_encoder_or_encoder_decoder(kind: str, tmp_path: Path) -> None:
    full, text_part, where = _full_model(kind)
    full.save_pretrained(tmp_path / "full")
    spec = dataclasses.replace(TINY_SPEC, tokenizer=str(tmp_path / "full"))
    model = _image_text_model(HFTextEncoderConfig(pretrained=str(tmp_path / "full")), spec).eval()
    assert model.text is not None
    loaded = model.text.model.get_submodule(where).state_dict()
    expected = text_part.state_dict()
    assert set(loaded) == set(expected), f"{kind}: {sorted(set(loaded) ^ set(expected))[:6]}"
    for name, tensor in expected.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=f"{kind}: {name}")
    model.save_pretrained(tmp_path / "shared")
    shutil.rmtree(tmp_path / "full")
    loaded_model, batch = from_pretrained(tmp_path / "shared").eval(), _batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded_model(*batch).logits, model(*batch).logits, rtol=0, atol=0)
