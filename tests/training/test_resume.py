"""Exact resume: a run killed with SIGKILL mid-epoch and resumed with ``--ckpt_path last`` ends with the same
weights, bit for bit, as a run that was never interrupted (CPU, deterministic settings); also with random
augmentation in a data-loader worker and one caption per image per epoch."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from mmfuse.experiment import read_experiment
from mmfuse.training import safe_load
from tests.conftest import REPO, TINY_CLI_ARGS
from tests.data.test_transforms import noise_captions
from tests.training.pause import finish, fit_process, kill_when_paused, pause_args

# 96 training examples / 16 per batch = 6 steps per epoch, 2 epochs; last.ckpt every 2 steps (mid-epoch too).
RESUME_ARGS = [
    *[a for a in TINY_CLI_ARGS if not a.startswith(("--trainer.max_steps", "--trainer.max_epochs"))],
    "--trainer.max_epochs=2",
    "--trainer.deterministic=true",
    "--last_checkpoint.every_n_train_steps=2",
    "--trainer.val_check_interval=0.5",
]
# Retrieval on 24 training images (3 captions each, one per epoch) / 4 per batch = 6 steps per epoch, augmented in
# one persistent loader worker.
AUGMENTED_DATA = {
    "class_path": "ImageTextDataModule",
    "init_args": {
        "source": {"format": "captions_csv", "split_sizes": {"train": 24, "test": 4}},
        "image_size": 32, "batch_size": 4, "num_workers": 1, "val_split": "test", "captions_per_epoch": "one",
        "augment": {"scale": [0.3, 1.0], "auto_augment": "rand-m9-mstd0.5", "re_prob": 0.5, "re_mode": "pixel"},
    },
}  # fmt: skip
AUGMENTED_ARGS = [
    *[a for a in RESUME_ARGS if not a.startswith(("--data.", "--trainer.limit_val_batches"))],
    "--model.task=retrieval",
    "--checkpoint.monitor=val/r_mean",
    "--checkpoint.filename=epoch{epoch:02d}-step{step}",
]
CASES = {"shapes": "val/acc", "augmented_captions": "val/r_mean"}  # case -> a metric logged at each validation


def _experiment(tmp_path: Path, case: str) -> tuple[Path, list[str]]:
    """The experiment file and arguments of ``case``."""
    if case == "shapes":
        return REPO / "experiments" / "shapes_color.yaml", RESUME_ARGS
    experiment, _ = read_experiment(REPO / "experiments" / "shapes_color.yaml")  # base merged: the copy lives elsewhere
    experiment["data"] = AUGMENTED_DATA
    experiment["data"]["init_args"]["source"]["root"] = str(noise_captions(tmp_path / "captions", 28, 3))
    path = tmp_path / "augmented.yaml"
    path.write_text(yaml.safe_dump(experiment))
    return path, AUGMENTED_ARGS


def _fit(experiment: tuple[Path, list[str]], root: Path, cache_dir: Path, *extra: str) -> subprocess.Popen:
    config, args = experiment
    return fit_process(config, root, cache_dir, *args, *extra)


def _final_state(root: Path) -> dict[str, torch.Tensor]:
    ckpt = safe_load(root / "version_0" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 12
    return ckpt["state_dict"]


@pytest.mark.parametrize("case", list(CASES))
def test_killed_mid_epoch_then_resumed_matches_uninterrupted_run(tmp_path: Path, cache_dir: Path, case: str) -> None:
    experiment = _experiment(tmp_path, case)
    reference = _fit(experiment, tmp_path / "reference", cache_dir)  # runs alongside the interrupted one

    # Freeze at the start of step 10 (epoch 2, batch 4): last.ckpt is from step 8, step 9's work is lost.
    marker = tmp_path / "paused"
    run = tmp_path / "interrupted"
    kill_when_paused(_fit(experiment, run, cache_dir, *pause_args(9, marker)), marker)
    assert safe_load(run / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 8

    finish(reference)
    out = finish(_fit(experiment, run, cache_dir, "--ckpt_path", "last"))
    assert "Restoring states from the checkpoint" in out or "Restored all states" in out, out[-3000:]
    expected, got = _final_state(tmp_path / "reference"), _final_state(run)
    assert expected.keys() == got.keys()
    differ = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not differ, f"{len(differ)} of {len(expected)} tensors differ, e.g. {differ[:3]}"
    assert not (run / "version_1").exists(), "the resumed run must continue in its own run directory"
    assert _val_steps(run, CASES[case]) == _val_steps(tmp_path / "reference", CASES[case]), (
        "metrics.csv: each validation once, none lost"
    )


def _val_steps(root: Path, metric: str) -> list[int]:
    with (root / "version_0" / "metrics.csv").open(newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh) if row.get(metric)]
