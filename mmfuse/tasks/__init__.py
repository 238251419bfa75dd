"""Task objectives (loss and metrics per ``model.task``); the imports below fill :data:`TASKS`."""

from mmfuse.tasks.base import STAGES, TASKS, Stage, StepOutput, TaskObjective, build_objective, epoch_values
from mmfuse.tasks.classification import NO_LABEL, ClassificationObjective, VqaObjective
from mmfuse.tasks.retrieval import RetrievalObjective

__all__ = [
    "NO_LABEL",
    "STAGES",
    "TASKS",
    "ClassificationObjective",
    "RetrievalObjective",
    "Stage",
    "StepOutput",
    "TaskObjective",
    "VqaObjective",
    "build_objective",
    "epoch_values",
]
