"""The examples a probe runs on: raw records (image + raw text + metadata) and the collate function that turns them
into model inputs, so that text perturbations happen on the raw text, before the data's own tokenizer sees it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.errors import ConfigError
from mmfuse.types import Batch

__all__ = ["ProbeData", "predict_probs", "TextEditFn", "ImageEditFn"]

TextEditFn = Callable[[str, int], str]
"""``(raw text, example index) -> raw text``."""
ImageEditFn = Callable[[Tensor, int], Tensor]
"""``(image (3, H, W) float in [0, 1], example index) -> image of the same shape and dtype``."""


@dataclass
class ProbeData:
    """Examples to probe.

    Attributes:
        records: one mapping per example with at least ``image`` (a PIL image) and ``text`` (raw text); ``label``
            (class index) is needed for accuracy. Every other key (e.g. ``protected_group``) is passed on to
            counterfactual edit functions.
        collate: rows -> :class:`~mmfuse.types.Batch`, the data's own collate function (it tokenizes).
        class_names: label names, for reports.
    """

    records: Sequence[Mapping[str, Any]]
    collate: Callable[[Sequence[Mapping[str, Any]]], Batch]
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.records) == 0:
            raise ConfigError("the probe has no examples to run on (an empty split or --n 0)")
        missing = [k for k in ("image", "text") if k not in self.records[0]]
        if missing:
            raise ConfigError(f"probe records need 'image' and 'text'; the first record lacks {missing}")

    @classmethod
    def from_split(
        cls,
        split: Any,
        collate: Callable[[Sequence[Mapping[str, Any]]], Batch],
        *,
        limit: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> ProbeData:
        """The first ``limit`` rows of a dataset split (e.g. a Hugging Face ``Dataset``), images decoded once."""
        size = len(split) if limit is None else min(limit, len(split))
        rows = [dict(split[i]) for i in range(size)]
        for row in rows:
            if hasattr(row.get("image"), "load"):
                row["image"].load()  # decode now: every condition re-collates the same rows
        return cls(rows, collate, tuple(class_names) if class_names is not None else None)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> Tensor:
        """(N,) long class indices; a clear error when the records carry none."""
        if "label" not in self.records[0]:
            raise ConfigError("the probe records have no 'label': accuracy needs labelled examples")
        return torch.tensor([int(r["label"]) for r in self.records], dtype=torch.long)

    def batches(
        self,
        batch_size: int,
        *,
        indices: Sequence[int] | None = None,
        texts: Sequence[str] | None = None,
        text_edit: TextEditFn | None = None,
        image_edit: ImageEditFn | None = None,
    ) -> Iterator[Batch]:
        """Collated batches of the chosen examples, optionally with edited raw texts and edited images.

        Args:
            batch_size: examples per batch.
            indices: which examples (repeats allowed), default all in order.
            texts: replacement raw texts, one per entry of ``indices``.
            text_edit: applied to each raw text (after ``texts``) before collation.
            image_edit: applied to each collated (3, H, W) image.
        """
        order = list(range(len(self.records))) if indices is None else list(indices)
        if texts is not None and len(texts) != len(order):
            raise ValueError(f"{len(texts)} texts for {len(order)} examples")
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rows = []
            for offset, i in enumerate(chunk):
                text = texts[start + offset] if texts is not None else str(self.records[i]["text"])
                rows.append({**self.records[i], "text": text_edit(text, i) if text_edit else text})
            batch = self.collate(rows)
            if image_edit is not None:
                edited = [image_edit(batch.images[k], i) for k, i in enumerate(chunk)]
                batch = replace(batch, images=torch.stack(edited))
            yield batch


@torch.no_grad()
def predict_probs(model: nn.Module, batches: Iterator[Batch]) -> Tensor:
    """Class probabilities of ``model`` over ``batches``.

    Args:
        model: called as ``model(images, input_ids, attention_mask)``; returns logits (B, K) or an object with
            ``.logits`` (e.g. :class:`~mmfuse.models.ModelOutput`). Run in eval mode (its mode is restored after).
        batches: collated inputs.

    Returns:
        (N, K) float32 softmax probabilities on the CPU.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    parts = []
    try:
        for batch in batches:
            out = model(batch.images.to(device), batch.input_ids.to(device), batch.attention_mask.to(device))
            logits = out.logits if hasattr(out, "logits") else out
            parts.append(torch.softmax(logits.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("predict_probs got no batches")
    return torch.cat(parts)
