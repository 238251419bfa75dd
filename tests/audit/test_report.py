"""The audit end to end on data with planted problems: every detector reports them, JSON, Markdown and plots are
written, and clean data passes."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmfuse.audit import AuditConfig, SplitData, SplitFeatures, audit_data, audit_model, write_audit
from mmfuse.data.shapes import answer_vocabulary, generate_split
from tests.conftest import TINY_WORLD

WORLD = dataclasses.replace(TINY_WORLD, image_size=64, min_object_size=12, max_object_size=18)
CLASSES = answer_vocabulary(WORLD)
K = len(CLASSES)


def _split(name: str, n: int) -> tuple[list[dict], np.ndarray, list[str]]:
    records = generate_split(WORLD, name, n)
    images = [Image.open(io.BytesIO(r["bytes"])).convert("RGB") for r in records["image"]]
    rows = [{"image": im, "text": t, "label": y} for im, t, y in zip(images, records["text"], records["label"])]
    return rows, np.array(records["label"]), list(records["text"])


def _features(labels: np.ndarray, seed: int) -> SplitFeatures:
    """Features that separate the true classes (as a trained model's would)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(0, 4, size=(K, 12))
    fused = centres[labels] + rng.normal(0, 1, size=(len(labels), 12))
    return SplitFeatures(None, None, fused, np.eye(K)[labels])


@pytest.fixture(scope="module")
def planted() -> tuple[dict[str, SplitData], dict[str, SplitFeatures], SplitFeatures, np.ndarray]:
    train_rows, train_labels, train_texts = _split("train", 400)
    test_rows, test_labels, test_texts = _split("test", 60)
    train_rows[399] = dict(train_rows[3])  # an exact duplicate example within train
    train_texts[399], train_labels[399] = train_texts[3], train_labels[3]
    test_rows[7] = dict(train_rows[50])  # a leaked example
    test_texts[7], test_labels[7] = train_texts[50], train_labels[50]
    true_labels = train_labels.copy()
    rng = np.random.default_rng(1)
    is_flipped = rng.random(400) < 0.1
    train_labels[is_flipped] = (train_labels[is_flipped] + rng.integers(1, K, size=int(is_flipped.sum()))) % K
    splits = {
        "train": SplitData("train", train_rows, train_labels, train_texts, is_flipped),
        "test": SplitData("test", test_rows, test_labels, test_texts),
    }
    features = {"train": _features(true_labels, 1), "test": _features(test_labels, 2)}
    negatives = SplitFeatures(None, None, rng.normal(3, 1, size=(200, 12)), np.zeros((200, K)))
    return splits, features, negatives, is_flipped


def test_every_detector_reports_its_planted_problem(planted: tuple, tmp_path: Path) -> None:
    splits, features, negatives, is_flipped = planted
    report = audit_data(splits, CLASSES, AuditConfig(n_boot=200))
    audit_model(report, splits, features, negatives)
    assert report.duplicates["train"].sets["exact_images"].groups == [[3, 399]]
    assert report.duplicates["train"].sets["examples"].redundant == 1
    assert report.leakage["test"].leaked_examples == [7]
    errors = report.label_errors["train"]
    assert errors.ground_truth is not None and errors.ground_truth.recall.estimate > 0.8  # type: ignore[operator]
    assert errors.ground_truth.precision.estimate > 0.8  # type: ignore[operator]
    assert set(report.mismatches) == {"train", "test"} and not report.passed
    failed = {c.name for c in report.checks if c.passed is False}
    assert {"leaked example fraction (test in train)", "label error fraction (train)"} <= failed
    assert set(report.seconds) >= {"balance", "image_hashes", "duplicates", "label_errors", "mismatches"}

    paths = write_audit(report, tmp_path / "audit")
    names = {p.name for p in paths}
    assert names == {"audit.json", "audit.md", "class_shares.png", "duplicates.png", "label_quality.png",
                     "matching_scores.png"}  # fmt: skip
    data = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert data["passed"] is False and data["label_errors"]["train"]["flagged"] == len(errors.indices)
    assert data["leakage"]["test"]["listed_matches"][0] == {"index": 7, "train_index": 50, "distance": 0}
    assert data["label_errors"]["train"]["listed"][0]["given"] in CLASSES
    page = (tmp_path / "audit" / "audit.md").read_text()
    assert page.startswith("# Dataset audit") and "**FAIL**" in page and "![label_quality.png]" in page
    assert "against the planted noise: precision" in page
    for png in tmp_path.joinpath("audit").glob("*.png"):
        assert Image.open(png).size[0] > 100


def test_clean_data_passes_the_data_checks(tmp_path: Path) -> None:
    rows, labels, texts = _split("train", 300)
    splits = {"train": SplitData("train", rows, labels, texts)}
    report = audit_data(splits, CLASSES, AuditConfig(n_boot=200, max_imbalance_ratio=None))
    assert report.passed and report.leakage == {} and "no 'train' split" not in " ".join(report.notes)
    paths = write_audit(report, tmp_path, plots=False)
    assert [p.name for p in paths] == ["audit.json", "audit.md"]


def test_features_that_do_not_separate_classes_are_called_out(planted: tuple) -> None:
    splits, _, _, _ = planted
    rng = np.random.default_rng(0)
    noise = {name: SplitFeatures(None, None, rng.normal(size=(len(s), 8)), np.zeros((len(s), K)))
             for name, s in splits.items()}  # fmt: skip
    report = audit_data(splits, CLASSES, AuditConfig(n_boot=50))
    audit_model(report, splits, noise, None)
    assert report.mismatches == {} and any("do not separate the classes" in note for note in report.notes)
