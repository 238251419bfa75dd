"""A callback that freezes a training process at a chosen step, so a test can kill it at a known point, and the
helpers that run ``mmfuse fit`` as a real process, pause it there and kill it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L

from tests.conftest import REPO

PAUSE = "tests.training.pause.PauseAtStep"


def fit_process(config: Path, root: Path, cache_dir: Path, *args: str) -> subprocess.Popen:
    """``mmfuse fit --config CONFIG ARGS`` in a new process writing to ``root``, output captured."""
    cmd = [sys.executable, "-m", "mmfuse.cli", "fit", "--config", str(config)]
    cmd += [*args, f"--trainer.default_root_dir={root}", f"--data.cache_dir={cache_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    """Wait for a fit process; its output, after checking it succeeded."""
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def pause_args(step: int, marker: Path) -> list[str]:
    """Overrides that add :class:`PauseAtStep` to a fit."""
    return [f"--trainer.callbacks+={PAUSE}", f"--trainer.callbacks.step={step}", f"--trainer.callbacks.marker={marker}"]


def kill_when_paused(proc: subprocess.Popen, marker: Path, timeout: float = 300) -> None:
    """Wait until the process touched ``marker`` (it sleeps at its pause), then SIGKILL it."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"the run ended before the pause: {proc.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, "the run never reached the pause"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


class PauseAtStep(L.Callback):
    """At the start of optimizer step ``step + 1`` (``global_step == step``), touch ``marker`` and sleep."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).touch()
            time.sleep(600)
