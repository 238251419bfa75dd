"""A map-style dataset over one split of a prepared manifest; each image is decoded when its row is asked for.

Rows come out in the form :class:`~mmfuse.data.collate.ImageTextCollator` takes (an RGB PIL image already at the
encoder's size, or a transform's (3, H, W) float tensor in [0, 1]; the text and the label), so the collator that
serves the shapes world serves files unchanged; it turns the images into (B, 3, H, W) float in [0, 1].

A dataset is indexed by an int or by a :class:`~mmfuse.data.loader.SampleKey` (index, epoch, seed): a random
transform runs seeded from the key, and :class:`OneCaptionPerImage` picks an image's caption from it, so both are
functions of (seed, epoch, index) alone (the same in any worker and after a resume). An int is epoch 0, seed 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mmfuse.data.bad_records import BadRecord, BadRecordError, append_load_time_record
from mmfuse.data.images import DEFAULT_MAX_PIXELS, BadImageError, decode_image
from mmfuse.data.loader import SampleKey, sample_seed
from mmfuse.data.transforms import ImageTransform, seeded
from mmfuse.types import Batch

__all__ = ["ImageTextDataset", "OneCaptionPerImage", "SkipBadCollator"]

log = logging.getLogger(__name__)

_TARGET_COLUMNS = ("soft_target_indices", "soft_target_scores")  # VQA manifests only


class ImageTextDataset(Dataset):
    """One split of a manifest, images decoded lazily and checked again at load time.

    Args:
        manifest: the split as a (memory-mapped) ``datasets.Dataset`` with the manifest columns.
        split: the split's name, for messages.
        image_size: side of the square images (from the vision encoder's ``preprocess_cfg``).
        max_pixels: most pixels an image may have; None = no limit of ours.
        skip_bad: give None for a record whose image fails to load (reported) instead of raising.
        report_dir: where load-time bad records are appended (``bad_records_load.jsonl``); None = logged only.
        transform: turns the decoded image into an ``image_size`` square (e.g. the encoder's evaluation crop, or
            random augmentation, run seeded from the key); None = resize the shorter side and centre-crop.
    """

    def __init__(
        self,
        manifest: Any,
        split: str,
        image_size: int,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        skip_bad: bool = False,
        report_dir: str | Path | None = None,
        transform: ImageTransform | None = None,
    ) -> None:
        self.manifest = manifest
        self.split = split
        self.image_size = image_size
        self.max_pixels = max_pixels
        self.skip_bad = skip_bad
        self.report_dir = report_dir
        self.transform = transform
        self._reported: set[int] = set()  # per process: report a record once, not once per epoch

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any] | None:
        """``image`` (an ``image_size`` square: RGB PIL image, or a transform's (3, H, W) float tensor), ``text``,
        ``label``, ``image_id``, ``index`` and the VQA soft-target columns where the manifest has them; None when the
        record is bad and ``skip_bad`` is on.

        Raises:
            BadRecordError: the image fails to load and ``skip_bad`` is off.
        """
        key = key if isinstance(key, SampleKey) else SampleKey(int(key))
        index = key.index
        row = self.manifest[index]
        try:
            image = self._load(row["image_path"], key)
        except BadImageError as err:
            record = BadRecord(
                self.split, row["source_index"], row["record_id"], row["source"], row["image_path"], err.reason,
                str(err), stage="load",
            )  # fmt: skip
            if not self.skip_bad:
                raise BadRecordError.from_records([record]) from err
            self._report(index, record)
            return None
        item = {"image": image, "text": row["text"], "label": row["label"], "image_id": row["image_id"], "index": index}
        item.update({column: row[column] for column in _TARGET_COLUMNS if column in row})
        return item

    def _load(self, path: str, key: SampleKey) -> Any:
        if self.transform is None:
            return decode_image(path, self.image_size, self.max_pixels)
        image = decode_image(path, None, self.max_pixels, draft_side=self.transform.decode_side)
        if not self.transform.is_random:
            return self.transform(image)
        with seeded(sample_seed("augment", key.seed, key.epoch, key.index)):
            return self.transform(image)

    def _report(self, index: int, record: BadRecord) -> None:
        if index in self._reported:
            return
        self._reported.add(index)
        log.warning("skipping a bad record at load time: %s", record.describe())
        if self.report_dir is not None:
            append_load_time_record(self.report_dir, record)


class OneCaptionPerImage(Dataset):
    """A dataset over the images of a split (one item per ``image_id``, in order of first appearance) whose item is
    one of that image's rows, chosen from (seed, epoch, image_id): each epoch shows every image once, with one of its
    captions, and another caption next epoch.

    Args:
        dataset: the split, one row per caption.
    """

    def __init__(self, dataset: ImageTextDataset) -> None:
        self.dataset = dataset
        rows_of: dict[str, list[int]] = {}
        for row, image_id in enumerate(dataset.manifest["image_id"]):
            rows_of.setdefault(str(image_id), []).append(row)
        self.image_ids = list(rows_of)
        self.rows = list(rows_of.values())

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any] | None:
        """The row of image ``key.index`` chosen for ``key``'s (seed, epoch), as :class:`ImageTextDataset` gives it."""
        key = key if isinstance(key, SampleKey) else SampleKey(int(key))
        rows = self.rows[key.index]
        row = rows[sample_seed("caption", key.seed, key.epoch, self.image_ids[key.index]) % len(rows)]
        return self.dataset[SampleKey(row, key.epoch, key.seed)]


class SkipBadCollator:
    """Leaves out the rows a dataset skipped (None) before collating, so a load-time skip shrinks its batch.

    Args:
        collator: collates the remaining rows (e.g. :class:`~mmfuse.data.collate.ImageTextCollator`).
    """

    def __init__(self, collator: Callable[[Sequence[dict[str, Any]]], Batch]) -> None:
        self.collator = collator

    def __call__(self, rows: Sequence[dict[str, Any] | None]) -> Batch:
        """Collate the good rows into a :class:`~mmfuse.types.Batch` (images (B', 3, H, W), B' <= len(rows)).

        Raises:
            BadRecordError: every row of the batch was bad.
        """
        kept = [row for row in rows if row is not None]
        if not kept:
            raise BadRecordError(
                f"all {len(rows)} records of a batch failed to load (listed in bad_records_load.jsonl); the image "
                "files changed after the manifest was prepared: prepare it again (touch an annotation file)"
            )
        return self.collator(kept)
