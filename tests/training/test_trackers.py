"""Weights & Biases (offline) and MLflow (local SQLite store) beside the CSV log, never instead of it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mmfuse.cli import main
from mmfuse.errors import ConfigError
from mmfuse.runs import find_runs
from mmfuse.training import TrackersConfig, build_trackers
from tests.conftest import REPO, TINY_CLI_ARGS

MAIN = str(REPO / "experiments" / "shapes_color.yaml")


def _fit(root: Path, cache_dir: Path, *extra: str) -> None:
    main(["fit", "--config", MAIN, *TINY_CLI_ARGS, f"--trainer.default_root_dir={root}",
          f"--data.cache_dir={cache_dir}", "--trainer.log_every_n_steps=1", *extra])  # fmt: skip


@pytest.fixture
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep W&B's own settings and caches out of the home directory; never ask for a login."""
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)


def test_a_tiny_fit_writes_wandb_offline_and_mlflow_files_and_still_metrics_csv(
    tmp_path: Path, cache_dir: Path, wandb_home: None
) -> None:
    pytest.importorskip("wandb")
    mlflow = pytest.importorskip("mlflow")
    root = tmp_path / "runs"
    _fit(root, cache_dir, "--trackers.wandb=true", "--trackers.mlflow=true", "--trackers.project=tiny")
    run = root / "version_0"
    assert (run / "metrics.csv").is_file() and "train/loss" in (run / "metrics.csv").read_text()
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb")), "no offline W&B run in the run directory"
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    (recorded,) = client.search_runs([experiment.experiment_id])
    assert recorded.info.run_name == "runs/version_0" and recorded.data.tags["mmfuse.run_dir"] == str(run.resolve())
    assert "train/loss" in recorded.data.metrics and recorded.data.params["task"] == "classification"
    assert [r.name for r in find_runs(root)] == ["version_0"]  # `mmfuse runs` sees the run, not the trackers' files


def test_without_trackers_only_the_run_loggers_are_built(tmp_path: Path) -> None:
    assert build_trackers(TrackersConfig(), tmp_path, tmp_path / "version_0") == []


@pytest.mark.parametrize("offline", [True, False])
def test_wandb_mode_follows_the_config(offline: bool, tmp_path: Path, wandb_home: None) -> None:
    pytest.importorskip("wandb")
    (logger,) = build_trackers(TrackersConfig(wandb=True, wandb_offline=offline), tmp_path, tmp_path / "version_3")
    assert logger._offline is offline and logger.name == "mmfuse"  # the project (no run is started here)
    assert logger.save_dir == str((tmp_path / "version_3").resolve())


def test_mlflow_goes_to_the_configured_store(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    (logger,) = build_trackers(TrackersConfig(mlflow=True, mlflow_tracking_uri=uri), tmp_path, tmp_path / "v")
    (default,) = build_trackers(TrackersConfig(mlflow=True), tmp_path, tmp_path / "v")
    assert logger._tracking_uri == uri and default._tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


@pytest.mark.parametrize("package", ["wandb", "mlflow"])
def test_a_missing_tracker_package_names_the_extra(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ConfigError, match=rf"trackers.{package}=true needs .*pip install 'mmfuse\[{package}\]'"):
        build_trackers(TrackersConfig(**{package: True}), tmp_path, tmp_path / "version_0")


def test_trackers_with_the_run_loggers_turned_off_are_refused(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        _fit(tmp_path, cache_dir, "--trackers.mlflow=true", "--trainer.logger=false")
    assert "trainer.logger=False replaces those" in capsys.readouterr().err
