"""Exact resume with an EMA of the weights and a freeze schedule: a run killed mid-epoch and resumed with
``--ckpt_path last`` ends bit for bit where an uninterrupted run ends (raw weights and EMA alike), and the model
``mmfuse fit`` saves is the EMA. Three CLI processes (two at a time): most of the time is their start-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file

from mmfuse.training import safe_load
from tests.conftest import REPO, TINY_CLI_ARGS
from tests.training.pause import finish, fit_process, kill_when_paused, pause_args

# 96 examples / 16 per batch = 6 steps in one epoch; last.ckpt every 2 steps. Encoders frozen for 5 steps: the run
# resumes from step 4, so a schedule that counted steps since the (re)start would freeze the last step too.
EMA_ARGS = [
    *[a for a in TINY_CLI_ARGS if not a.startswith("--trainer.max_steps")],
    "--trainer.deterministic=true",
    "--last_checkpoint.every_n_train_steps=2",
    "--trainer.val_check_interval=1.0",
    "--trainer.num_sanity_val_steps=0",
    "--optim.ema_decay=0.5",
    "--optim.unfreeze_after_steps=5",
]


def _fit(root: Path, cache_dir: Path, *extra: str) -> subprocess.Popen:
    return fit_process(REPO / "experiments" / "shapes_color.yaml", root, cache_dir, *EMA_ARGS, *extra)


def test_ema_run_killed_then_resumed_matches_uninterrupted_run(tmp_path: Path, cache_dir: Path) -> None:
    reference = _fit(tmp_path / "reference", cache_dir)
    marker, run = tmp_path / "paused", tmp_path / "interrupted"
    kill_when_paused(_fit(run, cache_dir, *pause_args(5, marker)), marker)
    assert safe_load(run / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 4

    finish(reference)
    out = finish(_fit(run, cache_dir, "--ckpt_path", "last"))
    assert "Restoring states from the checkpoint" in out or "Restored all states" in out, out[-3000:]
    expected, got = (
        safe_load(root / "version_0" / "checkpoints" / "last.ckpt") for root in (tmp_path / "reference", run)
    )
    assert expected["global_step"] == got["global_step"] == 6
    for part in ("state_dict", "current_model_state"):  # the EMA, and the raw weights training continues from
        differ = [k for k in expected[part] if not torch.equal(expected[part][k], got[part][k])]
        assert expected[part].keys() == got[part].keys() and not differ, f"{part}: {len(differ)} differ: {differ[:3]}"
    ema, raw = got["state_dict"], got["current_model_state"]
    assert any(not torch.equal(ema[k], raw[k]) for k in ema), "the EMA should differ from the raw weights"

    # mmfuse fit saves the best checkpoint's model (the only one besides last.ckpt): its EMA, not its raw weights
    (best,) = (path for path in (run / "version_0" / "checkpoints").glob("*.ckpt") if path.name != "last.ckpt")
    best_ckpt = safe_load(best)
    saved = load_file(run / "version_0" / "model" / "model.safetensors")
    assert all(torch.equal(saved[k], best_ckpt["state_dict"][f"model.{k}"]) for k in saved), "saved model is not EMA"
    assert any(not torch.equal(saved[k], best_ckpt["current_model_state"][f"model.{k}"]) for k in saved)
