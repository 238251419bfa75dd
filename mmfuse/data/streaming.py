"""Streaming image-text data through Hugging Face ``datasets``: WebDataset shards, Parquet / JSON / CSV files,
``save_to_disk`` directories, the ``imagefolder`` builder and Hub ids, read one shard at a time, never all in memory.

The loaders are the library's own (``load_dataset(..., streaming=True)``, its ``webdataset`` builder,
``Dataset.to_iterable_dataset``); this module adds what training on them needs and they do not give:

* **An order that is a function of (seed, epoch) alone.** Each epoch permutes every source's shards, deals them
  to the ranks (``shards`` strategy, when the shard count is a multiple of the world size; else every
  ``world``-th example, the ``examples`` strategy, as ``datasets.distributed.split_dataset_by_node`` does), and
  passes each rank's stream through a seeded shuffle buffer.
* **Equal batches on every rank, known in advance.** Rows are counted once per source (cached beside the
  manifests); a rank uses the same number of rows of each source every epoch (the least any rank can have), so DDP
  processes never wait on one another and ``len(loader)`` is exact.
* **Mixing with exact proportions.** Several sources with weights: every epoch a rank takes ``n_s`` rows of source
  ``s`` (``n_s`` proportional to its weight, as many as the scarcest source allows) in a seeded random order. The
  per-source counts are fixed, logged and the same every epoch. (``datasets.interleave_datasets`` draws the source
  of every row at random, so an epoch's length would differ between ranks and epochs.)
* **Exact resume.** Batch ``b`` of an epoch is made of rank stream positions ``[b * B, (b + 1) * B)``; a data-loader
  worker builds every ``num_workers``-th batch from where the epoch resumes, skipping the rows of other batches
  without decoding them. A run resumed after ``k`` batches sees positions ``k * B`` onward: nothing dropped, nothing
  repeated, in any number of workers (the worker count may even change on resume).
* **Bad rows** (an image that does not decode, a missing caption) follow the rule of files on disk: a
  :class:`~mmfuse.data.bad_records.BadRecordError` naming the source, shard and key, or with ``skip_bad`` a counted
  skip in ``bad_records_load.jsonl``.

Cost of the exact order: every worker of a rank reads (not decodes) that rank's rows; a resumed epoch re-reads the
rows before its position. Decoding, the expensive part, is done once per row.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from mmfuse.data.bad_records import BadRecord, BadRecordError, append_load_time_record
from mmfuse.data.images import DEFAULT_MAX_PIXELS, BadImageError, decode_image
from mmfuse.data.loader import sample_seed
from mmfuse.data.transforms import ImageTransform, seeded
from mmfuse.errors import ConfigError

__all__ = [
    "STREAM_FORMATS",
    "StreamSourceConfig",
    "StreamSource",
    "EpochPlan",
    "plan_epoch",
    "StreamDataset",
    "expand_paths",
]

log = logging.getLogger(__name__)

STREAM_FORMATS = ("webdataset", "parquet", "json", "csv", "arrow", "imagefolder", "hub")
_EXTENSIONS = {"webdataset": (".tar",), "parquet": (".parquet",), "json": (".json", ".jsonl"), "csv": (".csv",)}
# Column each role falls back to, in order, when ``columns`` does not name one (img2dataset: jpg / txt / json).
_DEFAULT_COLUMNS = {
    "image": ("image", "jpg", "jpeg", "png", "webp", "img"),
    "text": ("text", "txt", "caption", "sentence"),
    "label": ("label", "cls", "json.label"),
    "key": ("__key__", "key", "id", "image_id"),
}
_COUNT_VERSION = 1


@dataclass(frozen=True)
class StreamSourceConfig:
    """One streamed source.

    Attributes:
        format: ``webdataset`` (tar shards, the img2dataset layout ``000000.tar`` with ``key.jpg``, ``key.txt``,
            ``key.json``), ``parquet``, ``json`` (JSON lines), ``csv``, ``arrow`` (a ``save_to_disk`` directory),
            ``imagefolder`` (the ``datasets`` builder), or ``hub`` (a Hub dataset id; read from the local cache when
            ``HF_HUB_OFFLINE=1``).
        path: files (globs and brace ranges such as ``shards/{000000..000099}.tar``; ``~`` expanded), a directory
            (its files of the format, sorted), or the Hub id.
        split: the split of a ``save_to_disk`` directory, of ``imagefolder`` or of a Hub dataset.
        name: the Hub dataset's configuration.
        columns: role -> column, for the roles ``image``, ``text``, ``label`` and ``key``; a dotted name reads a
            field of a dict column (``json.label``). Unnamed roles take the first column present among
            ``image``/``jpg``/``jpeg``/``png``/``webp``/``img``, ``text``/``txt``/``caption``/``sentence``,
            ``label``/``cls``/``json.label`` and ``__key__``/``key``/``id``/``image_id``; ``label`` and ``key`` are
            optional.
        weight: sampling weight when several sources are mixed (proportions, normalised over the sources).
        num_shards: ``arrow`` / ``hub`` read from the cache: contiguous shards to cut the table into (more shards,
            finer per-rank dealing); None = 16, or the row count when fewer.
        source_name: the source's name in logs and counts; None = the file or directory name.
    """

    format: Literal["webdataset", "parquet", "json", "csv", "arrow", "imagefolder", "hub"]
    path: str
    split: str = "train"
    name: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    weight: float = 1.0
    num_shards: int | None = None
    source_name: str | None = None

    def __post_init__(self) -> None:
        if self.format not in STREAM_FORMATS:
            raise ConfigError(f"data.sources format={self.format!r}: one of {', '.join(STREAM_FORMATS)}")
        if not self.weight > 0:
            raise ConfigError(f"data.sources weight={self.weight} of {self.path!r} must be positive")
        unknown = sorted(set(self.columns) - set(_DEFAULT_COLUMNS))
        if unknown:
            raise ConfigError(
                f"data.sources columns={self.columns}: unknown role {unknown[0]!r} (image, text, label, key)"
            )
        if self.num_shards is not None and self.num_shards <= 0:
            raise ConfigError(f"data.sources num_shards={self.num_shards} of {self.path!r} must be positive")

    @property
    def display_name(self) -> str:
        if self.source_name:
            return self.source_name
        path = Path(os.path.expanduser(self.path.rstrip("/")))
        return path.parent.name if any(c in path.name for c in "{*?[") else path.name or self.path


def expand_paths(pattern: str, fmt: str) -> list[str]:
    """The files ``pattern`` names: brace ranges expanded (``braceexpand``), globs matched, a directory's files of
    format ``fmt`` listed (recursively, sorted).

    Raises:
        ConfigError: a name that matches no file.
    """
    from braceexpand import braceexpand

    files: list[str] = []
    for part in braceexpand(os.path.expanduser(pattern)):
        if os.path.isdir(part):
            found = sorted(
                str(p) for p in Path(part).rglob("*") if p.is_file() and p.name.endswith(_EXTENSIONS.get(fmt, ("",)))
            )
            if not found:
                raise ConfigError(f"data.sources path={pattern!r}: the directory {part} holds no {fmt} files")
            files += found
        elif glob.has_magic(part):
            matched = sorted(glob.glob(part))
            if not matched:
                raise ConfigError(f"data.sources path={pattern!r}: {part!r} matches no file")
            files += matched
        elif os.path.isfile(part):
            files.append(part)
        else:
            raise ConfigError(f"data.sources path={pattern!r}: no such file {part}")
    return files


class StreamSource:
    """A :class:`StreamSourceConfig` opened: its ``datasets.IterableDataset`` (images left undecoded), its shards,
    its columns, and the rows in each shard.

    Args:
        config: the source.
        cache_dir: where the row counts are cached; None = not cached.
    """

    def __init__(self, config: StreamSourceConfig, cache_dir: str | Path | None = None) -> None:
        self.config = config
        self.cache_dir = cache_dir

    def __getstate__(self) -> dict[str, Any]:  # workers reopen the dataset instead of pickling readers
        state = dict(self.__dict__)
        state.pop("dataset", None)
        return state

    @cached_property
    def files(self) -> list[str]:
        if self.config.format in _EXTENSIONS:
            return expand_paths(self.config.path, self.config.format)
        return []

    @property
    def base_dir(self) -> Path:
        """What relative image paths in the rows are relative to: the directory of the source's (first) file."""
        return Path(self.files[0]).parent if self.files else Path(os.path.expanduser(self.config.path))

    @cached_property
    def dataset(self) -> Any:
        """The source as a ``datasets.IterableDataset`` with decoding off (images stay bytes or paths)."""
        try:
            dataset = self._open()
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001  (datasets raises many kinds; one line names the source)
            raise ConfigError(f"data.sources {self.config.format} {self.config.path!r}: cannot be read: {err}") from err
        return dataset.decode(False)

    def _open(self) -> Any:
        import datasets

        cfg = self.config
        if cfg.format in _EXTENSIONS:
            return datasets.load_dataset(cfg.format, data_files={"train": self.files}, split="train", streaming=True)
        if cfg.format == "imagefolder":
            return datasets.load_dataset(
                "imagefolder", data_dir=os.path.expanduser(cfg.path), split=cfg.split, streaming=True
            )
        if cfg.format == "arrow":
            table = datasets.load_from_disk(os.path.expanduser(cfg.path))
            if isinstance(table, datasets.DatasetDict):
                if cfg.split not in table:
                    raise ConfigError(
                        f"data.sources path={cfg.path!r} has no split {cfg.split!r} (it has {sorted(table)})"
                    )
                table = table[cfg.split]
            return table.to_iterable_dataset(num_shards=self._table_shards(len(table)))
        # hub
        if datasets.config.HF_HUB_OFFLINE:  # streaming reads the Hub; offline, the cached copy is read instead
            table = datasets.load_dataset(cfg.path, cfg.name, split=cfg.split)
            return table.to_iterable_dataset(num_shards=self._table_shards(len(table)))
        return datasets.load_dataset(cfg.path, cfg.name, split=cfg.split, streaming=True)

    def _table_shards(self, rows: int) -> int:
        return max(1, min(self.config.num_shards or 16, rows))

    @property
    def num_shards(self) -> int:
        return int(self.dataset.num_shards)

    def shard(self, index: int) -> Any:
        """Shard ``index`` alone, as an IterableDataset."""
        return self.dataset.shard(num_shards=self.num_shards, index=index, contiguous=True)

    @cached_property
    def columns(self) -> dict[str, str]:
        """Role -> column of this source (``image`` and ``text`` always; ``label`` and ``key`` where found)."""
        features = self.dataset.features
        names = list(features) if features is not None else list(self._first_row())
        row = None if features is not None else self._first_row()
        resolved: dict[str, str] = {}
        for role, candidates in _DEFAULT_COLUMNS.items():
            chosen = self.config.columns.get(role)
            if chosen is not None:
                if chosen.split(".")[0] not in names:
                    raise ConfigError(
                        f"data.sources columns.{role}={chosen!r}: {self.config.path!r} has no such column "
                        f"(it has {names})"
                    )
                resolved[role] = chosen
                continue
            for candidate in candidates:
                head, _, rest = candidate.partition(".")
                if head in names and (not rest or self._has_field(head, rest, features, row)):
                    resolved[role] = candidate
                    break
        missing = [role for role in ("image", "text") if role not in resolved]
        if missing:
            raise ConfigError(
                f"data.sources {self.config.path!r}: no {missing[0]} column among {names}; name it with "
                f"columns: {{{missing[0]}: <column>}}"
            )
        return resolved

    def _has_field(self, head: str, name: str, features: Any, row: dict[str, Any] | None) -> bool:
        if features is not None:
            feature = features[head]
            return isinstance(feature, dict) and name in feature
        return row is not None and isinstance(row.get(head), dict) and name in row[head]

    def _first_row(self) -> dict[str, Any]:
        for row in self.dataset.iter(batch_size=1):
            return {name: values[0] for name, values in row.items()}
        raise ConfigError(f"data.sources {self.config.path!r} holds no rows")

    @cached_property
    def shard_rows(self) -> list[int]:
        """Rows in each shard, counted once and cached under ``cache_dir`` (keyed by the files' sizes and times)."""
        path = self._count_cache()
        if path is not None and path.is_file():
            return list(json.loads(path.read_text())["shard_rows"])
        key_column = self.columns.get("key") or self.columns["text"]
        counts = []
        for index in range(self.num_shards):
            shard = self.shard(index).select_columns([key_column.split(".")[0]])
            counts.append(sum(len(batch[key_column.split(".")[0]]) for batch in shard.iter(batch_size=1024)))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"shard_rows": counts, "source": asdict(self.config)}))
            tmp.replace(path)
        return counts

    def _count_cache(self) -> Path | None:
        if self.cache_dir is None or self.config.format == "hub":
            return None
        if self.files:
            stamps = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in self.files]
        else:
            root = Path(os.path.expanduser(self.config.path))
            stamps = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()]
        payload = json.dumps([_COUNT_VERSION, asdict(self.config), stamps], sort_keys=True, default=str)
        return Path(self.cache_dir) / "stream_counts" / f"{hashlib.sha256(payload.encode()).hexdigest()[:24]}.json"

    def rows(self, shards: Sequence[int]) -> Iterator[dict[str, Any]]:
        """The undecoded rows of ``shards``, in that order, each with ``__shard__`` (its shard index)."""
        for index in shards:
            for batch in self.shard(index).iter(batch_size=64):
                columns = list(batch)
                for i in range(len(batch[columns[0]])):
                    row = {name: batch[name][i] for name in columns}
                    row["__shard__"] = index
                    yield row


@dataclass(frozen=True)
class EpochPlan:
    """What one rank reads in one epoch.

    Attributes:
        shards: per source, the shards this rank reads, in order.
        stride: per source, ``(world, rank)`` when every ``world``-th example is taken (the ``examples``
            strategy), else None (the rank's shards are its own).
        take: per source, rows used this epoch (the same on every rank and every epoch).
        order: the source of each position of the rank's stream (int8, length ``sum(take)``).
    """

    shards: list[list[int]]
    stride: list[tuple[int, int] | None]
    take: list[int]
    order: np.ndarray


def rows_per_rank(shard_rows: Sequence[int], world: int) -> tuple[int, str]:
    """Rows every rank can count on from one source each epoch, and the strategy: ``shards`` (the shard count is
    a multiple of ``world``: the fewest rows any ``n / world`` shards hold) or ``examples`` (``total // world``).

    Example:
        >>> rows_per_rank([10, 10, 10, 7], 2)
        (17, 'shards')
        >>> rows_per_rank([10, 10, 7], 2)
        (13, 'examples')
    """
    n = len(shard_rows)
    if n >= world and n % world == 0:
        return int(sum(sorted(shard_rows)[: n // world])), "shards"
    return int(sum(shard_rows)) // world, "examples"


def mix_counts(available: Sequence[int], weights: Sequence[float]) -> list[int]:
    """Rows of each source per epoch: proportional to ``weights``, as many as the scarcest source (relative to its
    weight) allows.

    Example:
        >>> mix_counts([100, 100], [1, 1])
        [100, 100]
        >>> mix_counts([100, 30], [0.5, 0.5])
        [30, 30]
        >>> mix_counts([100, 1000], [0.8, 0.2])
        [100, 25]
    """
    share = np.asarray(weights, dtype=np.float64) / float(sum(weights))
    if len(available) == 1:
        return [int(available[0])]
    total = min(a / s for a, s in zip(available, share))
    return [min(int(a), int(np.floor(total * s + 1e-9))) for a, s in zip(available, share)]


def plan_epoch(shard_rows: Sequence[Sequence[int]], weights: Sequence[float], seed: int, epoch: int, world: int,
               rank: int, shuffle: bool = True) -> EpochPlan:  # fmt: skip
    """The (seed, epoch)-determined plan of ``rank``: each source's shards permuted and dealt, the rows taken of
    each, and the seeded order of sources in the rank's stream."""
    shards: list[list[int]] = []
    stride: list[tuple[int, int] | None] = []
    available: list[int] = []
    for s, rows in enumerate(shard_rows):
        per_rank, strategy = rows_per_rank(rows, world)
        order = list(range(len(rows)))
        if shuffle:
            order = [
                int(i) for i in np.random.default_rng(sample_seed("shards", seed, epoch, s)).permutation(len(rows))
            ]
        if strategy == "shards":
            shards.append(order[rank::world])
            stride.append(None)
        else:
            shards.append(order)
            stride.append((world, rank))
        available.append(per_rank)
    take = mix_counts(available, weights)
    sources = np.repeat(np.arange(len(take), dtype=np.int8), take)
    if shuffle and len(take) > 1:
        sources = np.random.default_rng(sample_seed("mix", seed, epoch, rank)).permutation(sources)
    return EpochPlan(shards, stride, take, sources)


class _NamedBytes(io.BytesIO):
    """Image bytes that print as where they came from, so decoding errors name the shard and key."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label


class StreamDataset(IterableDataset):
    """The batches of one rank's epoch, built in data-loader workers: rows in the :func:`plan_epoch` order, images
    decoded (and augmented, seeded by (seed, epoch, key)) only for the batches this worker builds.

    Each item is a list of rows (what :class:`~mmfuse.data.collate.ImageTextCollator` takes); use it with
    ``DataLoader(batch_size=None)``. Set :attr:`epoch` and :attr:`start_batch` before each iteration.

    Args:
        sources: the sources (mixed when several).
        split: the split's name, for messages and reports.
        batch_size: rows per batch (per rank).
        image_size: side of the square images.
        seed: seed of the order and of the augmentation.
        world: number of ranks.
        rank: this rank.
        shuffle: permute shards, shuffle rows through a buffer, and mix in a random order; False = the sources'
            order, one after another (evaluation).
        buffer_size: rows held by the shuffle buffer of each source.
        drop_last: leave out the last, incomplete batch (training); False keeps it (evaluation).
        transform: the image transform (random ones are seeded per row); None = resize + centre crop.
        max_pixels: most pixels an image may have.
        skip_bad: skip a bad row (counted in ``bad_records_load.jsonl``) instead of raising.
        report_dir: where skipped rows are reported; None = logged only.
    """

    def __init__(
        self,
        sources: Sequence[StreamSource],
        split: str,
        batch_size: int,
        image_size: int,
        seed: int = 0,
        world: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        buffer_size: int = 1000,
        drop_last: bool = True,
        transform: ImageTransform | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        skip_bad: bool = False,
        report_dir: str | Path | None = None,
    ) -> None:
        if batch_size <= 0 or buffer_size < 0:
            raise ConfigError(
                f"data.batch_size={batch_size} and data.buffer_size={buffer_size}: positive (buffer >= 0)"
            )
        if not 0 <= rank < world:
            raise ConfigError(f"rank {rank} is outside a world of {world} processes")
        self.sources = list(sources)
        self.split = split
        self.batch_size = batch_size
        self.image_size = image_size
        self.seed = seed
        self.world = world
        self.rank = rank
        self.shuffle = shuffle
        self.buffer_size = buffer_size
        self.drop_last = drop_last
        self.transform = transform
        self.max_pixels = max_pixels
        self.skip_bad = skip_bad
        self.report_dir = report_dir
        self.epoch = 0
        self.start_batch = 0

    def plan(self, epoch: int | None = None, rank: int | None = None) -> EpochPlan:
        """This rank's plan (or ``rank``'s) for ``epoch`` (default: :attr:`epoch`)."""
        return plan_epoch(
            [source.shard_rows for source in self.sources], [source.config.weight for source in self.sources],
            self.seed, self.epoch if epoch is None else epoch, self.world, self.rank if rank is None else rank,
            self.shuffle,
        )  # fmt: skip

    @property
    def rows_per_epoch(self) -> int:
        """Rows each rank's stream holds per epoch (the same on every rank and epoch)."""
        return len(self.plan(0).order)

    def __len__(self) -> int:
        rows = self.rows_per_epoch
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def source_counts(self) -> dict[str, int]:
        """Rows of each source one epoch uses on all ranks together."""
        used = len(self) * self.batch_size if self.drop_last else self.rows_per_epoch
        counts = np.bincount(self.plan(0).order[:used], minlength=len(self.sources)) * self.world
        return {source.config.display_name: int(n) for source, n in zip(self.sources, counts)}

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = self.plan()
        streams = [self._source_stream(s, plan) for s in range(len(self.sources))]
        num_batches, size = len(self), self.batch_size
        batch: list[dict[str, Any]] = []
        for position, s in enumerate(plan.order):
            row = next(streams[s], None)
            if row is None:
                raise ConfigError(
                    f"data.sources {self.sources[s].config.path!r} holds fewer rows than were counted: it changed "
                    "after the count; clear its entry in <cache_dir>/stream_counts"
                )
            b = position // size
            if b >= num_batches:
                break
            if b < self.start_batch or (b - self.start_batch) % workers != worker:
                continue
            item = self._item(s, row, position)
            if item is not None:
                batch.append(item)
            if position % size == size - 1 or position == len(plan.order) - 1:
                yield batch
                batch = []

    def _source_stream(self, s: int, plan: EpochPlan) -> Iterator[dict[str, Any]]:
        source = self.sources[s]
        rows = source.rows(plan.shards[s])
        stride = plan.stride[s]
        if stride is not None:
            world, rank = stride
            rows = (row for i, row in enumerate(rows) if i % world == rank)
        if self.shuffle and self.buffer_size > 1:
            rows = _buffer_shuffle(
                rows, self.buffer_size, sample_seed("buffer", self.seed, self.epoch, f"{s}/{self.rank}")
            )
        return rows

    def _item(self, s: int, row: dict[str, Any], position: int) -> dict[str, Any] | None:
        source = self.sources[s]
        columns = source.columns
        key = str(_field(row, columns["key"])) if "key" in columns else f"{row['__shard__']}/{position}"
        where = f"{source.config.display_name} shard {row['__shard__']} key {key}"
        try:
            text = _field(row, columns["text"])
            if text is None or not str(text).strip():
                raise BadImageError(f"{where}: no caption in column {columns['text']!r}", "missing_text")
            image = self._image(_field(row, columns["image"]), where, key, source.base_dir)
        except BadImageError as err:
            record = BadRecord(self.split, position, key, where, where, err.reason, str(err), stage="load")
            if not self.skip_bad:
                raise BadRecordError.from_records([record]) from err
            log.warning("skipping a bad row: %s", record.describe())
            if self.report_dir is not None:
                append_load_time_record(self.report_dir, record)
            return None
        label = _field(row, columns["label"]) if "label" in columns else None
        image_id = f"{source.config.display_name}/{key}"
        return {"image": image, "text": str(text), "label": -1 if label is None else int(label), "image_id": image_id,
                "index": position}  # fmt: skip

    def _image(self, value: Any, where: str, key: str, base_dir: Path) -> Any:
        if isinstance(value, dict):  # datasets' Image feature, undecoded: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            file: Any = _NamedBytes(bytes(value), where)
        elif isinstance(value, str) and value:
            file = base_dir / os.path.expanduser(value)  # a relative path: relative to the source's files
        else:
            raise BadImageError(f"{where}: no image ({type(value).__name__})", "missing_file")
        if self.transform is None:
            return decode_image(file, self.image_size, self.max_pixels)
        image = decode_image(file, None, self.max_pixels, draft_side=self.transform.decode_side)
        if not self.transform.is_random:
            return self.transform(image)
        with seeded(sample_seed("augment", self.seed, self.epoch, key)):
            return self.transform(image)


def _field(row: dict[str, Any], column: str) -> Any:
    """``row[column]``; a dotted name reads into a dict column (``json.label``), None when absent."""
    head, _, rest = column.partition(".")
    value = row.get(head)
    for part in rest.split(".") if rest else ():
        if isinstance(value, str):  # a JSON column kept as text
            value = json.loads(value)
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _buffer_shuffle(rows: Iterator[dict[str, Any]], size: int, seed: int) -> Iterator[dict[str, Any]]:
    """A seeded shuffle buffer: fill ``size`` rows, then emit a random one for each row read; drain shuffled."""
    rng = np.random.default_rng(seed)
    buffer: list[dict[str, Any]] = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        i = int(rng.integers(size))
        buffer[i], row = row, buffer[i]
        yield row
    for i in rng.permutation(len(buffer)):
        yield buffer[int(i)]
