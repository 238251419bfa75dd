"""Frozen features of a split, read from a trained :class:`~mmfuse.models.ImageTextModel` in one pass.

The audit's cheap probes (label errors, mismatches, the baseline ladder) fit on these: the vision encoder's pooled
vector (image-only), the text encoder's pooled vector (text-only), the fusion's joint vector (what the model's head
reads) and the model's own logits. Features of a model trained on the task are what make confident learning work on
data whose label depends on image and text together (the shapes world's colour question): a random network's
features do not separate such classes, and a linear probe on them stays at chance.

A retrieval model (``model.task: retrieval``) is read for its contrastive embeddings instead
(:func:`extract_retrieval_features`): each distinct image of a split is embedded once, each row's text once, and
the image-text matching (ITM) head optionally scores chosen (text, image) pairs on the cached image tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mmfuse.types import EncoderOutput

if TYPE_CHECKING:
    from mmfuse.audit.source import SplitData
    from mmfuse.progress import Stage

__all__ = ["SplitFeatures", "RetrievalFeatures", "extract_features", "extract_retrieval_features"]


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


@dataclass(frozen=True)
class RetrievalFeatures:
    """Contrastive embeddings of one split of a retrieval model (numpy, float32), each distinct image once.

    Attributes:
        image_embeds: (I, E) unit-norm embeddings of the split's distinct images, in image order.
        text_embeds: (n, E) unit-norm embeddings of the rows' texts.
        image_of: (n,) int64, each row's image (an index into ``image_embeds``).
        logit_scale: the contrastive head's logit scale (1 / temperature) at reading time.
        match_images: (n, k) int64 images whose pair with each row's text the ITM head scored; None = none scored.
        match_prob: (n, k) the ITM head's probability that each of those pairs matches; None = none scored.
    """

    image_embeds: np.ndarray
    text_embeds: np.ndarray
    image_of: np.ndarray
    logit_scale: float
    match_images: np.ndarray | None = None
    match_prob: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.text_embeds.shape[0])

    def similarities(self) -> np.ndarray:
        """(n, I) cosine similarity of every row's text with every distinct image of the split."""
        sims: np.ndarray = self.text_embeds @ self.image_embeds.T
        return sims


def extract_retrieval_features(
    model: nn.Module,
    split: SplitData,
    tokenizer: Any,
    batch_size: int = 128,
    device: str = "cpu",
    max_length: int = 64,
    match_images: np.ndarray | None = None,
    progress: Stage | None = None,
) -> RetrievalFeatures:
    """Run a retrieval model's encoders over a split: each distinct image once, then each row's text (no gradients).

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` built with ``task: retrieval`` (put in eval mode here).
        split: the split (its rows give the images as the model reads them; ``image_ids`` which rows share one).
        tokenizer: the model's tokenizer.
        batch_size: images (or texts) per forward.
        device: where the model runs.
        max_length: truncation length of texts, in tokens (the data's ``max_length``).
        match_images: (n, k) images (indices into the split's distinct images) to pair with each row's text for
            the ITM head; None = the ITM head is not run. The image tokens of the whole split are then kept (in
            float16, on the CPU) until the texts are read.
        progress: a :mod:`mmfuse.progress` stage advanced by the images, then the rows, read; None = none.
    """
    from mmfuse.errors import ConfigError

    head = getattr(model, "contrastive", None)
    if head is None:
        raise ConfigError("caption mismatches need a retrieval model (model.task: retrieval) with a contrastive head")
    image_of, first_rows = split.image_of(), split.first_rows()
    if len(image_of) == 0:
        raise ValueError("extract_retrieval_features needs at least one row")
    if match_images is not None and (match_images.ndim != 2 or match_images.shape[0] != len(image_of)):
        raise ValueError(f"match_images {match_images.shape} must be (n={len(image_of)}, k)")
    model = model.to(device).eval()
    image_embeds, kept = [], []
    with torch.inference_mode():
        for start in range(0, len(first_rows), batch_size):
            rows = first_rows[start : start + batch_size]
            image = _encode_images(model, split, rows, tokenizer, device)  # tokens (c, N, D), pooled (c, D)
            image_embeds.append(head.embed_image(image.pooled).float().cpu().numpy())  # (c, E)
            if match_images is not None:
                kept.append(_to(image, "cpu", torch.float16))
            if progress is not None:
                progress.advance(len(rows))
        images = _concat(kept) if kept else None  # tokens (I, N, D)
        text_embeds, match_prob = [], []
        for start in range(0, len(image_of), batch_size):
            texts = split.texts[start : start + batch_size]
            text = _encode_texts(model, texts, tokenizer, max_length, device)
            text_embeds.append(head.embed_text(text.pooled).float().cpu().numpy())  # (b, E)
            if images is not None and match_images is not None:
                match_prob.append(_match(model, images, text, match_images[start : start + batch_size], device))
            if progress is not None:
                progress.advance(len(texts))
    scale = float(head.scale().detach().float().cpu())
    matched = None if match_images is None else np.asarray(match_images, dtype=np.int64)
    prob = np.concatenate(match_prob) if match_prob else None
    return RetrievalFeatures(np.concatenate(image_embeds), np.concatenate(text_embeds), image_of, scale, matched, prob)


def _encode_images(model: Any, split: SplitData, rows: np.ndarray, tokenizer: Any, device: str) -> EncoderOutput:
    """The vision encoder's output for the images of ``rows`` (tokens (c, N, D), pooled (c, D))."""
    from mmfuse.data.collate import ImageTextCollator

    # the collator turns PIL images or transformed tensors into (c, 3, H, W) float in [0, 1]; no text is needed
    batch = ImageTextCollator(tokenizer)([{"image": split.rows[int(r)]["image"], "text": ""} for r in rows])
    image: EncoderOutput = model.vision(batch.images.to(device))
    return image


def _encode_texts(model: Any, texts: list[str], tokenizer: Any, max_length: int, device: str) -> EncoderOutput:
    """The text encoder's output for ``texts`` (tokens (b, L, D), mask (b, L), pooled (b, D))."""
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    text: EncoderOutput = model.text(tokens["input_ids"].to(device), tokens["attention_mask"].bool().to(device))
    return text


def _to(output: EncoderOutput, device: str, dtype: torch.dtype) -> EncoderOutput:
    return EncoderOutput(
        tokens=output.tokens.to(device, dtype), mask=None if output.mask is None else output.mask.to(device),
        pooled=output.pooled.to(device, dtype), num_prefix_tokens=output.num_prefix_tokens,
        grid_size=output.grid_size,
    )  # fmt: skip


def _concat(parts: list[EncoderOutput]) -> EncoderOutput:
    """Encoder outputs of consecutive chunks as one (tokens (I, N, D))."""
    masks = [p.mask for p in parts]
    return EncoderOutput(
        tokens=torch.cat([p.tokens for p in parts]),
        mask=None if any(m is None for m in masks) else torch.cat([m for m in masks if m is not None]),
        pooled=torch.cat([p.pooled for p in parts]), num_prefix_tokens=parts[0].num_prefix_tokens,
        grid_size=parts[0].grid_size,
    )  # fmt: skip


def _match(model: Any, images: EncoderOutput, text: EncoderOutput, paired: np.ndarray, device: str) -> np.ndarray:
    """(b, k) ITM probability that text j matches image ``paired[j, m]`` (an index into ``images``)."""
    from mmfuse.heads import MATCH

    dtype = next(model.fusion.parameters()).dtype
    out = np.zeros(paired.shape, dtype=np.float32)
    for m in range(paired.shape[1]):
        image = _to(images.select_rows(torch.as_tensor(paired[:, m])), device, dtype)  # tokens (b, N, D)
        logits = model.fuse(image, text).logits  # (b, 2)
        out[:, m] = logits.float().softmax(-1)[:, MATCH].cpu().numpy()
    return out
