"""Image-text matching (ITM) training pairs, with hard negatives mined from the contrastive similarities.

The ITM head is the model's classification head with two classes (:data:`~mmfuse.heads.NO_MATCH`,
:data:`~mmfuse.heads.MATCH`) on the fused vector of the cross-attention fusion; its loss is the cross-entropy over the
pairs built here. Each batch of B matching pairs is extended with, for every image, one non-matching text and, for
every text, one non-matching image, each drawn with probability ``softmax(similarity)`` over the batch's other images /
texts (hard negatives: similar-looking but wrong), as in Li et al., "Align before Fuse" (ALBEF, 2021) and "BLIP"
(2022). Rows of the same image are never drawn as negatives of each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmfuse.heads import MATCH, NO_MATCH
from mmfuse.tasks.itc import same_image_mask
from mmfuse.types import EncoderOutput

__all__ = ["MatchingPairs", "matching_pairs", "sample_hard_negatives"]


@dataclass
class MatchingPairs:
    """Rows of image and text features to fuse, with their ITM labels.

    Attributes:
        image: image features of the P pairs (tokens (P, N, D)).
        text: text features of the P pairs (tokens (P, L, D), mask (P, L)).
        labels: (P,) long, ``MATCH`` for the B given pairs first, then ``NO_MATCH`` for the negatives.
    """

    image: EncoderOutput
    text: EncoderOutput
    labels: Tensor


def sample_hard_negatives(
    logits: Tensor, image_ids: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """For each text a non-matching image of the batch, and for each image a non-matching text, drawn in proportion
    to their softmax similarity.

    Args:
        logits: (B, B) text-to-image similarity logits (row t = text t, column i = image i); not differentiated.
        image_ids: (B,) long image id of each pair.
        generator: random generator of the draws (None = the global one).

    Returns:
        (negative image index for each text (B,), negative text index for each image (B,)), long; -1 where every
        other row of the batch shows the same image (no negative exists).
    """
    positives = same_image_mask(image_ids)  # (B, B)
    logits = logits.detach().float()
    # + 1e-5 (as ALBEF) keeps every negative drawable when the softmax underflows.
    image_weights = (logits.softmax(dim=1) + 1e-5).masked_fill(positives, 0.0)  # (B texts, B images)
    text_weights = (logits.T.softmax(dim=1) + 1e-5).masked_fill(positives, 0.0)  # (B images, B texts)
    return _draw(image_weights, generator), _draw(text_weights, generator)


def _draw(weights: Tensor, generator: torch.Generator | None) -> Tensor:
    """One column per row, drawn with probability proportional to ``weights`` (B, B); -1 for an all-zero row."""
    has_negative = weights.sum(dim=1) > 0
    safe = torch.where(has_negative[:, None], weights, torch.ones_like(weights))  # multinomial needs mass in a row
    drawn = torch.multinomial(safe, 1, generator=generator).squeeze(1)  # (B,)
    return torch.where(has_negative, drawn, torch.full_like(drawn, -1))


def matching_pairs(
    image: EncoderOutput, text: EncoderOutput, negative_images: Tensor, negative_texts: Tensor
) -> MatchingPairs:
    """The B matching pairs followed by (image i, its negative text) and (negative image of text t, text t) pairs.

    Args:
        image: features of the batch's B images (tokens (B, N, D)).
        text: features of the batch's B texts (tokens (B, L, D), mask (B, L)).
        negative_images: (B,) long negative image row for each text, -1 = none (left out).
        negative_texts: (B,) long negative text row for each image, -1 = none (left out).

    Returns:
        P = B + (valid negative texts) + (valid negative images) pairs and their labels.
    """
    rows = torch.arange(negative_images.shape[0], device=negative_images.device)
    has_text, has_image = negative_texts >= 0, negative_images >= 0
    image_rows = torch.cat([rows, rows[has_text], negative_images[has_image]])  # (P,)
    text_rows = torch.cat([rows, negative_texts[has_text], rows[has_image]])  # (P,)
    labels = torch.full_like(image_rows, NO_MATCH)
    labels[: rows.shape[0]] = MATCH
    return MatchingPairs(image.select_rows(image_rows), text.select_rows(text_rows), labels)
