"""Turn dataset rows into a typed :class:`~mmfuse.types.Batch`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from mmfuse.data.vqa import soft_target_tensor
from mmfuse.types import Batch

__all__ = ["ImageTextCollator", "image_id_hash"]


def image_id_hash(image_id: Any) -> int:
    """A stable 63-bit integer for an image id (the manifest keeps ids as strings), equal in every worker and process.

    Example:
        >>> image_id_hash("1000268201_693b08cb0e.jpg") == image_id_hash("1000268201_693b08cb0e.jpg")
        True
    """
    digest = hashlib.blake2b(str(image_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # non-negative int64


class ImageTextCollator:
    """Stacks images (RGB PIL images, or (3, H, W) float tensors in [0, 1]) as float in [0, 1] and tokenizes texts
    with padding to the longest text in the batch.

    Rows may also carry ``image_id`` (any hashable: the captions of one image share it), ``index`` (the row's index
    in its split) and VQA ``soft_target_indices`` / ``soft_target_scores``; they become the batch's ``image_ids``,
    ``indices`` and dense ``soft_targets``.

    Args:
        tokenizer: a Hugging Face tokenizer.
        max_length: truncation length in tokens.
        num_classes: K, the width of dense soft targets (the answer vocabulary); None = rows carry none.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, max_length: int = 64, num_classes: int | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.num_classes = num_classes

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> Batch:
        if isinstance(rows[0]["image"], Tensor):  # a transform's (3, H, W) float images in [0, 1]
            images = torch.stack([row["image"] for row in rows])  # (B, 3, H, W)
        else:
            images = torch.from_numpy(np.stack([np.asarray(row["image"].convert("RGB")) for row in rows]))
            # (B, H, W, 3) uint8 -> (B, 3, H, W) float, copied into the NCHW layout (a plain .float() would keep the
            # permuted NHWC strides, and convolutions follow their input's layout)
            images = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
        tokens = self.tokenizer(
            [row["text"] for row in rows],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        first = rows[0]
        labels = torch.tensor([row["label"] for row in rows]) if "label" in first else None
        image_ids = _long([image_id_hash(row["image_id"]) for row in rows]) if "image_id" in first else None
        indices = _long([row["index"] for row in rows]) if "index" in first else None
        soft_targets = None
        if self.num_classes is not None and "soft_target_indices" in first:
            indices_per_row = [row["soft_target_indices"] for row in rows]
            scores_per_row = [row["soft_target_scores"] for row in rows]
            soft_targets = soft_target_tensor(indices_per_row, scores_per_row, self.num_classes)  # (B, K)
        return Batch(
            images, tokens["input_ids"], tokens["attention_mask"].bool(), labels, image_ids, indices, soft_targets
        )


def _long(values: list[int]) -> Tensor:
    return torch.tensor(values, dtype=torch.long)
