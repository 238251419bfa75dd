"""Classification and VQA objectives: the head scores K classes of the fused image-text pair.

Classification: cross-entropy on the label and the metrics named in ``model.metrics.names`` (default: accuracy; see
:mod:`mmfuse.metrics.classification`), all leaving out rows without a label (-1). VQA: binary cross-entropy on the
soft answer targets, scaled by K as in the bottom-up VQA models (Teney et al., "Tips and Tricks for Visual Question
Answering", 2018) and MMF, and the soft VQA accuracy of the top answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from mmfuse.config import MetricsConfig, ModelConfig
from mmfuse.errors import ConfigError
from mmfuse.metrics import CLASSIFICATION_METRICS, VqaAccuracy, build_classification_metrics
from mmfuse.metrics.classification import NO_LABEL
from mmfuse.models import ImageTextModel
from mmfuse.tasks.base import STAGES, TASKS, SplitPredictions, Stage, StepOutput, TaskObjective, check_metric_names
from mmfuse.types import Batch

__all__ = ["NO_LABEL", "ClassificationObjective", "VqaObjective"]


def _logits(model: ImageTextModel, batch: Batch) -> Tensor:
    return model(batch.images, batch.input_ids, batch.attention_mask).logits  # (B, K)


@TASKS.register("classification")
class ClassificationObjective(TaskObjective):
    """Cross-entropy on ``batch.labels``; the named metrics (default: micro accuracy, ``acc``) per stage.

    Args:
        cfg: the resolved model config (``head.num_classes`` = K).
        metrics: ``model.metrics``; ``names`` from :data:`~mmfuse.metrics.CLASSIFICATION_METRICS`.
        class_names: the K label names (per-class metrics and predictions name them).
    """

    progress_bar_metrics = ("acc",)

    def __init__(
        self, cfg: ModelConfig, metrics: MetricsConfig = MetricsConfig(), class_names: Sequence[str] = ()
    ) -> None:
        num_classes = int(cfg.head.num_classes or 0)
        names = check_metric_names(cfg.task, metrics, sorted(CLASSIFICATION_METRICS), ["accuracy"])
        super().__init__(*(build_classification_metrics(names, num_classes, class_names) for _ in STAGES))

    def training_step(self, model: ImageTextModel, batch: Batch) -> StepOutput:
        labels = _labels(batch)
        logits = _logits(model, batch)
        self.train_metric.update(logits.detach().float().softmax(dim=-1), labels)
        return StepOutput(F.cross_entropy(logits, labels, ignore_index=NO_LABEL))

    def evaluation_step(self, model: ImageTextModel, batch: Batch, stage: Stage) -> StepOutput:
        labels = _labels(batch)
        logits = _logits(model, batch)
        self.metric(stage).update(logits.float().softmax(dim=-1), labels)  # (B, K) probabilities
        return StepOutput(F.cross_entropy(logits, labels, ignore_index=NO_LABEL))

    def predict(self, model: ImageTextModel, batch: Batch) -> dict[str, Tensor]:
        probs = _logits(model, batch).float().softmax(dim=-1)  # (B, K)
        return {"probs": probs, "pred": probs.argmax(dim=-1)}

    def prediction_state(self, outputs: dict[str, Tensor], top_k: int) -> dict[str, Tensor]:
        """The ``top_k`` classes of each row and their probabilities, (B, k) each."""
        probs = outputs["probs"]  # (B, K)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return {"top_probs": top.values, "top_classes": top.indices}

    def prediction_rows(self, predictions: SplitPredictions, top_k: int) -> list[dict[str, Any]]:
        """``{"index", "pred", "top_k": [{"class", "prob"}, ...], "label"}`` per example (``label`` where known)."""
        return _class_rows(predictions)


def _labels(batch: Batch) -> Tensor:
    if batch.labels is None:
        raise ConfigError("model.task='classification' needs labels; this batch has none")
    return batch.labels


@TASKS.register("vqa")
class VqaObjective(TaskObjective):
    """Binary cross-entropy on ``batch.soft_targets`` (times K); the soft VQA accuracy per stage.

    Args:
        cfg: the resolved model config (``head.num_classes`` = K, the answer vocabulary with ``<unk>``).
    """

    progress_bar_metrics = ("acc",)

    def __init__(
        self, cfg: ModelConfig, metrics: MetricsConfig = MetricsConfig(), class_names: Sequence[str] = ()
    ) -> None:
        check_metric_names(cfg.task, metrics, ["accuracy"], ["accuracy"])
        super().__init__(*(VqaAccuracy() for _ in STAGES))

    def training_step(self, model: ImageTextModel, batch: Batch) -> StepOutput:
        return self.evaluation_step(model, batch, "train")

    def evaluation_step(self, model: ImageTextModel, batch: Batch, stage: Stage) -> StepOutput:
        targets = _soft_targets(batch)
        logits = _logits(model, batch)
        self.metric(stage).update(logits.detach(), targets)
        # K x the mean over (B, K) = the sum over answers, averaged over questions.
        loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype)) * logits.shape[-1]
        return StepOutput(loss)

    def predict(self, model: ImageTextModel, batch: Batch) -> dict[str, Tensor]:
        probs = _logits(model, batch).float().sigmoid()  # (B, K) independent answer scores
        return {"probs": probs, "pred": probs.argmax(dim=-1)}

    def prediction_state(self, outputs: dict[str, Tensor], top_k: int) -> dict[str, Tensor]:
        """The ``top_k`` answers of each question and their scores, (B, k) each."""
        probs = outputs["probs"]  # (B, K)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return {"top_probs": top.values, "top_classes": top.indices}

    def prediction_rows(self, predictions: SplitPredictions, top_k: int) -> list[dict[str, Any]]:
        """``{"index", "pred", "top_k": [{"class", "prob"}, ...]}`` per question (``prob``: the answer's sigmoid)."""
        return _class_rows(dataclasses.replace(predictions, labels=None))  # VQA labels are soft targets, not kept


def _soft_targets(batch: Batch) -> Tensor:
    if batch.soft_targets is None:
        raise ConfigError(
            "model.task='vqa' needs soft answer targets, which only VQA data has (data.source.format: vqa)"
        )
    return batch.soft_targets


def _class_rows(predictions: SplitPredictions) -> list[dict[str, Any]]:
    """One row per example from the kept top classes (``top_classes``, ``top_probs``: (S, k))."""
    names = list(predictions.class_names)

    def name(k: int) -> str | int:
        return names[k] if k < len(names) else k

    classes, probs = predictions.outputs["top_classes"].tolist(), predictions.outputs["top_probs"].tolist()
    labels = predictions.labels.tolist() if predictions.labels is not None else None
    rows: list[dict[str, Any]] = []
    for i, index in enumerate(predictions.indices.tolist()):
        top = [{"class": name(k), "prob": round(float(p), 6)} for k, p in zip(classes[i], probs[i])]
        row: dict[str, Any] = {"index": index, "pred": top[0]["class"], "top_k": top}
        if labels is not None and labels[i] != NO_LABEL:
            row["label"] = name(labels[i])
        rows.append(row)
    return rows
