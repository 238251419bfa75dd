"""What a retrieval probe runs on: the distinct images of a split (the gallery) and every caption with the column of
its image, and the contrastive (ITC) embeddings and ranks of a retrieval model (``model.task: retrieval``).

A split of image-text data holds several captions per image; :class:`RetrievalData` keeps each image once, so an
image corruption edits each gallery image once, and keeps the raw captions, so text edits happen before the data's
own tokenizer sees them. Ranking follows :class:`~mmfuse.metrics.RetrievalRecall`: every caption against every
gallery image by the cosine of their contrastive embeddings (text -> image), and every image against every caption
(image -> text, a hit when any of its captions is among the first K).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.errors import ConfigError
from mmfuse.heads import MATCH
from mmfuse.metrics.retrieval import first_of_each
from mmfuse.probes.data import ImageEditFn, TextEditFn
from mmfuse.types import Batch, EncoderOutput

__all__ = [
    "RetrievalData",
    "caption_outputs",
    "embed_images",
    "embed_texts",
    "encode_images",
    "i2t_hits",
    "true_image_ranks",
]

Collate = Callable[[Sequence[Mapping[str, Any]]], Batch]


@dataclass
class RetrievalData:
    """Captions and the distinct images they show.

    Attributes:
        images: (I) one image per distinct image: an RGB PIL image, or a (3, H, W) float tensor in [0, 1].
        image_names: (I) the data's own id of each image (e.g. its file name).
        texts: (T) the raw captions.
        text_images: (T,) long, the column in ``images`` of each caption's image.
        indices: (T) the row index of each caption in its split.
        collate: rows -> :class:`~mmfuse.types.Batch`, the data's own collate function (it tokenizes).
    """

    images: Sequence[Any]
    image_names: tuple[str, ...]
    texts: tuple[str, ...]
    text_images: Tensor
    indices: tuple[int, ...]
    collate: Collate

    def __post_init__(self) -> None:
        if not self.texts or not self.images:
            raise ConfigError("the retrieval probe has no captions to run on (an empty split or --n 0)")
        if self.text_images.shape != (len(self.texts),) or len(self.indices) != len(self.texts):
            raise ValueError(
                f"{len(self.texts)} captions need as many image columns and row indices; got "
                f"{tuple(self.text_images.shape)} and {len(self.indices)}"
            )
        shown = set(self.text_images.tolist())
        if shown != set(range(len(self.images))) or len(self.image_names) != len(self.images):
            raise ValueError(f"every one of the {len(self.images)} images needs a name and at least one caption")

    @classmethod
    def from_split(cls, split: Any, collate: Collate, *, limit: int | None = None) -> RetrievalData:
        """The first ``limit`` distinct images of a split (in order of first appearance) with every caption of each.

        Args:
            split: rows with ``image``, ``text`` and ``image_id`` (the captions of one image share it), e.g. an
                :class:`~mmfuse.data.image_text.ImageTextDataset`; ids and texts are read from its manifest
                columns when it has them, so only one row per chosen image is decoded.
            collate: the data's collate function.
            limit: how many images; None = all.

        Raises:
            ConfigError: the rows carry no ``image_id``, or the row of a chosen image cannot be read.
        """
        image_ids, texts = _id_and_text_columns(split)
        columns: dict[str, int] = {}
        first_row: list[int] = []
        rows: list[int] = []
        for row, image_id in enumerate(image_ids):
            if image_id not in columns:
                if limit is not None and len(columns) >= limit:
                    continue
                columns[image_id] = len(columns)
                first_row.append(row)
            rows.append(row)
        images = [_decoded(split, row) for row in first_row]
        return cls(
            images=images,
            image_names=tuple(columns),
            texts=tuple(texts[r] for r in rows),
            text_images=torch.tensor([columns[image_ids[r]] for r in rows], dtype=torch.long),
            indices=tuple(rows),
            collate=collate,
        )

    def caption_batches(
        self,
        batch_size: int,
        *,
        rows: Sequence[int] | None = None,
        texts: Sequence[str] | None = None,
        text_edit: TextEditFn | None = None,
    ) -> Iterator[Batch]:
        """Collated batches of captions, each with its own image.

        Args:
            batch_size: captions per batch.
            rows: which captions (repeats allowed), default all in order.
            texts: replacement raw texts, one per entry of ``rows``.
            text_edit: ``(raw text, caption index) -> raw text``, applied after ``texts``.
        """
        order = list(range(len(self.texts))) if rows is None else list(rows)
        if texts is not None and len(texts) != len(order):
            raise ValueError(f"{len(texts)} texts for {len(order)} captions")
        for start in range(0, len(order), batch_size):
            chunk = []
            for offset, t in enumerate(order[start : start + batch_size]):
                text = texts[start + offset] if texts is not None else self.texts[t]
                image = self.images[int(self.text_images[t])]
                chunk.append({"image": image, "text": text_edit(text, t) if text_edit else text})
            yield self.collate(chunk)

    def image_batches(self, batch_size: int, image_edit: ImageEditFn | None = None) -> Iterator[Tensor]:
        """(B, 3, H, W) float batches of the gallery images in column order, each optionally edited.

        Args:
            batch_size: images per batch.
            image_edit: ``(image (3, H, W) in [0, 1], image column) -> image`` of the same shape and dtype.
        """
        first_caption = first_of_each(self.text_images)  # (I,) a caption of each image, in column order
        for start in range(0, len(self.images), batch_size):
            columns = range(start, min(start + batch_size, len(self.images)))
            rows = [{"image": self.images[i], "text": self.texts[int(first_caption[i])]} for i in columns]
            images = self.collate(rows).images  # (B, 3, H, W)
            if image_edit is not None:
                images = torch.stack([image_edit(images[k], i) for k, i in enumerate(columns)])
            yield images


def _id_and_text_columns(split: Any) -> tuple[list[str], list[str]]:
    """Each row's image id and raw text, from the split's table when it has those columns (nothing decoded)."""
    table = getattr(split, "manifest", split)
    names = set(getattr(table, "column_names", ()) or ())
    if {"image_id", "text"} <= names:
        return [str(i) for i in table["image_id"]], [str(t) for t in table["text"]]
    if len(split) == 0:
        return [], []
    first = split[0]
    if first is None or "image_id" not in first:
        found = sorted(first) if isinstance(first, Mapping) else type(first).__name__
        raise ConfigError(
            f"retrieval probes need to know which captions show the same image: the split's rows carry no "
            f"'image_id' (they have {found}); use data on disk (data.class_path: ImageTextDataModule)"
        )
    rows = [split[i] for i in range(len(split))]
    return [str(r["image_id"]) for r in rows], [str(r["text"]) for r in rows]


def _decoded(split: Any, row: int) -> Any:
    record = split[row]
    if record is None:
        raise ConfigError(f"row {row} of the split could not be read (a bad record skipped by data.skip_bad)")
    image = record["image"]
    if hasattr(image, "load"):
        image.load()  # decode now: every condition re-collates the same images
    return image


@dataclass(frozen=True)
class _Parts:
    """The parts of a retrieval model a probe calls: ``vision(images)``, ``text(input_ids, attention_mask)``,
    ``head.embed_image`` / ``head.embed_text`` and ``fuse(image, text).logits``."""

    vision: Any
    text: Any
    head: Any
    fuse: Any


def _parts(model: nn.Module) -> _Parts:
    parts = _Parts(*(getattr(model, name, None) for name in ("vision", "text", "contrastive", "fuse")))
    if parts.vision is None or parts.text is None or parts.head is None or not callable(parts.fuse):
        task = getattr(getattr(model, "cfg", None), "task", "?")
        raise ConfigError(
            f"retrieval probes need a model built with task: retrieval (image and text encoders, a contrastive "
            f"head and a matching head); this one has task {task!r}"
        )
    return parts


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode and no gradients inside; the model's mode is restored after. Yields the model's device."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield next((p.device for p in model.parameters()), torch.device("cpu"))
    finally:
        model.train(was_training)


def embed_texts(model: nn.Module, batches: Iterator[Batch]) -> Tensor:
    """Contrastive text embeddings of a retrieval model.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` with ``task: retrieval``.
        batches: collated captions (their images are not read).

    Returns:
        (T, E) float32 unit-norm embeddings on the CPU.
    """
    model_parts = _parts(model)
    embeds = []
    with _evaluating(model) as device:
        for batch in batches:
            text = model_parts.text(batch.input_ids.to(device), batch.attention_mask.to(device))
            embeds.append(model_parts.head.embed_text(text.pooled).float().cpu())
    return _cat(embeds, "embed_texts")


def embed_images(model: nn.Module, batches: Iterator[Tensor]) -> Tensor:
    """Contrastive image embeddings of a retrieval model.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` with ``task: retrieval``.
        batches: (B, 3, H, W) float images in [0, 1].

    Returns:
        (I, E) float32 unit-norm embeddings on the CPU.
    """
    return _image_pass(model, batches, keep_features=False)[0]


def encode_images(model: nn.Module, batches: Iterator[Tensor]) -> tuple[Tensor, EncoderOutput]:
    """Contrastive image embeddings and the vision encoder's outputs, which the matching head fuses with captions.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` with ``task: retrieval``.
        batches: (B, 3, H, W) float images in [0, 1].

    Returns:
        (I, E) float32 unit-norm embeddings, and the encoder outputs (tokens (I, N, D), pooled (I, D)), on the CPU.
    """
    embeds, features = _image_pass(model, batches, keep_features=True)
    assert features is not None
    return embeds, features


def _image_pass(
    model: nn.Module, batches: Iterator[Tensor], keep_features: bool
) -> tuple[Tensor, EncoderOutput | None]:
    parts = _parts(model)
    embeds, kept = [], []
    with _evaluating(model) as device:
        for images in batches:
            image = parts.vision(images.to(device))
            embeds.append(parts.head.embed_image(image.pooled).float().cpu())
            if keep_features:
                kept.append(image)
    if not keep_features:
        return _cat(embeds, "embed_images"), None
    features = EncoderOutput(
        tokens=torch.cat([f.tokens.cpu() for f in kept]), mask=None, pooled=torch.cat([f.pooled.cpu() for f in kept]),
        num_prefix_tokens=kept[0].num_prefix_tokens, grid_size=kept[0].grid_size,
    )  # fmt: skip
    return _cat(embeds, "encode_images"), features


def caption_outputs(
    model: nn.Module, batches: Iterator[Batch], gallery: EncoderOutput, columns: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Contrastive embeddings of captions and the matching (ITM) head's probability that each caption describes a
    given gallery image.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` with ``task: retrieval``.
        batches: collated captions (their images are not read).
        gallery: the vision encoder's outputs of the gallery (:func:`encode_images`), tokens (I, N, D).
        columns: (P,) the gallery image each caption is paired with, in batch order.

    Returns:
        (P, E) float32 unit-norm caption embeddings and (P,) float32 probabilities of ``match``, on the CPU.
    """
    parts = _parts(model)
    embeds, probs, done = [], [], 0
    with _evaluating(model) as device:
        for batch in batches:
            rows = torch.as_tensor(list(columns[done : done + len(batch.input_ids)]), dtype=torch.long)
            done += len(rows)
            image = _to(gallery.select_rows(rows), device)  # tokens (B, N, D)
            text = parts.text(batch.input_ids.to(device), batch.attention_mask.to(device))
            logits = parts.fuse(image, text).logits  # (B, 2)
            embeds.append(parts.head.embed_text(text.pooled).float().cpu())
            probs.append(logits.float().softmax(dim=-1)[:, MATCH].cpu())  # (B, 2) -> (B,)
    if done != len(columns):
        raise ValueError(f"{len(columns)} gallery columns for {done} captions")
    return _cat(embeds, "caption_outputs"), _cat(probs, "caption_outputs")


def _to(features: EncoderOutput, device: torch.device) -> EncoderOutput:
    return EncoderOutput(
        tokens=features.tokens.to(device), mask=None if features.mask is None else features.mask.to(device),
        pooled=features.pooled.to(device), num_prefix_tokens=features.num_prefix_tokens, grid_size=features.grid_size,
    )  # fmt: skip


def _cat(parts: list[Tensor], name: str) -> Tensor:
    if not parts:
        raise ValueError(f"{name} got no batches")
    return torch.cat(parts)


def true_image_ranks(text_embeds: Tensor, image_embeds: Tensor, text_images: Tensor) -> Tensor:
    """Text -> image: the rank of each caption's own image among all images (1 = first).

    Args:
        text_embeds: (T, E) caption embeddings.
        image_embeds: (I, E) image embeddings.
        text_images: (T,) long, the column of each caption's image.

    Returns:
        (T,) long ranks in 1..I; images scoring exactly as high as the true one do not count against it.

    Example:
        >>> images = torch.eye(3)
        >>> true_image_ranks(torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.5, 0.0]]), images, torch.tensor([0, 1])).tolist()
        [1, 2]
    """
    similarity = text_embeds.float() @ image_embeds.float().T  # (T, E) @ (E, I) -> (T, I)
    own = similarity.gather(1, text_images[:, None].long())  # (T, 1)
    return (similarity > own).sum(dim=1) + 1


def i2t_hits(text_embeds: Tensor, image_embeds: Tensor, text_images: Tensor, k: int) -> Tensor:
    """Image -> text: whether any caption of each image is among its ``k`` most similar captions.

    Args:
        text_embeds: (T, E) caption embeddings.
        image_embeds: (I, E) image embeddings.
        text_images: (T,) long, the column of each caption's image.
        k: the cut-off.

    Returns:
        (I,) bool; captions scoring exactly as high as the image's best own caption do not count against it.
    """
    similarity = image_embeds.float() @ text_embeds.float().T  # (I, E) @ (E, T) -> (I, T)
    own = text_images[None, :] == torch.arange(image_embeds.shape[0])[:, None]  # (I, T)
    best_own = similarity.masked_fill(~own, -torch.inf).amax(dim=1, keepdim=True)  # (I, 1)
    return ((similarity > best_own) & ~own).sum(dim=1) < k
