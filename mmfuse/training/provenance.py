"""A callback that records where a run came from (:mod:`mmfuse.provenance`) in the run directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from mmfuse.provenance import collect_provenance, write_provenance

__all__ = ["Provenance", "run_dir_of"]

log = logging.getLogger(__name__)


def run_dir_of(trainer: L.Trainer) -> Path | None:
    """The first logger's directory, as ``trainer.log_dir`` finds it but without its broadcast (a collective)."""
    if not trainer.loggers:
        return None
    logger = trainer.loggers[0]
    path = logger.log_dir if isinstance(logger, (CSVLogger, TensorBoardLogger)) else logger.save_dir
    return Path(path) if path else None


def _seed() -> int | None:
    """The seed ``seed_everything`` recorded in ``PL_GLOBAL_SEED``, if any."""
    raw = os.environ.get("PL_GLOBAL_SEED")
    return int(raw) if raw is not None and raw.lstrip("-").isdigit() else None


class Provenance(L.Callback):
    """Writes ``provenance.json`` (and ``git.diff`` for a dirty tree) into the run directory at ``setup``.

    Runs on global rank 0 only and calls no collective. One record per run directory per process, so a ``fit``
    followed by a ``test`` on the same trainer writes once; a run resumed later (a new process writing into the
    same directory) appends under ``resumed``. Runs without a logger have no run directory and are skipped.
    """

    def __init__(self) -> None:
        self._written: set[Path] = set()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        run_dir = run_dir_of(trainer)
        if run_dir is None or run_dir.resolve() in self._written:
            return
        fingerprint = getattr(getattr(trainer, "datamodule", None), "fingerprint", None)
        info = collect_provenance(seed=_seed(), data_fingerprint=fingerprint() if callable(fingerprint) else None)
        path = write_provenance(run_dir, info)
        self._written.add(run_dir.resolve())
        log.info("provenance written to %s", path)
