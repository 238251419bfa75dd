"""Task heads; the imports below fill the registry.

``HEADS`` holds the heads on the fused vector (classification; for retrieval the same head with two classes is the
image-text matching head). The contrastive head works on the encoders' pooled outputs and is built directly.
"""

from mmfuse.heads.base import HEADS, build_head
from mmfuse.heads.classification import ClassificationHead, ClassificationHeadConfig
from mmfuse.heads.contrastive import ContrastiveHead, ContrastiveHeadConfig, contrastive_loss, same_image_mask
from mmfuse.heads.matching import (
    MATCH,
    MATCHING_CLASSES,
    NO_MATCH,
    MatchingPairs,
    matching_pairs,
    sample_hard_negatives,
    select_rows,
)

__all__ = [
    "HEADS",
    "MATCH",
    "MATCHING_CLASSES",
    "NO_MATCH",
    "build_head",
    "ClassificationHead",
    "ClassificationHeadConfig",
    "ContrastiveHead",
    "ContrastiveHeadConfig",
    "MatchingPairs",
    "contrastive_loss",
    "matching_pairs",
    "same_image_mask",
    "sample_hard_negatives",
    "select_rows",
]
