"""Task objectives (loss and metrics per ``model.task``); the imports below fill :data:`TASKS`."""

from mmfuse.tasks.base import (
    STAGES,
    TASKS,
    SplitPredictions,
    Stage,
    StepOutput,
    TaskObjective,
    build_objective,
    check_metric_names,
    epoch_values,
)
from mmfuse.tasks.classification import NO_LABEL, ClassificationObjective, VqaObjective
from mmfuse.tasks.retrieval import RetrievalObjective, match_scorer

__all__ = [
    "NO_LABEL",
    "STAGES",
    "TASKS",
    "ClassificationObjective",
    "RetrievalObjective",
    "SplitPredictions",
    "Stage",
    "StepOutput",
    "TaskObjective",
    "VqaObjective",
    "build_objective",
    "check_metric_names",
    "epoch_values",
    "match_scorer",
]
