"""The dataset audit end to end: run every detector over the splits, gather the graded figures, write
``audit.json``, ``audit.md`` and PNG plots.

:func:`audit_data` needs only the data (class balance, duplicates, leakage); :func:`audit_model` adds what needs
frozen features of a model (label errors, image-text mismatches). The reference split (``train`` when present, else
the first split) is where the probes are fit: its own examples are scored out of fold, the others by the probe fit
on all of it. :func:`audit_captions` adds instead the caption-image mismatches of image-caption data found with a
retrieval model's embeddings, each split calibrated on its own. Each detector is a :mod:`mmfuse.progress` stage
(reported by ``mmfuse audit``, silent otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.audit.balance import ClassBalance, class_balance
from mmfuse.audit.caption_mismatch import CaptionMismatches, draw_other_images, find_caption_mismatches
from mmfuse.audit.config import AuditConfig
from mmfuse.audit.duplicates import ImageHashes, Leakage, SplitDuplicates, find_duplicates, find_leakage, hash_images
from mmfuse.audit.features import RetrievalFeatures, SplitFeatures
from mmfuse.audit.label_errors import (
    LabelErrors,
    find_label_errors,
    fit_predict_probabilities,
    out_of_fold_probabilities,
)
from mmfuse.audit.mismatch import Mismatches, find_mismatches, matching_probabilities
from mmfuse.audit.source import SplitData
from mmfuse.io import write_atomic, write_json
from mmfuse.progress import stage, track
from mmfuse.stats import Check

__all__ = [
    "AuditReport",
    "audit_captions",
    "audit_data",
    "audit_model",
    "other_images",
    "reference_split",
    "write_audit",
]


@dataclass
class AuditReport:
    """Everything the audit found.

    Attributes:
        class_names: label names.
        config: the thresholds and settings used.
        balance: per split, its class balance.
        duplicates: per split, duplicates within it.
        leakage: per evaluation split, its overlap with the training split.
        label_errors: per split, likely label errors (empty without model features).
        mismatches: per split, likely image-text mismatches (empty without model features).
        caption_mismatches: per split, likely caption-image mismatches found with a retrieval model (empty
            without one).
        notes: caveats for the reader (e.g. features that do not separate the classes).
        seconds: wall time of each stage.
        source: where the data and features came from (config, checkpoint).
    """

    class_names: tuple[str, ...]
    config: AuditConfig
    balance: dict[str, ClassBalance] = field(default_factory=dict)
    duplicates: dict[str, SplitDuplicates] = field(default_factory=dict)
    leakage: dict[str, Leakage] = field(default_factory=dict)
    label_errors: dict[str, LabelErrors] = field(default_factory=dict)
    mismatches: dict[str, Mismatches] = field(default_factory=dict)
    caption_mismatches: dict[str, CaptionMismatches] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def checks(self) -> list[Check]:
        """Every graded figure, in report order."""
        found: list[Check] = []
        for b in self.balance.values():
            found += b.checks
        groups: tuple[Mapping[str, Any], ...] = (
            self.duplicates, self.leakage, self.label_errors, self.mismatches, self.caption_mismatches,
        )  # fmt: skip
        for group in groups:
            for item in group.values():
                found += item.checks
        return found

    @property
    def passed(self) -> bool:
        """No graded figure failed."""
        return all(c.passed is not False for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        listed, names = self.config.max_listed, self.class_names
        return {
            "passed": self.passed,
            "source": self.source,
            "config": asdict(self.config),
            "class_names": list(names),
            "checks": [c.as_dict() for c in self.checks],
            "balance": {s: b.as_dict() for s, b in self.balance.items()},
            "duplicates": {
                s: {"n": d.n, **{k: v.as_dict(listed) for k, v in d.sets.items()}} for s, d in self.duplicates.items()
            },
            "leakage": {s: leak.as_dict(listed) for s, leak in self.leakage.items()},
            "label_errors": {s: e.as_dict(listed, names) for s, e in self.label_errors.items()},
            "mismatches": {s: m.as_dict(listed) for s, m in self.mismatches.items()},
            "caption_mismatches": {s: m.as_dict(listed) for s, m in self.caption_mismatches.items()},
            "notes": self.notes,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


def reference_split(splits: Mapping[str, Any], preferred: str = "train") -> str:
    """The split the probes are fit on: ``preferred`` when present, else the first."""
    return preferred if preferred in splits else next(iter(splits))


def audit_data(
    splits: Mapping[str, SplitData], class_names: tuple[str, ...], cfg: AuditConfig, train_split: str = "train"
) -> AuditReport:
    """Class balance (data with class labels), duplicates within every split, and leakage of the training split into
    the others. Rows that share an image (``SplitData.image_ids``) are compared image by image."""
    report = AuditReport(tuple(class_names), cfg)
    start = time.perf_counter()
    labelled = {name: split for name, split in splits.items() if class_names and split.has_labels}
    if len(labelled) < len(splits):
        unlabelled = ", ".join(name for name in splits if name not in labelled)
        report.notes.append(
            f"no class labels in {unlabelled} (e.g. captions): class balance and label errors were not computed there"
        )
    for name, split in track(labelled.items(), "class balance", unit="splits", detail=_name):
        report.balance[name] = class_balance(
            split.labels, class_names, cfg.min_relative_share, cfg.max_imbalance_ratio, cfg.level, cfg.n_boot, cfg.seed,
            name,
        )  # fmt: skip
    report.seconds["balance"] = time.perf_counter() - start
    start = time.perf_counter()
    with stage("image hashes", total=sum(s.num_images for s in splits.values()), unit="images") as current:
        hashes = {
            name: hash_images(current.track(split.images()), cfg.hash_size, _shared_images(split))
            for name, split in splits.items()
        }
    report.seconds["image_hashes"] = time.perf_counter() - start
    start = time.perf_counter()
    _duplicates_and_leakage(report, splits, hashes, train_split)
    report.seconds["duplicates"] = time.perf_counter() - start
    return report


def _shared_images(split: SplitData) -> np.ndarray | None:
    """Each row's image when rows share images, else None (one image per row)."""
    return None if split.image_ids is None else split.image_of()


def _duplicates_and_leakage(
    report: AuditReport, splits: Mapping[str, SplitData], hashes: dict[str, ImageHashes], train_split: str
) -> None:
    cfg = report.config
    for name, split in track(splits.items(), "duplicates", unit="splits", detail=_name):
        report.duplicates[name] = find_duplicates(
            name, hashes[name], split.texts, cfg.near_duplicate_distance, cfg.max_duplicate_image_fraction,
            cfg.max_duplicate_text_fraction, cfg.max_duplicate_example_fraction, cfg.level,
        )  # fmt: skip
    if train_split not in splits:
        report.notes.append(f"no {train_split!r} split: leakage between training and evaluation was not checked")
        return
    train = (hashes[train_split], splits[train_split].texts)
    evaluation = [(name, split) for name, split in splits.items() if name != train_split]
    for name, split in track(evaluation, "leakage", unit="splits", detail=_name):
        report.leakage[name] = find_leakage(
            name, train, (hashes[name], split.texts), cfg.near_duplicate_distance, cfg.max_leaked_image_fraction,
            cfg.max_leaked_example_fraction, cfg.max_leaked_text_fraction, cfg.level,
        )  # fmt: skip


def audit_model(
    report: AuditReport,
    splits: Mapping[str, SplitData],
    features: Mapping[str, SplitFeatures],
    negatives: SplitFeatures | None,
    train_split: str = "train",
) -> None:
    """Add likely label errors and image-text mismatches found with frozen model features to ``report``.

    Args:
        report: the report of :func:`audit_data` (filled in place).
        splits: the splits (labels, ground truth of planted noise when known).
        features: per split, the frozen features of its examples.
        negatives: features of shuffled pairs of the reference split (None = no mismatch search).
        train_split: the preferred reference split.
    """
    start = time.perf_counter()
    labelled = {name: split for name, split in splits.items() if report.class_names and split.has_labels}
    if labelled:
        _label_errors(report, labelled, features, reference_split(labelled, train_split))
    report.seconds["label_errors"] = time.perf_counter() - start
    if negatives is None:
        return
    start = time.perf_counter()
    cfg = report.config
    ref = reference_split(splits, train_split)
    positives = features[ref].fused
    for name in track(list(splits), "mismatches", unit="splits", detail=str):
        held_out = None if name == ref else features[name].fused
        score = matching_probabilities(positives, negatives.fused, held_out, cfg.folds, cfg.seed)
        report.mismatches[name] = find_mismatches(name, score, cfg.mismatch_z, cfg.max_mismatch_fraction, cfg.level)
    report.seconds["mismatches"] = time.perf_counter() - start


def other_images(split: SplitData, cfg: AuditConfig) -> np.ndarray:
    """(n, caption_negatives) random other images of each row of ``split``: the random pairs of the caption
    mismatch probe (the same for the same split and seed)."""
    return draw_other_images(split.image_of(), split.num_images, cfg.caption_negatives, cfg.seed)


def audit_captions(
    report: AuditReport,
    splits: Mapping[str, SplitData],
    features: Mapping[str, RetrievalFeatures],
    is_mismatched: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Add likely caption-image mismatches found with a retrieval model's embeddings to ``report``.

    Args:
        report: the report of :func:`audit_data` (filled in place).
        splits: the splits (their image ids and captions are listed with the flagged rows).
        features: per split, the retrieval model's embeddings (:func:`~mmfuse.audit.extract_retrieval_features`);
            a split without features, or with fewer than 2 images, is named in the notes.
        is_mismatched: per split, (n,) bool ground truth of planted mismatches, scored when given.
    """
    start = time.perf_counter()
    cfg = report.config
    for name in track(list(splits), "caption mismatches", unit="splits", detail=str):
        split = splits[name]
        if name not in features or split.num_images < 2:
            report.notes.append(f"caption mismatches were not searched in {name}: it needs 2 images or more and "
                                "the retrieval model's embeddings")  # fmt: skip
            continue
        ids = [split.image_ids[i] for i in split.first_rows()] if split.image_ids is not None else None
        report.caption_mismatches[name] = find_caption_mismatches(
            name, features[name], other_images(split, cfg), ids, split.texts, cfg.caption_mismatch_threshold,
            cfg.max_mismatch_fraction, None if is_mismatched is None else is_mismatched.get(name), cfg.folds,
            cfg.level, cfg.n_boot, cfg.seed,
        )  # fmt: skip
        _note_weak_separation(report, report.caption_mismatches[name])
    report.seconds["caption_mismatches"] = time.perf_counter() - start


_WEAK_SEPARATION = 0.75  # ROC AUC of real against random pairs below which the flags mean little


def _note_weak_separation(report: AuditReport, found: CaptionMismatches) -> None:
    if found.separation < _WEAK_SEPARATION:
        report.notes.append(
            f"the retrieval model's embeddings hardly tell the {found.split} captions' own images from random ones "
            f"(ROC AUC {found.separation:.3f} < {_WEAK_SEPARATION}): the caption mismatches flagged there mean little. "
            "Audit with --ckpt of a model trained on this data."
        )


def _label_errors(
    report: AuditReport, splits: Mapping[str, SplitData], features: Mapping[str, SplitFeatures], ref: str
) -> None:
    cfg, k = report.config, len(report.class_names)
    x_ref = features[ref].get(cfg.label_error_features)
    if x_ref is None:
        report.notes.append(f"the model has no {cfg.label_error_features!r} features: label errors were not searched")
        return
    y_ref = splits[ref].labels
    for name, split in track(splits.items(), "label errors", unit="splits", detail=_name):
        x = features[name].get(cfg.label_error_features)
        assert x is not None
        if name == ref:
            probs = out_of_fold_probabilities(x_ref, y_ref, k, cfg.folds, cfg.seed)
        else:
            probs = fit_predict_probabilities(x_ref, y_ref, x, k, cfg.seed)
        found = find_label_errors(name, split.labels, probs, cfg.max_label_error_fraction, split.is_noisy, cfg.level)
        report.label_errors[name] = found
    probe = report.label_errors[ref].probe_accuracy
    majority = float(np.bincount(y_ref, minlength=k).max() / max(len(y_ref), 1))
    if probe.low is not None and probe.low <= majority:
        report.notes.append(
            f"the probe on the {cfg.label_error_features!r} features is not clearly better than always answering the "
            f"most frequent class ({probe.format()} vs {majority:.3f} on {ref}): the features do not separate the "
            "classes, so the label errors and mismatches found with them mean little. Audit with --ckpt of a model "
            "trained on this data."
        )


def _name(item: tuple[str, Any]) -> str:
    """The name of a ``(name, value)`` item, for the progress bar."""
    return item[0]


def write_audit(report: AuditReport, out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write ``audit.json``, ``audit.md`` and (``plots``) PNG figures into ``out_dir``; returns the paths."""
    from mmfuse.audit.markdown import audit_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if plots:
        from mmfuse.audit.plots import plot_audit

        written += plot_audit(report, out)
    json_path, md_path = out / "audit.json", out / "audit.md"
    write_json(json_path, report.as_dict())
    write_atomic(md_path, audit_markdown(report, [p.name for p in written]))
    return [json_path, md_path, *written]
