"""The collator: images, tokens and labels, plus image ids, row indices and dense VQA soft targets from the rows."""

from __future__ import annotations

import torch
from PIL import Image

from mmfuse.data.collate import ImageTextCollator, image_id_hash
from mmfuse.data.images import to_tensor
from mmfuse.data.tokenizer import train_word_tokenizer


def _row(image_id: str, index: int, **extra: object) -> dict[str, object]:
    return {"image": Image.new("RGB", (4, 4), (255, 0, 0)), "text": "a red square", "label": 1, "image_id": image_id,
            "index": index, **extra}  # fmt: skip


def test_image_ids_group_the_rows_of_one_image_and_indices_come_along() -> None:
    collate = ImageTextCollator(train_word_tokenizer(["a red square"]))
    batch = collate([_row("a.jpg", 5), _row("b.jpg", 2), _row("a.jpg", 9)])
    assert batch.image_ids is not None and batch.indices is not None
    assert batch.image_ids.dtype == torch.long and bool((batch.image_ids >= 0).all())
    assert batch.image_ids[0] == batch.image_ids[2] != batch.image_ids[1]
    assert batch.indices.tolist() == [5, 2, 9] and batch.soft_targets is None
    assert image_id_hash("a.jpg") == int(batch.image_ids[0])  # stable: the same in every worker and process


def test_soft_targets_are_dense_over_the_answer_vocabulary() -> None:
    collate = ImageTextCollator(train_word_tokenizer(["a red square"]), num_classes=4)
    rows = [
        _row("a", 0, soft_target_indices=[1, 3], soft_target_scores=[0.3, 1.0]),
        _row("b", 1, soft_target_indices=[], soft_target_scores=[]),
    ]
    batch = collate(rows)
    assert batch.soft_targets is not None
    torch.testing.assert_close(batch.soft_targets, torch.tensor([[0.0, 0.3, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))


def test_rows_without_extras_give_the_plain_batch() -> None:
    row = {"image": Image.new("RGB", (4, 4)), "text": "a red square", "label": 0}
    batch = ImageTextCollator(train_word_tokenizer(["a red square"]), num_classes=3)([row])
    assert batch.image_ids is None and batch.indices is None and batch.soft_targets is None
    moved = batch.to("cpu")
    assert moved.images.shape == (1, 3, 4, 4) and moved.labels is not None


def test_images_are_laid_out_nchw_in_memory() -> None:
    """Convolutions follow their input's memory layout; NHWC-strided images (a plain permute of the decoded HWC
    pixels) would give a 1x1 convolution NHWC-strided weight gradients, which DDP's buckets do not match."""
    collate = ImageTextCollator(train_word_tokenizer(["a red square"]))
    images = collate([_row("a", 0), _row("b", 1)]).images
    assert images.shape == (2, 3, 4, 4) and images.is_contiguous()
    assert to_tensor(Image.new("RGB", (4, 4))).is_contiguous()
