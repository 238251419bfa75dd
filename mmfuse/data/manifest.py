"""Prepare, once, a checked Arrow manifest of image-text data on disk, and load it memory-mapped.

:func:`prepare_manifest` reads the source with its :mod:`~mmfuse.data.formats` reader, checks every record (see
:mod:`mmfuse.data.bad_records` for what and when), splits by image where the source has no splits, and streams the
good records in chunks into one Arrow file per split: a manifest larger than memory is fine, and images are never
decoded into the table (only their resolved paths are stored; decoding happens in the dataset's ``__getitem__``).
Bad records go to ``bad_records.json`` next to the Arrow files.

The result is cached under ``<cache>/manifests/<format>-<key>``, where the key hashes the resolved root, the reader
options (the whole :class:`~mmfuse.data.formats.FileSourceConfig`) and the path, size and mtime of every source
(annotation) file. It is written to a temporary directory and renamed, so an interrupted run never leaves half a
manifest behind and concurrent processes (DDP ranks) agree. Image files are not part of the key (stat-ing a million
images would cost as much as reading them); a file changed after preparing is caught by the load-time guard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmfuse.data.bad_records import REPORT_FILE, BadRecord, read_bad_record_report, write_bad_record_report
from mmfuse.data.formats import DATA_FORMATS, UNSPLIT, FileSourceConfig, FormatReader, SourceData, assign_splits
from mmfuse.data.images import BadImageError, check_image
from mmfuse.data.shapes import default_cache_dir
from mmfuse.errors import ConfigError
from mmfuse.io import atomic_dir, read_json

__all__ = ["MANIFEST_VERSION", "Manifest", "build_reader", "manifest_key", "prepare_manifest", "load_manifest"]

log = logging.getLogger(__name__)

MANIFEST_VERSION = 2  # bump when the checks, the schema or a stored value change, so caches are rebuilt
MANIFEST_FILE = "manifest.json"
_CHUNK_ROWS = 4096


def build_reader(cfg: FileSourceConfig) -> FormatReader:
    """The reader of ``cfg.format`` on the resolved ``cfg.root``."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.source.root={cfg.root!r}: no such directory")
    return DATA_FORMATS.get(cfg.format)(cfg, root.resolve())


def _stat(path: Path) -> dict[str, Any]:
    info = path.stat()
    return {"path": str(path), "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def manifest_key(cfg: FileSourceConfig, reader: FormatReader) -> str:
    """A short hash of everything that decides the manifest: version, options, root, source files' stat."""
    files = [_stat(path) for path in reader.source_files()]
    config = asdict(cfg)
    config["split_sizes"] = {split: float(size) for split, size in cfg.split_sizes.items()}  # 800 == 800.0 (YAML)
    payload = {"version": MANIFEST_VERSION, "config": config, "root": str(reader.root), "files": files}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def read_source(reader: FormatReader) -> SourceData:
    """Read the source (the expensive part a cache hit skips)."""
    return reader.read()


def prepare_manifest(cfg: FileSourceConfig, cache_dir: str | Path | None = None) -> Path:
    """Check and write the manifest once; later calls with unchanged sources return the cached directory.

    Args:
        cfg: the source.
        cache_dir: cache root; None = ``$MMFUSE_CACHE`` or ``~/.cache/mmfuse``.

    Returns:
        The manifest directory: ``<split>.arrow`` files, ``manifest.json`` and ``bad_records.json``.
    """
    reader = build_reader(cfg)
    key = manifest_key(cfg, reader)
    target = (Path(cache_dir) if cache_dir else default_cache_dir()) / "manifests" / f"{cfg.format}-{key}"
    if (target / MANIFEST_FILE).is_file():
        return target
    with atomic_dir(target) as tmp:  # another process may finish first; its copy is identical
        log.info("preparing the %s manifest of %s into %s", cfg.format, reader.root, target)
        summary = _write_manifest(cfg, reader, tmp)
        summary.update(key=key, source_files=[_stat(path) for path in reader.source_files()])
        (tmp / MANIFEST_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True))
    if summary["bad_records"]:
        log.warning("%d bad records in %s, listed in %s", summary["bad_records"], reader.root, target / REPORT_FILE)
    return target


def _features(extra: dict[str, Any]) -> Any:
    from datasets import Features, Value

    common = {
        "image_path": Value("string"), "image_id": Value("string"), "text": Value("string"), "label": Value("int64"),
        "record_id": Value("string"), "source": Value("string"), "source_index": Value("int64"),
    }  # fmt: skip
    return Features({**common, **extra})


class _SplitWriter:
    """Streams rows of one split into an Arrow IPC file, ``_CHUNK_ROWS`` at a time."""

    def __init__(self, path: Path, features: Any) -> None:
        import pyarrow as pa

        self.path, self.schema = path, features.arrow_schema
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._rows: list[dict[str, Any]] = []
        self.num_rows = 0
        self.image_ids: set[str] = set()

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self.image_ids.add(row["image_id"])
        if len(self._rows) >= _CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self.num_rows += len(self._rows)
            self._rows = []

    def close(self) -> dict[str, Any]:
        """Finish the file; its row and image counts and content hash."""
        self._flush()
        self._writer.close()
        self._sink.close()
        digest = hashlib.sha256()
        with self.path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        return {"rows": self.num_rows, "images": len(self.image_ids), "sha256": digest.hexdigest()}


class _RecordChecker:
    """The prepare-time checks of one record: path safety, text, file, image (each image checked once)."""

    def __init__(self, root: Path, cfg: FileSourceConfig) -> None:
        self.root, self.cfg = str(root), cfg
        self._images: dict[str, tuple[str, str] | None] = {}

    def check(self, record: dict[str, Any]) -> tuple[str, tuple[str, str] | None]:
        """(the resolved image path, or the path as written when unsafe; the (reason, detail) problem or None)."""
        raw = record["image"]
        if "problem" in record:
            return str(raw), record["problem"]
        if os.path.isabs(raw) or raw.startswith("~") or (len(raw) > 2 and raw[1] == ":" and raw[2] in "\\/"):
            return raw, ("absolute_path", f"{raw!r} is absolute; image paths must be relative to {self.root}")
        path = os.path.normpath(os.path.join(self.root, raw))  # lexical: symlinks inside the root are trusted
        if not path.startswith(self.root + os.sep):
            return raw, ("path_escapes_root", f"{raw!r} resolves to {path}, outside the dataset root {self.root}")
        text = record["text"]
        if text is None or not str(text).strip():
            return path, ("empty_text", f"the text of {path} is {'missing' if text is None else 'empty'}")
        if path not in self._images:
            self._images[path] = self._image_problem(path)
        return path, self._images[path]

    def _image_problem(self, path: str) -> tuple[str, str] | None:
        if not os.path.isfile(path):
            return "missing_file", f"{path}: no such file"
        if not self.cfg.verify_images:
            return None
        try:
            check_image(path, self.cfg.max_pixels)
        except BadImageError as err:
            return err.reason, str(err)
        return None


def _split_of(source: SourceData, cfg: FileSourceConfig) -> dict[str, str] | None:
    """image id -> split when splitting by image (a first pass over the records), else None."""
    if not (source.unsplit or cfg.resplit):
        return None
    image_ids = (
        r["image_id"] for r in source.records() if "problem" not in r and (cfg.resplit or r["split"] == UNSPLIT)
    )
    return assign_splits(image_ids, cfg.split_sizes, cfg.split_order or source.split_order)


def _records(source: SourceData, cfg: FileSourceConfig) -> Iterator[dict[str, Any]]:
    """The source's records with their final split (a record of an image in no split is left out)."""
    assignment = _split_of(source, cfg)
    for record in source.records():
        if assignment is not None and (cfg.resplit or record["split"] == UNSPLIT):
            split = assignment.get(record["image_id"])
            if split is None and "problem" not in record:
                continue
            record["split"] = split or UNSPLIT
        yield record


def _write_manifest(cfg: FileSourceConfig, reader: FormatReader, out: Path) -> dict[str, Any]:
    """Check every record, write the good ones per split and the bad ones to the report; the manifest summary."""
    source = read_source(reader)
    features, checker = _features(source.extra_features), _RecordChecker(reader.root, cfg)
    writers: dict[str, _SplitWriter] = {}
    bad: list[BadRecord] = []
    max_label = -1
    for record in _records(source, cfg):
        path, problem = checker.check(record)
        split, index, record_id = record["split"], record["index"], record["record_id"]
        if problem is not None:
            bad.append(BadRecord(split, index, record_id, record["source"], path, problem[0], problem[1]))
            continue
        if split not in writers:
            writers[split] = _SplitWriter(out / f"{split}.arrow", features)
        row = {key: record[key] for key in source.extra_features}
        row.update(image_path=path, image_id=record["image_id"], text=str(record["text"]), label=int(record["label"]),
                   record_id=record_id, source=record["source"], source_index=index)  # fmt: skip
        writers[split].add(row)
        max_label = max(max_label, row["label"])
    splits = {name: writer.close() for name, writer in sorted(writers.items())}
    write_bad_record_report(out, bad)
    class_names = source.class_names or tuple(str(i) for i in range(max_label + 1))
    return {
        "version": MANIFEST_VERSION, "format": cfg.format, "root": str(reader.root), "config": asdict(cfg),
        "splits": splits, "class_names": list(class_names), "bad_records": len(bad), "info": source.info,
    }  # fmt: skip


@dataclass(frozen=True)
class Manifest:
    """A prepared manifest.

    Attributes:
        path: its directory.
        key: the cache key it was prepared under.
        splits: split -> ``rows``, ``images`` and ``sha256`` of its Arrow file.
        class_names: label names, index-aligned (empty when the data has no labels).
        num_bad_records: records left out at prepare time (listed in ``bad_records.json``).
        info: format-specific facts (e.g. ``answer_vocabulary_size``).
    """

    path: Path
    key: str
    splits: dict[str, dict[str, Any]]
    class_names: tuple[str, ...]
    num_bad_records: int
    info: dict[str, Any]

    def dataset(self, split: str) -> Any:
        """The split as a memory-mapped ``datasets.Dataset`` (nothing is read into memory)."""
        from datasets import Dataset

        if split not in self.splits:
            raise ConfigError(f"split {split!r} is not in the data; available: {sorted(self.splits)}")
        return Dataset.from_file(str(self.path / f"{split}.arrow"))

    def bad_records(self) -> list[BadRecord]:
        """The records left out at prepare time."""
        return read_bad_record_report(self.path)


def load_manifest(path: str | Path) -> Manifest:
    """Read a directory written by :func:`prepare_manifest`."""
    path = Path(path)
    summary = read_json(path / MANIFEST_FILE, "manifest")
    return Manifest(
        path, summary["key"], summary["splits"], tuple(summary["class_names"]), summary["bad_records"], summary["info"]
    )
