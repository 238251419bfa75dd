"""Classification and VQA objectives: the head scores K classes of the fused image-text pair.

Classification: cross-entropy on the label and accuracy, both leaving out rows without a label (-1). VQA: binary
cross-entropy on the soft answer targets, scaled by K as in the bottom-up VQA models (Teney et al., "Tips and Tricks
for Visual Question Answering", 2018) and MMF, and the soft VQA accuracy of the top answer.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from mmfuse.config import ModelConfig
from mmfuse.errors import ConfigError
from mmfuse.metrics import VqaAccuracy
from mmfuse.models import ImageTextModel
from mmfuse.tasks.base import STAGES, TASKS, Stage, StepOutput, TaskObjective
from mmfuse.types import Batch

__all__ = ["NO_LABEL", "ClassificationObjective", "VqaObjective"]

NO_LABEL = -1  # the manifests' label of a row without one


def _logits(model: ImageTextModel, batch: Batch) -> Tensor:
    return model(batch.images, batch.input_ids, batch.attention_mask).logits  # (B, K)


@TASKS.register("classification")
class ClassificationObjective(TaskObjective):
    """Cross-entropy on ``batch.labels``; micro accuracy per stage.

    Args:
        cfg: the resolved model config (``head.num_classes`` = K).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        num_classes = int(cfg.head.num_classes or 0)
        super().__init__(*(MulticlassAccuracy(num_classes, average="micro", ignore_index=NO_LABEL) for _ in STAGES))

    def training_step(self, model: ImageTextModel, batch: Batch) -> StepOutput:
        labels = _labels(batch)
        logits = _logits(model, batch)
        self.train_metric.update(logits.detach(), labels)
        return StepOutput(F.cross_entropy(logits, labels, ignore_index=NO_LABEL))

    def evaluation_step(self, model: ImageTextModel, batch: Batch, stage: Stage) -> StepOutput:
        labels = _labels(batch)
        logits = _logits(model, batch)
        self.metric(stage).update(logits, labels)
        return StepOutput(F.cross_entropy(logits, labels, ignore_index=NO_LABEL))

    def predict(self, model: ImageTextModel, batch: Batch) -> dict[str, Tensor]:
        probs = _logits(model, batch).float().softmax(dim=-1)  # (B, K)
        return {"probs": probs, "pred": probs.argmax(dim=-1)}


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

    def __init__(self, cfg: ModelConfig) -> None:
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


def _soft_targets(batch: Batch) -> Tensor:
    if batch.soft_targets is None:
        raise ConfigError(
            "model.task='vqa' needs soft answer targets, which only VQA data has (data.source.format: vqa)"
        )
    return batch.soft_targets
