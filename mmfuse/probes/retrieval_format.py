"""The retrieval probes' reports as Markdown: counterfactual rank shifts per attribute, and recall@K per perturbation
and severity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmfuse.stats import Interval, rule_of_three
from mmfuse.tables import format_table

if TYPE_CHECKING:
    from mmfuse.probes.retrieval_counterfactual import (
        RankShift,
        RetrievalAttributeResult,
        RetrievalCounterfactualReport,
    )
    from mmfuse.probes.retrieval_robustness import RetrievalCondition, RetrievalRobustnessReport

__all__ = ["counterfactual_markdown", "robustness_markdown"]

_SHIFT_COLUMNS = ["images", "captions", "counterfactuals", "rank changed", "top-1 flipped", "mean abs Δrank",
                  "mean abs Δ match p", "verdict"]  # fmt: skip
_ABSENT = [0, 0, 0, "not in the data", "—", "—", "—", "—"]
_TITLES = {"image": "Image corruptions", "text": "Text perturbations", "joint": "Image and text together"}
_DIRECTION_TITLES = {"t2i": "Text → image", "i2t": "Image → text"}


def counterfactual_markdown(report: RetrievalCounterfactualReport) -> str:
    """Markdown of a retrieval counterfactual report: the verdict and a summary table (the part a terminal shows),
    then per attribute its pairs of values, the own image's rank and recall@1 before and after, and the captions
    whose own image moved most."""
    dp = "none" if report.dp_tolerance is None else f"{report.dp_tolerance:g}"
    lines = [
        "# Counterfactual invariance of retrieval",
        "",
        f"Verdict: **{'PASS' if report.passed else 'FAIL'}** (top-1 flip-rate tolerance {report.tolerance:g}, mean "
        f"|Δ match p| tolerance {dp}). Each caption of the {report.split} split that contains a term of an "
        f"attribute is ranked against all {report.n_images} images ({report.n_captions} captions) by contrastive "
        "similarity, before and after its terms of one value are swapped for another's. *Rank changed*: the own "
        "image's rank moves; *top-1 flipped*: the first-ranked image changes; *Δ match p*: the change in the "
        f"matching head's probability for (own image, caption). {report.level:.0%} percentile-bootstrap intervals "
        "resampling whole images.",
        "",
        format_table(
            ["attribute", *_SHIFT_COLUMNS],
            [[a.attribute, *(_cells(a.overall) if a.overall else _ABSENT)] for a in report.attributes],
            "md",
            "lrrr",
        ),
    ]
    for a in report.attributes:
        if a.overall is not None:
            lines += ["", *_attribute_section(a)]
    return "\n".join(lines) + "\n"


def _cells(s: RankShift) -> list[Any]:
    flips = s.top1_flip_rate.format()
    if s.top1_flip_rate.estimate == 0.0:
        flips += f" (none of {s.n_counterfactuals}; 95 % bound {rule_of_three(s.n_counterfactuals):.3f})"
    graded = [c for c in s.checks if c.passed is not None]
    verdict = "pass" if s.passed else "**fail**"
    if any(c.conclusive is False for c in graded):
        verdict += " (inconclusive)"
    return [s.n_images, s.n_captions, s.n_counterfactuals, s.rank_change_rate.format(), flips,
            s.mean_abs_delta_rank.format(2), s.mean_abs_delta_match.format(), verdict]  # fmt: skip


def _attribute_section(a: RetrievalAttributeResult) -> list[str]:
    lines = [f"## {a.attribute}", ""]
    if a.description:
        lines += [a.description, ""]
    shifts = [s for s in (a.overall, *a.pairs) if s is not None]
    lines.append(format_table(["pair", *_SHIFT_COLUMNS], [[p.label, *_cells(p)] for p in a.pairs], "md", "lrrr"))
    rows = [[s.label, f"{s.mean_rank[0]:.2f} → {s.mean_rank[1]:.2f}",
             f"{s.recall_at_1[0]:.3f} → {s.recall_at_1[1]:.3f}"] for s in shifts]  # fmt: skip
    lines += ["", "Own image, before → after:", "", format_table(["", "mean rank", "recall@1"], rows, "md", "lrr")]
    if a.examples:
        cells = [
            [e["index"], e["image"], e["pair"], e["original"], e["counterfactual"],
             f"{e['rank_before']} → {e['rank_after']}",
             e["top1_before"] if e["top1_before"] == e["top1_after"] else f"{e['top1_before']} → {e['top1_after']}",
             f"{e['match_before']:.3f} → {e['match_after']:.3f}"]
            for e in a.examples
        ]  # fmt: skip
        headers = ["#", "image", "pair", "original", "counterfactual", "rank", "top-1 image", "match p"]
        lines += ["", "Largest |Δrank|:", "", format_table(headers, cells, "md", "r")]
    return lines


def robustness_markdown(report: RetrievalRobustnessReport, image: str | None = None) -> str:
    """Markdown of a retrieval robustness report; ``image`` is the file name of the curves PNG next to it."""
    clean = ", ".join(f"{_DIRECTION_TITLES[d].lower()} {report.clean[d].format()}" for d in report.clean)
    lines = [
        "# Robustness of retrieval outside the lab",
        "",
        f"Clean recall@{report.k} on the {report.split} split ({report.n_images} images, {report.n_captions} "
        f"captions): {clean}. Text → image: each caption against every image; image → text: each image against "
        f"every caption (a hit when one of its captions is in the top {report.k}); both by contrastive similarity. "
        f"Relative drop = 1 − recall / clean recall. {report.level:.0%} percentile-bootstrap intervals (queries "
        f"resampled, paired with the clean run). Perturbations are seeded (seed {report.seed}) and deterministic.",
        "",
    ]
    if image:
        lines += [f"![recall@{report.k} against severity]({image})", ""]
    for kind, title in _TITLES.items():
        curves = report.curves(kind)
        if not curves:
            continue
        severities = sorted({c.severity for cs in curves.values() for c in cs})
        headers = ["name", *(f"severity {s}" for s in severities), "mean"]
        lines += [f"## {title}", ""]
        for d, direction in _DIRECTION_TITLES.items():
            rows = [[name, *(c.recall[d].format() for c in cs), _mean(cs, d, "recall", ".3f")]
                    for name, cs in curves.items()]  # fmt: skip
            lines += [f"{direction} recall@{report.k}:", "", format_table(headers, rows, "md"), ""]
        drops = [
            [name, *(f"{_percent(c.relative_drop['t2i'])} / {_percent(c.relative_drop['i2t'])}" for c in cs)]
            for name, cs in curves.items()
        ]
        lines += ["Relative drop (text → image / image → text):", "", format_table(headers[:-1], drops, "md"), ""]
    return "\n".join(lines)


def _percent(e: Interval) -> str:
    if e.estimate is None or e.low is None or e.high is None:  # undefined: the clean recall is 0
        return "n/a"
    estimate, low, high = (round(v, 3) or 0.0 for v in (e.estimate, e.low, e.high))  # no "-0.0 %"
    return f"{estimate:.1%} [{low:.1%}, {high:.1%}]"


def _mean(conditions: list[RetrievalCondition], direction: str, field: str, spec: str) -> str:
    """The mean estimate of ``field[direction]`` over ``conditions``; ``n/a`` when one of them is undefined."""
    values = [getattr(c, field)[direction].estimate for c in conditions]
    return "n/a" if None in values else format(sum(values) / len(values), spec)
