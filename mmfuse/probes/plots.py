"""Accuracy-against-severity curves of a robustness report, drawn on matplotlib's Agg canvas (imported on first use;
no pyplot, no global backend switch; see :func:`mmfuse.plots.new_figure`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mmfuse.plots import new_figure

if TYPE_CHECKING:
    from mmfuse.probes.robustness import RobustnessReport

__all__ = ["save_robustness_curves"]

_PANELS = (("image", "image corruptions"), ("text", "text perturbations"), ("joint", "image + text"))


def save_robustness_curves(report: RobustnessReport, path: str | Path) -> Path:
    """Save one panel per kind (image, text, joint): accuracy with its interval against severity, severity 0 being
    the clean accuracy; the shifted split's accuracy is a dashed line. Returns ``path``."""
    panels = [(kind, title) for kind, title in _PANELS if report.curves(kind)]
    figure = new_figure(4.2 * max(len(panels), 1), 3.6)
    shift = report.curves("shift").get("shift")
    for k, (kind, title) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        for name, conditions in report.curves(kind).items():
            xs = [0, *(c.severity for c in conditions)]
            ys = [report.clean.estimate, *(c.accuracy.estimate for c in conditions)]
            lows = [report.clean.low, *(c.accuracy.low for c in conditions)]
            highs = [report.clean.high, *(c.accuracy.high for c in conditions)]
            (line,) = axes.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=name)
            axes.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.12, linewidth=0)
        if shift:
            axes.axhline(shift[0].accuracy.estimate, color="black", linestyle="--", linewidth=1, label="shifted split")
        axes.set_title(title)
        axes.set_xlabel("severity (0 = clean)")
        axes.set_ylabel("accuracy")
        axes.set_ylim(0.0, 1.02)
        axes.set_xticks(range(6))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=6, loc="lower left", ncol=2 if len(report.curves(kind)) > 6 else 1)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    return path
