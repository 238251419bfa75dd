"""Classification metrics by name, on hand-made probabilities whose values are known."""

from __future__ import annotations

import pytest
import torch

from mmfuse.errors import ConfigError
from mmfuse.metrics import CLASSIFICATION_METRICS, build_classification_metrics
from mmfuse.metrics.classification import metric_labels

# 6 rows, 3 classes; the last row has no label (-1) and must not count anywhere.
PROBS = torch.tensor(
    [
        [0.7, 0.2, 0.1],  # label 0, predicted 0 (confidence 0.7, right)
        [0.6, 0.3, 0.1],  # label 1, predicted 0 (0.6, wrong)
        [0.1, 0.8, 0.1],  # label 1, predicted 1 (0.8, right)
        [0.2, 0.2, 0.6],  # label 2, predicted 2 (0.6, right)
        [0.5, 0.1, 0.4],  # label 2, predicted 0 (0.5, wrong)
        [0.0, 0.0, 1.0],  # no label
    ]
)
LABELS = torch.tensor([0, 1, 1, 2, 2, -1])


def _values(names: list[str], probs: torch.Tensor = PROBS, labels: torch.Tensor = LABELS) -> dict[str, float]:
    metrics = build_classification_metrics(names, probs.shape[1], ["red", "dark blue", "green"])
    metrics.update(probs[:3], labels[:3])  # two batches: the values are over the epoch
    metrics.update(probs[3:], labels[3:])
    return {name: float(value) for name, value in metrics.compute().items()}


def test_accuracy_macro_f1_and_per_class_accuracy() -> None:
    values = _values(["accuracy", "macro_f1", "per_class_accuracy"])
    # predictions 0, 0, 1, 2, 0 for labels 0, 1, 1, 2, 2: 3 of 5 right.
    # F1: class 0 precision 1/3 recall 1 -> 0.5; class 1 p 1 r 1/2 -> 2/3; class 2 p 1 r 1/2 -> 2/3.
    assert values == pytest.approx(
        {"acc": 3 / 5, "macro_f1": (0.5 + 2 / 3 + 2 / 3) / 3, "acc_red": 1.0, "acc_dark_blue": 0.5, "acc_green": 0.5}
    )


def test_expected_calibration_error_over_15_bins() -> None:
    # bins (width 1/15) by top confidence: 0.5 -> (0.467, 0.533]: one wrong row (|0.5 - 0| = 0.5); 0.6 ->
    # (0.533, 0.6]: one right, one wrong (mean confidence 0.6, accuracy 0.5: 0.1 x 2); 0.7 -> (0.667, 0.733]: right
    # (0.3); 0.8 -> (0.8 - 1/15, 0.8]: right (0.2). ECE = (0.5 + 0.2 + 0.3 + 0.2) / 5.
    assert _values(["ece"])["ece"] == pytest.approx((0.5 + 0.2 + 0.3 + 0.2) / 5, abs=1e-6)


def test_auroc_of_two_classes_ranks_by_the_probability_of_class_one() -> None:
    p1 = torch.tensor([0.9, 0.4, 0.6, 0.2, 0.7])
    labels = torch.tensor([1, 1, 0, 0, -1])
    # positives 0.9, 0.4 against negatives 0.6, 0.2: pairs ranked right: (0.9 > 0.6), (0.9 > 0.2), (0.4 > 0.2) = 3/4.
    values = _values(["auroc", "accuracy"], torch.stack([1 - p1, p1], dim=1), labels)
    assert values["auroc"] == pytest.approx(0.75) and values["acc"] == pytest.approx(2 / 4)


def test_auroc_needs_two_classes() -> None:
    with pytest.raises(ConfigError, match="auroc needs two classes.*3"):
        build_classification_metrics(["auroc"], 3)


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="'f1'.*" + ", ".join(sorted(CLASSIFICATION_METRICS))):
        build_classification_metrics(["accuracy", "f1"], 3)


def test_class_names_become_loggable_and_unique() -> None:
    assert metric_labels(["a b", "a/b", "c"], 3) == ["0_a_b", "1_a_b", "2_c"]
    assert metric_labels(["x"], 2) == ["0", "1"]  # names that do not match the classes: indices
