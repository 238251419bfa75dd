"""The splits of a data module as the audit reads them: labels, texts and images in record order.

Works with any data module that exposes its splits as a mapping from split name to indexable rows holding
``image`` (PIL), ``text`` and ``label``: the shapes world's ``splits`` (``datasets.Dataset`` per split) and the
file data's ``datasets`` (:class:`~mmfuse.data.image_text.ImageTextDataset` per split).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

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
    """

    name: str
    rows: Sequence[dict[str, Any]]
    labels: np.ndarray
    texts: list[str]
    is_noisy: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def images(self) -> Iterator[Image.Image]:
        """The images in record order (only the image column is decoded when the rows allow it)."""
        rows: Any = self.rows
        if hasattr(rows, "select_columns"):
            rows = rows.select_columns(["image"])
        for i in range(len(rows)):
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
