"""Frozen features: one ordered pass of the model, keeping pooled, fused and output vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmfuse.audit.features import SplitFeatures, extract_features
from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.tokenizer import train_word_tokenizer
from mmfuse.fusion import FusionConfig
from mmfuse.models import ImageTextModel
from mmfuse.types import DataSpec
from tests.conftest import TINY_TEXT, TINY_VISION

WORDS = ["what", "colour", "is", "the", "circle", "square", "?"]


def _model_and_rows(fusion: str) -> tuple[ImageTextModel, object, list[dict]]:
    tokenizer = train_word_tokenizer(WORDS)
    spec = DataSpec(num_classes=3, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, image_size=32)
    cfg = ModelConfig(width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"], fusion=FusionConfig(name=fusion))
    model = ImageTextModel(resolve_model_config(cfg, spec))
    rng = np.random.default_rng(0)
    rows = [
        {
            "image": Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)),
            "text": f"what colour is the {('circle', 'square')[i % 2]} ?" + " ?" * (i % 3),
            "label": i % 3,
        }
        for i in range(7)
    ]
    return model, tokenizer, rows


def test_features_follow_the_rows_in_order_and_match_the_model() -> None:
    model, tokenizer, rows = _model_and_rows("cross_attention")
    features = extract_features(model, rows, tokenizer, batch_size=3)
    assert len(features) == 7 and features.logits.shape == (7, 3)
    assert features.image is not None and features.text is not None and features.fused.shape == (7, 16)
    batch = ImageTextCollator(tokenizer)(rows[4:6])
    with torch.no_grad():
        out = model.eval()(batch.images, batch.input_ids, batch.attention_mask)
    np.testing.assert_allclose(features.logits[4:6], out.logits.numpy(), rtol=1e-4, atol=1e-5)
    assert out.text is not None
    np.testing.assert_allclose(features.text[4:6], out.text.pooled.numpy(), rtol=1e-4, atol=1e-5)
    both = features.get("image+text")
    assert both is not None and both.shape == (7, features.image.shape[1] + features.text.shape[1])


def test_a_model_without_a_text_encoder_has_no_text_features() -> None:
    model, tokenizer, rows = _model_and_rows("image_only")
    features = extract_features(model, rows, tokenizer)
    assert features.text is None and features.get("image+text") is None and features.get("image") is not None
    with pytest.raises(ValueError, match="unknown feature set 'pixels'"):
        features.get("pixels")


def test_no_rows_is_an_error() -> None:
    model, tokenizer, _ = _model_and_rows("concat")
    with pytest.raises(ValueError, match="at least one row"):
        extract_features(model, [], tokenizer)
    assert SplitFeatures(None, None, np.zeros((2, 3)), np.zeros((2, 4))).get("image+text") is None
