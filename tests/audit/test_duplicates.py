"""Duplicates and leakage: planted exact copies, re-encoded or brightened copies and train/test leaks are found;
real shapes-world images raise no false alarm."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from mmfuse.audit.duplicates import (
    find_duplicates,
    find_leakage,
    hamming_pairs,
    hash_images,
    normalise_text,
)
from mmfuse.data.shapes import generate_split
from mmfuse.errors import ConfigError
from tests.conftest import TINY_WORLD

WORLD = dataclasses.replace(TINY_WORLD, image_size=64, min_object_size=12, max_object_size=18)


def _world(split: str, n: int) -> tuple[list[Image.Image], list[str]]:
    records = generate_split(WORLD, split, n)
    images = [Image.open(io.BytesIO(r["bytes"])).convert("RGB") for r in records["image"]]
    return images, records["text"]


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return Image.open(buffer).convert("RGB")


def _noisy(image: Image.Image, seed: int) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) + np.random.default_rng(seed).normal(0, 6, (64, 64, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def test_hamming_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, size=(50, 2), dtype=np.uint64)
    a[7] = a[3]
    a[7, 0] ^= np.uint64(0b1011)  # 3 bits apart
    b = rng.integers(0, 2**63, size=(30, 2), dtype=np.uint64)
    b[5] = a[10]
    distance = np.array([[sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(u, v)) for v in b] for u in a])
    got = hamming_pairs(a, b, max_distance=40, chunk=16)
    want = np.argwhere(distance <= 40)
    assert got[:, :2].tolist() == want.tolist() and got[:, 2].tolist() == distance[distance <= 40].tolist()
    within = hamming_pairs(a, None, max_distance=3)
    assert within.tolist() == [[3, 7, 3]]


def test_clean_shapes_images_have_no_duplicates() -> None:
    images, texts = _world("train", 300)
    found = find_duplicates("train", hash_images(images), texts)
    assert found.sets["exact_images"].redundant == 0 and found.sets["near_images"].redundant == 0
    assert found.sets["texts"].redundant > 0  # templated questions repeat by design: reported, not graded
    assert [c.passed for c in found.checks] == [True, None, True]


def test_planted_exact_and_near_duplicates_are_found() -> None:
    images, texts = _world("train", 120)
    planted = {
        120: 5,  # the same pixels (a re-decoded copy)
        121: 17,  # JPEG re-encoding
        122: 30,  # brightened
        123: 44,  # light pixel noise
    }
    copies = [images[5].copy(), _jpeg(images[17]), ImageEnhance.Brightness(images[30]).enhance(1.15),
              _noisy(images[44], 0)]  # fmt: skip
    copy_texts = [texts[5], "a different question ?", texts[30], texts[44]]
    found = find_duplicates("train", hash_images(images + copies), texts + copy_texts)
    assert found.sets["exact_images"].groups == [[5, 120]]
    near_groups = sorted(sorted(g) for g in found.sets["near_images"].groups)
    assert near_groups == sorted(sorted([original, copy]) for copy, original in planted.items())
    assert found.sets["examples"].redundant == 3  # the JPEG copy carries another text
    assert found.checks[0].status.startswith("fail")  # 4 of 124 > 1 %


def test_leaked_training_examples_are_listed() -> None:
    train_images, train_texts = _world("train", 150)
    test_images, test_texts = _world("test", 60)
    test_images[3], test_texts[3] = train_images[10].copy(), train_texts[10]  # the whole example leaked
    test_images[8] = _jpeg(train_images[20])  # the image leaked, re-encoded, with another question
    leak = find_leakage("test", (hash_images(train_images), train_texts), (hash_images(test_images), test_texts))
    assert leak.leaked_images == [3, 8] and leak.leaked_examples == [3]
    assert leak.image_matches[:, :2].tolist() == [[3, 10], [8, 20]] and leak.image_matches[0, 2] == 0
    assert [c.passed for c in leak.checks] == [False, False, None]
    listed = leak.as_dict(max_listed=1)
    assert listed["leaked_images"] == 2 and listed["listed_matches"] == [{"index": 3, "train_index": 10, "distance": 0}]


def test_clean_splits_do_not_leak_images() -> None:
    train_images, train_texts = _world("train", 300)
    test_images, test_texts = _world("test", 100)
    leak = find_leakage("test", (hash_images(train_images), train_texts), (hash_images(test_images), test_texts))
    assert leak.leaked_images == [] and leak.leaked_examples == [] and leak.checks[0].passed


def test_texts_are_compared_after_normalisation() -> None:
    assert normalise_text("What  colour is the CIRCLE ?\n") == normalise_text("what colour is the circle ?")
    blank = Image.new("RGB", (32, 32))
    found = find_duplicates("x", hash_images([blank] * 3), ["A b", "a  B", "c"])
    assert found.sets["texts"].groups == [[0, 1]]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="hash_size=12"):
        hash_images([Image.new("RGB", (8, 8))], hash_size=12)
    hashes = hash_images([Image.new("RGB", (8, 8))])
    with pytest.raises(ConfigError, match="near_duplicate_distance=256"):
        find_duplicates("x", hashes, ["a"], max_distance=256)
