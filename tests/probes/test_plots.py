"""Robustness curves: one panel per kind that ran, a PNG on disk."""

from __future__ import annotations

from pathlib import Path

from mmfuse.probes.plots import save_robustness_curves
from mmfuse.probes.robustness import Condition, RobustnessReport
from mmfuse.stats import Interval


def test_png_with_the_panels_that_ran(tmp_path: Path) -> None:
    e = Interval(0.8, 0.7, 0.9, 10)
    conditions = tuple(Condition("image", "jpeg", s, e, Interval(0.1, 0.0, 0.2, 10)) for s in (1, 2))
    report = RobustnessReport(
        Interval(0.9, 0.8, 1.0, 10), (*conditions, Condition("shift", "shift", 0, e, e)), "test", 0.95, 0
    )
    path = save_robustness_curves(report, tmp_path / "curves.png")
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (420, 360)  # one panel: image corruptions only
