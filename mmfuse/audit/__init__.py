"""Dataset audit and baseline ladder: check the data and the need for a fusion model before trusting a result.

* :mod:`~mmfuse.audit.balance`: class counts, shares and the imbalance ratio; under-represented classes.
* :mod:`~mmfuse.audit.duplicates`: exact and near-duplicate images, duplicate texts and examples, train/eval leakage.
* :mod:`~mmfuse.audit.label_errors`: likely label errors by confident learning on out-of-fold probe probabilities.
* :mod:`~mmfuse.audit.mismatch`: likely image-text mismatches from an image-text matching probe.
* :mod:`~mmfuse.audit.caption_mismatch`: likely caption-image mismatches of image-caption data, from a retrieval
  model's embeddings (positive-unlabelled learning against random pairs).
* :mod:`~mmfuse.audit.baselines`: majority, text-only, image-only, concat and the model, with intervals.
* :mod:`~mmfuse.audit.report`: everything together, written as JSON, Markdown and PNG plots.

Every figure carries a confidence interval (:mod:`mmfuse.stats`) and a pass/fail against a threshold the
user sets (:class:`AuditConfig`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse._lazy import lazy_exports

if TYPE_CHECKING:
    from mmfuse.audit.balance import ClassBalance, class_balance
    from mmfuse.audit.baselines import BaselineLadder, LadderRow, baseline_ladder, write_ladder
    from mmfuse.audit.caption_mismatch import CaptionMismatches, find_caption_mismatches, mismatch_probabilities
    from mmfuse.audit.config import AuditConfig
    from mmfuse.audit.duplicates import find_duplicates, find_leakage, hash_images
    from mmfuse.audit.features import RetrievalFeatures, SplitFeatures, extract_features, extract_retrieval_features
    from mmfuse.audit.label_errors import detection_score, find_label_errors, out_of_fold_probabilities
    from mmfuse.audit.mismatch import find_mismatches, matching_probabilities
    from mmfuse.audit.report import AuditReport, audit_captions, audit_data, audit_model, write_audit
    from mmfuse.audit.source import SplitData, splits_of
    from mmfuse.stats import Check, Interval, bootstrap_interval, wilson_interval

# Module -> the public names it defines, imported on first use: `mmfuse audit --help` reads AuditConfig alone. The
# statistics live in mmfuse.stats and are re-exported here.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "mmfuse.audit.balance": ("ClassBalance", "class_balance"),
    "mmfuse.audit.caption_mismatch": ("CaptionMismatches", "find_caption_mismatches", "mismatch_probabilities"),
    "mmfuse.audit.baselines": ("BaselineLadder", "LadderRow", "baseline_ladder", "write_ladder"),
    "mmfuse.audit.config": ("AuditConfig",),
    "mmfuse.audit.duplicates": ("find_duplicates", "find_leakage", "hash_images"),
    "mmfuse.audit.features": ("RetrievalFeatures", "SplitFeatures", "extract_features", "extract_retrieval_features"),
    "mmfuse.audit.label_errors": ("detection_score", "find_label_errors", "out_of_fold_probabilities"),
    "mmfuse.audit.mismatch": ("find_mismatches", "matching_probabilities"),
    "mmfuse.audit.report": ("AuditReport", "audit_captions", "audit_data", "audit_model", "write_audit"),
    "mmfuse.audit.source": ("SplitData", "splits_of"),
    "mmfuse.stats": ("Check", "Interval", "bootstrap_interval", "wilson_interval"),
}

__all__ = [
    "AuditConfig",
    "AuditReport",
    "BaselineLadder",
    "CaptionMismatches",
    "Check",
    "ClassBalance",
    "Interval",
    "LadderRow",
    "RetrievalFeatures",
    "SplitData",
    "SplitFeatures",
    "audit_captions",
    "audit_data",
    "audit_model",
    "baseline_ladder",
    "bootstrap_interval",
    "class_balance",
    "detection_score",
    "extract_features",
    "extract_retrieval_features",
    "find_caption_mismatches",
    "find_duplicates",
    "find_label_errors",
    "find_leakage",
    "find_mismatches",
    "hash_images",
    "matching_probabilities",
    "mismatch_probabilities",
    "out_of_fold_probabilities",
    "splits_of",
    "wilson_interval",
    "write_audit",
    "write_ladder",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
