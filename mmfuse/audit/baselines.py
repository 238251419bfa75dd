"""The baseline ladder: is the fusion model warranted? Accuracy on one split for the majority class, frozen-feature
linear probes on the text alone, the image alone and both side by side (concatenated pooled vectors, a late fusion
with no cross-modal interaction), and the model itself, each with a bootstrap interval over the examples, plus the
model's gain over the best simpler rung as a paired bootstrap interval graded against a minimum gain.

Probes are the standardised logistic regression of :func:`mmfuse.audit.label_errors.make_probe`, fit on the
training split's features and scored on the evaluation split. Rungs measured elsewhere, such as the unimodal and
concat fusions trained end to end (``mmfuse baselines --trained``), join the ladder as :class:`TrainedRung`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from mmfuse.audit.features import SplitFeatures
from mmfuse.audit.label_errors import make_probe
from mmfuse.io import write_atomic, write_json
from mmfuse.progress import track
from mmfuse.stats import Check, Interval, bootstrap_interval
from mmfuse.tables import format_table

__all__ = [
    "LadderRow",
    "BaselineLadder",
    "TrainedRung",
    "majority_correct",
    "probe_correct",
    "baseline_ladder",
    "write_ladder",
]

# (rung, feature set of SplitFeatures.get, method) of the probe rungs, simplest first.
PROBE_RUNGS: tuple[tuple[str, str, str], ...] = (
    ("text only", "text", "linear probe on the frozen pooled text features"),
    ("image only", "image", "linear probe on the frozen pooled image features"),
    ("concat / late fusion", "image+text", "linear probe on the concatenated pooled image and text features"),
)


@dataclass(frozen=True)
class LadderRow:
    """One rung of the ladder.

    Attributes:
        name: the rung, e.g. ``image only``.
        method: how its predictions were made.
        accuracy: accuracy on the evaluation split with a bootstrap interval; None when the rung could not run.
        correct: (n,) bool per-example correctness (not written to JSON); None when the rung could not run.
        note: why a rung could not run.
    """

    name: str
    method: str
    accuracy: Interval | None
    correct: np.ndarray | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "accuracy": None if self.accuracy is None else self.accuracy.as_dict(),
            "note": self.note,
        }


@dataclass(frozen=True)
class TrainedRung:
    """A simpler model scored on the evaluation split outside the ladder, e.g. the image-only fusion trained end to
    end.

    Attributes:
        name: the rung, e.g. ``image only (trained)``.
        method: how it was trained.
        correct: (n,) bool per-example correctness on the evaluation split, in its record order.
    """

    name: str
    method: str
    correct: np.ndarray


@dataclass(frozen=True)
class BaselineLadder:
    """The ladder on one evaluation split.

    Attributes:
        split: the evaluation split.
        num_classes: K (chance is ``1 / K``).
        rows: the rungs, simplest first, the model last.
        best_baseline: the simpler rung with the highest accuracy.
        gain: model accuracy minus ``best_baseline``'s, paired bootstrap interval over the same examples.
        checks: the gain against the user's minimum gain.
    """

    split: str
    num_classes: int
    rows: list[LadderRow]
    best_baseline: str
    gain: Interval
    checks: list[Check] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "num_classes": self.num_classes,
            "chance": 1.0 / self.num_classes,
            "rows": [row.as_dict() for row in self.rows],
            "best_baseline": self.best_baseline,
            "gain_over_best_baseline": self.gain.as_dict(),
            "checks": [c.as_dict() for c in self.checks],
        }

    def to_markdown(self) -> str:
        """The ladder as a Markdown table with the gain and its grade underneath."""
        lines = [
            f"# Baseline ladder ({self.split} split)",
            "",
            f"Accuracy with a {_level(self)} bootstrap interval over the {self.split} examples; chance (1 / K) is "
            f"{1.0 / self.num_classes:.3f}.",
            "",
            format_table(["rung", "accuracy", "interval", "method"], [_ladder_row(row) for row in self.rows], "md"),
        ]
        check = self.checks[0]
        lines += [
            "",
            f"Model minus the best simpler rung ({self.best_baseline}): {self.gain.format()} (paired bootstrap); "
            f"minimum gain {check.threshold}: **{check.status}**.",
        ]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        """The ladder as a plain-text table with the gain underneath (what ``mmfuse fit`` prints)."""
        rows = [_ladder_row(row)[:3] for row in self.rows]
        table = format_table(["rung", "accuracy", f"{_level(self)} interval"], rows, "text", "lrl")
        check = self.checks[0]
        return "\n".join(
            [
                f"baseline ladder ({self.split} split; chance {1.0 / self.num_classes:.3f})",
                table,
                f"model minus {self.best_baseline}: {self.gain.format()} (paired bootstrap); minimum gain "
                f"{check.threshold}: {check.status}",
            ]
        )


class LadderLike(Protocol):
    """What :func:`write_ladder` writes: a ladder's JSON fields and its Markdown."""

    def as_dict(self) -> dict[str, Any]: ...

    def to_markdown(self) -> str: ...


def majority_correct(train_labels: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """(n,) bool: whether the most frequent training label is each example's label.

    Example:
        >>> majority_correct([0, 1, 1], [1, 0, 1]).tolist()
        [True, False, True]
    """
    train = np.asarray(train_labels, dtype=np.int64)
    return np.asarray(labels, dtype=np.int64) == int(np.bincount(train).argmax())


def probe_correct(
    train_features: np.ndarray, train_labels: ArrayLike, features: np.ndarray, labels: ArrayLike, seed: int = 0
) -> np.ndarray:
    """(n,) bool: whether a linear probe fit on the training features classifies each example right."""
    probe = make_probe(seed=seed).fit(train_features, np.asarray(train_labels, dtype=np.int64))
    return probe.predict(features) == np.asarray(labels, dtype=np.int64)


def baseline_ladder(
    train: SplitFeatures,
    train_labels: ArrayLike,
    evaluation: SplitFeatures,
    labels: ArrayLike,
    model_name: str,
    split: str = "test",
    min_gain: float | None = 0.0,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    trained: Sequence[TrainedRung] = (),
) -> BaselineLadder:
    """Every rung on the evaluation split.

    Args:
        train: frozen features of the training split (the probes are fit on them).
        train_labels: (n_train,) training labels.
        evaluation: frozen features of the evaluation split; its ``logits`` give the model's own predictions.
        labels: (n,) labels of the evaluation split.
        model_name: the model's rung name, e.g. ``model (cross_attention)``.
        split: the evaluation split's name.
        min_gain: smallest accuracy gain of the model over the best simpler rung that warrants it; None = reported.
        level: confidence level of the intervals.
        n_boot: bootstrap resamples.
        seed: seed of the probes and the resampling.
        trained: rungs scored elsewhere (simpler models trained end to end), placed after the probes.
    """
    y = np.asarray(labels, dtype=np.int64)
    num_classes = int(evaluation.logits.shape[1])

    def row(name: str, method: str, correct: np.ndarray | None, note: str = "") -> LadderRow:
        accuracy = None if correct is None else bootstrap_interval(correct, None, n_boot, level, seed)
        return LadderRow(name, method, accuracy, correct, note)

    rows = [row("majority class", "the most frequent training label", majority_correct(train_labels, y))]
    is_single_class = len(np.unique(np.asarray(train_labels))) < 2  # nothing for a probe to tell apart
    for name, feature_set, method in track(PROBE_RUNGS, "probes", unit="rungs", detail=lambda rung: rung[0]):
        fit_on, score_on = train.get(feature_set), evaluation.get(feature_set)
        if fit_on is None or score_on is None:
            rows.append(row(name, method, None, f"the model has no {feature_set} features to probe"))
            continue
        if is_single_class:
            rows.append(row(name, method, None, "the training labels hold a single class"))
            continue
        rows.append(row(name, method, probe_correct(fit_on, train_labels, score_on, y, seed)))
    for rung in trained:
        correct = np.asarray(rung.correct, dtype=bool)
        if correct.shape != y.shape:
            raise ValueError(f"trained rung {rung.name!r}: {correct.shape} correctness values for {y.shape} labels")
        rows.append(row(rung.name, rung.method, correct))
    rows.append(row(model_name, "the model's own predictions", evaluation.logits.argmax(1) == y))
    simpler = [r for r in rows[:-1] if r.correct is not None and r.accuracy is not None]
    best = max(simpler, key=lambda r: r.accuracy.estimate or 0.0)  # type: ignore[union-attr]
    assert rows[-1].correct is not None and best.correct is not None
    difference = rows[-1].correct.astype(np.float64) - best.correct.astype(np.float64)  # paired, per example
    gain = bootstrap_interval(difference, None, n_boot, level, seed)
    check = Check(f"model gain over the best simpler rung ({best.name})", gain, min_gain, "at_least")
    return BaselineLadder(split, num_classes, rows, best.name, gain, [check])


def write_ladder(ladder: LadderLike, out_dir: str | Path, extra: dict[str, Any] | None = None) -> list[Path]:
    """Write ``baselines.json`` (with ``extra`` settings merged in) and ``baselines.md`` into ``out_dir``."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "baselines.json", out / "baselines.md"
    write_json(json_path, {**(extra or {}), **ladder.as_dict()})
    write_atomic(md_path, ladder.to_markdown())
    return [json_path, md_path]


def _level(ladder: BaselineLadder) -> str:
    levels: Sequence[float] = [r.accuracy.level for r in ladder.rows if r.accuracy is not None]
    return f"{round(100 * levels[0])} %" if levels else ""


def _ladder_row(row: LadderRow) -> list[str]:
    acc = row.accuracy
    if acc is None or acc.estimate is None:
        return [row.name, "—", "—", f"{row.method} ({row.note})"]
    return [row.name, f"{acc.estimate:.3f}", f"[{acc.low:.3f}, {acc.high:.3f}]", row.method]
