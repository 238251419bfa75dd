"""Task heads; the imports below fill the registry."""

from mmfuse.heads.base import HEADS, build_head
from mmfuse.heads.classification import ClassificationHead, ClassificationHeadConfig

__all__ = ["HEADS", "build_head", "ClassificationHead", "ClassificationHeadConfig"]
