"""Task metrics on top of torchmetrics: classification metrics by name, retrieval recall@K over a whole split (with
optional re-ranking by the matching head), soft VQA accuracy."""

from mmfuse.metrics.classification import CLASSIFICATION_METRICS, ProbabilityAUROC, build_classification_metrics
from mmfuse.metrics.retrieval import (
    PairScorer,
    RetrievalRecall,
    first_of_each,
    recall_at_k,
    rerank_top_k,
    top_k_candidates,
)
from mmfuse.metrics.vqa import VqaAccuracy

__all__ = [
    "CLASSIFICATION_METRICS",
    "PairScorer",
    "ProbabilityAUROC",
    "RetrievalRecall",
    "VqaAccuracy",
    "build_classification_metrics",
    "first_of_each",
    "recall_at_k",
    "rerank_top_k",
    "top_k_candidates",
]
