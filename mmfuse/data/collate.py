"""Turn dataset rows into a typed :class:`~mmfuse.types.Batch`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from mmfuse.types import Batch

__all__ = ["ImageTextCollator"]


class ImageTextCollator:
    """Stacks images (as float in [0, 1]) and tokenizes texts with padding to the longest text in the batch.

    Args:
        tokenizer: a Hugging Face tokenizer.
        max_length: truncation length in tokens.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int = 64) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, rows: Sequence[dict[str, Any]]) -> Batch:
        images = torch.from_numpy(np.stack([np.asarray(row["image"].convert("RGB")) for row in rows]))
        images = images.permute(0, 3, 1, 2).float().div_(255.0)  # (B, H, W, 3) uint8 -> (B, 3, H, W) float
        tokens = self.tokenizer(
            [row["text"] for row in rows],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        labels = torch.tensor([row["label"] for row in rows]) if "label" in rows[0] else None
        return Batch(images, tokens["input_ids"], tokens["attention_mask"].bool(), labels)
