"""The run's loggers: a CSV logger that continues a resumed run's ``metrics.csv`` instead of deleting it, and the
optional experiment trackers (Weights & Biases, MLflow) logged to beside it (``trackers:`` in an experiment YAML).
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger

from mmfuse._compat import quiet_shared_run_dir
from mmfuse.errors import ConfigError

__all__ = ["ResumableCSVLogger", "TrackersConfig", "build_trackers"]


@dataclass(frozen=True)
class TrackersConfig:
    """Experiment trackers that get the same hyperparameters and metrics as ``metrics.csv`` (which is always
    written: ``mmfuse runs`` reads it).

    Attributes:
        wandb: log to Weights & Biases (``pip install 'mmfuse[wandb]'``); its files go to ``<run directory>/wandb``.
        mlflow: log to MLflow (``pip install 'mmfuse[mlflow]'``).
        project: the W&B project and the MLflow experiment name. Each run is named after its run directory
            (``<trainer.default_root_dir name>/version_N``).
        wandb_offline: W&B writes locally only (upload later with ``wandb sync <run directory>/wandb/offline-run-*``);
            false logs online (needs ``wandb login``).
        mlflow_tracking_uri: where MLflow records runs; None = a local SQLite store,
            ``sqlite:///<trainer.default_root_dir>/mlflow.db`` (view it with ``mlflow ui --backend-store-uri ...``).
    """

    wandb: bool = False
    mlflow: bool = False
    project: str = "mmfuse"
    wandb_offline: bool = True
    mlflow_tracking_uri: str | None = None


def build_trackers(cfg: TrackersConfig, root: str | Path, run_dir: str | Path) -> list[Logger]:
    """The Lightning loggers of the trackers ``cfg`` turns on, for the run in ``run_dir`` under ``root``.

    Raises:
        ConfigError: a tracker's package is not installed (the message names the extra to install).
    """
    loggers: list[Logger] = []
    run_dir = Path(run_dir).resolve()
    name = f"{Path(root).resolve().name}/{run_dir.name}"
    if cfg.wandb:
        _require("wandb", "trackers.wandb")
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(
            WandbLogger(name=name, save_dir=str(run_dir), project=cfg.project, offline=cfg.wandb_offline,
                        tags=[run_dir.name], notes=f"mmfuse run directory: {run_dir}")
        )  # fmt: skip
    if cfg.mlflow:
        _require("mlflow", "trackers.mlflow")
        from lightning.pytorch.loggers import MLFlowLogger

        local = cfg.mlflow_tracking_uri is None  # the default store: a file beside the runs, artifacts too
        uri = f"sqlite:///{Path(root).resolve() / 'mlflow.db'}" if local else cfg.mlflow_tracking_uri
        loggers.append(
            MLFlowLogger(experiment_name=cfg.project, run_name=name, tracking_uri=uri,
                         artifact_location=str(Path(root).resolve() / "mlartifacts") if local else None,
                         tags={"mmfuse.run_dir": str(run_dir)})
        )  # fmt: skip
    return loggers


def _require(package: str, field: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"{field}=true needs the {package} package: pip install 'mmfuse[{package}]'")


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
        self._writer: Any = None  # opened once, on first use

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Flush the rows logged so far with every checkpoint, so a killed run keeps what its checkpoint covers."""
        super().after_save_checkpoint(checkpoint_callback)
        self.save()

    @property
    def experiment(self) -> Any:
        if self._writer is None:
            with quiet_shared_run_dir():  # config.yaml, provenance.json and checkpoints/ come before the metrics
                self._writer = self._open_writer()
        return self._writer

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
