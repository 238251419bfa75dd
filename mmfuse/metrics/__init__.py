"""Task metrics on top of torchmetrics: retrieval recall@K over a whole split, soft VQA accuracy."""

from mmfuse.metrics.retrieval import RetrievalRecall, recall_at_k
from mmfuse.metrics.vqa import VqaAccuracy

__all__ = ["RetrievalRecall", "VqaAccuracy", "recall_at_k"]
