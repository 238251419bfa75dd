"""Counterfactual invariance of retrieval: swap a protected attribute's terms in the captions (``man`` -> ``woman``,
``he`` -> ``she``...) and measure how far each caption's own image moves in its text -> image ranking.

Only captions that contain a term of the attribute are probed; each gets one counterfactual per other value of the
attribute (:func:`~mmfuse.probes.counterfactual.text_counterfactuals`). The ranking is that of retrieval evaluation:
the caption's contrastive (ITC) embedding against every gallery image. For each attribute and each pair of values the
report gives the share of counterfactuals whose own image's rank changes, the share whose first-ranked image changes
(the top-1 flip rate, graded against a tolerance), the mean |Δrank| of the own image and the mean |Δp| of the
matching (ITM) head's probability for the (own image, caption) pair (optionally graded), each with a
percentile-bootstrap interval that resamples whole images: the captions of one image share the image they rank, so
they are not independent.

Reference: Garg et al., "Counterfactual Fairness in Text Classification through Robustness", AIES 2019; Zhao et al.,
"Understanding and Evaluating Racial Biases in Image Captioning", ICCV 2021 (gender and race in COCO captions).
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
from mmfuse.probes.counterfactual import Lists, _check_settings, _lexicons, _select, text_counterfactuals
from mmfuse.probes.lexicons import AttributeLexicon
from mmfuse.probes.retrieval_data import RetrievalData, caption_outputs, encode_images, true_image_ranks
from mmfuse.progress import stage, track
from mmfuse.stats import Check, Interval, bootstrap_interval
from mmfuse.types import EncoderOutput

__all__ = ["RankShift", "RetrievalAttributeResult", "RetrievalCounterfactualReport", "retrieval_counterfactual_report"]


@dataclass(frozen=True)
class RankShift:
    """How far text -> image rankings move under one set of counterfactual captions.

    Attributes:
        label: the attribute name (overall) or ``value before -> value after`` (one pair).
        n_images: images whose captions were probed (the bootstrap resamples them whole).
        n_captions: captions probed.
        n_counterfactuals: counterfactual captions ranked.
        rank_change_rate: share of counterfactuals whose own image's rank differs from the original caption's.
        top1_flip_rate: share whose first-ranked image differs from the original caption's.
        mean_abs_delta_rank: mean |rank after - rank before| of the own image.
        mean_abs_delta_match: mean |p after - p before| of the matching head's probability for (own image, caption).
        mean_rank: the own image's mean rank, before and after.
        recall_at_1: share whose own image ranks first, before and after.
        checks: the top-1 flip rate against the tolerance and the mean |Δ match p| against its own (None = reported).
    """

    label: str
    n_images: int
    n_captions: int
    n_counterfactuals: int
    rank_change_rate: Interval
    top1_flip_rate: Interval
    mean_abs_delta_rank: Interval
    mean_abs_delta_match: Interval
    mean_rank: tuple[float, float]
    recall_at_1: tuple[float, float]
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """Every graded figure is within its tolerance."""
        return all(check.passed is not False for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        brief = {"brief": True}
        return {
            "label": self.label,
            "n_images": self.n_images,
            "n_captions": self.n_captions,
            "n_counterfactuals": self.n_counterfactuals,
            "rank_change_rate": self.rank_change_rate.as_dict("value", "low", "high", **brief),
            "top1_flip_rate": self.top1_flip_rate.as_dict("value", "low", "high", **brief),
            "mean_abs_delta_rank": self.mean_abs_delta_rank.as_dict("value", "low", "high", **brief),
            "mean_abs_delta_match": self.mean_abs_delta_match.as_dict("value", "low", "high", **brief),
            "mean_rank": {"before": self.mean_rank[0], "after": self.mean_rank[1]},
            "recall_at_1": {"before": self.recall_at_1[0], "after": self.recall_at_1[1]},
            "checks": {c.name: {"threshold": c.threshold, "status": c.status} for c in self.checks},
            "passed": self.passed,
        }


@dataclass(frozen=True)
class RetrievalAttributeResult:
    """One protected attribute of the captions.

    Attributes:
        attribute: its name.
        overall: all its counterfactuals together; None when no caption has the attribute.
        pairs: one result per (value before -> value after).
        examples: the counterfactuals whose own image moved most (caption, image, texts, ranks, top-1 images).
        description: from the lexicon.
    """

    attribute: str
    overall: RankShift | None
    pairs: tuple[RankShift, ...]
    examples: tuple[dict[str, Any], ...]
    description: str = ""

    @property
    def passed(self) -> bool | None:
        """The overall verdict; None when the attribute is absent from the captions."""
        return None if self.overall is None else self.overall.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "kind": "text",
            "description": self.description,
            "present": self.overall is not None,
            "passed": self.passed,
            "overall": None if self.overall is None else self.overall.to_dict(),
            "pairs": [p.to_dict() for p in self.pairs],
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class RetrievalCounterfactualReport:
    """Counterfactual invariance of a retrieval model's text -> image ranking.

    Attributes:
        attributes: one result per probed attribute.
        split: the split probed.
        n_images: gallery images every caption is ranked against.
        n_captions: captions of the gallery images (probed or not).
        tolerance: largest top-1 flip rate that passes.
        dp_tolerance: largest mean |Δ match p| that passes (None = not checked).
        level: confidence level of the intervals.
        seed: seed of the bootstrap.
    """

    attributes: tuple[RetrievalAttributeResult, ...]
    split: str
    n_images: int
    n_captions: int
    tolerance: float
    dp_tolerance: float | None
    level: float
    seed: int

    @property
    def passed(self) -> bool:
        """Every attribute present in the captions passes."""
        return all(a.passed is not False for a in self.attributes)

    def __getitem__(self, attribute: str) -> RetrievalAttributeResult:
        for result in self.attributes:
            if result.attribute == attribute:
                return result
        raise KeyError(f"no attribute {attribute!r} in the report; it has {[a.attribute for a in self.attributes]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": "retrieval",
            "passed": self.passed,
            "split": self.split,
            "ranking": "text -> image by contrastive (ITC) similarity against every gallery image",
            "n_images": self.n_images,
            "n_captions": self.n_captions,
            "tolerance": self.tolerance,
            "dp_tolerance": self.dp_tolerance,
            "level": self.level,
            "seed": self.seed,
            "bootstrap": "percentile; whole images resampled (every counterfactual of the captions of one image)",
            "attributes": [a.to_dict() for a in self.attributes],
        }

    def to_markdown(self) -> str:
        """The report as Markdown: a summary table, then per attribute its pairs and the most moved captions."""
        from mmfuse.probes.retrieval_format import counterfactual_markdown

        return counterfactual_markdown(self)

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``counterfactual.json`` and ``counterfactual.md`` into ``out_dir``; returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out / "counterfactual.json", out / "counterfactual.md"
        write_json(json_path, self.to_dict())
        write_atomic(md_path, self.to_markdown())
        return json_path, md_path


def retrieval_counterfactual_report(
    model: nn.Module,
    data: RetrievalData,
    lists: Lists = None,
    *,
    attributes: Sequence[str] | None = None,
    tolerance: float = 0.02,
    dp_tolerance: float | None = None,
    split: str = "test",
    batch_size: int = 64,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_shown: int = 5,
) -> RetrievalCounterfactualReport:
    """Probe a retrieval model's text -> image ranking for invariance to protected attributes of the captions.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` with ``task: retrieval``.
        data: the gallery images and their captions.
        lists: attribute -> lexicon, or lexicon files that extend the built-in lists; None = the built-in lists.
        attributes: names of the attributes to probe; None = every attribute of ``lists`` (those no caption
            mentions are reported as absent).
        tolerance: largest top-1 flip rate that passes.
        dp_tolerance: largest mean |Δ match p| that passes; None = not checked.
        split: name of the split ``data`` comes from (for the report).
        batch_size: captions or images per forward.
        n_boot: bootstrap resamples.
        level: confidence level of the intervals.
        seed: seed of the bootstrap.
        n_shown: counterfactuals with the largest |Δrank| kept per attribute, for the report.

    Raises:
        ConfigError: an unknown attribute, an attribute asked for by name that no caption mentions, or captions in
            which no probed attribute occurs at all.
    """
    _check_settings(tolerance, dp_tolerance, batch_size, n_boot, level)
    lexicons = _select(_lexicons(lists), attributes)
    settings = {"n_boot": n_boot, "level": level, "seed": seed, "tolerance": tolerance, "dp_tolerance": dp_tolerance}
    with stage("gallery", unit="images") as current:
        gallery = encode_images(model, data.image_batches(batch_size))  # (I, E) and tokens (I, N, D)
        current.advance(len(gallery[0]))
    results = []
    for lexicon in track(lexicons.values(), "text attributes", unit="attributes", detail=lambda lex: lex.name):
        items = text_counterfactuals(data.texts, lexicon)
        if items:
            results.append(_attribute(model, data, lexicon, items, gallery, batch_size, settings, n_shown))
            continue
        if attributes is not None:
            raise ConfigError(
                f"attribute {lexicon.name!r}: none of the {len(data.texts)} captions contains any of its terms "
                f"(values {list(lexicon.values)}); the data lacks this attribute"
            )
        results.append(RetrievalAttributeResult(lexicon.name, None, (), (), lexicon.description))
    if all(r.overall is None for r in results):
        raise ConfigError(
            f"none of the {len(data.texts)} captions has a probed attribute ({', '.join(lexicons) or 'none chosen'}): "
            "no caption contains a listed term, so there is nothing to swap (a 0 % flip rate would mean nothing)"
        )
    return RetrievalCounterfactualReport(
        tuple(results), split, len(data.images), len(data.texts), tolerance, dp_tolerance, level, seed
    )


@dataclass(frozen=True)
class _Ranked:
    """Text -> image outcome of M captions.

    Attributes:
        rank: (M,) own image's rank. top: (M,) first-ranked image column. match: (M,) ITM match probability.
    """

    rank: np.ndarray
    top: np.ndarray
    match: np.ndarray

    @classmethod
    def of(cls, model: nn.Module, batches: Any, gallery: tuple[Tensor, EncoderOutput], own: Tensor) -> _Ranked:
        """Rank M captions (``batches``) whose own images are the gallery columns ``own`` (M,)."""
        image_embeds, features = gallery
        embeds, match = caption_outputs(model, batches, features, own.tolist())  # (M, E), (M,)
        rank = true_image_ranks(embeds, image_embeds, own)
        top = (embeds @ image_embeds.T).argmax(dim=1)  # (M, E) @ (E, I) -> (M, I) -> (M,)
        return cls(rank.numpy(), top.numpy(), match.numpy())

    def take(self, positions: np.ndarray) -> _Ranked:
        return _Ranked(self.rank[positions], self.top[positions], self.match[positions])


def _attribute(
    model: nn.Module,
    data: RetrievalData,
    lexicon: AttributeLexicon,
    items: list[tuple[int, str, str, str]],
    gallery: tuple[Tensor, EncoderOutput],
    batch_size: int,
    settings: dict[str, Any],
    n_shown: int,
) -> RetrievalAttributeResult:
    """Rank every counterfactual of one attribute against the gallery, beside its original caption."""
    rows = [t for t, *_ in items]  # (M,) the caption each counterfactual comes from
    probed = sorted(set(rows))
    own = data.text_images[probed]  # (C,)
    original = _Ranked.of(model, data.caption_batches(batch_size, rows=probed), gallery, own)
    position = {t: k for k, t in enumerate(probed)}
    at = np.array([position[t] for t in rows])  # (M,) each counterfactual's original among the probed
    before = original.take(at)
    texts = [text for *_, text in items]
    after = _Ranked.of(model, data.caption_batches(batch_size, rows=rows, texts=texts), gallery, own[at])
    images = data.text_images[rows].numpy()  # (M,) the bootstrap's clusters
    labels = [f"{a} -> {b}" for _, a, b, _ in items]
    args = (before, after, images, np.array(rows), settings)
    overall = _shift(lexicon.name, np.ones(len(rows), dtype=bool), *args)
    pairs = tuple(_shift(label, np.array(labels) == label, *args) for label in dict.fromkeys(labels))
    delta_rank = np.abs(after.rank - before.rank)
    order = np.lexsort((-np.abs(after.match - before.match), -delta_rank))[:n_shown]  # |Δrank|, then |Δ match p|
    examples = tuple(
        {
            "index": data.indices[rows[m]],
            "image": data.image_names[int(images[m])],
            "pair": labels[m],
            "original": data.texts[rows[m]],
            "counterfactual": texts[m],
            "rank_before": int(before.rank[m]),
            "rank_after": int(after.rank[m]),
            "top1_before": data.image_names[int(before.top[m])],
            "top1_after": data.image_names[int(after.top[m])],
            "match_before": round(float(before.match[m]), 6),
            "match_after": round(float(after.match[m]), 6),
        }
        for m in order
    )
    return RetrievalAttributeResult(lexicon.name, overall, pairs, examples, lexicon.description)


def _shift(
    label: str,
    mask: np.ndarray,
    before: _Ranked,
    after: _Ranked,
    images: np.ndarray,
    rows: np.ndarray,
    settings: dict[str, Any],
) -> RankShift:
    """The figures of the counterfactuals selected by ``mask`` (M,) bool, clustered by their image."""
    boot = {k: settings[k] for k in ("n_boot", "level", "seed")}
    clusters = images[mask]

    def interval(values: np.ndarray) -> Interval:
        return bootstrap_interval(values[mask].astype(np.float64), clusters=clusters, **boot)

    top1_flip_rate = interval(after.top != before.top)
    mean_abs_delta_match = interval(np.abs(after.match - before.match))
    checks = (
        Check("top-1 flip rate", top1_flip_rate, settings["tolerance"]),
        Check("mean |Δ match p|", mean_abs_delta_match, settings["dp_tolerance"]),
    )
    return RankShift(
        label=label,
        n_images=len(np.unique(clusters)),
        n_captions=len(np.unique(rows[mask])),
        n_counterfactuals=int(mask.sum()),
        rank_change_rate=interval(after.rank != before.rank),
        top1_flip_rate=top1_flip_rate,
        mean_abs_delta_rank=interval(np.abs(after.rank - before.rank)),
        mean_abs_delta_match=mean_abs_delta_match,
        mean_rank=(float(before.rank[mask].mean()), float(after.rank[mask].mean())),
        recall_at_1=(float((before.rank[mask] == 1).mean()), float((after.rank[mask] == 1).mean())),
        checks=checks,
    )
