"""LightningDataModule over streamed sources (:mod:`mmfuse.data.streaming`): WebDataset shards, Parquet / JSON /
CSV files, ``save_to_disk`` directories, ``imagefolder`` and Hub datasets, one or several mixed by weight.

Training is exactly resumable: the loader's position (epoch, batches handed out) is saved in every checkpoint, and
the stream is a function of (seed, epoch), so ``--ckpt_path last`` continues after the last batch of the checkpoint,
on any number of ranks and workers (see :class:`StreamLoader`).

NOTE: this file imports Lightning (through its base class), so it is not exported from ``mmfuse.data``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from mmfuse.data.bad_records import LOAD_REPORT_FILE, read_bad_record_report, write_bad_record_report
from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.datamodule import ResumableDataModule
from mmfuse.data.image_text import SkipBadCollator
from mmfuse.data.images import DEFAULT_MAX_PIXELS
from mmfuse.data.loader import check_same_order
from mmfuse.data.shapes import default_cache_dir
from mmfuse.data.streaming import StreamDataset, StreamSource, StreamSourceConfig
from mmfuse.data.tokenizer import load_tokenizer, train_word_tokenizer
from mmfuse.data.transforms import AugmentConfig, PreprocessConfig, build_eval_transform, build_train_transform
from mmfuse.errors import ConfigError
from mmfuse.types import DataSpec

__all__ = ["StreamingDataModule", "StreamLoader"]

log = logging.getLogger(__name__)
# Lightning warns that an IterableDataset's __len__ may be inaccurate with several workers; a stream's is exact (every
# worker builds its own batches of one shared plan).
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")

_TOKENIZER_TEXTS = 10_000  # texts a word-level tokenizer is trained on, from the start of the training sources


class StreamLoader(DataLoader):
    """A DataLoader over a :class:`~mmfuse.data.streaming.StreamDataset` that records how many batches of the
    epoch it handed out, and starts the next iteration after them when restored from a checkpoint.

    Args:
        dataset: the rank's stream.
        epoch_of: returns the current epoch (the trainer's); None = count full passes.
        **kwargs: other ``DataLoader`` arguments (``num_workers``, ``collate_fn``...); workers are started anew
            every epoch, since each reads that epoch's plan.
    """

    def __init__(self, dataset: StreamDataset, epoch_of: Callable[[], int] | None = None, **kwargs: Any) -> None:
        # Its own generator: starting the workers must not draw from the global RNG that dropout uses.
        super().__init__(dataset, batch_size=None, persistent_workers=False, generator=torch.Generator(), **kwargs)
        self.stream = dataset
        self.epoch_of = epoch_of
        self.epoch = 0
        self.batches_done = 0
        self._skip = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        if self.epoch_of is not None:
            self.epoch = int(self.epoch_of())
        self.stream.epoch, self.stream.start_batch = self.epoch, self._skip
        assert self.generator is not None
        self.generator.manual_seed(self.stream.seed * 100_003 + self.epoch)  # worker seeds: from (seed, epoch)
        self.batches_done, self._skip = self._skip, 0
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch
        if self.epoch_of is None:
            self.epoch += 1

    def state_dict(self) -> dict[str, int]:
        """Position in the epoch: epoch, batches handed out, and the settings that must match on resume."""
        return {
            "epoch": int(self.epoch),
            "batches_done": int(self.batches_done),
            "batch_size": int(self.stream.batch_size),
            "num_replicas": int(self.stream.world),
            "seed": int(self.stream.seed),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after the recorded batch on the next iteration; a finished epoch starts the next one fresh."""
        check_same_order(state, self.state_dict())
        self.epoch = int(state["epoch"])
        self._skip = state["batches_done"] if state["batches_done"] < len(self) else 0


class StreamingDataModule(ResumableDataModule):
    """Serves streamed image-text sources as typed batches, mixed by weight, exactly resumable.

    Args:
        sources: the training sources; several are mixed in proportion to their ``weight``.
        image_size: side of the square images (take it from the vision encoder).
        batch_size: examples per batch (per process).
        num_workers: data-loader worker processes (per process); each builds every ``num_workers``-th batch.
        val_sources: the validation sources, read in order; None = no validation.
        test_sources: the sources of ``test`` / ``predict``; None = the validation sources.
        class_names: label names, index-aligned (a classification task); None = none (retrieval), or the names of
            the first training source's ``ClassLabel`` label column.
        tokenizer: a tokenizer directory or Hub id (the command line's default: the pretrained text encoder's); None
            trains a word-level tokenizer on the first 10,000 training texts.
        max_length: truncation length of texts, in tokens.
        buffer_size: rows in the shuffle buffer of each source (per process and worker).
        skip_bad: skip rows whose image does not decode or whose caption is missing (counted and listed in the
            run's ``bad_records.json``) instead of failing on them.
        max_pixels: most pixels an image may have; None = no limit of ours.
        cache_dir: where the sources' row counts are cached; None = ``$MMFUSE_CACHE`` or ``~/.cache/mmfuse``.
        report_dir: where bad-row reports go; None = the run directory.
        seed: seed of the order, the mixing and the augmentation; None = the run's ``seed_everything`` value.
        preprocess: the vision encoder's evaluation resize + crop (filled from ``model.vision`` when unset).
        augment: random training augmentation (timm's); None = resize + centre crop.
    """

    indexable = False  # rows come as a stream: the tools that index rows (explain, audit, probe) refuse it

    def __init__(
        self,
        sources: list[StreamSourceConfig],
        image_size: int,
        batch_size: int = 32,
        num_workers: int = 0,
        val_sources: list[StreamSourceConfig] | None = None,
        test_sources: list[StreamSourceConfig] | None = None,
        class_names: list[str] | None = None,
        tokenizer: str | None = None,
        max_length: int = 64,
        buffer_size: int = 1000,
        skip_bad: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        cache_dir: str | None = None,
        report_dir: str | None = None,
        seed: int | None = None,
        preprocess: PreprocessConfig | None = None,
        augment: AugmentConfig | None = None,
    ) -> None:
        super().__init__()
        if not sources:
            raise ConfigError("data.sources is empty: name at least one source to train on")
        if image_size <= 0 or batch_size <= 0:
            raise ConfigError(f"data.image_size={image_size} and data.batch_size={batch_size} must be positive")
        self.source_configs = list(sources)
        self.val_configs = list(val_sources or [])
        self.test_configs = list(test_sources or []) or self.val_configs
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.class_names_arg = class_names
        self.tokenizer_path = tokenizer
        self.max_length = max_length
        self.buffer_size = buffer_size
        self.skip_bad = skip_bad
        self.max_pixels = max_pixels
        self.cache_dir = cache_dir
        self.report_dir = report_dir
        self.seed = seed
        self.eval_transform = build_eval_transform(image_size, preprocess) if preprocess is not None else None
        self.train_transform = build_train_transform(image_size, augment, preprocess) if augment is not None else None
        self.source_counts: dict[str, int] = {}

    @cached_property
    def sources(self) -> list[StreamSource]:
        return [StreamSource(c, self._cache_dir()) for c in self.source_configs]

    @cached_property
    def val_stream_sources(self) -> list[StreamSource]:
        return [StreamSource(c, self._cache_dir()) for c in self.val_configs]

    @cached_property
    def test_stream_sources(self) -> list[StreamSource]:
        return [StreamSource(c, self._cache_dir()) for c in self.test_configs]

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        if self.class_names_arg is not None:
            return tuple(self.class_names_arg)
        first = self.sources[0]
        label = first.columns.get("label")
        feature = first.dataset.features.get(label) if label and first.dataset.features is not None else None
        return tuple(getattr(feature, "names", None) or ())

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The configured tokenizer, or a word-level one trained on the first 10,000 training texts."""
        if self.tokenizer_path is not None:
            return load_tokenizer(self.tokenizer_path, "data.tokenizer")

        def texts() -> Iterator[str]:
            for source in self.sources:
                column = source.columns["text"]
                for row in source.rows(range(source.num_shards)):
                    if row.get(column):
                        yield str(row[column])

        return train_word_tokenizer(islice(texts(), _TOKENIZER_TEXTS))

    @property
    def spec(self) -> DataSpec:
        return DataSpec(
            num_classes=len(self.class_names),
            vocab_size=len(self.tokenizer),
            pad_token_id=int(self.tokenizer.pad_token_id),
            image_size=self.image_size,
            class_names=self.class_names,
            tokenizer=self.tokenizer_path,
        )

    def prepare_data(self) -> None:
        for source in (*self.sources, *self.val_stream_sources):
            source.shard_rows  # noqa: B018  (counted once, cached for every process)

    def fingerprint(self) -> str:
        """A sha256 of the sources (configs and rows per shard) and the image size."""
        payload = {
            "sources": [[repr(s.config), s.shard_rows] for s in (*self.sources, *self.val_stream_sources)],
            "image_size": self.image_size,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def train_dataloader(self) -> StreamLoader:
        """The rank's stream of this epoch; its position is saved in checkpoints for exact resume."""
        stream = self._stream(self.sources, "train", shuffle=True, transform=self.train_transform)
        self.source_counts = stream.source_counts()
        if self._is_global_zero():
            log.info("training rows per epoch by source (all ranks): %s", self.source_counts)
            self._write_counts(stream)
        trainer = self.trainer
        epoch_of = (lambda: trainer.current_epoch) if trainer is not None else None
        loader = StreamLoader(stream, epoch_of, **self._loader_kwargs())
        self._train_loader = loader  # type: ignore[assignment]
        if self._pending_state is not None:
            loader.load_state_dict(self._pending_state)
            self._pending_state = None
        return loader

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._eval_loader(self.val_stream_sources, "val") if self.val_configs else []

    def test_dataloader(self) -> DataLoader:
        if not self.test_configs:
            raise ConfigError("data.test_sources (or data.val_sources) is empty: name the sources to test on")
        return self._eval_loader(self.test_stream_sources, "test")

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def teardown(self, stage: str | None = None) -> None:
        """Fold the skipped rows (``bad_records_load.jsonl``) into the run's ``bad_records.json``."""
        report_dir = self._report_dir()
        if self._is_global_zero() and (report_dir / LOAD_REPORT_FILE).is_file():
            records = read_bad_record_report(report_dir)
            write_bad_record_report(report_dir, records)
            log.warning("skipped %d bad rows %s; listed in %s", len(records), dict(Counter(r.reason for r in records)),
                        report_dir / "bad_records.json")  # fmt: skip

    def _stream(self, sources: list[StreamSource], split: str, shuffle: bool, transform: Any) -> StreamDataset:
        trainer = self.trainer
        seed = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return StreamDataset(
            sources, split, self.batch_size, self.image_size, seed, world=world, rank=rank,
            shuffle=shuffle, buffer_size=self.buffer_size, drop_last=shuffle, transform=transform,
            max_pixels=self.max_pixels, skip_bad=self.skip_bad, report_dir=self._report_dir(),
        )  # fmt: skip

    def _eval_loader(self, sources: list[StreamSource], split: str) -> StreamLoader:
        return StreamLoader(
            self._stream(sources, split, shuffle=False, transform=self.eval_transform), **self._loader_kwargs()
        )

    def _loader_kwargs(self) -> dict[str, Any]:
        collator = ImageTextCollator(self.tokenizer, self.max_length)
        return {"num_workers": self.num_workers, "collate_fn": SkipBadCollator(collator)}

    def _write_counts(self, stream: StreamDataset) -> None:
        directory = Path(stream.report_dir or ".")
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"rows_per_epoch_by_source": self.source_counts, "batches_per_epoch": len(stream),
                   "world_size": stream.world, "batch_size": stream.batch_size}  # fmt: skip
        (directory / "data_sources.json").write_text(json.dumps(payload, indent=2) + "\n")

    def _cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def _report_dir(self) -> Path:
        """``report_dir``, else the run directory. Call it on every rank: ``trainer.log_dir`` is a collective."""
        if self.report_dir is not None:
            return Path(self.report_dir)
        log_dir = getattr(self.trainer, "log_dir", None) if self.trainer is not None else None
        return Path(log_dir) if log_dir else self._cache_dir() / "stream_reports"

    def _is_global_zero(self) -> bool:
        return self.trainer is None or bool(self.trainer.is_global_zero)
