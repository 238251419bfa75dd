"""The robustness report as Markdown: accuracy and relative drop per perturbation and severity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse.probes._stats import Estimate

if TYPE_CHECKING:
    from mmfuse.probes.robustness import RobustnessReport

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
        head = "| " + " | ".join(["", *(f"severity {s}" for s in severities), "mean"]) + " |"
        rule = "|---|" + "---|" * (len(severities) + 1)
        lines += [f"## {title}", "", "Accuracy:", "", head.replace("|  |", "| name |", 1), rule]
        for name, cs in curves.items():
            mean = sum(c.accuracy.value for c in cs) / len(cs)
            lines.append(f"| {name} | " + " | ".join(c.accuracy.format() for c in cs) + f" | {mean:.3f} |")
        lines += ["", "Relative drop:", "", head.replace("|  |", "| name |", 1), rule]
        for name, cs in curves.items():
            mean = sum(c.relative_drop.value for c in cs) / len(cs)
            lines.append(f"| {name} | " + " | ".join(_percent(c.relative_drop) for c in cs) + f" | {mean:.1%} |")
        lines.append("")
    return "\n".join(lines)


def _percent(e: Estimate) -> str:
    if e.value != e.value:  # NaN: the clean accuracy is 0
        return "n/a"
    return f"{e.value:.1%} [{e.low:.1%}, {e.high:.1%}]"
