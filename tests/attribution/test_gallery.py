"""The HTML gallery: every referenced PNG exists, wrong predictions are marked, text is escaped."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mmfuse.attribution.base import Attribution
from mmfuse.attribution.gallery import pooled_cross_attention, write_gallery
from mmfuse.data.tokenizer import train_word_tokenizer
from mmfuse.types import Batch
from tests.attribution.conftest import SPEC, make_model

TEXTS = ["what colour is the circle ?", "what colour is the <square> ?", "the bar is what colour ?"]


def _examples() -> tuple[Batch, object]:
    tokenizer = train_word_tokenizer(TEXTS)
    tokens = tokenizer(TEXTS, padding=True, return_tensors="pt")
    images = torch.rand(len(TEXTS), 3, SPEC.image_size, SPEC.image_size)
    return Batch(images, tokens["input_ids"], tokens["attention_mask"].bool()), tokenizer


def test_gallery_links_existing_pngs_and_marks_wrong_predictions(tmp_path: Path) -> None:
    model = make_model()
    batch, tokenizer = _examples()
    size = (len(TEXTS), SPEC.image_size, SPEC.image_size)
    attributions = {
        "image_only": Attribution("image_only", image=torch.rand(size)),
        "both": Attribution("both", image=torch.rand(size), text=torch.rand(batch.input_ids.shape)),
        "text_only": Attribution("text_only", text=torch.rand(batch.input_ids.shape)),
    }
    predictions, labels = torch.tensor([0, 1, 2]), torch.tensor([0, 3, 2])
    index = write_gallery(
        tmp_path / "gallery", model, tokenizer, batch, attributions, predictions, labels, SPEC.class_names,
        texts=TEXTS, ids=[10, 11, 12],
    )  # fmt: skip
    page = index.read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources and all(not s.startswith(("/", "http")) for s in sources)  # relative links only
    assert all((index.parent / s).is_file() for s in sources)
    assert len([s for s in sources if s.endswith("_attention.png")]) == 3
    assert len([s for s in sources if "_image_only" in s or "_both" in s]) == 6  # two image maps per example
    assert page.count('class="wrong"') == 1 and "✗ wrong" in page and "1 predicted wrongly" in page
    assert "&lt;square&gt;" in page and "<square>" not in page
    assert "<script" not in page
    assert page.count("<span style=") == 2 * int(batch.attention_mask.sum())  # token spans of two text maps


def test_pooled_cross_attention_restores_the_training_flag() -> None:
    model = make_model().train()
    batch, _ = _examples()
    pooled = pooled_cross_attention(model, batch, batch_size=2)
    assert model.training and pooled is not None
    assert pooled.shape[:3] == (len(TEXTS), model.cfg.fusion.num_layers, model.cfg.fusion.num_heads)
