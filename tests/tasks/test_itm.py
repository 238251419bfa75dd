"""Hard negatives for image-text matching: never the same image, drawn by similarity, and the pairs built from them."""

from __future__ import annotations

import torch

from mmfuse.heads import MATCH, NO_MATCH
from mmfuse.tasks import matching_pairs, sample_hard_negatives
from mmfuse.types import EncoderOutput


def test_negatives_never_show_the_same_image() -> None:
    generator = torch.Generator().manual_seed(0)
    image_ids = torch.tensor([0, 0, 1, 2, 2, 3])
    for _ in range(50):
        negative_images, negative_texts = sample_hard_negatives(torch.randn(6, 6), image_ids, generator)
        assert (image_ids[negative_images] != image_ids).all() and (image_ids[negative_texts] != image_ids).all()


def test_the_hardest_negative_is_drawn_when_the_similarity_is_peaked() -> None:
    logits = torch.full((3, 3), -50.0)
    logits.fill_diagonal_(50.0)
    logits[0, 2] = 40.0  # text 0 looks like image 2; image 1 looks like text 0 (logits[0, 1] as column 1's row)
    logits[0, 1] = 30.0
    negative_images, negative_texts = sample_hard_negatives(logits, torch.arange(3), torch.Generator().manual_seed(0))
    assert int(negative_images[0]) == 2 and int(negative_texts[1]) == 0 and int(negative_texts[2]) == 0


def test_a_batch_of_one_image_has_no_negatives() -> None:
    negative_images, negative_texts = sample_hard_negatives(torch.randn(3, 3), torch.tensor([4, 4, 4]))
    assert negative_images.tolist() == [-1, -1, -1] and negative_texts.tolist() == [-1, -1, -1]


def test_pairs_are_positives_then_negatives_with_rows_taken_from_the_batch() -> None:
    rows = torch.arange(3.0)[:, None, None]  # each row's tokens hold its row number (text: + 10)
    image = EncoderOutput(tokens=rows.expand(3, 4, 2), mask=None, pooled=torch.zeros(3, 2))
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    text = EncoderOutput(tokens=rows.expand(3, 2, 2) + 10, mask=mask, pooled=torch.zeros(3, 2))
    negative_images, negative_texts = torch.tensor([1, -1, 0]), torch.tensor([2, 0, -1])
    pairs = matching_pairs(image, text, negative_images, negative_texts)
    assert pairs.labels.tolist() == [MATCH] * 3 + [NO_MATCH] * 4
    image_rows = pairs.image.tokens[:, 0, 0].long().tolist()
    text_rows = (pairs.text.tokens[:, 0, 0] - 10).long().tolist()
    assert list(zip(image_rows, text_rows)) == [(0, 0), (1, 1), (2, 2), (0, 2), (1, 0), (1, 0), (0, 2)]
    assert pairs.text.mask is not None and pairs.text.mask[4].tolist() == [True, True]  # text 0's mask came along
