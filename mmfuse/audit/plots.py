"""PNG figures of the audit (matplotlib, Agg backend, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mmfuse.audit.report import AuditReport

__all__ = ["plot_audit", "require_matplotlib"]


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or ImportError with an install hint."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "the audit's plots need matplotlib: pip install matplotlib (or skip them with --no-plots)"
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_audit(report: AuditReport, out_dir: Path) -> list[Path]:
    """Class shares (labelled data), duplicate fractions and, with model features, label quality and matching
    scores (or, with a retrieval model, caption mismatch probabilities)."""
    plt = require_matplotlib()
    written = [_class_shares(plt, report, out_dir / "class_shares.png")] if report.balance else []
    written.append(_duplicates(plt, report, out_dir / "duplicates.png"))
    if report.label_errors:
        written.append(_label_quality(plt, report, out_dir / "label_quality.png"))
    if report.mismatches:
        written.append(_matching(plt, report, out_dir / "matching_scores.png"))
    if report.caption_mismatches:
        written.append(_caption_matching(plt, report, out_dir / "caption_mismatches.png"))
    return written


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _class_shares(plt: Any, report: AuditReport, path: Path) -> Path:
    splits = list(report.balance)
    k = len(report.class_names)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * k * max(len(splits), 1)), 3.5))
    width = 0.8 / max(len(splits), 1)
    for s, split in enumerate(splits):
        shares = report.balance[split].shares
        est = np.array([i.estimate or 0.0 for i in shares])
        err = np.array([[e - (i.low or e), (i.high or e) - e] for i, e in zip(shares, est)]).T  # (2, K)
        ax.bar(np.arange(k) + s * width, est, width, yerr=err, capsize=2, label=split)
    ax.axhline(report.config.min_relative_share / k, color="red", ls="--", lw=1, label="under-represented below")
    ax.set_xticks(np.arange(k) + 0.4 - width / 2, report.class_names, rotation=45, ha="right")
    ax.set_ylabel("share of split")
    ax.legend(fontsize=7)
    ax.set_title("class shares (95 % Wilson intervals)" if report.config.level == 0.95 else "class shares")
    return _save(plt, fig, path)


def _duplicates(plt: Any, report: AuditReport, path: Path) -> Path:
    labels, values = [], []
    for split, found in report.duplicates.items():
        for key, s in found.sets.items():
            labels.append(f"{split}: {key}")
            values.append(s.fraction.estimate or 0.0)
    for split, leak in report.leakage.items():
        labels += [f"{split} in train: images", f"{split} in train: examples"]
        values += [len(leak.leaked_images) / max(leak.n, 1), len(leak.leaked_examples) / max(leak.n, 1)]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(labels) + 1))
    ax.barh(np.arange(len(labels)), values)
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("fraction of split (redundant or leaked)")
    ax.set_title("duplicates and leakage")
    return _save(plt, fig, path)


def _label_quality(plt: Any, report: AuditReport, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    for split, found in report.label_errors.items():
        ax.hist(found.self_confidence, bins=bins, histtype="step", label=f"{split} (all)")
        if found.indices:
            ax.hist(found.self_confidence[found.indices], bins=bins, alpha=0.4, label=f"{split} (flagged)")
    ax.set_yscale("log")
    ax.set_xlabel("probe probability of the given label (self-confidence)")
    ax.set_ylabel("examples")
    ax.legend(fontsize=7)
    ax.set_title("label quality")
    return _save(plt, fig, path)


def _matching(plt: Any, report: AuditReport, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for split, found in report.mismatches.items():
        ax.hist(np.clip(found.z, -10, 10), bins=60, histtype="step", label=split)
    ax.axvline(-report.config.mismatch_z, color="red", ls="--", lw=1, label="flagged below")
    ax.set_yscale("log")
    ax.set_xlabel("robust z-score of the matching score (logit)")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=7)
    ax.set_title("image-text matching")
    return _save(plt, fig, path)


def _caption_matching(plt: Any, report: AuditReport, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    for split, found in report.caption_mismatches.items():
        ax.hist(found.posterior, bins=bins, histtype="step", label=split)
    ax.axvline(report.config.caption_mismatch_threshold, color="red", ls="--", lw=1, label="flagged from")
    ax.set_yscale("log")
    ax.set_xlabel("estimated probability that the caption does not describe its image")
    ax.set_ylabel("captions")
    ax.legend(fontsize=7)
    ax.set_title("caption-image mismatches")
    return _save(plt, fig, path)
