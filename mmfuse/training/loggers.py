"""A CSV logger that continues a resumed run's ``metrics.csv`` instead of deleting it."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger

__all__ = ["ResumableCSVLogger"]


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that, in a run directory being resumed, keeps the rows logged before ``resume_step`` and
    appends after them (rows from steps the resumed run repeats are dropped, so no step appears twice).

    Args:
        *args: as ``CSVLogger``.
        resume_step: global step of the checkpoint being resumed; None = a fresh run (Lightning's behaviour).
        **kwargs: as ``CSVLogger``.
    """

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Flush the rows logged so far with every checkpoint, so a killed run keeps what its checkpoint covers."""
        super().after_save_checkpoint(checkpoint_callback)
        self.save()

    @property
    def experiment(self) -> Any:
        if self._experiment is not None:
            return super().experiment
        with warnings.catch_warnings():  # "exists and is not empty": provenance.json is written before the logs
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            return self._open_writer()

    def _open_writer(self) -> Any:
        if self.resume_step is None:
            return super().experiment
        path = Path(self.log_dir) / "metrics.csv"
        rows: list[dict[str, str]] = []
        header: list[str] = []
        if path.is_file():
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                header = list(reader.fieldnames or [])
                rows = [r for r in reader if r.get("step", "") == "" or int(float(r["step"])) < self.resume_step]
        writer = super().experiment  # Lightning's writer deletes an existing metrics.csv here
        if header and hasattr(writer, "metrics_keys"):
            with path.open("w", newline="") as fh:
                out = csv.DictWriter(fh, fieldnames=header)
                out.writeheader()
                out.writerows(rows)
            writer.metrics_keys = sorted(header)
        return writer
