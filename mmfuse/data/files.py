"""LightningDataModule for image-text data on disk: COCO captions, VQA v2, JSONL classification, captions CSV,
image folders (see :mod:`mmfuse.data.formats`).

The manifest is prepared once and cached (:mod:`mmfuse.data.manifest`); images are decoded lazily by
:class:`~mmfuse.data.image_text.ImageTextDataset` and collated by the same
:class:`~mmfuse.data.collate.ImageTextCollator` as the shapes world, into :class:`~mmfuse.types.Batch`.

Splits: the source's own (COCO train/val files, VQA subtypes, JSONL/metadata files per split), otherwise a
deterministic split by image (``source.split_sizes``). Validation uses ``val`` (none when absent); testing uses
``test``, else ``val`` (COCO and VQA test answers are not public).

Images (:mod:`mmfuse.data.transforms`): evaluation splits get the vision encoder's resize + crop (``preprocess``,
filled by the command line from ``model.vision``); training gets random augmentation (``augment``), seeded per
(seed, epoch, index) through the loader's :class:`~mmfuse.data.loader.SampleKey` s, or without it the plain resize +
centre crop. ``captions_per_epoch: one`` trains on one caption per image per epoch.

NOTE: this file imports Lightning, like ``data/datamodule.py`` whose base class it extends; it is therefore not
exported from ``mmfuse.data`` (which must import without Lightning).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from mmfuse.data.bad_records import (
    LOAD_REPORT_FILE,
    REPORT_FILE,
    BadRecordError,
    read_bad_record_report,
    write_bad_record_report,
)
from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.datamodule import ResumableDataModule
from mmfuse.data.formats import FileSourceConfig
from mmfuse.data.image_text import ImageTextDataset, OneCaptionPerImage, SkipBadCollator
from mmfuse.data.loader import ResumableDataLoader
from mmfuse.data.manifest import Manifest, load_manifest, prepare_manifest
from mmfuse.data.tokenizer import load_tokenizer, train_word_tokenizer
from mmfuse.data.transforms import (
    AugmentConfig,
    ImageTransform,
    PreprocessConfig,
    build_eval_transform,
    build_train_transform,
)
from mmfuse.errors import ConfigError
from mmfuse.types import DataSpec

__all__ = ["ImageTextDataModule"]

log = logging.getLogger(__name__)


class ImageTextDataModule(ResumableDataModule):
    """Serves image-text data on disk as typed batches.

    Args:
        source: where the data is and how to read it; its fields key the prepared manifest.
        image_size: side of the square images the loaders yield. Take it from the vision encoder
            (``preprocess_cfg["size"]``, see :func:`mmfuse.data.images.image_size_from`); it is written into
            ``spec``, which an encoder without its own ``img_size`` follows.
        batch_size: examples per batch (per process).
        num_workers: data-loader worker processes.
        skip_bad: skip bad records (listed in ``bad_records.json`` in ``report_dir``) instead of failing on them.
        tokenizer: a tokenizer directory (``save_pretrained`` layout; ``~`` is expanded) or Hugging Face hub id, e.g.
            the pretrained text encoder's own (the command line's default when ``model.text.pretrained`` is set);
            None trains a word-level tokenizer on the training texts.
        max_length: truncation length of texts, in tokens.
        cache_dir: where prepared manifests live; None = ``$MMFUSE_CACHE`` or ``~/.cache/mmfuse``.
        report_dir: where bad-record reports go; None = the run directory (``trainer.log_dir``) when there is
            one, else the manifest's directory.
        val_split: split used for validation; None = ``val`` if present, else no validation.
        test_split: split used by ``test``/``predict``; None = ``test`` if present, else ``val``.
        seed: seed of the shuffling order and of the augmentation; None = the run's ``seed_everything`` value.
        preprocess: the vision encoder's resize + crop for evaluation (interpolation, ``crop_pct``, ``crop_mode``,
            mean/std; the command line fills it from ``model.vision`` when unset); None = resize the shorter side to
            ``image_size`` (bicubic) and centre-crop, as training without ``augment`` does.
        augment: random training augmentation (timm's); None = none (resize + centre crop).
        captions_per_epoch: ``all`` trains on every row; ``one`` on one row per image per epoch (e.g. one of its
            captions), chosen from (seed, epoch, image). Evaluation always uses every row.
    """

    def __init__(
        self,
        source: FileSourceConfig,
        image_size: int,
        batch_size: int = 32,
        num_workers: int = 0,
        skip_bad: bool = False,
        tokenizer: str | None = None,
        max_length: int = 64,
        cache_dir: str | None = None,
        report_dir: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
        seed: int | None = None,
        preprocess: PreprocessConfig | None = None,
        augment: AugmentConfig | None = None,
        captions_per_epoch: Literal["all", "one"] = "all",
    ) -> None:
        super().__init__()
        if image_size <= 0 or batch_size <= 0:
            raise ConfigError(f"data.image_size={image_size} and data.batch_size={batch_size} must be positive")
        if captions_per_epoch not in ("all", "one"):
            raise ConfigError(f"data.captions_per_epoch={captions_per_epoch!r}: 'all' or 'one'")
        self.source = source
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.skip_bad = skip_bad
        self.tokenizer_path = tokenizer
        self.max_length = max_length
        self.cache_dir = cache_dir
        self.report_dir = report_dir
        self.val_split = val_split
        self.test_split = test_split
        self.seed = seed
        self.preprocess = preprocess
        self.augment = augment
        self.captions_per_epoch = captions_per_epoch
        # Built here, so that a value timm refuses fails at once (a ConfigError naming it).
        self.eval_transform = build_eval_transform(image_size, preprocess) if preprocess is not None else None
        self.train_transform = build_train_transform(image_size, augment, preprocess) if augment is not None else None
        self.datasets: dict[str, ImageTextDataset] | None = None

    @cached_property
    def manifest(self) -> Manifest:
        """The prepared manifest (prepared here if ``prepare_data`` has not run yet; cached on disk either way)."""
        return load_manifest(prepare_manifest(self.source, self.cache_dir))

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The configured tokenizer, or a word-level one trained on the training split's texts."""
        if self.tokenizer_path is None:
            train = self.manifest.dataset(self._split("train"))
            return train_word_tokenizer(text for batch in train.iter(batch_size=8192) for text in batch["text"])
        return load_tokenizer(self.tokenizer_path, "data.tokenizer")

    @property
    def spec(self) -> DataSpec:
        """Classes (labels, or the VQA answer vocabulary with ``<unk>`` at 0; none for captions), vocabulary, size."""
        names = self.manifest.class_names
        return DataSpec(
            num_classes=len(names),
            vocab_size=len(self.tokenizer),
            pad_token_id=int(self.tokenizer.pad_token_id),
            image_size=self.image_size,
            class_names=names,
            tokenizer=self.tokenizer_path,
        )

    def prepare_data(self) -> None:
        prepare_manifest(self.source, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Refuse (or, with ``skip_bad``, report) the records found bad at prepare time; build the split datasets."""
        if self.datasets is not None:
            return
        manifest = self.manifest
        bad = manifest.bad_records() if manifest.num_bad_records else []
        if bad and not self.skip_bad:
            raise BadRecordError.from_records(bad, manifest.path / REPORT_FILE)
        report_dir = self._report_dir()
        if bad and self._is_global_zero():
            path = write_bad_record_report(report_dir, bad)
            counts = dict(Counter(r.reason for r in bad))
            log.warning("skipped %d bad records %s; listed in %s", len(bad), counts, path)
        self.datasets = {split: self._split_dataset(split, self.eval_transform) for split in manifest.splits}

    def teardown(self, stage: str | None = None) -> None:
        """Fold the load-time findings (``bad_records_load.jsonl``) into the run's ``bad_records.json``."""
        if self.datasets is None:
            return
        report_dir = self._report_dir()
        if self._is_global_zero() and (report_dir / LOAD_REPORT_FILE).is_file():
            write_bad_record_report(report_dir, read_bad_record_report(report_dir))

    def fingerprint(self) -> str:
        """A sha256 of what the splits hold (the manifest's key, rows and content hashes) and the image size."""
        manifest = self.manifest
        payload = {"manifest": manifest.key, "splits": manifest.splits, "image_size": self.image_size}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled each epoch from (seed, epoch); its position is saved in checkpoints for exact resume. Its keys
        carry (index, epoch, seed), from which the augmentation and the caption of each image are drawn."""
        self.setup()
        rows = self._split_dataset(self._split("train"), self.train_transform)
        train = OneCaptionPerImage(rows) if self.captions_per_epoch == "one" else rows
        return self._resumable_loader(train, self.batch_size, self.seed, sample_keys=True, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        split = self.val_split or ("val" if "val" in self.manifest.splits else None)
        return self._eval_loader(split) if split is not None else []

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self._test_split())

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self._test_split())

    def _test_split(self) -> str:
        if self.test_split is not None:
            return self._split(self.test_split)
        return "test" if "test" in self.manifest.splits else self._split("val")

    def _split(self, name: str) -> str:
        if name not in self.manifest.splits:
            raise ConfigError(
                f"the data has no {name!r} split (it has {sorted(self.manifest.splits)}); choose another with "
                "data.val_split / data.test_split, or split by image with data.source.resplit: true"
            )
        return name

    def _split_dataset(self, split: str, transform: ImageTransform | None) -> ImageTextDataset:
        manifest, max_pixels = self.manifest.dataset(split), self.source.max_pixels
        return ImageTextDataset(
            manifest, split, self.image_size, max_pixels, self.skip_bad, self._report_dir(), transform
        )

    def _dataset(self, split: str) -> ImageTextDataset:
        self.setup()
        assert self.datasets is not None
        return self.datasets[split]

    def _eval_loader(self, split: str) -> DataLoader:
        # Its own generator: starting an evaluation must not draw from the global RNG that training uses.
        generator = torch.Generator().manual_seed(0)
        dataset = self._dataset(self._split(split))
        return DataLoader(dataset, batch_size=self.batch_size, generator=generator, **self._loader_kwargs())

    def _loader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "collate_fn": SkipBadCollator(
                ImageTextCollator(self.tokenizer, self.max_length, num_classes=len(self.manifest.class_names))
            ),
        }

    def _report_dir(self) -> Path:
        if self.report_dir is not None:
            return Path(self.report_dir)
        log_dir = getattr(self.trainer, "log_dir", None) if self.trainer is not None else None
        return Path(log_dir) if log_dir else self.manifest.path

    def _is_global_zero(self) -> bool:
        return self.trainer is None or bool(self.trainer.is_global_zero)
