"""The lazily decoding dataset and the collator wrapper that leaves out skipped rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mmfuse.data.bad_records import LOAD_REPORT_FILE, BadRecordError
from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.image_text import ImageTextDataset, SkipBadCollator
from mmfuse.data.tokenizer import train_word_tokenizer
from tests.data._make import rgb_image


def _manifest(tmp_path: Path) -> object:
    from datasets import Dataset

    rows = []
    for i, exists in enumerate([True, False, True]):
        path = tmp_path / f"{i}.png"
        if exists:
            rgb_image(path, (12, 6))
        rows.append({"image_path": str(path), "image_id": str(i), "text": f"text {i}", "label": i, "record_id": str(i),
                     "source": "x.jsonl", "source_index": i})  # fmt: skip
    return Dataset.from_list(rows)


def test_rows_are_decoded_at_the_configured_size(tmp_path: Path) -> None:
    dataset = ImageTextDataset(_manifest(tmp_path), "train", image_size=4)
    row = dataset[0]
    assert row is not None and isinstance(row["image"], Image.Image) and row["image"].size == (4, 4)
    assert row["text"] == "text 0" and row["label"] == 0 and row["image_id"] == "0"
    with pytest.raises(BadRecordError, match=r"train record 1 \(id '1'\) of x.jsonl: missing_file: .*1\.png"):
        dataset[1]


def test_skipped_rows_leave_the_batch_and_are_reported(tmp_path: Path) -> None:
    dataset = ImageTextDataset(_manifest(tmp_path), "train", image_size=4, skip_bad=True, report_dir=tmp_path / "run")
    collate = SkipBadCollator(ImageTextCollator(train_word_tokenizer(["text 0", "text 2"])))
    batch = collate([dataset[i] for i in range(3)])
    assert len(batch) == 2 and batch.labels is not None and batch.labels.tolist() == [0, 2]
    assert dataset[1] is None  # reported once per process
    assert len((tmp_path / "run" / LOAD_REPORT_FILE).read_text().splitlines()) == 1
    with pytest.raises(BadRecordError, match="all 1 records of a batch"):
        collate([None])
