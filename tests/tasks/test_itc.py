"""The symmetric InfoNCE loss with same-image positives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmfuse.tasks import contrastive_loss, same_image_mask


def test_distinct_images_give_clips_loss() -> None:
    logits = torch.randn(4, 4)
    expected = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))) / 2
    torch.testing.assert_close(contrastive_loss(logits, torch.tensor([7, 3, 9, 1])), expected)


def test_captions_of_one_image_are_not_pushed_apart() -> None:
    # Rows 0 and 1 are two captions of image 5 (the batch holds that image twice, columns 0 and 1).
    image_ids = torch.tensor([5, 5, 2])
    assert same_image_mask(image_ids).tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    logits = torch.tensor([[3.0, 3.0, 0.0], [3.0, 3.0, 0.0], [0.0, 0.0, 3.0]], requires_grad=True)
    loss = contrastive_loss(logits, image_ids)
    loss.backward()
    assert logits.grad is not None
    # Text 0 scored against its image's second copy (column 1) is a positive: the loss does not lower that score
    # (a negative would get a positive gradient, i.e. be pushed down) and treats both copies alike.
    assert float(logits.grad[0, 1]) <= 0.0
    torch.testing.assert_close(logits.grad[0, 0], logits.grad[0, 1])
    # Plain CLIP (each copy a negative of the other) would push that score down.
    clip_logits = logits.detach().clone().requires_grad_(True)
    targets = torch.arange(3)
    ((F.cross_entropy(clip_logits, targets) + F.cross_entropy(clip_logits.T, targets)) / 2).backward()
    assert clip_logits.grad is not None and float(clip_logits.grad[0, 1]) > 0.0
