"""The baseline ladder at the end of ``mmfuse fit`` (``baselines:``), and ``mmfuse baselines --trained``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from mmfuse.audit.baselines import baseline_ladder
from mmfuse.audit.features import SplitFeatures
from mmfuse.cli import main
from mmfuse.errors import ConfigError
from mmfuse.experiment import read_experiment
from mmfuse.training.ladder import BaselinesConfig, RerankLadder, fit_ladder, not_warranted_message, rerank_ladder
from tests.conftest import MAIN_EXPERIMENT, TINY_CLI_ARGS
from tests.data.test_transforms import noise_captions
from tests.training.conftest import TinyFit

PROBE_RUNGS = ["majority class", "text only", "image only", "concat / late fusion"]
TINY = [arg for arg in TINY_CLI_ARGS if not arg.startswith("--baselines.")]  # the ladder as a plain fit has it
UNTRAINED = ["--trainer.max_epochs=0"]  # no step taken: the model's weights are its random initialisation


def _fit(root: Path, cache_dir: Path, *args: str, config: Path = MAIN_EXPERIMENT) -> None:
    main(["fit", "--config", str(config), *TINY, f"--trainer.default_root_dir={root}",
          f"--data.cache_dir={cache_dir}", *args])  # fmt: skip


def _experiment(path: Path, **sections: dict) -> Path:
    """The main experiment (its base merged in: the copy lives elsewhere) with ``sections`` replaced."""
    experiment, _ = read_experiment(MAIN_EXPERIMENT)
    path.write_text(yaml.safe_dump({**experiment, **sections}))
    return path


def _ladder_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "simpler rung" in r.getMessage()]


def test_a_fit_ends_with_the_ladder_printed_and_written(tiny_fit: TinyFit) -> None:
    assert "baseline ladder (val split; chance 0.167)" in tiny_fit.out
    assert tiny_fit.out.index("mmfuse fit summary") < tiny_fit.out.index("baseline ladder (val split")
    ladder = json.loads((tiny_fit.run / "baselines.json").read_text())
    assert [row["name"] for row in ladder["rows"]] == [*PROBE_RUNGS, "model (cross_attention)"]
    assert all(row["accuracy"]["n"] == 32 for row in ladder["rows"]) and ladder["split"] == "val"
    assert ladder["model"].startswith(f"checkpoint {tiny_fit.run / 'checkpoints'}") and ladder["max_train"] == 2000
    assert set(ladder["gain_over_best_baseline"]) >= {"estimate", "ci_low", "ci_high"}
    assert (tiny_fit.run / "baselines.md").read_text().startswith("# Baseline ladder (val split)")
    assert "baseline ladder" not in tiny_fit.validate_out  # after fit only


def test_an_untrained_model_warns_that_fusion_is_not_shown_to_help(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    _fit(tmp_path, cache_dir, *UNTRAINED, "--baselines.max_train=40")
    out = capsys.readouterr().out
    assert "model (cross_attention)" in out and "baseline ladder written:" in out
    (warning,) = _ladder_warnings(caplog)
    assert "does not beat its best simpler rung" in warning and "fusion is not shown to help" in warning
    ladder = json.loads((tmp_path / "version_0" / "baselines.json").read_text())
    assert ladder["model"] == "the weights at the end of fit"  # no checkpoint was saved
    assert ladder["max_train"] == 40 and ladder["gain_over_best_baseline"]["ci_low"] <= 0.0


def test_switching_the_ladder_off_in_the_yaml_removes_it(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    experiment = _experiment(tmp_path / "off.yaml", baselines={"enabled": False})
    _fit(tmp_path / "run", cache_dir, *UNTRAINED, config=experiment)  # the untrained model above warns when on
    assert "baseline ladder" not in capsys.readouterr().out and not _ladder_warnings(caplog)
    run = tmp_path / "run" / "version_0"
    assert not (run / "baselines.json").exists() and not (run / "baselines.md").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["baselines"]["enabled"] is False


def test_a_bad_ladder_setting_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(MAIN_EXPERIMENT), *TINY, "--baselines.max_train=1",
              f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == "mmfuse: error: baselines.max_train=1 must be at least 2 (a probe needs examples)"


@pytest.mark.parametrize(
    ("values", "message"),
    [({"max_val": 0}, "baselines.max_val=0"), ({"min_gain": 2.0}, "baselines.min_gain=2.0")],
)
def test_ladder_settings_are_checked(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BaselinesConfig(**values)


def _features(n: int, seed: int, model_accuracy: float) -> tuple[SplitFeatures, np.ndarray]:
    """Four classes; text and image features that say nothing, logits right ``model_accuracy`` of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    predicted = np.where(rng.random(n) < model_accuracy, labels, (labels + 1) % 4)
    noise = rng.normal(size=(n, 3))
    return SplitFeatures(noise, rng.normal(size=(n, 3)), noise, np.eye(4)[predicted]), labels


@pytest.mark.parametrize(("model_accuracy", "warns"), [(0.95, False), (0.25, True)])
def test_the_warning_follows_the_gains_lower_bound(model_accuracy: float, warns: bool) -> None:
    train, train_labels = _features(200, 0, model_accuracy)
    val, labels = _features(200, 1, model_accuracy)
    ladder = baseline_ladder(train, train_labels, val, labels, "model (cross_attention)", "val", n_boot=200)
    message = not_warranted_message(ladder, 0.0)
    assert (message is not None) == warns
    assert "model minus" in ladder.to_text() and ladder.to_text().startswith("baseline ladder (val split")


def test_the_retrieval_ladder_compares_contrastive_ranking_with_itm_reranking() -> None:
    metrics = {"val/t2i_r1": 0.2, "val/t2i_r5": 0.5, "val/r_mean": 0.4, "val/t2i_r1_itm": 0.3,
               "val/t2i_r5_itm": 0.6, "val/r_mean_itm": 0.45, "train/loss": 1.0}  # fmt: skip
    ladder = rerank_ladder(metrics, rerank_k=8)
    assert ladder is not None and [r.name for r in ladder.rows] == ["contrastive (ITC)", "ITM re-ranking (top 8)"]
    assert ladder.gain == pytest.approx({"t2i_r1": 0.1, "t2i_r5": 0.1, "r_mean": 0.05})
    assert ladder.is_warranted and not_warranted_message(ladder, 0.0) is None
    assert "| ITM re-ranking (top 8) | 0.300 | 0.600 | 0.450 |" in ladder.to_markdown()
    worse = rerank_ladder({**metrics, "val/r_mean_itm": 0.35}, rerank_k=8)
    assert worse is not None and "does not beat the contrastive ranking" in str(not_warranted_message(worse, 0.0))
    off = rerank_ladder(metrics, rerank_k=0)
    assert off is not None and len(off.rows) == 1 and off.is_warranted is None and "rerank_k" in off.to_text()
    assert rerank_ladder({"train/loss": 1.0}, rerank_k=8) is None  # no validation ran


def test_fit_ladder_reads_a_retrieval_model_from_its_logged_recalls() -> None:
    module = SimpleNamespace(model_cfg=SimpleNamespace(task="retrieval"), metrics=SimpleNamespace(rerank_k=4))
    data = SimpleNamespace(val_split="test")
    metrics = {"val/t2i_r5": 0.5, "val/r_mean": 0.4, "val/t2i_r5_itm": 0.4, "val/r_mean_itm": 0.3}
    ladder = fit_ladder(module, data, metrics, BaselinesConfig(), "cpu")
    assert isinstance(ladder, RerankLadder) and ladder.split == "test" and ladder.is_warranted is False


def test_a_retrieval_fit_ends_with_the_reranking_ladder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = noise_captions(tmp_path / "captions", num_images=8, captions_per_image=2)
    data = {"class_path": "ImageTextDataModule", "init_args": {
        "source": {"format": "captions_csv", "root": str(root), "split_sizes": {"train": 4, "test": 4}},
        "image_size": 32, "batch_size": 4, "val_split": "test"}}  # fmt: skip
    experiment = _experiment(tmp_path / "retrieval.yaml", data=data)
    args = [a for a in TINY if not a.startswith("--data.")]
    main(["fit", "--config", str(experiment), *args, "--model.task=retrieval", "--model.metrics.rerank_k=2",
          "--checkpoint.monitor=val/r_mean", "--checkpoint.filename=last-rmean",
          f"--trainer.default_root_dir={tmp_path / 'run'}", f"--data.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    out = capsys.readouterr().out
    assert "baseline ladder (test split, retrieval recall@K)" in out and "ITM re-ranking (top 2)" in out
    ladder = json.loads((tmp_path / "run" / "version_0" / "baselines.json").read_text())
    assert ladder["task"] == "retrieval" and ladder["rerank_k"] == 2 and "t2i_r5" in ladder["gain_of_reranking"]


def test_baselines_trained_adds_the_simpler_fusions_trained_end_to_end(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "ladder"
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as exit_info:
        main(["baselines", "--config", str(tiny_run / "config.yaml"), "--ckpt", str(ckpt), "--out", str(out),
              "--trained", "--trained-epochs", "1", "--n-boot", "50"])  # fmt: skip
    assert exit_info.value.code == 0
    stdout = capsys.readouterr().out
    ladder = json.loads((out / "baselines.json").read_text())
    trained = ["text only (trained)", "image only (trained)", "concat / late fusion (trained)"]
    assert [row["name"] for row in ladder["rows"]] == [*PROBE_RUNGS, *trained, "model (cross_attention)"]
    assert all("(steps: 2, epochs: 1)" in row["method"] for row in ladder["rows"] if row["name"] in trained)
    assert sorted(ladder["trained"]) == ["concat", "image_only", "text_only"]
    for fusion, run in ladder["trained"].items():
        assert Path(run["run"]) == out / "trained" / fusion / "version_0" and run["epochs"] == 1
        assert (Path(run["run"]) / "config.yaml").is_file()
    assert "| image only (trained) |" in stdout and "baseline ladder" not in stdout  # no fit-end ladder inside


def test_baselines_trained_epochs_need_trained(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["baselines", "--config", str(tiny_run / "config.yaml"), "--out", str(tmp_path / "never"),
              "--trained-epochs", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--trained-epochs 1: the schedule of --trained" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "never").exists()


def test_two_process_ddp_fit_prints_the_ladder_once_from_rank_zero(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "mmfuse.cli", "fit", "--config", str(MAIN_EXPERIMENT), *TINY,
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", "--baselines.max_train=40",
        f"--trainer.default_root_dir={tmp_path / 'run'}", f"--data.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("baseline ladder (val split") == 1 and "mmfuse fit summary" in result.stdout
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["version_0"]
    ladder = json.loads((tmp_path / "run" / "version_0" / "baselines.json").read_text())
    assert all(row["accuracy"]["n"] == 32 for row in ladder["rows"])  # the whole split, not one process's shard
