"""``mmfuse fit`` leaves its training curves in the run directory: curves.png beside metrics.csv."""

from __future__ import annotations

from PIL import Image

from mmfuse.plots import LR_PANEL, curve_panels
from mmfuse.runs import read_curves
from mmfuse.training.curves import CURVES_FILE
from tests.training.conftest import TinyFit


def test_fit_writes_curves_of_losses_metrics_and_learning_rates(tiny_fit: TinyFit) -> None:
    curves = read_curves(tiny_fit.run)
    assert curves["train/loss"][0] == list(range(12))  # every step logged
    assert len(curves["val/acc"][0]) == len(curves["val/loss"][0]) >= 2  # a line, not a point
    assert {"lr/vision", "lr/text", "lr/fusion", "lr/head"} <= set(curves)
    assert max(curves["lr/head"][1]) > 0 and curves["lr/head"][1][-1] < max(curves["lr/head"][1])  # warm-up, decay
    panels = curve_panels(list(curves))
    assert list(panels)[0] == "loss" and panels["loss"] == ["train/loss", "val/loss"]
    assert panels["acc"] == ["train/acc", "val/acc"] and list(panels)[-1] == LR_PANEL
    rows = -(-len(panels) // 3)
    assert Image.open(tiny_fit.run / CURVES_FILE).size == (3 * 420, rows * 300 + 30)  # 3 panels a row, a title


def test_validate_draws_no_curves(tiny_fit: TinyFit) -> None:
    assert (tiny_fit.validate_run / "metrics.csv").is_file() and not (tiny_fit.validate_run / CURVES_FILE).exists()
