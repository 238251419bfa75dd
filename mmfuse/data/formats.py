"""Readers of image-text data on disk, each turning one layout into records of one common schema.

Every reader yields raw records (``split``, ``index``, ``source``, ``record_id``, ``image`` as written in the source,
``image_id``, ``text``, ``label`` and format extras); :mod:`mmfuse.data.manifest` checks them and writes the Arrow
manifest with the columns ``image_path`` (resolved), ``image_id`` (groups the captions of one image), ``text``,
``label`` (int, -1 = none), ``record_id``, ``source``, ``source_index`` plus the extras.

Formats (``FileSourceConfig.format``):
    * ``imagefolder``: the ``datasets`` convention. ``metadata.jsonl`` / ``metadata.csv`` with ``file_name``,
      ``text`` or ``caption``, and an optional ``label`` (int or name), at the root (one pool, split by image) or in
      ``train/``, ``val/`` (``validation/``, ``valid/``, ``dev/``), ``test/``; without metadata, class folders
      ``<root>[/<split>]/<class>/*.jpg`` with the text ``class_text.format(label=<class>)``.
    * ``jsonl``: multimodal classification lines ``{"id", "img", "text", "label"}`` (the Hateful Memes layout);
      ``train.jsonl``, ``dev.jsonl`` (or ``dev_seen.jsonl``), ``test.jsonl`` (or ``test_seen.jsonl``).
    * ``captions_csv``: ``image,caption`` rows, several per image (Flickr8k's ``captions.txt``), images in ``images/``
      (or ``Images/``); split by image.
    * ``coco`` and ``vqa``: see :mod:`mmfuse.data.coco`.

Formats without their own splits (or any format with ``resplit: true``) are split deterministically by image:
image ids in ``split_order`` (sorted, or by hash for class folders), cut in the order of ``split_sizes``; the
captions of one image never straddle two splits.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from mmfuse.data.images import DEFAULT_MAX_PIXELS
from mmfuse.errors import ConfigError
from mmfuse.registry import Registry

__all__ = [
    "FileSourceConfig",
    "SourceData",
    "FormatReader",
    "DATA_FORMATS",
    "UNSPLIT",
    "IMAGE_EXTENSIONS",
    "assign_splits",
    "ImageFolderReader",
    "JsonlReader",
    "CaptionsCsvReader",
]

log = logging.getLogger(__name__)

UNSPLIT = "all"  # split name of records that still have to be split by image
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "valid": "val", "dev": "val", "test": "test"}
Record = dict[str, Any]


@dataclass(frozen=True)
class FileSourceConfig:
    """Where image-text data lives on disk and how to read it (everything that decides the prepared manifest).

    Attributes:
        format: the layout (see the module docstring).
        root: the dataset directory; image paths must stay inside it.
        split_files: split -> annotation file relative to ``root`` (``jsonl``: the JSONL files; ``captions_csv``:
            the CSV files; ``imagefolder``: metadata files; ``coco``: captions JSON); the split name ``all`` means
            "split by image". None = the format's standard names.
        image_dir: folder of the images relative to ``root`` (``captions_csv``: default ``images`` or ``Images``;
            ``coco`` / ``vqa``: a prefix before ``train2017/``...; default none).
        split_sizes: split -> share of the images for a split by image, in this order: fractions when all are <= 1
            and sum to at most 1, else whole image counts (``{train: 800, test: 200}``).
        resplit: ignore the source's own splits and split by image.
        split_order: order of the images before the cut: ``sorted`` ids, or ``hash`` (sorted by the SHA-256 of the
            id: a well-mixed order that is stable when images are added). None = the format's default: ``hash``
            for class folders (sorted ids would put whole classes in one split), ``sorted`` otherwise.
        class_text: text of class-folder images, formatted with ``label`` (the class folder's name).
        answer_vocab_size: VQA: K most frequent training answers kept (the rest map to ``<unk>``, class 0).
        verify_images: at prepare time, decode every image cheaply (see :func:`~mmfuse.data.images.check_image`);
            False checks only that the file exists.
        max_pixels: most pixels an image may have; None = no limit of ours.
    """

    format: Literal["imagefolder", "coco", "vqa", "jsonl", "captions_csv"] = "imagefolder"
    root: str = "."
    split_files: dict[str, str] | None = None
    image_dir: str | None = None
    split_sizes: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    resplit: bool = False
    split_order: Literal["sorted", "hash"] | None = None
    class_text: str = "a photo of a {label}"
    answer_vocab_size: int = 3129
    verify_images: bool = True
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if not self.split_sizes or any(v <= 0 for v in self.split_sizes.values()):
            raise ConfigError(f"data.source.split_sizes={self.split_sizes}: give each split a positive share")
        if self.max_pixels is not None and self.max_pixels <= 0:
            raise ConfigError(f"data.source.max_pixels={self.max_pixels} must be positive (or null for no limit)")
        if self.answer_vocab_size <= 0:
            raise ConfigError(f"data.source.answer_vocab_size={self.answer_vocab_size} must be positive")
        try:
            self.class_text.format(label="x")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"data.source.class_text={self.class_text!r}: may only use {{label}} ({err!r})") from err


@dataclass
class SourceData:
    """What a reader found.

    Attributes:
        records: returns a fresh iterator over the raw records (called twice when splitting by image).
        class_names: label names, index-aligned; None = derived from the largest integer label.
        extra_features: ``datasets`` feature of each format-specific column.
        info: facts stored with the manifest (e.g. the VQA answer counts).
        unsplit: some records carry the split ``all`` and are to be split by image.
        split_order: the format's default order for a split by image (``sorted`` or ``hash``).
    """

    records: Callable[[], Iterator[Record]]
    class_names: tuple[str, ...] | None = None
    extra_features: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    unsplit: bool = False
    split_order: Literal["sorted", "hash"] = "sorted"


class FormatReader(Protocol):
    """One layout on disk. ``source_files`` must be cheap: its paths, sizes and mtimes key the cache."""

    root: Path

    def __init__(self, cfg: FileSourceConfig, root: Path) -> None: ...

    def source_files(self) -> list[Path]: ...

    def read(self) -> SourceData: ...


DATA_FORMATS: Registry[type[FormatReader]] = Registry("data format")


def _record(split: str, index: int, source: str, record_id: str, image: Any, image_id: Any, text: Any) -> Record:
    """A raw record with no label; a missing image path becomes a ``malformed_record`` problem."""
    record: Record = {
        "split": split, "index": index, "source": source, "record_id": record_id, "image": image,
        "image_id": str(image_id), "text": text, "label": -1,
    }  # fmt: skip
    if not isinstance(image, str) or not image:
        record["problem"] = ("malformed_record", f"no image path (got {image!r})")
    return record


def _malformed(split: str, index: int, source: str, detail: str) -> Record:
    record = _record(split, index, source, f"{source}:{index + 1}", "?", "?", None)
    record["problem"] = ("malformed_record", detail)
    return record


def _label_value(value: Any) -> int | str | None:
    """A label as an int (also from a CSV's ``"3"``), a name, or None (absent or empty)."""
    if isinstance(value, str):
        value = value.strip()
        return int(value) if value.lstrip("-").isdigit() else (value or None)
    return None if value is None else value if isinstance(value, int) else str(value)


def _label_index(values: Iterable[Any]) -> dict[str, int] | None:
    """None when every label is an int (they are used as they are); else the sorted label names -> index."""
    labels = {_label_value(v) for v in values} - {None}
    if all(isinstance(v, int) for v in labels):
        return None
    return {name: i for i, name in enumerate(sorted(str(v) for v in labels))}


def _encode_label(value: Any, index: dict[str, int] | None) -> int:
    label = _label_value(value)
    if label is None:
        return -1
    return int(label) if index is None else index[str(label)]


def _read_table(path: Path, is_csv: bool | None = None) -> Iterator[dict[str, Any] | str]:
    """Rows of a JSONL or CSV file (None: by the suffix) as dicts; a line that is not a JSON object gives its
    error text instead."""
    is_csv = path.suffix == ".csv" if is_csv is None else is_csv
    with path.open(newline="" if is_csv else None, encoding="utf-8") as file:
        if is_csv:
            yield from csv.DictReader(file)
            return
        for line_number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield f"line {line_number} is not JSON ({err.msg})"
                continue
            yield row if isinstance(row, dict) else f"line {line_number} is not a JSON object"


def _existing(root: Path, candidates: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """split -> the first of its candidate files that exists under ``root``."""
    found = {}
    for split, names in candidates.items():
        hit = next((name for name in names if (root / name).is_file()), None)
        if hit is not None:
            found[split] = hit
    return found


def _check_split_files(root: Path, split_files: dict[str, str], fmt: str) -> dict[str, str]:
    if not split_files:
        raise ConfigError(
            f"data.source.root={str(root)!r}: no {fmt} annotation files found; set data.source.split_files"
        )
    missing = [name for name in split_files.values() if not (root / name).is_file()]
    if missing:
        raise ConfigError(f"data.source.split_files: {missing} not found under {root}")
    return split_files


@DATA_FORMATS.register("jsonl")
class JsonlReader:
    """Multimodal classification JSONL lines ``{"id", "img", "text", "label"}`` (Hateful Memes)."""

    CANDIDATES = {
        "train": ("train.jsonl",),
        "val": ("dev.jsonl", "dev_seen.jsonl", "val.jsonl"),
        "test": ("test.jsonl", "test_seen.jsonl"),
    }

    def __init__(self, cfg: FileSourceConfig, root: Path) -> None:
        self.root = root
        self.split_files = _check_split_files(root, cfg.split_files or _existing(root, self.CANDIDATES), "jsonl")

    def source_files(self) -> list[Path]:
        return [self.root / name for name in self.split_files.values()]

    def read(self) -> SourceData:
        labels = _label_index(
            row.get("label") for name in self.split_files.values() for row in _read_table(self.root / name)
            if isinstance(row, dict)
        )  # fmt: skip
        return SourceData(lambda: self._records(labels), _names(labels), unsplit=UNSPLIT in self.split_files)

    def _records(self, labels: dict[str, int] | None) -> Iterator[Record]:
        for split, name in self.split_files.items():
            for index, row in enumerate(_read_table(self.root / name)):
                if isinstance(row, str):
                    yield _malformed(split, index, name, row)
                    continue
                record_id = str(row.get("id", f"{name}:{index + 1}"))
                record = _record(split, index, name, record_id, row.get("img"), row.get("img"), row.get("text"))
                record["label"] = _encode_label(row.get("label"), labels)
                yield record


def _names(labels: dict[str, int] | None) -> tuple[str, ...] | None:
    return None if labels is None else tuple(labels)


@DATA_FORMATS.register("captions_csv")
class CaptionsCsvReader:
    """``image,caption`` CSV rows, several per image (Flickr8k ``captions.txt``)."""

    def __init__(self, cfg: FileSourceConfig, root: Path) -> None:
        self.root = root
        self.split_files = _check_split_files(
            root, cfg.split_files or _existing(root, {UNSPLIT: ("captions.txt",)}), "captions CSV"
        )
        image_dir = cfg.image_dir
        if image_dir is None:
            image_dir = next((d for d in ("images", "Images") if (root / d).is_dir()), "")
        self.image_dir = image_dir

    def source_files(self) -> list[Path]:
        return [self.root / name for name in self.split_files.values()]

    def read(self) -> SourceData:
        return SourceData(self._records, unsplit=UNSPLIT in self.split_files)

    def _records(self) -> Iterator[Record]:
        for split, name in self.split_files.items():
            for index, row in enumerate(_read_table(self.root / name, is_csv=True)):
                if isinstance(row, str) or "image" not in row:
                    yield _malformed(split, index, name, f"row {index + 2} has no `image` column")
                    continue
                image = row["image"]
                path = os.path.join(self.image_dir, image) if isinstance(image, str) and image else image
                yield _record(split, index, name, f"{image}#{index}", path, image, row.get("caption"))


@DATA_FORMATS.register("imagefolder")
class ImageFolderReader:
    """``metadata.jsonl`` / ``metadata.csv`` folders, or class folders (see the module docstring)."""

    METADATA = ("metadata.jsonl", "metadata.csv")

    def __init__(self, cfg: FileSourceConfig, root: Path) -> None:
        self.cfg, self.root = cfg, root
        self.split_dirs = self._split_dirs()
        self.metadata = cfg.split_files or self._find_metadata()

    def _split_dirs(self) -> dict[str, Path]:
        dirs = {split: self.root / name for name, split in _SPLIT_DIRS.items() if (self.root / name).is_dir()}
        return dirs or {UNSPLIT: self.root}

    def _find_metadata(self) -> dict[str, str]:
        found = {}
        for split, folder in self.split_dirs.items():
            hit = next((folder / m for m in self.METADATA if (folder / m).is_file()), None)
            if hit is not None:
                found[split] = str(hit.relative_to(self.root))
        return found

    def _class_dirs(self) -> list[Path]:
        return sorted(d for folder in self.split_dirs.values() for d in folder.iterdir() if d.is_dir())

    def source_files(self) -> list[Path]:
        if self.metadata:
            return [self.root / name for name in self.metadata.values()]
        # Class folders: a folder's mtime changes when files are added, removed or renamed in it.
        return [*self.split_dirs.values(), *self._class_dirs()]

    def read(self) -> SourceData:
        if not self.metadata:
            classes = sorted({d.name for d in self._class_dirs()})
            if not classes:
                raise ConfigError(f"data.source.root={str(self.root)!r}: no metadata.jsonl/.csv and no class folders")
            unsplit = UNSPLIT in self.split_dirs
            return SourceData(lambda: self._class_records(classes), tuple(classes), unsplit=unsplit, split_order="hash")
        labels = _label_index(
            row.get("label") for name in self.metadata.values() for row in _read_table(self.root / name)
            if isinstance(row, dict)
        )  # fmt: skip
        unsplit = UNSPLIT in self.metadata
        return SourceData(lambda: self._metadata_records(labels), _names(labels), unsplit=unsplit)

    def _metadata_records(self, labels: dict[str, int] | None) -> Iterator[Record]:
        for split, name in self.metadata.items():
            folder = os.path.dirname(name)
            for index, row in enumerate(_read_table(self.root / name)):
                if isinstance(row, str):
                    yield _malformed(split, index, name, row)
                    continue
                file_name = row.get("file_name")
                path = os.path.join(folder, file_name) if isinstance(file_name, str) and file_name else file_name
                text = row["text"] if "text" in row else row.get("caption")
                record = _record(split, index, name, f"{name}:{index + 1}", path, file_name, text)
                record["label"] = _encode_label(row.get("label"), labels)
                yield record

    def _class_records(self, classes: list[str]) -> Iterator[Record]:
        for split, folder in self.split_dirs.items():
            files = sorted(
                f for d in folder.iterdir() if d.is_dir() for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS
            )
            source = str(folder.relative_to(self.root)) if folder != self.root else "."
            for index, file in enumerate(files):
                relative, text = str(file.relative_to(self.root)), self.cfg.class_text.format(label=file.parent.name)
                record = _record(split, index, source, relative, relative, relative, text)
                record["label"] = classes.index(file.parent.name)
                yield record


def assign_splits(
    image_ids: Iterable[str], split_sizes: dict[str, float], order: Literal["sorted", "hash"] = "sorted"
) -> dict[str, str]:
    """image id -> split: ids in ``order`` cut in the order of ``split_sizes`` (fractions when they are all <= 1 and
    sum to at most 1, else whole image counts).

    With fractions summing to 1 every image is used; counts may leave the last images out (logged).

    Example:
        >>> assign_splits(["b", "a", "c", "d"], {"train": 3, "test": 1})
        {'a': 'train', 'b': 'train', 'c': 'train', 'd': 'test'}
    """
    ids = sorted(set(image_ids))
    if order == "hash":
        ids.sort(key=lambda image_id: hashlib.sha256(image_id.encode()).hexdigest())
    values = list(split_sizes.values())
    if all(v <= 1 for v in values) and sum(values) <= 1 + 1e-9:  # fractions
        running, bounds = 0.0, []
        for value in values:
            running += value
            bounds.append(round(running * len(ids)))
    else:
        if any(v != int(v) for v in values) or sum(values) > len(ids):
            raise ConfigError(
                f"data.source.split_sizes={split_sizes}: give fractions summing to at most 1, or whole image counts "
                f"summing to at most the {len(ids)} images"
            )
        bounds = [int(sum(values[: i + 1])) for i in range(len(values))]
    if bounds[-1] < len(ids):
        log.info("split by image: %d of %d images are in no split (%s)", len(ids) - bounds[-1], len(ids), split_sizes)
    assignment, start = {}, 0
    for split, end in zip(split_sizes, bounds):
        assignment.update({image_id: split for image_id in ids[start:end]})
        start = end
    return assignment
