"""Robustness curves against severity, drawn on matplotlib's Agg canvas (imported on first use; no pyplot, no global
backend switch; see :func:`mmfuse.plots.new_figure`): accuracy for classification, recall@K in both directions for
retrieval."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmfuse.plots import new_figure

if TYPE_CHECKING:
    from mmfuse.probes.retrieval_robustness import RetrievalRobustnessReport
    from mmfuse.probes.robustness import RobustnessReport
    from mmfuse.stats import Interval

__all__ = ["save_retrieval_robustness_curves", "save_robustness_curves"]

_PANELS = (("image", "image corruptions"), ("text", "text perturbations"), ("joint", "image + text"))


def save_robustness_curves(report: RobustnessReport, path: str | Path) -> Path:
    """Save one panel per kind (image, text, joint): accuracy with its interval against severity, severity 0 being
    the clean accuracy; the shifted split's accuracy is a dashed line. Returns ``path``."""
    panels = [(kind, title) for kind, title in _PANELS if report.curves(kind)]
    figure = new_figure(4.2 * max(len(panels), 1), 3.6)
    shift = report.curves("shift").get("shift")
    for k, (kind, title) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        _draw_panel(axes, report.curves(kind), report.clean, lambda c: c.accuracy, title, "accuracy")
        if shift:
            axes.axhline(shift[0].accuracy.estimate, color="black", linestyle="--", linewidth=1, label="shifted split")
            axes.legend(fontsize=6, loc="lower left", ncol=2 if len(report.curves(kind)) > 6 else 1)
    return _save(figure, path)


def save_retrieval_robustness_curves(report: RetrievalRobustnessReport, path: str | Path) -> Path:
    """Save recall@K against severity for a retrieval report: one column per kind (image, text, joint), text ->
    image in the top row and image -> text in the bottom row, severity 0 being the clean recall. Returns ``path``."""
    panels = [(kind, title) for kind, title in _PANELS if report.curves(kind)]
    columns = max(len(panels), 1)
    figure = new_figure(4.2 * columns, 7.0)
    for row, (direction, arrow) in enumerate((("t2i", "text → image"), ("i2t", "image → text"))):
        for k, (kind, title) in enumerate(panels):
            axes = figure.add_subplot(2, columns, row * columns + k + 1)
            _draw_panel(axes, report.curves(kind), report.clean[direction], _recall_of(direction),
                        f"{title}: {arrow}", f"recall@{report.k}")  # fmt: skip
    return _save(figure, path)


def _recall_of(direction: str) -> Callable[[Any], Interval]:
    def recall(condition: Any) -> Interval:
        value: Interval = condition.recall[direction]
        return value

    return recall


def _draw_panel(
    axes: Any,
    curves: Mapping[str, Sequence[Any]],
    clean: Interval,
    value: Callable[[Any], Interval],
    title: str,
    ylabel: str,
) -> None:
    """One line per curve with its interval shaded, from the clean value at severity 0 to each condition's."""
    for name, conditions in curves.items():
        xs = [0, *(c.severity for c in conditions)]
        ys = [clean.estimate, *(value(c).estimate for c in conditions)]
        lows = [clean.low, *(value(c).low for c in conditions)]
        highs = [clean.high, *(value(c).high for c in conditions)]
        (line,) = axes.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=name)
        axes.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.12, linewidth=0)
    axes.set_title(title)
    axes.set_xlabel("severity (0 = clean)")
    axes.set_ylabel(ylabel)
    axes.set_ylim(0.0, 1.02)
    axes.set_xticks(range(6))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=6, loc="lower left", ncol=2 if len(curves) > 6 else 1)


def _save(figure: Any, path: str | Path) -> Path:
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    return path
