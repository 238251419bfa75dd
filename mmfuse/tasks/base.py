"""Task objectives: what a batch's loss is and what is measured, for each ``model.task``.

An objective is an ``nn.Module`` holding one torchmetrics object per stage (``train``, ``val``, ``test``). It works on
the pure :class:`~mmfuse.models.ImageTextModel` and a :class:`~mmfuse.types.Batch`, never on Lightning: the
LightningModule calls it, logs what it returns and steps the optimiser. Objectives are looked up by the model
config's ``task`` in :data:`TASKS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from mmfuse.config import ModelConfig
from mmfuse.errors import ConfigError
from mmfuse.models import ImageTextModel
from mmfuse.registry import Registry
from mmfuse.types import Batch

__all__ = ["STAGES", "Stage", "TASKS", "StepOutput", "TaskObjective", "build_objective", "epoch_values"]

Stage = Literal["train", "val", "test"]
STAGES: tuple[Stage, ...] = ("train", "val", "test")
StageMetric = Metric | MetricCollection


@dataclass
class StepOutput:
    """What one step of an objective gives back.

    Attributes:
        loss: the scalar loss (differentiable in training).
        parts: further per-step scalars worth logging (e.g. the ITC and ITM parts of a retrieval loss).
    """

    loss: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


class TaskObjective(nn.Module):
    """Base of the registered objectives: one metric per stage (``train_metric``, ``val_metric``, ``test_metric``)
    and the three steps each objective defines.

    Args:
        train_metric: updated by :meth:`training_step`.
        val_metric: updated by :meth:`evaluation_step` on ``val``.
        test_metric: updated by :meth:`evaluation_step` on ``test``.
    """

    train_metric: StageMetric
    val_metric: StageMetric
    test_metric: StageMetric

    def __init__(self, train_metric: StageMetric, val_metric: StageMetric, test_metric: StageMetric) -> None:
        super().__init__()
        self.train_metric = train_metric
        self.val_metric = val_metric
        self.test_metric = test_metric

    def metric(self, stage: Stage) -> StageMetric:
        """The stage's torchmetrics ``Metric`` or ``MetricCollection``."""
        metric: StageMetric = getattr(self, f"{stage}_metric")
        return metric

    def training_step(self, model: ImageTextModel, batch: Batch) -> StepOutput:
        """The training loss of a batch (updates ``train_metric``)."""
        raise NotImplementedError

    def evaluation_step(self, model: ImageTextModel, batch: Batch, stage: Stage) -> StepOutput:
        """The evaluation loss of a batch (updates the stage's metric)."""
        raise NotImplementedError

    def predict(self, model: ImageTextModel, batch: Batch) -> dict[str, Tensor]:
        """Per-example predictions of a batch."""
        raise NotImplementedError


TASKS: Registry[Callable[[ModelConfig], TaskObjective]] = Registry("task")


def build_objective(cfg: ModelConfig) -> TaskObjective:
    """The objective of ``cfg.task``, sized from the resolved config (e.g. ``cfg.head.num_classes``)."""
    try:
        objective_cls = TASKS.get(cfg.task)
    except KeyError as err:
        raise ConfigError(f"model.task: {err.args[0]}") from None
    return objective_cls(cfg)


def epoch_values(objective: TaskObjective, stage: Stage) -> dict[str, Tensor]:
    """The stage's metric over the epoch (synchronised across processes by torchmetrics), then reset; ``{}`` when
    the stage saw no batch. A metric that computes one value is named ``acc``; a collection's values keep their
    names."""
    metric = objective.metric(stage)
    children = list(metric.values()) if isinstance(metric, MetricCollection) else [metric]
    if not any(isinstance(child, Metric) and child.update_called for child in children):
        return {}
    value = metric.compute()
    metric.reset()
    return value if isinstance(value, dict) else {"acc": value}
