"""Probes of a trained model: counterfactual invariance to protected attributes (:mod:`.counterfactual`),
robustness to corrupted inputs and shifted data (:mod:`.robustness`), and one model report that gathers them with
the dataset audit, the baseline ladder and the faithfulness of explanations (:mod:`.report`).

Every probe runs on raw examples (:class:`ProbeData`: images, raw texts, labels and the data's own collate
function), so text edits happen before tokenisation, and every figure comes with a bootstrap interval
(:mod:`mmfuse.stats`).

Retrieval models (``model.task: retrieval``) are probed on their ranking instead (:mod:`.retrieval_counterfactual`,
:mod:`.retrieval_robustness`): :class:`RetrievalData` keeps each image of a split once and every caption with its
image, and the figures are ranks and recall@K by contrastive similarity.
"""

from mmfuse.probes.corruptions import IMAGE_CORRUPTIONS, corrupt_image
from mmfuse.probes.counterfactual import assert_invariant, counterfactual_report, text_counterfactuals
from mmfuse.probes.data import ProbeData, predict_probs
from mmfuse.probes.image_edits import IMAGE_EDITS, ImageCounterfactual, resolve_image_edit, swap_shapes_frame
from mmfuse.probes.invariance import AttributeResult, CounterfactualReport, InvarianceResult
from mmfuse.probes.lexicons import AttributeLexicon, load_lexicons, parse_lexicon
from mmfuse.probes.retrieval_counterfactual import (
    RankShift,
    RetrievalAttributeResult,
    RetrievalCounterfactualReport,
    retrieval_counterfactual_report,
)
from mmfuse.probes.retrieval_data import RetrievalData
from mmfuse.probes.retrieval_robustness import (
    RetrievalCondition,
    RetrievalRobustnessReport,
    retrieval_robustness_report,
)
from mmfuse.probes.robustness import Condition, RobustnessReport, bootstrap_relative_drop, robustness_report
from mmfuse.probes.text_perturb import TEXT_PERTURBATIONS, perturb_text

__all__ = [
    "AttributeLexicon",
    "AttributeResult",
    "Condition",
    "CounterfactualReport",
    "IMAGE_CORRUPTIONS",
    "IMAGE_EDITS",
    "ImageCounterfactual",
    "InvarianceResult",
    "ProbeData",
    "RankShift",
    "RetrievalAttributeResult",
    "RetrievalCondition",
    "RetrievalCounterfactualReport",
    "RetrievalData",
    "RetrievalRobustnessReport",
    "RobustnessReport",
    "TEXT_PERTURBATIONS",
    "assert_invariant",
    "bootstrap_relative_drop",
    "corrupt_image",
    "counterfactual_report",
    "load_lexicons",
    "parse_lexicon",
    "perturb_text",
    "predict_probs",
    "resolve_image_edit",
    "retrieval_counterfactual_report",
    "retrieval_robustness_report",
    "robustness_report",
    "swap_shapes_frame",
    "text_counterfactuals",
]
