"""The baseline ladder on features with a known answer: text alone at chance, image alone partial, the model best."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmfuse.audit.baselines import baseline_ladder, majority_correct, probe_correct, write_ladder
from mmfuse.audit.features import SplitFeatures

K = 4


def _features(n: int, seed: int) -> tuple[SplitFeatures, np.ndarray]:
    """Labels; text features that say nothing; image features that tell two pairs of classes apart; logits of a
    model that is right 95 % of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, size=n)
    text = rng.normal(size=(n, 6))
    image = np.stack([labels // 2 * 3.0, rng.normal(size=n)], 1) + rng.normal(0, 0.3, size=(n, 2))
    predicted = np.where(rng.random(n) < 0.95, labels, (labels + 1) % K)
    logits = np.eye(K)[predicted] * 5
    return SplitFeatures(image, text, rng.normal(size=(n, 4)), logits), labels


def test_the_ladder_orders_the_rungs_and_grades_the_gain() -> None:
    train, train_labels = _features(800, 0)
    test, labels = _features(600, 1)
    ladder = baseline_ladder(train, train_labels, test, labels, "model (cross_attention)", min_gain=0.1)
    acc = {row.name: row.accuracy.estimate for row in ladder.rows if row.accuracy is not None}
    assert list(acc) == ["majority class", "text only", "image only", "concat / late fusion", "model (cross_attention)"]
    assert abs(acc["text only"] - 0.25) < 0.07 and abs(acc["majority class"] - 0.25) < 0.07  # type: ignore[operator]
    assert abs(acc["image only"] - 0.5) < 0.07 and abs(acc["model (cross_attention)"] - 0.95) < 0.03  # type: ignore[operator]
    assert ladder.best_baseline in ("image only", "concat / late fusion")
    assert ladder.gain.low is not None and ladder.gain.low > 0.35 and ladder.checks[0].status == "pass"
    for row in ladder.rows:
        assert row.accuracy is not None and row.accuracy.low <= row.accuracy.estimate <= row.accuracy.high  # type: ignore[operator]


def test_a_model_without_a_text_encoder_gets_an_explained_empty_rung(tmp_path: Path) -> None:
    train, train_labels = _features(200, 0)
    test, labels = _features(100, 1)
    image_only = SplitFeatures(train.image, None, train.fused, train.logits)
    ladder = baseline_ladder(image_only, train_labels, SplitFeatures(test.image, None, test.fused, test.logits), labels,
                             "model (image_only)", min_gain=None)  # fmt: skip
    rows = {row.name: row for row in ladder.rows}
    assert rows["text only"].accuracy is None and "no text features" in rows["text only"].note
    assert rows["concat / late fusion"].accuracy is None and ladder.checks[0].status == "reported"
    paths = write_ladder(ladder, tmp_path / "out", {"config": "x.yaml"})
    data = json.loads(paths[0].read_text())
    assert data["config"] == "x.yaml" and len(data["rows"]) == 5 and data["rows"][1]["accuracy"] is None
    assert "| text only | — | — |" in paths[1].read_text() and data["chance"] == pytest.approx(0.25)


def test_majority_and_probe_helpers() -> None:
    assert majority_correct([2, 2, 1], [2, 0, 2]).tolist() == [True, False, True]
    features = np.array([[0.0], [0.1], [5.0], [5.1]])
    assert probe_correct(features, [0, 0, 1, 1], np.array([[0.05], [4.9]]), [0, 1]).tolist() == [True, True]
