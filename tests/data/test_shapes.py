"""The shapes world generator: determinism, knobs, ground-truth boxes."""

from __future__ import annotations

import dataclasses
import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mmfuse.data.shapes import (
    COLORS,
    PROTECTED_GROUPS,
    ShapesWorldConfig,
    answer_vocabulary,
    generate_split,
    prepare_shapes_world,
)
from mmfuse.errors import ConfigError
from tests.conftest import TINY_WORLD

WORLD = dataclasses.replace(TINY_WORLD, num_train=400)


def _image(record: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(record["bytes"])).convert("RGB"))


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b = generate_split(WORLD, "val", 20), generate_split(WORLD, "val", 20)
    assert a["text"] == b["text"] and [i["bytes"] for i in a["image"]] == [i["bytes"] for i in b["image"]]
    c = generate_split(dataclasses.replace(WORLD, seed=1), "val", 20)
    assert [i["bytes"] for i in a["image"]] != [i["bytes"] for i in c["image"]]


@pytest.mark.parametrize("task", ["attribute", "color", "shape", "exists", "relation"])
def test_labels_are_balanced_and_objects_are_distinct(task: str) -> None:
    cfg = dataclasses.replace(WORLD, task=task)
    data = generate_split(cfg, "train", 1200)
    counts = Counter(data["label"])
    num_classes = len(answer_vocabulary(cfg))
    assert set(counts) == set(range(num_classes))
    # ``attribute`` mixes colour and shape questions half and half: balanced within each answer group.
    groups = (
        [range(len(cfg.colors)), range(len(cfg.colors), num_classes)] if task == "attribute" else [range(num_classes)]
    )
    for group in groups:
        expected = sum(counts[k] for k in group) / len(group)
        assert all(abs(counts[k] / expected - 1) < 0.35 for k in group), counts
    for shapes, colors in zip(data["shapes"], data["colors"]):
        assert cfg.min_objects <= len(set(shapes)) == len(set(colors)) == len(shapes) <= cfg.max_objects
        assert set(colors) <= set(cfg.colors) and set(shapes) <= set(cfg.shapes)


def test_color_answer_is_the_colour_of_the_named_shape() -> None:
    data = generate_split(dataclasses.replace(WORLD, task="color"), "val", 50)
    for text, label, colors, shapes, targets in zip(
        data["text"], data["label"], data["colors"], data["shapes"], data["target_objects"]
    ):
        (target,) = targets
        assert shapes[target] in text.split()
        assert answer_vocabulary(WORLD)[label] == colors[target]


def test_boxes_lie_on_the_drawn_objects() -> None:
    data = generate_split(WORLD, "val", 30)
    for record, boxes, colors in zip(data["image"], data["boxes"], data["colors"]):
        pixels = _image(record)
        for box, color in zip(boxes, colors):
            hits = np.all(pixels == np.array(COLORS[color]), axis=-1)  # (H, W) pixels of this object's colour
            ys, xs = np.nonzero(hits)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(int(v) for v in box)


def test_label_noise_flips_about_the_asked_fraction_of_training_labels_only() -> None:
    noisy = dataclasses.replace(WORLD, label_noise=0.2)
    train = generate_split(noisy, "train", 400)
    flipped = [lab != clean for lab, clean in zip(train["label"], train["clean_label"])]
    assert flipped == train["is_noisy"] and 0.13 < np.mean(flipped) < 0.27
    val = generate_split(noisy, "val", 100)
    assert val["label"] == val["clean_label"]


def test_protected_attribute_and_planted_correlation() -> None:
    fair = generate_split(dataclasses.replace(WORLD, protected_attribute=True), "train", 400)
    words = {w for group in PROTECTED_GROUPS for w in group}
    assert all(t.split()[0] in words for t in fair["text"])
    agree = lambda d: np.mean([g == lab % 2 for g, lab in zip(d["protected_group"], d["label"])])  # noqa: E731
    assert abs(agree(fair) - 0.5) < 0.1
    planted = generate_split(
        dataclasses.replace(WORLD, protected_attribute=True, spurious_correlation=0.9), "train", 400
    )
    assert agree(planted) > 0.9


def test_shift_split_asks_only_about_pairs_training_never_shows() -> None:
    cfg = dataclasses.replace(WORLD, shift=True)
    train, shift = generate_split(cfg, "train", 200), generate_split(cfg, "shift", 50)
    held_out = lambda shape, color: cfg.shapes.index(shape) == cfg.colors.index(color)  # noqa: E731
    assert not any(held_out(*pair) for ss, cc in zip(train["shapes"], train["colors"]) for pair in zip(ss, cc))
    for shapes, colors, (target,) in zip(shift["shapes"], shift["colors"], shift["target_objects"]):
        assert held_out(shapes[target], colors[target])
    background = lambda d: _image(d["image"][0])[0, 0].mean()  # noqa: E731
    assert background(shift) > background(train) + 50


def test_bad_knobs_are_named() -> None:
    with pytest.raises(ConfigError, match="num_shapes=9"):
        ShapesWorldConfig(num_shapes=9)
    with pytest.raises(ConfigError, match="max_objects"):
        ShapesWorldConfig(num_colors=3, max_objects=4)
    with pytest.raises(ConfigError, match="spurious_correlation"):
        ShapesWorldConfig(spurious_correlation=0.5)


def test_prepared_once_and_readable_by_datasets(cache_dir) -> None:
    from datasets import load_from_disk

    path = prepare_shapes_world(TINY_WORLD, cache_dir)
    stamp = (path / "dataset_dict.json").stat().st_mtime_ns
    assert prepare_shapes_world(TINY_WORLD, cache_dir) == path
    assert (path / "dataset_dict.json").stat().st_mtime_ns == stamp
    splits = load_from_disk(str(path))
    assert {k: len(v) for k, v in splits.items()} == {"train": 96, "val": 32, "test": 32}
    assert splits["train"][0]["image"].size == (48, 48)
