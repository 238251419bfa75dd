"""The splits of a data module as the audit reads them: labels, texts and images in record order.

Works with any data module that exposes its splits as a mapping from split name to indexable rows holding
``image`` (PIL), ``text`` and ``label``: the shapes world's ``splits`` (``datasets.Dataset`` per split) and the
file data's ``datasets`` (:class:`~mmfuse.data.image_text.ImageTextDataset` per split).

Data on disk shows one image under several rows (the five captions of a Flickr8k or COCO image, the questions of
a VQA image): its manifest's ``image_id`` says which rows share an image. The audit then reads each distinct image
once, from its file at its native size (:meth:`SplitData.images`), and the columns from the manifest without
decoding any image.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mmfuse.data.images import DEFAULT_MAX_PIXELS, BadImageError, decode_image
from mmfuse.errors import ConfigError

__all__ = ["SplitData", "split_data", "splits_of", "ShuffledPairs"]


@dataclass(frozen=True)
class SplitData:
    """One split as the audit reads it.

    Attributes:
        name: the split's name.
        rows: indexable rows with ``image``, ``text`` and ``label`` (fed to the model in this order).
        labels: (n,) int64 labels.
        texts: the n texts.
        is_noisy: (n,) bool ground truth of planted label noise when the data marks it (the shapes world), else None.
        image_ids: the n rows' image ids (rows that share one show the same image), or None: one image per row.
        image_files: the n rows' image files, decoded by :meth:`images`; None = the rows' own ``image``.
        max_pixels: most pixels an image file may have (None = no limit of ours).
    """

    name: str
    rows: Sequence[dict[str, Any]]
    labels: np.ndarray
    texts: list[str]
    is_noisy: np.ndarray | None = None
    image_ids: list[str] | None = None
    image_files: list[str] | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def has_labels(self) -> bool:
        """Whether the rows carry class labels (caption data marks every row -1: none)."""
        return bool(len(self.labels)) and bool((self.labels >= 0).all())

    def image_of(self) -> np.ndarray:
        """(n,) int64: each row's distinct image, numbered in order of first appearance (``arange(n)`` without
        ``image_ids``).

        Example:
            >>> split = SplitData("train", [], np.full(4, -1), ["a", "b", "c", "d"], image_ids=["x", "x", "y", "x"])
            >>> split.image_of().tolist(), split.first_rows().tolist()
            ([0, 0, 1, 0], [0, 2])
        """
        if self.image_ids is None:
            return np.arange(len(self), dtype=np.int64)
        number: dict[str, int] = {}
        return np.array([number.setdefault(i, len(number)) for i in self.image_ids], dtype=np.int64)

    def first_rows(self) -> np.ndarray:
        """(I,) int64: the first row of each distinct image, in image order."""
        _, first = np.unique(self.image_of(), return_index=True)
        return first.astype(np.int64)

    @property
    def num_images(self) -> int:
        """Distinct images of the split."""
        return len(self) if self.image_ids is None else len(set(self.image_ids))

    def images(self) -> Iterator[Image.Image]:
        """One PIL image per distinct image, in image order: decoded from its file at its native size when the
        rows name files, else the rows' own ``image`` (only the image column is decoded when the rows allow it)."""
        first = self.first_rows().tolist()
        if self.image_files is not None:
            for i in first:
                try:
                    yield decode_image(self.image_files[i], None, self.max_pixels)
                except BadImageError as err:
                    raise ConfigError(f"split {self.name!r}, row {i}: {err}; fix or drop the record") from err
            return
        rows: Any = self.rows
        if hasattr(rows, "select_columns"):
            rows = rows.select_columns(["image"])
        for i in first:
            yield rows[i]["image"]


def split_data(name: str, rows: Sequence[dict[str, Any]]) -> SplitData:
    """Read labels, texts (and ``is_noisy`` when present) of one split's rows."""
    columns = getattr(rows, "column_names", None)
    if columns is not None:  # a datasets.Dataset: read whole columns, and feed the model only what it reads
        table: Any = rows
        missing = {"image", "text", "label"} - set(columns)
        if missing:
            raise ConfigError(f"split {name!r} has no column(s) {sorted(missing)}; the audit needs image, text, label")
        noisy = np.asarray(table["is_noisy"]).astype(bool) if "is_noisy" in columns else None
        labels = np.asarray(table["label"], dtype=np.int64)
        texts = [str(t) for t in table["text"]]
        return SplitData(name, table.select_columns(["image", "text", "label"]), labels, texts, noisy)
    manifest = getattr(rows, "manifest", None)
    if manifest is not None and {"image_path", "image_id", "text", "label"} <= set(manifest.column_names):
        # an ImageTextDataset: its manifest's columns, read without decoding an image
        ids, files = [str(i) for i in manifest["image_id"]], [str(p) for p in manifest["image_path"]]
        labels = np.asarray(manifest["label"], dtype=np.int64)
        max_pixels = getattr(rows, "max_pixels", DEFAULT_MAX_PIXELS)
        return SplitData(name, rows, labels, [str(t) for t in manifest["text"]], None, ids, files, max_pixels)
    records = [rows[i] for i in range(len(rows))]
    if any(r is None for r in records):
        raise ConfigError(f"split {name!r} holds unreadable records; fix or drop them before the audit")
    labels = np.asarray([r["label"] for r in records], dtype=np.int64)
    return SplitData(name, rows, labels, [str(r["text"]) for r in records])


def splits_of(datamodule: Any, names: Sequence[str] | None = None) -> dict[str, SplitData]:
    """The splits of a set-up data module (``splits`` or ``datasets`` mapping), optionally only ``names``."""
    mapping: Mapping[str, Any] | None = getattr(datamodule, "splits", None)
    if mapping is None:
        mapping = getattr(datamodule, "datasets", None)
    if mapping is None:
        raise ConfigError(
            f"{type(datamodule).__name__} exposes no split mapping (.splits or .datasets); the audit cannot read it"
        )
    available = list(mapping)
    chosen = available if not names else list(names)
    unknown = [n for n in chosen if n not in mapping]
    if unknown:
        raise ConfigError(f"split(s) {unknown} not in the data; it has {sorted(available)}")
    return {name: split_data(name, mapping[name]) for name in chosen}


class ShuffledPairs(Sequence[dict[str, Any]]):
    """Rows pairing the image of example ``indices[k]`` with the text of example ``text_of[k]`` (label 0).

    Args:
        split: the split whose images and texts are paired anew.
        indices: (m,) example indices whose images are used.
        text_of: (m,) example indices whose texts are used.
    """

    def __init__(self, split: SplitData, indices: np.ndarray, text_of: np.ndarray) -> None:
        if len(indices) != len(text_of):
            raise ValueError(f"{len(indices)} image indices for {len(text_of)} text indices")
        self.split = split
        self.indices = [int(i) for i in indices]
        self.text_of = [int(j) for j in text_of]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, Any]:  # type: ignore[override]
        row = self.split.rows[self.indices[k]]
        return {"image": row["image"], "text": self.split.texts[self.text_of[k]], "label": 0}
