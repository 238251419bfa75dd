"""Reading a data module's splits: columns of a ``datasets.Dataset`` or records of any indexable rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from datasets import DatasetDict, load_from_disk

from mmfuse.audit.source import ShuffledPairs, splits_of
from mmfuse.data.shapes import prepare_shapes_world
from mmfuse.errors import ConfigError
from tests.conftest import TINY_WORLD


@pytest.fixture(scope="module")
def shapes(cache_dir: Path) -> DatasetDict:
    world = dataclasses.replace(TINY_WORLD, label_noise=0.2, num_train=20, num_val=20, num_test=4)
    splits = load_from_disk(str(prepare_shapes_world(world, cache_dir)))
    return DatasetDict({"train": splits["train"], "val": splits["val"]})


def test_dataset_columns_and_planted_noise_are_read(shapes: DatasetDict) -> None:
    splits = splits_of(SimpleNamespace(splits=shapes))
    train = splits["train"]
    assert list(splits) == ["train", "val"] and len(train) == 20
    assert train.labels.tolist() == shapes["train"]["label"] and train.texts == shapes["train"]["text"]
    assert train.is_noisy is not None and train.is_noisy.tolist() == shapes["train"]["is_noisy"]
    assert set(train.rows[0]) == {"image", "text", "label"}  # only what the model reads is decoded
    images = list(train.images())
    assert len(images) == 20 and images[3].size == (TINY_WORLD.image_size,) * 2


def test_plain_records_and_a_chosen_split(shapes: DatasetDict) -> None:
    records = [shapes["val"][i] for i in range(5)]
    splits = splits_of(SimpleNamespace(datasets={"val": records, "test": records}), ["val"])
    assert list(splits) == ["val"] and splits["val"].is_noisy is None and splits["val"].texts[2] == records[2]["text"]


def test_shuffled_pairs_take_the_image_of_one_example_and_the_text_of_another(shapes: DatasetDict) -> None:
    split = splits_of(SimpleNamespace(splits=shapes))["train"]
    pairs = ShuffledPairs(split, np.array([0, 5]), np.array([5, 0]))
    assert len(pairs) == 2 and pairs[0]["text"] == split.texts[5] and pairs[1]["text"] == split.texts[0]
    assert pairs[0]["image"].tobytes() == split.rows[0]["image"].tobytes() and pairs[0]["label"] == 0


def test_unknown_splits_and_data_modules_without_splits_are_refused(shapes: DatasetDict) -> None:
    with pytest.raises(ConfigError, match=r"split\(s\) \['dev'\] not in the data; it has \['train', 'val'\]"):
        splits_of(SimpleNamespace(splits=shapes), ["dev"])
    with pytest.raises(ConfigError, match="exposes no split mapping"):
        splits_of(SimpleNamespace())
    with pytest.raises(ConfigError, match="has no column"):
        splits_of(SimpleNamespace(splits={"train": shapes["train"].remove_columns(["text"])}))
