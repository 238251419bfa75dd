"""Task heads (modules only; the losses are the objectives' in :mod:`mmfuse.tasks`); the imports below fill the
registry.

``HEADS`` holds the heads on the fused vector (classification; for retrieval the same head with two classes is the
image-text matching head, whose classes :mod:`mmfuse.heads.matching` names). The contrastive head works on the
encoders' pooled outputs and is built directly.
"""

from mmfuse.heads.base import HEADS, build_head
from mmfuse.heads.classification import ClassificationHead, ClassificationHeadConfig
from mmfuse.heads.contrastive import ContrastiveHead, ContrastiveHeadConfig
from mmfuse.heads.matching import MATCH, MATCHING_CLASSES, NO_MATCH

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
]
