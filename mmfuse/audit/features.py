"""Frozen features of a split, read from a trained :class:`~mmfuse.models.ImageTextModel` in one pass.

The audit's cheap probes (label errors, mismatches, the baseline ladder) fit on these: the vision encoder's pooled
vector (image-only), the text encoder's pooled vector (text-only), the fusion's joint vector (what the model's head
reads) and the model's own logits. Features of a model trained on the task are what make confident learning work on
data whose label depends on image and text together (the shapes world's colour question): a random network's
features do not separate such classes, and a linear probe on them stays at chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from mmfuse.progress import Stage

__all__ = ["SplitFeatures", "extract_features"]


@dataclass(frozen=True)
class SplitFeatures:
    """Per-example features of one split (numpy, float32).

    Attributes:
        image: (n, D) pooled image features, or None when the model has no vision encoder.
        text: (n, D) pooled text features, or None when the model has no text encoder.
        fused: (n, D) the fusion's joint vector.
        logits: (n, K) the model's class scores.
    """

    image: np.ndarray | None
    text: np.ndarray | None
    fused: np.ndarray
    logits: np.ndarray

    def __len__(self) -> int:
        return int(self.fused.shape[0])

    def get(self, name: str) -> np.ndarray | None:
        """The features called ``name``: ``image``, ``text``, ``fused``, ``logits``, or ``image+text``
        (the pooled image and text vectors side by side; None when either is missing)."""
        if name == "image+text":
            return None if self.image is None or self.text is None else np.concatenate([self.image, self.text], 1)
        if name not in ("image", "text", "fused", "logits"):
            raise ValueError(f"unknown feature set {name!r}; known: image, text, image+text, fused, logits")
        value: np.ndarray | None = getattr(self, name)
        return value


def extract_features(
    model: nn.Module,
    rows: Sequence[dict[str, Any]],
    tokenizer: Any,
    batch_size: int = 128,
    device: str = "cpu",
    progress: Stage | None = None,
) -> SplitFeatures:
    """Run ``model`` over ``rows`` (in order, no gradients) and keep its pooled, fused and output vectors.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` (put in eval mode here).
        rows: indexable rows with ``image`` (PIL), ``text`` and ``label`` (a ``datasets.Dataset`` split works).
        tokenizer: the model's tokenizer.
        batch_size: examples per forward.
        device: where the model runs.
        progress: a :mod:`mmfuse.progress` stage advanced by the examples of each batch read; None = none.
    """
    from mmfuse.data.collate import ImageTextCollator

    model = model.to(device).eval()
    dataset: Any = rows  # any indexable rows
    loader: DataLoader[Any] = DataLoader(dataset, batch_size, shuffle=False, collate_fn=ImageTextCollator(tokenizer))
    parts: dict[str, list[np.ndarray]] = {"image": [], "text": [], "fused": [], "logits": []}
    with torch.inference_mode():
        for batch in loader:
            batch = batch.to(device)
            out = model(batch.images, batch.input_ids, batch.attention_mask)
            parts["fused"].append(out.fusion.fused.float().cpu().numpy())  # (B, D)
            parts["logits"].append(out.logits.float().cpu().numpy())  # (B, K)
            if out.image is not None:
                parts["image"].append(out.image.pooled.float().cpu().numpy())  # (B, D)
            if out.text is not None:
                parts["text"].append(out.text.pooled.float().cpu().numpy())  # (B, D)
            if progress is not None:
                progress.advance(len(batch))
    joined = {name: np.concatenate(p) if p else None for name, p in parts.items()}
    fused, logits = joined["fused"], joined["logits"]
    if fused is None or logits is None:
        raise ValueError("extract_features needs at least one row")
    return SplitFeatures(joined["image"], joined["text"], fused, logits)
