"""Robustness of retrieval outside the lab: text -> image and image -> text recall@K under image corruptions, text
perturbations and both at once, at five severities; each with its relative drop from the clean recall and
percentile-bootstrap intervals that resample queries (captions for text -> image, images for image -> text), paired
with the clean run.

The perturbations are those of the classification probe (:mod:`mmfuse.probes.robustness`), seeded per (seed, kind,
name, index) where the index is the gallery column of an image or the position of a caption, so a result does not
depend on the batch size and one image sees the same noise pattern at every severity. An image corruption edits
every gallery image (the captions stay clean), a text perturbation every caption (the gallery stays clean); the
ranking is that of retrieval evaluation (contrastive similarity, :class:`~mmfuse.metrics.RetrievalRecall`).

Reference: Hendrycks & Dietterich, ICLR 2019 (ImageNet-C); Qiu et al., "Are Multimodal Models Robust to Image and
Text Perturbations?", 2022 (retrieval recall under the same kinds of perturbation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from mmfuse.errors import ConfigError
from mmfuse.io import write_atomic, write_json
from mmfuse.probes.data import ImageEditFn, TextEditFn
from mmfuse.probes.retrieval_data import RetrievalData, embed_images, embed_texts, i2t_hits, true_image_ranks
from mmfuse.probes.robustness import (
    SEVERITY_LEVELS,
    Joint,
    bootstrap_relative_drop,
    condition_label,
    plan_conditions,
)
from mmfuse.progress import stage, track
from mmfuse.stats import Interval, bootstrap_interval

__all__ = ["RetrievalCondition", "RetrievalRobustnessReport", "retrieval_robustness_report"]

DIRECTIONS = ("t2i", "i2t")
"""Text -> image (a caption finds its image) and image -> text (an image finds one of its captions)."""


@dataclass(frozen=True)
class RetrievalCondition:
    """Recall@K under one perturbation at one severity.

    Attributes:
        kind: ``image``, ``text`` or ``joint`` (both at the same severity).
        name: the corruption / perturbation (``noise+typos`` for a joint pair, ``mixed`` for a random pair each).
        severity: 1..5.
        recall: ``t2i`` and ``i2t`` -> recall@K under the perturbation.
        relative_drop: ``t2i`` and ``i2t`` -> ``1 - recall / clean recall``.
    """

    kind: str
    name: str
    severity: int
    recall: dict[str, Interval]
    relative_drop: dict[str, Interval]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "severity": self.severity,
            **{f"{d}_recall": self.recall[d].as_dict("value", "low", "high", brief=True) for d in DIRECTIONS},
            **{f"{d}_relative_drop": self.relative_drop[d].as_dict("value", "low", "high", brief=True)
               for d in DIRECTIONS},
        }  # fmt: skip


@dataclass(frozen=True)
class RetrievalRobustnessReport:
    """Recall@K of a retrieval model under perturbations, against its clean recall.

    Attributes:
        clean: ``t2i`` and ``i2t`` -> recall@K on the unperturbed gallery and captions.
        conditions: one entry per (kind, name, severity).
        k: the K of recall@K.
        split: the split probed.
        n_images: gallery images (the image -> text queries).
        n_captions: captions (the text -> image queries).
        level: confidence level of the intervals.
        seed: seed of the perturbations and of the bootstrap.
    """

    clean: dict[str, Interval]
    conditions: tuple[RetrievalCondition, ...]
    k: int
    split: str
    n_images: int
    n_captions: int
    level: float
    seed: int

    def curves(self, kind: str) -> dict[str, list[RetrievalCondition]]:
        """name -> its conditions by severity, for one kind."""
        out: dict[str, list[RetrievalCondition]] = {}
        for c in self.conditions:
            if c.kind == kind:
                out.setdefault(c.name, []).append(c)
        return {name: sorted(cs, key=lambda c: c.severity) for name, cs in out.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": "retrieval",
            "split": self.split,
            "k": self.k,
            "n_images": self.n_images,
            "n_captions": self.n_captions,
            "level": self.level,
            "seed": self.seed,
            "ranking": "contrastive (ITC) similarity; t2i: each caption against every gallery image; i2t: each image "
            "against every caption, a hit when any of its captions is in the top K",
            "bootstrap": "percentile; queries resampled (captions for t2i, images for i2t), paired with the clean run",
            **{f"clean_{d}_recall": self.clean[d].as_dict("value", "low", "high", brief=True) for d in DIRECTIONS},
            "conditions": [c.to_dict() for c in self.conditions],
        }

    def write(self, out_dir: str | Path, plot: bool = True) -> list[Path]:
        """Write ``robustness.json``, ``robustness.md`` and (``plot``) ``robustness.png``; returns the paths."""
        from mmfuse.probes.retrieval_format import robustness_markdown

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "robustness.json", out / "robustness.md"]
        write_json(paths[0], self.to_dict())
        image = None
        if plot:
            from mmfuse.probes.plots import save_retrieval_robustness_curves

            image = save_retrieval_robustness_curves(self, out / "robustness.png")
            paths.append(image)
        write_atomic(paths[1], robustness_markdown(self, image.name if image else None))
        return paths


def retrieval_robustness_report(
    model: nn.Module,
    data: RetrievalData,
    *,
    image_corruptions: Sequence[str] | None = None,
    text_perturbations: Sequence[str] | None = None,
    joint: Joint = "mixed",
    split: str = "test",
    severities: Sequence[int] = SEVERITY_LEVELS,
    k: int = 5,
    batch_size: int = 64,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> RetrievalRobustnessReport:
    """Recall@K of a retrieval model on ``data`` under every perturbation and severity.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` with ``task: retrieval``.
        data: the gallery images and their captions.
        image_corruptions: names in :data:`~mmfuse.probes.corruptions.IMAGE_CORRUPTIONS`; None = all.
        text_perturbations: names in :data:`~mmfuse.probes.text_perturb.TEXT_PERTURBATIONS`; None = all.
        joint: ``mixed`` = each image gets one random corruption and each caption one random perturbation at the
            same severity (one curve), ``pairs`` = every (image, text) pair (a curve each), ``none`` = skip.
        split: name of the split ``data`` comes from (for the report).
        severities: which of 1..5 to run.
        k: the K of recall@K.
        batch_size: captions or images per forward.
        n_boot: bootstrap resamples.
        level: confidence level.
        seed: seed of every perturbation and of the bootstrap.
    """
    if k < 1:
        raise ConfigError(f"k={k}: recall@K needs K >= 1")
    plan = plan_conditions(image_corruptions, text_perturbations, joint, severities, seed)
    boot: dict[str, Any] = {"n_boot": n_boot, "level": level, "seed": seed}
    with stage("clean recall", unit="captions") as current:
        clean_images = embed_images(model, data.image_batches(batch_size))  # (I, E)
        clean_texts = embed_texts(model, data.caption_batches(batch_size))  # (T, E)
        clean = _hits(clean_texts, clean_images, data.text_images, k)
        current.advance(len(clean_texts))

    def hits(text_edit: TextEditFn | None, image_edit: ImageEditFn | None) -> dict[str, np.ndarray]:
        texts = (
            clean_texts
            if text_edit is None
            else embed_texts(model, data.caption_batches(batch_size, text_edit=text_edit))
        )
        images = clean_images if image_edit is None else embed_images(model, data.image_batches(batch_size, image_edit))
        return _hits(texts, images, data.text_images, k)

    conditions = []
    for kind, name, severity, text_edit, image_edit in track(plan, "conditions", unit="conditions",
                                                             detail=condition_label):  # fmt: skip
        perturbed = hits(text_edit, image_edit)
        recall, drop = {}, {}
        for d in DIRECTIONS:
            recall[d], drop[d] = bootstrap_relative_drop(clean[d], perturbed[d], paired=True, **boot)
        conditions.append(RetrievalCondition(kind, name, severity, recall, drop))
    return RetrievalRobustnessReport(
        {d: bootstrap_interval(clean[d], **boot) for d in DIRECTIONS}, tuple(conditions), k, split,
        len(data.images), len(data.texts), level, seed,
    )  # fmt: skip


def _hits(texts: Tensor, images: Tensor, text_images: Tensor, k: int) -> dict[str, np.ndarray]:
    """``t2i``: (T,) 0/1 per caption, its image in its top ``k``; ``i2t``: (I,) 0/1 per image, one of its captions
    in its top ``k``."""
    t2i = (true_image_ranks(texts, images, text_images) <= k).numpy().astype(np.float64)
    i2t = i2t_hits(texts, images, text_images, k).numpy().astype(np.float64)
    return {"t2i": t2i, "i2t": i2t}
