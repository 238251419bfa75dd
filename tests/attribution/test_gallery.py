"""The HTML gallery: every referenced PNG exists, wrong predictions are marked, text is escaped, pictures are
shown at least 256 px a side."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmfuse.attribution.base import Attribution
from mmfuse.attribution.gallery import pooled_cross_attention, write_gallery
from mmfuse.attribution.viz import DISPLAY_SIZE
from mmfuse.data.tokenizer import train_word_tokenizer
from mmfuse.types import Batch
from tests.attribution.conftest import SPEC, make_model

TEXTS = ["what colour is the circle ?", "what colour is the <square> ?", "the bar is what colour ?"]


def _examples() -> tuple[Batch, object]:
    tokenizer = train_word_tokenizer(TEXTS)
    tokens = tokenizer(TEXTS, padding=True, return_tensors="pt")
    images = torch.rand(len(TEXTS), 3, SPEC.image_size, SPEC.image_size)
    return Batch(images, tokens["input_ids"], tokens["attention_mask"].bool()), tokenizer


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Batch]:
    """A gallery of three examples (the second predicted wrongly) and the examples; returns index.html's path."""
    torch.manual_seed(0)
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
        tmp_path_factory.mktemp("gallery"), model, tokenizer, batch, attributions, predictions, labels,
        SPEC.class_names, texts=TEXTS, ids=[10, 11, 12],
    )  # fmt: skip
    return index, batch


def test_gallery_links_existing_pngs_and_marks_wrong_predictions(gallery: tuple[Path, Batch]) -> None:
    index, batch = gallery
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


def test_gallery_pictures_are_at_least_256_px_in_whole_pixel_blocks(gallery: tuple[Path, Batch]) -> None:
    index, batch = gallery
    page = index.read_text()
    block = DISPLAY_SIZE // SPEC.image_size  # 64 px shapes -> 4 x 4 blocks of one colour
    cfg = make_model().cfg.fusion
    for i in range(len(TEXTS)):
        section = page[page.index(f'id="ex{i:03d}"') :]
        assert section.index(TEXTS[i].replace("<", "&lt;").replace(">", "&gt;")) < section.index("<img")
        assert section.index("prediction <b>") < section.index("<img")  # question and answer above the pictures
        for name in ("input", "image_only", "both"):
            pixels = _pixels(index, f"ex{i:03d}_{name}")
            assert pixels.shape == (DISPLAY_SIZE, DISPLAY_SIZE, 3)
            assert (pixels == np.repeat(np.repeat(pixels[::block, ::block], block, 0), block, 1)).all()
        expected = (batch.images[i].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()  # (3, H, W) -> (H, W, 3)
        assert (_pixels(index, f"ex{i:03d}_input")[::block, ::block] == expected).all()
        height, width, _ = _pixels(index, f"ex{i:03d}_attention").shape
        assert width >= cfg.num_heads * DISPLAY_SIZE and height >= cfg.num_layers * DISPLAY_SIZE  # layers x heads


def _pixels(index: Path, name: str) -> np.ndarray:
    """(H, W, 3) uint8 of the gallery's ``img/<name>.png``."""
    return np.asarray(Image.open(index.parent / "img" / f"{name}.png").convert("RGB"))


def test_pooled_cross_attention_restores_the_training_flag() -> None:
    model = make_model().train()
    batch, _ = _examples()
    pooled = pooled_cross_attention(model, batch, batch_size=2)
    assert model.training and pooled is not None
    assert pooled.shape[:3] == (len(TEXTS), model.cfg.fusion.num_layers, model.cfg.fusion.num_heads)
