"""Training curves: panels per metric, train and val as separate lines, a colour per run when several overlap."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.colors import to_hex
from PIL import Image

from mmfuse.errors import ConfigError
from mmfuse.plots import LR_PANEL, curve_panels, curves_figure, plot_curves

RUN = {
    "train/loss": ([1, 2, 3, 4], [2.0, 1.5, 1.2, 1.0]),
    "val/loss": ([2, 4], [1.6, 1.3]),
    "val/acc": ([2, 4], [0.5, 0.75]),
    "train/itc_loss": ([1, 2, 3, 4], [1.0, 0.8, float("nan"), 0.5]),
    "lr/vision": ([1, 2, 3, 4], [1e-4, 2e-4, 1e-4, 0.0]),
    "lr/head": ([1, 2, 3, 4], [1e-3, 2e-3, 1e-3, 0.0]),
}


def _lines(figure: object, title: str) -> list:
    (axes,) = [ax for ax in figure.axes if ax.get_title() == title]  # type: ignore[attr-defined]
    return [line for line in axes.get_lines() if len(line.get_xdata())]


def test_panels_put_losses_first_and_learning_rates_last() -> None:
    panels = curve_panels([*RUN, "time/fit_elapsed_s", "test/acc", "train/acc"])
    assert list(panels) == ["loss", "itc_loss", "acc", "time/fit_elapsed_s", LR_PANEL]
    assert panels["loss"] == ["train/loss", "val/loss"] and panels["acc"] == ["train/acc", "val/acc", "test/acc"]
    assert panels[LR_PANEL] == ["lr/head", "lr/vision"]


def test_one_run_draws_train_and_val_as_separate_lines_per_panel() -> None:
    figure = curves_figure({"version_0": RUN}, title="version_0")
    assert [ax.get_title() for ax in figure.axes] == ["loss", "train/itc_loss", "val/acc", LR_PANEL]
    train, val = _lines(figure, "loss")
    assert list(train.get_xdata()) == [1, 2, 3, 4] and list(val.get_ydata()) == [1.6, 1.3]
    assert train.get_linestyle() == "-" and val.get_linestyle() == "--" and val.get_marker() == "o"
    assert to_hex(val.get_color()) == to_hex("C1") == to_hex(_lines(figure, "val/acc")[0].get_color())
    (itc,) = _lines(figure, "train/itc_loss")
    assert list(itc.get_xdata()) == [1, 2, 4]  # the nan step is left out
    assert len(_lines(figure, LR_PANEL)) == 2 and not figure.legends  # no run legend for one run


def test_several_runs_get_a_colour_each_and_a_legend() -> None:
    other = {"train/loss": ([1, 2], [3.0, 2.0]), "val/acc": ([2], [0.25])}
    figure = curves_figure({"version_0 (baseline)": RUN, "version_1": other}, metrics=["train/loss", "val/acc"])
    assert [ax.get_title() for ax in figure.axes] == ["train/loss", "val/acc"]
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["version_0 (baseline)", "version_1"]
    first, second = _lines(figure, "train/loss")
    assert to_hex(first.get_color()) == to_hex("C0") and to_hex(second.get_color()) == to_hex("C1")
    assert list(_lines(figure, "val/acc")[1].get_ydata()) == [0.25] and _lines(figure, "val/acc")[1].get_marker()


def test_unknown_metric_or_nothing_logged_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'val/accc'.*did you mean \['val/acc'"):
        curves_figure({"version_0": RUN}, metrics=["val/accc"])
    with pytest.raises(ConfigError, match="nothing to plot"):
        plot_curves({"version_0": {}}, tmp_path / "curves.png")


def test_plot_curves_writes_the_file(tmp_path: Path) -> None:
    path = plot_curves({"version_0": RUN}, tmp_path / "curves.png")
    assert Image.open(path).size == (3 * 420, 2 * 300)  # 4 panels, 3 a row, 4.2 x 3 inches each at 100 dpi
