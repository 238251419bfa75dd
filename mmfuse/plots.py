"""Figures shared across the package, drawn on matplotlib's Agg canvas (no pyplot, no global backend switch, no
window; matplotlib is imported on first use): a figure with its own canvas, and the training curves of one or more
runs (``metrics.csv`` read by :func:`mmfuse.runs.read_curves`), as ``mmfuse fit`` writes them to ``curves.png`` and
``mmfuse runs plot`` overlays them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from mmfuse.errors import ConfigError
from mmfuse.registry import close_matches

__all__ = ["LR_PANEL", "curve_panels", "curves_figure", "new_figure", "plot_curves"]

Curve = tuple[Sequence[float], Sequence[float]]
"""(steps, values) of one metric column, in the order logged."""

LR_PANEL = "learning rate"
_STAGES = ("train", "val", "test")
_LineStyle = Literal["-", "--", ":", "-."]
_STAGE_STYLES: dict[str, tuple[_LineStyle, str | None]] = {"train": ("-", None), "val": ("--", "o"), "test": (":", "s")}
_OTHER_STYLES: tuple[tuple[_LineStyle, str | None], ...] = (("-", None), ("--", None), (":", None), ("-.", None))


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib Figure of ``width`` x ``height`` inches with its own Agg canvas (``figure.savefig`` works).

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("drawing figures needs matplotlib: pip install matplotlib") from err
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _panel_of(column: str) -> str:
    """The panel a metric column is drawn in: ``train/loss`` and ``val/loss`` share ``loss``; every learning rate
    (``lr/<module>``) shares :data:`LR_PANEL`; any other column has its own."""
    if column == "lr" or column.startswith(("lr/", "lr-")):
        return LR_PANEL
    stage, _, name = column.partition("/")
    return name if stage in _STAGES and name else column


def curve_panels(columns: Sequence[str]) -> dict[str, list[str]]:
    """Metric columns grouped into panels, in drawing order: losses first (``loss`` before the loss parts), then
    the other metrics by name, the learning rates last; within a panel train, val, test, then the rest.

    Example:
        >>> curve_panels(["val/acc", "lr/head", "train/itc_loss", "val/loss", "train/loss"])["loss"]
        ['train/loss', 'val/loss']
        >>> list(curve_panels(["val/acc", "lr/head", "train/itc_loss", "val/loss", "train/loss"]))
        ['loss', 'itc_loss', 'acc', 'learning rate']
    """
    panels: dict[str, list[str]] = {}
    for column in columns:
        panels.setdefault(_panel_of(column), []).append(column)

    def panel_order(name: str) -> tuple[int, str]:
        rank = 0 if name == "loss" else 1 if name.endswith("loss") else 3 if name == LR_PANEL else 2
        return rank, name

    def column_order(column: str) -> tuple[int, str]:
        stage = column.partition("/")[0]
        return (_STAGES.index(stage) if stage in _STAGES else len(_STAGES)), column

    return {name: sorted(set(panels[name]), key=column_order) for name in sorted(panels, key=panel_order)}


def _style(column: str, index: int) -> tuple[_LineStyle, str | None]:
    """(line style, marker) of a column: by stage for train/val/test, else by its place in the panel."""
    stage = column.partition("/")[0]
    return _STAGE_STYLES[stage] if stage in _STAGE_STYLES else _OTHER_STYLES[index % len(_OTHER_STYLES)]


def _colour(column: str, index: int) -> str:
    """A column's colour when one run is drawn: one per stage (train blue, val orange, test green) across all
    panels, else by its place in the panel."""
    stage = column.partition("/")[0]
    return f"C{_STAGES.index(stage)}" if stage in _STAGES else f"C{index % 10}"


def _finite_sorted(curve: Curve) -> tuple[list[float], list[float]]:
    """The curve's finite points sorted by step (a diverged run's inf / nan would stretch the axis or break the
    line)."""
    points = sorted((float(s), float(v)) for s, v in zip(*curve) if math.isfinite(float(v)))
    return [s for s, _ in points], [v for _, v in points]


def _select(runs: Mapping[str, Mapping[str, Curve]], metrics: Sequence[str] | None) -> list[str]:
    """The columns to draw: ``metrics`` (each must be logged by at least one run), else every logged column."""
    known = sorted({column for curves in runs.values() for column in curves})
    if metrics is not None and not metrics:
        raise ConfigError(f"metrics={list(metrics)}: name at least one metrics.csv column, or None for all")
    if metrics is None:
        if not known:
            raise ConfigError(f"runs {list(runs)} logged no metrics (empty metrics.csv): nothing to plot")
        return known
    unknown = [m for m in metrics if m not in known]
    if unknown:
        hint = close_matches(unknown[0], known)
        raise ConfigError(
            f"metric {unknown[0]!r} is not in the metrics.csv of runs {list(runs)}; "
            + (f"did you mean {hint}?" if hint else f"logged: {known}")
        )
    return list(dict.fromkeys(metrics))


def curves_figure(
    runs: Mapping[str, Mapping[str, Curve]], metrics: Sequence[str] | None = None, title: str = "", columns: int = 3
) -> Any:
    """Metric curves against the optimizer step, one panel per metric (see :func:`curve_panels`).

    One run: a colour per stage (train, val, test) or column, train solid and val dashed with markers. Several
    runs: a colour per run (named in the legend above the panels) and the line style per column (named in each
    panel's legend).

    Args:
        runs: run label (e.g. its name and tags) -> column of ``metrics.csv`` -> (steps, values), as
            :func:`mmfuse.runs.read_curves` returns them.
        metrics: only these columns (e.g. ``["val/acc", "val/loss"]``); None = every logged column.
        title: figure title.
        columns: panels per row.

    Returns:
        A matplotlib Figure on its own Agg canvas.

    Raises:
        ConfigError: no run logged anything, or a name in ``metrics`` that no run logged (naming it).
    """
    from matplotlib.lines import Line2D

    panels = curve_panels(_select(runs, metrics))
    ncols = max(1, min(columns, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    title_band = 0.3 if title else 0.0
    legend_band = 0.3 * math.ceil(len(runs) / 4) if len(runs) > 1 else 0.0
    figure = new_figure(4.2 * ncols, 3.0 * nrows + title_band + legend_band)
    height = figure.get_figheight()
    colours = [f"C{i % 10}" for i in range(len(runs))] if len(runs) > 1 else None
    for k, (panel, panel_columns) in enumerate(panels.items()):
        _draw_panel(figure.add_subplot(nrows, ncols, k + 1), panel, panel_columns, runs, colours)
    if title:
        figure.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    if colours is not None:
        handles = [Line2D([], [], color=colour, linewidth=2) for colour in colours]
        figure.legend(handles, list(runs), loc="upper center", bbox_to_anchor=(0.5, 1 - title_band / height),
                      ncol=min(len(runs), 4), fontsize=8, frameon=False)  # fmt: skip
    _place_panels(figure, nrows, ncols, top=title_band + legend_band)
    return figure


def plot_curves(
    runs: Mapping[str, Mapping[str, Curve]], path: str | Path, metrics: Sequence[str] | None = None, title: str = ""
) -> Path:
    """Save :func:`curves_figure` of ``runs`` to ``path`` (its suffix picks the format: ``.png``, ``.pdf``,
    ``.svg``); returns ``path``.

    Raises:
        ConfigError: as :func:`curves_figure`.
    """
    path = Path(path)
    curves_figure(runs, metrics, title).savefig(path)
    return path


def _place_panels(figure: Any, nrows: int, ncols: int, top: float) -> None:
    """Fixed margins in inches around and between the panels, room for tick labels and titles (cheaper than
    ``tight_layout``, which draws the whole figure once more to measure it)."""
    width, height = figure.get_figwidth(), figure.get_figheight()
    left, right, bottom, head, wgap, hgap = 0.65, 0.15, 0.45, 0.3 + top, 0.7, 0.75  # inches
    panel_w = (width - left - right - (ncols - 1) * wgap) / ncols
    panel_h = (height - bottom - head - (nrows - 1) * hgap) / nrows
    figure.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                           top=1 - head / height, wspace=wgap / panel_w, hspace=hgap / panel_h)  # fmt: skip


def _draw_panel(
    axes: Any, panel: str, columns: list[str], runs: Mapping[str, Mapping[str, Curve]], colours: list[str] | None
) -> None:
    """One panel: each run's curve of each column (a colour per run when ``colours`` is given, else per column)."""
    from matplotlib.lines import Line2D

    handles = []
    for c, column in enumerate(columns):
        linestyle, marker = _style(column, c)
        for r, curves in enumerate(runs.values()):
            if column not in curves:
                continue
            steps, values = _finite_sorted(curves[column])
            colour = colours[r] if colours is not None else _colour(column, c)
            lone = "o" if len(steps) <= 2 else None  # a lone point needs a marker to show
            axes.plot(steps, values, color=colour, linestyle=linestyle, marker=marker or lone, markersize=3, lw=1.2)
        if len(columns) > 1:  # one column: the panel's title names it; several runs: the figure's legend names them
            colour = "0.3" if colours is not None else _colour(column, c)
            handles.append(Line2D([], [], color=colour, linestyle=linestyle, marker=marker, markersize=3, label=column))
    if handles:
        axes.legend(handles=handles, fontsize=7)
    axes.set_title(panel if len(columns) > 1 else columns[0], fontsize=9)
    axes.set_xlabel("step", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
