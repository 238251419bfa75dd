"""The audit report as Markdown: a table of every graded figure, then one section per detector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mmfuse.stats import Check
from mmfuse.tables import format_table

if TYPE_CHECKING:
    from mmfuse.audit.report import AuditReport

__all__ = ["audit_markdown", "checks_table"]

_SHOWN = 10  # examples listed per finding in the Markdown (the JSON lists max_listed)


def checks_table(checks: Sequence[Check]) -> str:
    """A Markdown table: figure, estimate, interval, threshold, status."""
    rows = []
    for c in checks:
        i = c.interval
        value = "—" if i.estimate is None else f"{i.estimate:.4g}"
        interval = "—" if i.low is None or i.high is None else f"[{i.low:.4g}, {i.high:.4g}]"
        sign = "≤" if c.direction == "at_most" else "≥"
        threshold = "—" if c.threshold is None else f"{sign} {c.threshold:g}"
        rows.append([c.name, value, interval, threshold, c.status])
    return format_table(["figure", "value", "interval", "threshold", "status"], rows, "md")


def audit_markdown(report: AuditReport, plots: Sequence[str] = ()) -> str:
    """The whole report as a Markdown page (``plots``: PNG file names beside it)."""
    level = round(100 * report.config.level)
    verdict = "PASS" if report.passed else "FAIL"
    lines = [
        "# Dataset audit",
        "",
        f"**{verdict}**: every figure with its {level} % interval (Wilson for fractions, bootstrap otherwise); "
        "'inconclusive' marks an interval that straddles the threshold.",
        "",
    ]
    lines += [f"- {key}: `{value}`" for key, value in report.source.items()]
    lines += ["", checks_table(report.checks), ""]
    lines += _balance(report) + _duplicates(report) + _label_errors(report) + _mismatches(report)
    lines += _caption_mismatches(report)
    if report.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in report.notes], ""]
    cost = [[stage, f"{seconds:.1f}"] for stage, seconds in report.seconds.items()]
    lines += ["## Cost", "", format_table(["stage", "seconds"], cost, "md")]
    lines += ["", *[f"![{name}]({name})" for name in plots]]
    return "\n".join(lines).rstrip() + "\n"


def _balance(report: AuditReport) -> list[str]:
    splits = list(report.balance)
    if not splits:
        return []
    rows = []
    for k, name in enumerate(report.class_names):
        cells = [name]
        for split in splits:
            b = report.balance[split]
            flag = " ⚠" if name in b.under_represented else ""
            cells.append(f"{b.counts[k]} ({b.shares[k].format()}){flag}")
        rows.append(cells)
    lines = ["## Class balance", "", format_table(["class", *splits], rows, "md")]
    ratios = ", ".join(f"{s}: {b.imbalance_ratio.format(2)}" for s, b in report.balance.items())
    return lines + ["", f"Imbalance ratio (largest / smallest class): {ratios}. ⚠ = under-represented.", ""]


def _duplicates(report: AuditReport) -> list[str]:
    rows = [
        [split, s.kind, len(s.groups), s.redundant, s.fraction.format(4)]
        for split, found in report.duplicates.items()
        for s in found.sets.values()
    ]
    table = format_table(["split", "kind", "groups", "redundant", "fraction"], rows, "md")
    lines = ["## Duplicates and leakage", "", table]
    cfg = report.config
    lines += ["", f"Near duplicates: perceptual hash of {cfg.hash_size ** 2} bits, Hamming distance ≤ "
              f"{cfg.near_duplicate_distance}.", ""]  # fmt: skip
    for split, leak in report.leakage.items():
        lines.append(
            f"- {split} in train: {len(leak.leaked_images)} images, {len(leak.leaked_examples)} examples, "
            f"{len(leak.leaked_texts)} texts of {leak.n}"
        )
        pairs = ", ".join(f"{split} #{i} ~ train #{j} (d={d})" for i, j, d in leak.image_matches[:_SHOWN])
        if pairs:
            lines.append(f"  - first matches: {pairs}")
    return lines + [""]


def _label_errors(report: AuditReport) -> list[str]:
    if not report.label_errors:
        return []
    lines = [
        "## Likely label errors",
        "",
        f"Confident learning (cleanlab) on out-of-fold probabilities of a logistic-regression probe on the model's "
        f"frozen `{report.config.label_error_features}` features ({report.config.folds} folds).",
        "",
    ]
    names = report.class_names
    for split, found in report.label_errors.items():
        lines.append(
            f"- **{split}**: {len(found.indices)} flagged of {found.n} ({found.fraction.format(4)}); probe accuracy on "
            f"the given labels {found.probe_accuracy.format()}"
        )
        if found.ground_truth is not None:
            gt = found.ground_truth
            truth = f"precision {gt.precision.format()}, recall {gt.recall.format()}"
            lines.append(f"  - against the planted noise: {truth}")
        shown = list(zip(found.indices, found.given, found.suggested))[:_SHOWN]
        if shown:
            lines.append("  - " + ", ".join(f"#{i} {names[g]} → {names[s]}" for i, g, s in shown))
    return lines + [""]


def _mismatches(report: AuditReport) -> list[str]:
    if not report.mismatches:
        return []
    lines = [
        "## Likely image-text mismatches",
        "",
        "Matching score: out-of-fold probability of a logistic-regression matching probe (real vs shuffled pairs, "
        f"fused features); flagged below a robust z-score of -{report.config.mismatch_z:g}.",
        "",
    ]
    for split, found in report.mismatches.items():
        shown = ", ".join(f"#{i} (p={found.score[i]:.3f})" for i in found.indices[:_SHOWN])
        lines.append(f"- **{split}**: {len(found.indices)} flagged of {found.n} ({found.fraction.format(4)}) {shown}")
    return lines + [""]


def _caption_mismatches(report: AuditReport) -> list[str]:
    if not report.caption_mismatches:
        return []
    cfg = report.config
    lines = [
        "## Likely caption-image mismatches",
        "",
        f"Each caption against its own image and {cfg.caption_negatives} random other images of its split, by "
        "positive-unlabelled learning on the retrieval model's similarities (a probe of real against random pairs, "
        "out of fold by image, calibrated per split); flagged at an estimated probability of a mismatch of "
        f"{cfg.caption_mismatch_threshold:g} or more.",
        "",
    ]
    for split, found in report.caption_mismatches.items():
        lines.append(
            f"- **{split}**: {len(found.indices)} flagged of {found.n} captions of {found.num_images} images "
            f"({found.fraction.format(4)}); estimated mismatched fraction {found.prior.format(4)}; real against random "
            f"pairs ROC AUC {found.separation:.3f}"
        )
        if found.ground_truth is not None:
            gt = found.ground_truth
            lines.append(f"  - against the planted mismatches: precision {gt.precision.format()}, "
                         f"recall {gt.recall.format()}")  # fmt: skip
        for i, row in list(zip(found.indices, found.listed))[:_SHOWN]:
            text = row.get("text", "")
            lines.append(f"  - #{i} {row['image_id']} (p={found.posterior[i]:.3f}, own image ranked "
                         f"{found.own_rank[i] + 1}, best {row['best_image_id']}): {text}")  # fmt: skip
    return lines + [""]
