"""A callback that freezes a training process at a chosen step, so a test can kill it at a known point."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L


class PauseAtStep(L.Callback):
    """At the start of optimizer step ``step + 1`` (``global_step == step``), touch ``marker`` and sleep."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).touch()
            time.sleep(600)
