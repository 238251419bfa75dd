"""The robustness report's Markdown."""

from __future__ import annotations

from mmfuse.probes.robustness import Condition, RobustnessReport
from mmfuse.probes.robustness_format import robustness_markdown
from mmfuse.stats import Interval


def test_tables_per_kind_with_accuracy_and_drop() -> None:
    acc, drop = Interval(0.5, 0.4, 0.6, 20), Interval(0.25, 0.1, 0.4, 20)
    conditions = [Condition("text", "typos", s, acc, drop) for s in (1, 5)]
    conditions.append(Condition("image", "jpeg", 1, acc, Interval(float("nan"), float("nan"), float("nan"), 20)))
    report = RobustnessReport(Interval(0.0, 0.0, 0.0, 20), tuple(conditions), "val", 0.95, 3)
    markdown = robustness_markdown(report, "curves.png")
    assert "Clean accuracy on the val split (20 examples): 0.000 [0.000, 0.000]" in markdown
    assert "![accuracy against severity](curves.png)" in markdown and "seed 3" in markdown
    assert "| name | severity 1 | severity 5 | mean |" in markdown
    assert "| typos | 0.500 [0.400, 0.600] | 0.500 [0.400, 0.600] | 0.500 |" in markdown
    assert "| typos | 25.0% [10.0%, 40.0%] | 25.0% [10.0%, 40.0%] | 25.0% |" in markdown
    assert "| jpeg | n/a |" in markdown and "Shifted split" not in markdown and "together" not in markdown
    assert "![" not in robustness_markdown(report)
