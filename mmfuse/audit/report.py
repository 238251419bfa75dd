"""The dataset audit end to end: run every detector over the splits, gather the graded figures, write
``audit.json``, ``audit.md`` and PNG plots.

:func:`audit_data` needs only the data (class balance, duplicates, leakage); :func:`audit_model` adds what needs
frozen features of a model (label errors, image-text mismatches). The reference split (``train`` when present, else
the first split) is where the probes are fit: its own examples are scored out of fold, the others by the probe fit
on all of it. Each detector is a :mod:`mmfuse.progress` stage (reported by ``mmfuse audit``, silent otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.audit.balance import ClassBalance, class_balance
from mmfuse.audit.config import AuditConfig
from mmfuse.audit.duplicates import ImageHashes, Leakage, SplitDuplicates, find_duplicates, find_leakage, hash_images
from mmfuse.audit.features import SplitFeatures
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

__all__ = ["AuditReport", "audit_data", "audit_model", "reference_split", "write_audit"]


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
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def checks(self) -> list[Check]:
        """Every graded figure, in report order."""
        found: list[Check] = []
        for b in self.balance.values():
            found += b.checks
        for group in (self.duplicates, self.leakage, self.label_errors, self.mismatches):
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
            "notes": self.notes,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


def reference_split(splits: Mapping[str, Any], preferred: str = "train") -> str:
    """The split the probes are fit on: ``preferred`` when present, else the first."""
    return preferred if preferred in splits else next(iter(splits))


def audit_data(
    splits: Mapping[str, SplitData], class_names: tuple[str, ...], cfg: AuditConfig, train_split: str = "train"
) -> AuditReport:
    """Class balance, duplicates within every split, and leakage of the training split into the others."""
    report = AuditReport(tuple(class_names), cfg)
    start = time.perf_counter()
    for name, split in track(splits.items(), "class balance", unit="splits", detail=_name):
        report.balance[name] = class_balance(
            split.labels, class_names, cfg.min_relative_share, cfg.max_imbalance_ratio, cfg.level, cfg.n_boot, cfg.seed,
            name,
        )  # fmt: skip
    report.seconds["balance"] = time.perf_counter() - start
    start = time.perf_counter()
    with stage("image hashes", total=sum(len(s) for s in splits.values()), unit="images") as current:
        hashes = {name: hash_images(current.track(split.images()), cfg.hash_size) for name, split in splits.items()}
    report.seconds["image_hashes"] = time.perf_counter() - start
    start = time.perf_counter()
    _duplicates_and_leakage(report, splits, hashes, train_split)
    report.seconds["duplicates"] = time.perf_counter() - start
    return report


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
    _label_errors(report, splits, features, reference_split(splits, train_split))
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
