"""The image-text matching (ITM) head's classes.

The ITM head is the model's classification head (:class:`~mmfuse.heads.ClassificationHead`) with two classes on the
fused vector of the cross-attention fusion; its training pairs and hard negatives are the retrieval objective's
(:mod:`mmfuse.tasks.itm`). Reference: Li et al., "Align before Fuse" (ALBEF, 2021).
"""

from __future__ import annotations

__all__ = ["MATCH", "MATCHING_CLASSES", "NO_MATCH"]

NO_MATCH, MATCH = 0, 1  # ITM class indices
MATCHING_CLASSES = ("no_match", "match")  # index-aligned names
