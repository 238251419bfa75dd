"""The soft VQA accuracy of a batch of answer logits, averaged over an epoch (and over processes under DDP)."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics import MeanMetric

__all__ = ["VqaAccuracy"]


class VqaAccuracy(MeanMetric):
    """Mean over questions of the VQA accuracy of the top-scoring answer.

    The soft targets hold, for every answer class, the accuracy that answering it earns (see
    :func:`mmfuse.data.vqa.soft_targets`), so the official leave-one-annotator-out accuracy of a prediction is
    ``soft_targets[question, predicted class]``; an answer outside the vocabulary (and ``<unk>``) scores 0.
    """

    def update(self, logits: Tensor, soft_targets: Tensor, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Args: logits (B, K) answer scores; soft_targets (B, K) float accuracy of each answer."""
        predicted = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        super().update(soft_targets.float().gather(1, predicted).squeeze(1))  # (B,)
