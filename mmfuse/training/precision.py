"""Mixed-precision safety: count the steps the fp16 grad scaler skipped, and stop on a non-finite loss.

The scaler monitor never reads a device value on the host (it logs device tensors); the loss guard reads one flag
per ``check_every_n_steps`` steps, before the optimizer step.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from mmfuse._compat import grad_scaler_scale

__all__ = ["GradScalerMonitor", "NonFiniteLossError", "NonFiniteLossGuard"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class NonFiniteLossGuard(L.Callback):
    """Stops training at the first NaN/inf loss, naming its optimizer step, epoch and batch index.

    Args:
        check_every_n_steps: how often the host looks at the recorded flags, before the optimizer step (each look
            is one device sync). With 1 (the default) no NaN update is ever applied; with N > 1 up to N - 1 may be,
            but the step reported is still exact (flags are kept per step on the device).
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        self.check_every_n_steps = max(1, check_every_n_steps)
        self._flags: list[Tensor] = []
        self._where: list[tuple[int, int, int]] = []

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        self._flags.append(~torch.isfinite(loss.detach()).all())
        self._where.append((trainer.global_step, trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        # Checked before the update: with check_every_n_steps=1 a NaN never reaches the weights.
        if len(self._flags) >= self.check_every_n_steps:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if not self._flags:
            return
        flags = torch.stack(self._flags).cpu()  # one sync for the whole window
        where, self._flags, self._where = self._where, [], []
        local_bad = bool(flags.any())
        if not trainer.strategy.reduce_boolean_decision(local_bad, all=False):  # any rank: every rank stops
            return
        if not local_bad:
            raise NonFiniteLossError("another process hit a non-finite loss; see its message")
        step, epoch, batch_idx = where[int(flags.nonzero()[0])]
        raise NonFiniteLossError(
            f"non-finite training loss at optimizer step {step} (epoch {epoch}, batch {batch_idx}); training stopped "
            "before applying more NaN updates. Try a lower learning rate, bf16-mixed instead of 16-mixed, or "
            "gradient clipping (--trainer.gradient_clip_val)"
        )


class GradScalerMonitor(L.Callback):
    """Logs ``amp/skipped_steps`` (steps whose gradients overflowed, so the scaler skipped the update) and
    ``amp/scale`` when training runs with a grad scaler (``16-mixed``); does nothing otherwise."""

    def __init__(self) -> None:
        self.skipped: Tensor | None = None
        self._before: Tensor | None = None

    @staticmethod
    def _scale(trainer: L.Trainer) -> Tensor | None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is None or not scaler.is_enabled():
            return None
        scale = grad_scaler_scale(scaler)  # the device tensor; get_scale() would sync
        return None if scale is None else scale.detach().clone()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self._before = self._scale(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        after = self._scale(trainer)
        if after is None or self._before is None:
            return
        skipped = (after < self._before).to(torch.int64)  # the scaler backs off exactly when it skips a step
        self.skipped = skipped if self.skipped is None else self.skipped + skipped
        self._before = None
        pl_module.log("amp/skipped_steps", self.skipped.float(), on_step=True, on_epoch=False, reduce_fx="max")
        pl_module.log("amp/scale", after.float(), on_step=True, on_epoch=False)
