"""The objective contract: what a ``model.task`` computes, and what the LightningModule does with it.

An objective (:class:`TaskObjective`, looked up by the model config's ``task`` in :data:`TASKS`) is an ``nn.Module``
that owns everything task-specific. It works on the pure :class:`~mmfuse.models.ImageTextModel` and a
:class:`~mmfuse.types.Batch`, never on Lightning, and computes:

- **the loss**: :meth:`~TaskObjective.training_step` (differentiable) and :meth:`~TaskObjective.evaluation_step`
  return a :class:`StepOutput`, the scalar loss plus further named scalars worth logging (retrieval's ``itc_loss``
  and ``itm_loss``); the losses live here, beside the objectives (:mod:`mmfuse.tasks.itc`, :mod:`mmfuse.tasks.itm`),
  and the heads of :mod:`mmfuse.heads` are modules only;
- **the metrics**: one torchmetrics ``Metric`` or ``MetricCollection`` per stage (``train_metric``, ``val_metric``,
  ``test_metric``, chosen by ``model.metrics``, :class:`~mmfuse.config.MetricsConfig`), updated by those steps;
  :meth:`~TaskObjective.epoch_values` gives the epoch's values (synchronised across processes by torchmetrics) and
  resets them;
- **the predictions**: :meth:`~TaskObjective.predict` gives a batch's per-example outputs,
  :meth:`~TaskObjective.prediction_state` keeps what of them the rows need (e.g. the top classes), and once every
  batch of every process is in, :meth:`~TaskObjective.prediction_rows` turns the split into one JSON-ready row per
  example.

The LightningModule (:class:`~mmfuse.training.FusionLitModule`) only orchestrates: it calls the steps with its model
and batch, returns the training loss to the optimiser, logs ``train/loss``, ``train/<part>`` and ``{val,test}/loss``,
logs :meth:`~TaskObjective.epoch_values` as ``<stage>/<name>`` at each epoch end (those named in
:attr:`~TaskObjective.progress_bar_metrics` also in the progress bar), and returns :meth:`~TaskObjective.predict`'s
output to the :class:`~mmfuse.training.PredictionWriter`, which calls the two prediction methods. Nothing about a task
is computed outside its objective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from mmfuse.config import MetricsConfig, ModelConfig
from mmfuse.errors import ConfigError
from mmfuse.models import ImageTextModel
from mmfuse.registry import Registry
from mmfuse.types import Batch

__all__ = [
    "STAGES",
    "Stage",
    "TASKS",
    "SplitPredictions",
    "StepOutput",
    "TaskObjective",
    "build_objective",
    "check_metric_names",
    "epoch_values",
]

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


@dataclass
class SplitPredictions:
    """The predictions of a whole split, one row per example (repeats dropped), in row-index order.

    Attributes:
        outputs: what :meth:`TaskObjective.prediction_state` kept, each (S, ...).
        indices: (S,) long row index of each example in its split.
        labels: (S,) long labels (-1 = none), or None when the data has none.
        image_ids: (S,) long image identity (equal for the captions of one image), or None.
        image_names: the data's own image id of each example (e.g. a file name), or None.
        class_names: the label names, index-aligned; () = none known.
    """

    outputs: dict[str, Tensor]
    indices: Tensor
    labels: Tensor | None = None
    image_ids: Tensor | None = None
    image_names: list[str] | None = None
    class_names: Sequence[str] = ()


class TaskObjective(nn.Module):
    """Base of the registered objectives (the contract: :mod:`mmfuse.tasks.base`): one metric per stage and the steps
    each objective defines.

    Attributes:
        progress_bar_metrics: names of :meth:`epoch_values` that the progress bar shows too.

    Args:
        train_metric: updated by :meth:`training_step`.
        val_metric: updated by :meth:`evaluation_step` on ``val``.
        test_metric: updated by :meth:`evaluation_step` on ``test``.
    """

    progress_bar_metrics: tuple[str, ...] = ()
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

    def prediction_state(self, outputs: dict[str, Tensor], top_k: int) -> dict[str, Tensor]:
        """What of a batch's :meth:`predict` output is kept until the split is complete, each (B, ...)."""
        return outputs

    def prediction_rows(self, predictions: SplitPredictions, top_k: int) -> list[dict[str, Any]]:
        """JSON-ready rows of a whole split's predictions (``top_k`` classes or candidates each)."""
        raise NotImplementedError

    def epoch_values(self, stage: Stage, model: ImageTextModel | None = None) -> dict[str, Tensor]:
        """See :func:`epoch_values`."""
        metric = self.metric(stage)
        children = list(metric.values()) if isinstance(metric, MetricCollection) else [metric]
        if not any(isinstance(child, Metric) and child.update_called for child in children):
            return {}
        value = self.compute_metric(metric, model)
        metric.reset()
        return value if isinstance(value, dict) else {"acc": value}

    def compute_metric(self, metric: StageMetric, model: ImageTextModel | None) -> Tensor | dict[str, Tensor]:
        """A stage metric's value over the epoch; ``model`` is there for metrics that run part of it again."""
        value: Tensor | dict[str, Tensor] = metric.compute()
        return value


TASKS: Registry[Callable[[ModelConfig, MetricsConfig, Sequence[str]], TaskObjective]] = Registry("task")


def build_objective(
    cfg: ModelConfig, metrics: MetricsConfig = MetricsConfig(), class_names: Sequence[str] = ()
) -> TaskObjective:
    """The objective of ``cfg.task``, sized from the resolved config (e.g. ``cfg.head.num_classes``).

    Args:
        cfg: the resolved model config.
        metrics: which metrics to compute (``model.metrics``).
        class_names: the data's label names, index-aligned (per-class metrics and predictions name them).
    """
    try:
        objective_cls = TASKS.get(cfg.task)
    except KeyError as err:
        raise ConfigError(f"model.task: {err.args[0]}") from None
    if metrics.rerank_k < 0 or (metrics.rerank_k and cfg.task != "retrieval"):
        raise ConfigError(
            f"model.metrics.rerank_k={metrics.rerank_k}: re-ranking applies to model.task: retrieval only, with a "
            f"positive number of candidates (this model's task is {cfg.task!r}; 0 = off)"
        )
    return objective_cls(cfg, metrics, class_names)


def check_metric_names(task: str, metrics: MetricsConfig, known: Sequence[str], default: Sequence[str]) -> list[str]:
    """The metric names to build for ``task``: ``metrics.names``, else ``default``.

    Raises:
        ConfigError: a name the task does not know; the message lists the known ones.
    """
    names = list(default if metrics.names is None else metrics.names)
    for name in names:
        if name not in known:
            raise ConfigError(
                f"model.metrics.names: unknown metric {name!r} for model.task={task!r}; known: {', '.join(known)}"
            )
    if not names:
        raise ConfigError(f"model.metrics.names is empty; name at least one of: {', '.join(known)}")
    return names


def epoch_values(objective: TaskObjective, stage: Stage, model: ImageTextModel | None = None) -> dict[str, Tensor]:
    """The stage's metric over the epoch (synchronised across processes by torchmetrics), then reset; ``{}`` when
    the stage saw no batch. A metric that computes one value is named ``acc``; a collection's values keep their
    names. ``model`` lets retrieval re-rank with its matching head (``model.metrics.rerank_k``); without it only the
    contrastive ranking is measured."""
    return objective.epoch_values(stage, model)
