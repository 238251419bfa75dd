"""The invariance report: verdicts, JSON and Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmfuse.probes.invariance import AttributeResult, CounterfactualReport, InvarianceResult
from mmfuse.stats import Interval


def _result(label: str, flips: float, passed: bool, n: int = 50) -> InvarianceResult:
    return InvarianceResult(label, n, n, Interval(flips, max(flips - 0.1, 0), min(flips + 0.1, 1), n),
                            Interval(flips / 2, 0.0, flips, n), passed)  # fmt: skip


def _report() -> CounterfactualReport:
    flagged = AttributeResult(
        "gender", "text", _result("gender", 0.4, False), (_result("female -> male", 0.4, False),),
        ({"index": 3, "pair": "female -> male", "original": "she | x", "counterfactual": "he | x", "prediction": "red",
          "counterfactual_prediction": "blue", "p_before": 0.9, "p_after": 0.2},),
        "gendered words",
    )  # fmt: skip
    clean = AttributeResult(
        "frame", "image", _result("frame", 0.0, True), (_result("group0 -> group1", 0.0, True),), ()
    )
    absent = AttributeResult("religion", "text", None, (), ())
    return CounterfactualReport((flagged, clean, absent), 50, 0.02, None, 0.95)


def test_verdicts_and_lookup() -> None:
    report = _report()
    assert not report.passed and report["frame"].passed and report["religion"].passed is None
    assert CounterfactualReport(report.attributes[1:], 50, 0.02, None, 0.95).passed
    with pytest.raises(KeyError, match="no attribute 'race'"):
        report["race"]


def test_markdown_and_json(tmp_path: Path) -> None:
    report = _report()
    markdown = report.to_markdown()
    assert "Verdict: **FAIL**" in markdown and "| religion | text | 0 | 0 | not in the data | — | — |" in markdown
    assert "| gender | text | 50 | 50 | 0.400 [0.300, 0.500] |" in markdown and "**fail**" in markdown
    assert "(none of 50; 95 % bound 0.060)" in markdown and "## frame (image)" in markdown
    assert "she \\| x" in markdown and "red → blue" in markdown and "## religion" not in markdown
    json_path, md_path = report.write(tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["passed"] is False and [a["present"] for a in data["attributes"]] == [True, True, False]
    assert data["attributes"][0]["overall"]["flip_rate"] == pytest.approx(
        {"value": 0.4, "low": 0.3, "high": 0.5, "n": 50}
    )
    assert md_path.read_text() == markdown
