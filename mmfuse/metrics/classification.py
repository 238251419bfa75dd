"""Classification metrics chosen by name (``model.metrics.names``), as one torchmetrics ``MetricCollection``.

Every metric takes the same input: class probabilities (B, K) and labels (B,) long, -1 = no label (left out). The
collection's ``compute`` gives one scalar per logged name: ``accuracy`` -> ``acc`` (micro), ``macro_f1``,
``per_class_accuracy`` -> ``acc_<class name>`` (recall of each class), ``ece`` (expected calibration error of the
top class, L1 over 15 equal-width bins, Guo et al. 2017) and ``auroc`` (two classes: the probability of class 1
as the score, as for Hateful Memes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassF1Score,
)
from torchmetrics.wrappers import ClasswiseWrapper

from mmfuse.errors import ConfigError

__all__ = ["CLASSIFICATION_METRICS", "NO_LABEL", "ProbabilityAUROC", "build_classification_metrics"]

NO_LABEL = -1  # the label of a row without one; left out of every metric
ECE_BINS = 15  # torchmetrics' default, and the usual choice since Guo et al. (2017)


class ProbabilityAUROC(BinaryAUROC):
    """Binary AUROC of two-class probabilities: ranks the rows by the probability of class 1.

    Args:
        **kwargs: torchmetrics ``BinaryAUROC`` options.
    """

    def update(self, probs: Tensor, target: Tensor) -> None:
        """Args: probs (B, 2) class probabilities; target (B,) long in {0, 1}, or -1 = left out."""
        super().update(probs[:, 1], target)


def _accuracy(num_classes: int, class_names: Sequence[str]) -> dict[str, Metric]:
    return {"acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=NO_LABEL)}


def _macro_f1(num_classes: int, class_names: Sequence[str]) -> dict[str, Metric]:
    return {"macro_f1": MulticlassF1Score(num_classes, average="macro", ignore_index=NO_LABEL)}


def _per_class_accuracy(num_classes: int, class_names: Sequence[str]) -> dict[str, Metric]:
    per_class = MulticlassAccuracy(num_classes, average=None, ignore_index=NO_LABEL)  # (K,) recall of each class
    return {"per_class_acc": ClasswiseWrapper(per_class, labels=metric_labels(class_names, num_classes), prefix="acc_")}


def _ece(num_classes: int, class_names: Sequence[str]) -> dict[str, Metric]:
    return {"ece": MulticlassCalibrationError(num_classes, n_bins=ECE_BINS, norm="l1", ignore_index=NO_LABEL)}


def _auroc(num_classes: int, class_names: Sequence[str]) -> dict[str, Metric]:
    if num_classes != 2:
        raise ConfigError(
            f"model.metrics.names: auroc needs two classes (the Hateful-Memes layout), but the data has {num_classes}"
        )
    return {"auroc": ProbabilityAUROC(ignore_index=NO_LABEL)}


# name in model.metrics.names -> factory of its metric(s), keyed by the name they are logged under
CLASSIFICATION_METRICS: dict[str, Callable[[int, Sequence[str]], dict[str, Metric]]] = {
    "accuracy": _accuracy,
    "macro_f1": _macro_f1,
    "per_class_accuracy": _per_class_accuracy,
    "ece": _ece,
    "auroc": _auroc,
}


def build_classification_metrics(
    names: Sequence[str], num_classes: int, class_names: Sequence[str] = ()
) -> MetricCollection:
    """One collection of the named metrics over K classes.

    Args:
        names: keys of :data:`CLASSIFICATION_METRICS`.
        num_classes: K.
        class_names: the classes' names (index-aligned) for ``per_class_accuracy``; () = their indices.

    Raises:
        ConfigError: an unknown name (the message lists the known ones), or ``auroc`` without two classes.
    """
    metrics: dict[str, Metric | MetricCollection] = {}
    for name in names:
        if name not in CLASSIFICATION_METRICS:
            known = ", ".join(sorted(CLASSIFICATION_METRICS))
            raise ConfigError(f"model.metrics.names: unknown metric {name!r} for classification; known: {known}")
        metrics.update(CLASSIFICATION_METRICS[name](num_classes, class_names))
    # compute_groups=False: with shared states, ClasswiseWrapper's inner metric would compute without an update
    return MetricCollection(metrics, compute_groups=False)


def metric_labels(class_names: Sequence[str], num_classes: int) -> list[str]:
    """Class names usable in a logged metric name (letters, digits, ``_.-``); the index where none is given or two
    names would clash.

    Example:
        >>> metric_labels(["red", "dark blue", "a/b"], 3)
        ['red', 'dark_blue', 'a_b']
        >>> metric_labels([], 2)
        ['0', '1']
    """
    if len(class_names) != num_classes:
        return [str(i) for i in range(num_classes)]
    labels = [re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)) or str(i) for i, name in enumerate(class_names)]
    if len(set(labels)) != len(labels):
        labels = [f"{i}_{label}" for i, label in enumerate(labels)]
    return labels
