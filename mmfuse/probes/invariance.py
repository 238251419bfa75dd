"""The counterfactual invariance report: per attribute and per pair of values, flip rate and mean |Δp| with their
intervals and a verdict; written as JSON (``counterfactual.json``) and Markdown (``counterfactual.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmfuse.io import write_atomic, write_json
from mmfuse.stats import Interval, rule_of_three
from mmfuse.tables import format_table

__all__ = ["AttributeResult", "CounterfactualReport", "InvarianceResult"]


@dataclass(frozen=True)
class InvarianceResult:
    """How far predictions move under one set of counterfactuals.

    Attributes:
        label: the attribute name (overall) or ``value before -> value after`` (one pair).
        n_examples: examples with at least one counterfactual here.
        n_counterfactuals: counterfactuals evaluated.
        flip_rate: share of counterfactuals whose predicted class differs from the original prediction.
        mean_abs_delta_p: mean |p_after - p_before| of the originally predicted class.
        passed: within the tolerance(s).
    """

    label: str
    n_examples: int
    n_counterfactuals: int
    flip_rate: Interval
    mean_abs_delta_p: Interval
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "n_examples": self.n_examples,
            "n_counterfactuals": self.n_counterfactuals,
            "flip_rate": self.flip_rate.as_dict("value", "low", "high", brief=True),
            "mean_abs_delta_p": self.mean_abs_delta_p.as_dict("value", "low", "high", brief=True),
            "passed": self.passed,
        }


@dataclass(frozen=True)
class AttributeResult:
    """One protected attribute.

    Attributes:
        attribute: its name.
        kind: ``text`` (lexicon swap) or ``image`` (edit function).
        overall: all its counterfactuals together; None when no example has the attribute.
        pairs: one result per (value before -> value after).
        examples: the counterfactuals that moved the prediction most (index, texts, predictions, probabilities).
        description: from the lexicon or the edit.
    """

    attribute: str
    kind: str
    overall: InvarianceResult | None
    pairs: tuple[InvarianceResult, ...]
    examples: tuple[dict[str, Any], ...]
    description: str = ""

    @property
    def passed(self) -> bool | None:
        """The overall verdict; None when the attribute is absent from the data."""
        return None if self.overall is None else self.overall.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "kind": self.kind,
            "description": self.description,
            "present": self.overall is not None,
            "passed": self.passed,
            "overall": None if self.overall is None else self.overall.to_dict(),
            "pairs": [p.to_dict() for p in self.pairs],
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class CounterfactualReport:
    """Counterfactual invariance of a model on a set of examples.

    Attributes:
        attributes: one result per probed attribute.
        n_examples: examples probed.
        tolerance: largest flip rate that passes.
        dp_tolerance: largest mean |Δp| that passes (None = not checked).
        level: confidence level of the intervals.
    """

    attributes: tuple[AttributeResult, ...]
    n_examples: int
    tolerance: float
    dp_tolerance: float | None
    level: float

    @property
    def passed(self) -> bool:
        """Every attribute present in the data passes."""
        return all(a.passed is not False for a in self.attributes)

    def __getitem__(self, attribute: str) -> AttributeResult:
        for result in self.attributes:
            if result.attribute == attribute:
                return result
        raise KeyError(f"no attribute {attribute!r} in the report; it has {[a.attribute for a in self.attributes]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "n_examples": self.n_examples,
            "tolerance": self.tolerance,
            "dp_tolerance": self.dp_tolerance,
            "level": self.level,
            "attributes": [a.to_dict() for a in self.attributes],
        }

    def to_markdown(self) -> str:
        """The report as Markdown: a summary table, then the pairs and the most moved examples per attribute."""
        dp = "none" if self.dp_tolerance is None else f"{self.dp_tolerance:g}"
        lines = [
            "# Counterfactual invariance",
            "",
            f"Verdict: **{'PASS' if self.passed else 'FAIL'}** (flip-rate tolerance {self.tolerance:g}, mean |Δp| "
            f"tolerance {dp}); {self.n_examples} examples probed; {self.level:.0%} percentile-bootstrap intervals "
            "that resample whole examples.",
            "",
            format_table(
                ["attribute", "kind", *_COLUMNS],
                [[a.attribute, a.kind, *(_row(a.overall) if a.overall else _ABSENT)] for a in self.attributes],
                "md",
                "llrr",
            ),
        ]
        for a in self.attributes:
            if a.overall is not None:
                lines += ["", *_attribute_section(a)]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``counterfactual.json`` and ``counterfactual.md`` into ``out_dir``; returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out / "counterfactual.json", out / "counterfactual.md"
        write_json(json_path, self.to_dict())
        write_atomic(md_path, self.to_markdown())
        return json_path, md_path


_COLUMNS = ["examples", "counterfactuals", "flip rate", "mean abs Δp", "verdict"]
_ABSENT = [0, 0, "not in the data", "—", "—"]  # the cells of an attribute the data does not have


def _row(result: InvarianceResult) -> list[Any]:
    """The :data:`_COLUMNS` cells of one result."""
    flips = result.flip_rate.format()
    if result.flip_rate.estimate == 0.0:
        flips += f" (none of {result.n_counterfactuals}; 95 % bound {rule_of_three(result.n_counterfactuals):.3f})"
    verdict = "pass" if result.passed else "**fail**"
    return [result.n_examples, result.n_counterfactuals, flips, result.mean_abs_delta_p.format(), verdict]


def _attribute_section(a: AttributeResult) -> list[str]:
    lines = [f"## {a.attribute} ({a.kind})", ""]
    if a.description:
        lines += [a.description, ""]
    lines.append(format_table(["pair", *_COLUMNS], [[p.label, *_row(p)] for p in a.pairs], "md", "lrr"))
    if a.examples:
        rows = []
        for e in a.examples:
            change = e["prediction"] if e["prediction"] == e["counterfactual_prediction"] else (
                f"{e['prediction']} → {e['counterfactual_prediction']}"
            )  # fmt: skip
            probabilities = f"{e['p_before']:.3f} → {e['p_after']:.3f}"
            rows.append([e["index"], e["pair"], e["original"], e["counterfactual"], change, probabilities])
        headers = ["#", "pair", "original", "counterfactual", "prediction", "p before → after"]
        lines += ["", "Largest changes:", "", format_table(headers, rows, "md", "r")]
    return lines
