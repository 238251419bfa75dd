"""Callbacks that observe a run without touching the model."""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from mmfuse.types import Batch

__all__ = ["RunSummary"]


class RunSummary(L.Callback):
    """Counts training samples and wall time, so a run can end with one summary table.

    Counting happens on the host from the batch shape: no device sync per step.
    """

    def __init__(self) -> None:
        self.fit_seconds = 0.0
        self.train_samples = 0
        self._start: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self.train_samples = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Batch, batch_idx: int
    ) -> None:
        self.train_samples += len(batch) * trainer.world_size

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and not trainer.sanity_checking:  # lets a run say when it reached an accuracy
            pl_module.log("time/fit_elapsed_s", time.perf_counter() - self._start, rank_zero_only=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None:
            self.fit_seconds = time.perf_counter() - self._start

    def rows(self, trainer: L.Trainer) -> list[tuple[str, str]]:
        """(name, value) rows: the logged metrics plus time and throughput."""
        rows = [(k, f"{float(v):.4f}") for k, v in sorted(trainer.callback_metrics.items())]
        if self.fit_seconds:
            rows.append(("fit wall time (s)", f"{self.fit_seconds:.1f}"))
            rows.append(("train samples/s", f"{self.train_samples / self.fit_seconds:.1f}"))
            rows.append(("epochs / steps", f"{trainer.current_epoch} / {trainer.global_step}"))
        return rows
