"""The robustness report as Markdown: accuracy and relative drop per perturbation and severity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse.stats import Interval
from mmfuse.tables import format_table

if TYPE_CHECKING:
    from mmfuse.probes.robustness import Condition, RobustnessReport

__all__ = ["robustness_markdown"]

_TITLES = {"image": "Image corruptions", "text": "Text perturbations", "joint": "Image and text together"}


def robustness_markdown(report: RobustnessReport, image: str | None = None) -> str:
    """Markdown of ``report``; ``image`` is the file name of the curves PNG next to it (None = no picture)."""
    lines = [
        "# Robustness outside the lab",
        "",
        f"Clean accuracy on the {report.split} split ({report.clean.n} examples): {report.clean.format()}. "
        f"Relative drop = 1 − accuracy / clean accuracy. {report.level:.0%} percentile-bootstrap intervals "
        f"(examples resampled, paired with the clean run). Perturbations are seeded (seed {report.seed}) and "
        "deterministic.",
        "",
    ]
    if image:
        lines += [f"![accuracy against severity]({image})", ""]
    shift = report.curves("shift").get("shift")
    if shift:
        c = shift[0]
        lines += [
            "## Shifted split",
            "",
            f"Accuracy on the shifted split ({c.accuracy.n} examples): {c.accuracy.format()}; relative drop "
            f"{_percent(c.relative_drop)} (the two splits resampled independently).",
            "",
        ]
    for kind, title in _TITLES.items():
        curves = report.curves(kind)
        if not curves:
            continue
        severities = sorted({c.severity for cs in curves.values() for c in cs})
        headers = ["name", *(f"severity {s}" for s in severities), "mean"]
        accuracy = [
            [name, *(c.accuracy.format() for c in cs), _mean(cs, "accuracy", ".3f")] for name, cs in curves.items()
        ]
        drop = [
            [name, *(_percent(c.relative_drop) for c in cs), _mean(cs, "relative_drop", ".1%")]
            for name, cs in curves.items()
        ]
        lines += [f"## {title}", "", "Accuracy:", "", format_table(headers, accuracy, "md")]
        lines += ["", "Relative drop:", "", format_table(headers, drop, "md")]
        lines.append("")
    return "\n".join(lines)


def _percent(e: Interval) -> str:
    if e.estimate is None or e.low is None or e.high is None:  # undefined: the clean accuracy is 0
        return "n/a"
    return f"{e.estimate:.1%} [{e.low:.1%}, {e.high:.1%}]"


def _mean(conditions: list[Condition], field: str, spec: str) -> str:
    """The mean estimate of ``field`` over ``conditions``; ``n/a`` when one of them is undefined."""
    values = [getattr(c, field).estimate for c in conditions]
    return "n/a" if None in values else format(sum(values) / len(values), spec)
