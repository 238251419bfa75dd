"""Task objectives (loss, metrics and predictions per ``model.task``; the contract is :mod:`mmfuse.tasks.base`) and
the losses they are made of; the imports below fill :data:`TASKS`."""

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
from mmfuse.tasks.itc import contrastive_loss, same_image_mask
from mmfuse.tasks.itm import MatchingPairs, matching_pairs, sample_hard_negatives
from mmfuse.tasks.retrieval import RetrievalObjective, match_scorer

__all__ = [
    "NO_LABEL",
    "STAGES",
    "TASKS",
    "ClassificationObjective",
    "MatchingPairs",
    "RetrievalObjective",
    "SplitPredictions",
    "Stage",
    "StepOutput",
    "TaskObjective",
    "VqaObjective",
    "build_objective",
    "check_metric_names",
    "contrastive_loss",
    "epoch_values",
    "match_scorer",
    "matching_pairs",
    "same_image_mask",
    "sample_hard_negatives",
]
