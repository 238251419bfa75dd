"""The full model, swept over registered fusions and a few encoder families."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.errors import ConfigError
from mmfuse.fusion import FUSIONS, FusionConfig
from mmfuse.heads import ClassificationHeadConfig
from mmfuse.models import ImageTextModel
from tests.conftest import TINY_SPEC, TINY_TEXT, TINY_VISION, random_text_batch


def _model(fusion: str = "cross_attention", vision: str = "resnet", text: str = "bert") -> ImageTextModel:
    cfg = ModelConfig(width=16, vision=TINY_VISION[vision], text=TINY_TEXT[text], fusion=FusionConfig(name=fusion))
    return ImageTextModel(resolve_model_config(cfg, TINY_SPEC))


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, mask = random_text_batch(3, 6, TINY_SPEC.vocab_size, [6, 4, 2])
    return torch.rand(3, 3, 32, 32), ids, mask


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_logits_and_every_parameter_trains(fusion: str) -> None:
    model = _model(fusion)
    out = model(*_batch())
    assert out.logits.shape == (3, TINY_SPEC.num_classes) and torch.isfinite(out.logits).all()
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{fusion}: parameters without gradient: {missing}"


@pytest.mark.parametrize(("vision", "text"), [("resnet", "bert"), ("vit", "roberta"), ("convnext", "distilbert")])
def test_encoder_families_through_cross_attention(vision: str, text: str) -> None:
    model = _model("cross_attention", vision, text).eval()
    out = model(*_batch(), return_attn_weights=True)
    assert out.image is not None and out.fusion.attn_weights is not None
    assert out.fusion.attn_weights[-1].shape[-1] == out.image.tokens.shape[1]


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_padding_content_does_not_change_logits(fusion: str) -> None:
    model = _model(fusion).eval()
    images, ids, mask = _batch()
    other = ids.clone()
    other[~mask] = torch.randint(4, TINY_SPEC.vocab_size, (int((~mask).sum()),))
    torch.testing.assert_close(model(images, ids, mask).logits, model(images, other, mask).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_eval_mode_is_deterministic(fusion: str) -> None:
    model = _model(fusion).eval()
    batch = _batch()
    torch.testing.assert_close(model(*batch).logits, model(*batch).logits, rtol=0, atol=0)


def test_unimodal_baselines_build_only_their_encoder() -> None:
    assert _model("image_only").text is None and _model("image_only").vision is not None
    assert _model("text_only").vision is None and _model("text_only").text is not None


def test_num_classes_that_disagrees_with_the_data_is_named() -> None:
    cfg = ModelConfig(head=ClassificationHeadConfig(num_classes=7))
    with pytest.raises(ValueError, match="num_classes=7 but the data has 4 classes"):
        resolve_model_config(cfg, TINY_SPEC)


def _retrieval_model(fusion: str = "cross_attention") -> ImageTextModel:
    cfg = ModelConfig(task="retrieval", width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"])
    cfg = dataclasses.replace(cfg, fusion=FusionConfig(name=fusion))
    return ImageTextModel(resolve_model_config(cfg, TINY_SPEC))


def test_a_retrieval_model_has_a_matching_head_and_a_contrastive_head() -> None:
    model = _retrieval_model().eval()
    assert model.cfg.head.num_classes == 2 and model.contrastive is not None
    assert _model().contrastive is None  # classification models carry no unused parameters
    out = model(*_batch())
    assert out.logits.shape == (3, 2) and out.image is not None and out.text is not None
    logits = model.contrastive(out.image.pooled, out.text.pooled)
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()


def test_retrieval_needs_both_encoders() -> None:
    with pytest.raises(ConfigError, match="image_only"):
        _retrieval_model("image_only")


def test_captions_without_labels_point_to_the_retrieval_task() -> None:
    captions = dataclasses.replace(TINY_SPEC, num_classes=0, class_names=())
    with pytest.raises(ConfigError, match="model.task: retrieval"):
        resolve_model_config(ModelConfig(), captions)
    assert resolve_model_config(ModelConfig(task="retrieval"), captions).head.num_classes == 2


def test_a_saved_retrieval_model_reloads_with_its_contrastive_head(tmp_path: Path) -> None:
    model = _retrieval_model().eval()
    reloaded = ImageTextModel.from_pretrained(model.save_pretrained(tmp_path / "model")).eval()
    assert reloaded.cfg.task == "retrieval" and reloaded.contrastive is not None
    images, ids, mask = _batch()
    with torch.no_grad():
        out, again = model(images, ids, mask), reloaded(images, ids, mask)
        assert out.image is not None and again.image is not None and model.contrastive is not None
        torch.testing.assert_close(
            model.contrastive.embed_image(out.image.pooled), reloaded.contrastive.embed_image(again.image.pooled)
        )
    torch.testing.assert_close(out.logits, again.logits, rtol=0, atol=0)
