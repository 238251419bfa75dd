"""Exact resume: a run killed with SIGKILL mid-epoch and resumed with ``--ckpt_path last`` ends with the same
weights, bit for bit, as a run that was never interrupted (CPU, deterministic settings)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from mmfuse.training import safe_load
from tests.conftest import REPO, TINY_CLI_ARGS

# 96 training examples / 16 per batch = 6 steps per epoch, 2 epochs; last.ckpt every 2 steps (mid-epoch too).
RESUME_ARGS = [
    *[a for a in TINY_CLI_ARGS if not a.startswith(("--trainer.max_steps", "--trainer.max_epochs"))],
    "--trainer.max_epochs=2",
    "--trainer.deterministic=true",
    "--last_checkpoint.every_n_train_steps=2",
    "--trainer.val_check_interval=0.5",
]
PAUSE = "tests.training.pause.PauseAtStep"


def _fit(root: Path, cache_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mmfuse.cli", "fit", "--config", str(REPO / "experiments" / "shapes_color.yaml")]
    cmd += [*RESUME_ARGS, f"--trainer.default_root_dir={root}", f"--data.cache_dir={cache_dir}", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def _final_state(root: Path) -> dict[str, torch.Tensor]:
    ckpt = safe_load(root / "version_0" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 12
    return ckpt["state_dict"]


def test_killed_mid_epoch_then_resumed_matches_uninterrupted_run(tmp_path: Path, cache_dir: Path) -> None:
    reference = _fit(tmp_path / "reference", cache_dir)  # runs alongside the interrupted one

    # Freeze at the start of step 10 (epoch 2, batch 4): last.ckpt is from step 8, step 9's work is lost.
    marker = tmp_path / "paused"
    run = tmp_path / "interrupted"
    proc = _fit(run, cache_dir, f"--trainer.callbacks+={PAUSE}", "--trainer.callbacks.step=9",
                f"--trainer.callbacks.marker={marker}")  # fmt: skip
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, f"the run ended before the pause: {proc.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, "the run never reached the pause"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert safe_load(run / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 8

    _finish(reference)
    out = _finish(_fit(run, cache_dir, "--ckpt_path", "last"))
    assert "Restoring states from the checkpoint" in out or "Restored all states" in out, out[-3000:]
    expected, got = _final_state(tmp_path / "reference"), _final_state(run)
    assert expected.keys() == got.keys()
    differ = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not differ, f"{len(differ)} of {len(expected)} tensors differ, e.g. {differ[:3]}"
    assert not (run / "version_1").exists(), "the resumed run must continue in its own run directory"
    assert _val_steps(run) == _val_steps(tmp_path / "reference"), "metrics.csv: each validation once, none lost"


def _val_steps(root: Path) -> list[int]:
    with (root / "version_0" / "metrics.csv").open(newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh) if row.get("val/acc")]
