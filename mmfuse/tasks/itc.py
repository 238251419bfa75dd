"""Image-text contrastive (ITC) loss: the symmetric InfoNCE loss over a batch's text-to-image similarities, with every
caption of the same image in the batch a positive.

References: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (CLIP, 2021) for
the symmetric loss; Li et al., "BLIP" (2022) retrieval fine-tuning for the soft targets that treat every caption of the
same image in a batch as a positive instead of a negative. The similarities come from
:class:`~mmfuse.heads.ContrastiveHead`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["contrastive_loss", "same_image_mask"]


def same_image_mask(image_ids: Tensor) -> Tensor:
    """Args: image_ids (B,) long. Returns: (B, B) bool, True where rows i and j show the same image."""
    return image_ids[:, None] == image_ids[None, :]


def contrastive_loss(logits: Tensor, image_ids: Tensor) -> Tensor:
    """Symmetric InfoNCE over a batch of B image-text pairs (pair i = image i with text i).

    Every column whose image id equals row i's is a positive of row i (target mass split evenly between them), so
    two captions of one image in a batch are never pushed apart as negatives. With distinct image ids this is
    CLIP's loss: cross-entropy towards the diagonal in both directions.

    Args:
        logits: (B, B) text-to-image logits (row t = text t, column i = image i).
        image_ids: (B,) long image id of each pair.

    Returns:
        scalar loss, the mean of the text-to-image and image-to-text cross-entropies.
    """
    positives = same_image_mask(image_ids).to(logits.dtype)  # (B, B), symmetric, diagonal set
    targets = positives / positives.sum(dim=1, keepdim=True)
    text_to_image = -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()
    image_to_text = -(F.log_softmax(logits.T, dim=1) * targets).sum(dim=1).mean()
    return (text_to_image + image_to_text) / 2
