"""The run's training curves: its ``metrics.csv`` drawn as ``curves.png`` in the run directory (one panel per
metric, train and val as separate lines, the learning rates last; see :func:`mmfuse.plots.plot_curves`)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from mmfuse.plots import plot_curves
from mmfuse.runs import METRICS_FILE, read_curves

__all__ = ["CURVES_FILE", "write_curves"]

CURVES_FILE = "curves.png"

log = logging.getLogger(__name__)


def write_curves(trainer: L.Trainer) -> Path | None:
    """Draw what the trainer's CSV logger has logged so far into ``curves.png`` beside its ``metrics.csv``.

    Runs on global rank 0 only and calls no collective; flushes the logger's buffered rows first.

    Returns:
        The path written, or None on other ranks, without a CSV logger, or before any metric was logged.
    """
    if not trainer.is_global_zero:
        return None
    logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    if logger is None:
        log.info("no CSV logger, so no metrics.csv: %s not drawn", CURVES_FILE)
        return None
    logger.save()  # rows logged since the last checkpoint are still in memory
    run_dir = Path(logger.log_dir)
    curves = read_curves(run_dir) if (run_dir / METRICS_FILE).is_file() else {}
    if not curves:
        log.info("%s holds no metrics yet: %s not drawn", run_dir / METRICS_FILE, CURVES_FILE)
        return None
    path = plot_curves({run_dir.name: curves}, run_dir / CURVES_FILE, title=f"training curves of {run_dir}")
    log.info("training curves written to %s", path)
    return path
