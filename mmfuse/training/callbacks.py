"""Callbacks: a run summary (observes; writes the curves and the next steps at the end of ``fit``), and the
encoders' freeze schedule and weight EMA of ``optim``."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mmfuse.encoders import encoder_backbone
from mmfuse.errors import ConfigError
from mmfuse.training.curves import write_curves
from mmfuse.training.next_steps import format_next_steps
from mmfuse.types import Batch

__all__ = ["EMAWeights", "EncoderFreezeSchedule", "RunSummary"]


class RunSummary(L.Callback):
    """Counts training samples and wall time, so a run can end with one summary table; at the end of ``fit`` draws
    the run's training curves (``curves.png`` beside ``metrics.csv``, see :func:`~mmfuse.training.curves.write_curves`)
    and keeps the commands that check the trained model next (``next_steps_text``, which ``mmfuse fit`` prints after
    its summary table; see :func:`~mmfuse.training.next_steps.next_step_commands`).

    Counting happens on the host from the batch shape: no device sync per step. Drawing and the next steps happen on
    global rank 0 only, without a collective.

    Args:
        redraw_every_s: also redraw ``curves.png`` at the end of a validation during ``fit`` once this many seconds
            have passed since the last drawing (so a long run's curves can be watched); None draws at the end only.
        next_steps: gather the next-step commands at the end of ``fit``.
    """

    def __init__(self, redraw_every_s: float | None = 300.0, next_steps: bool = True) -> None:
        self.redraw_every_s = redraw_every_s
        self.next_steps = next_steps
        self.fit_seconds = 0.0
        self.train_samples = 0
        self._start: float | None = None
        self._drawn: float | None = None
        self.next_steps_text: str | None = None  # printed after the fit's summary table

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._drawn = time.perf_counter()
        self.train_samples = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Batch, batch_idx: int
    ) -> None:
        self.train_samples += len(batch) * trainer.world_size

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and not trainer.sanity_checking:  # lets a run say when it reached an accuracy
            # Every process logs its own clock; the run got here when the slowest one did.
            elapsed = time.perf_counter() - self._start
            pl_module.log("time/fit_elapsed_s", elapsed, sync_dist=True, reduce_fx="max")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.redraw_every_s is None or self._drawn is None or trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        if trainer.is_global_zero and time.perf_counter() - self._drawn >= self.redraw_every_s:
            write_curves(trainer)
            self._drawn = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None:
            self.fit_seconds = time.perf_counter() - self._start

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:  # rank 0 only: nothing below may call a collective
            return
        curves = write_curves(trainer)
        self.next_steps_text = format_next_steps(trainer, curves) if self.next_steps else None

    def rows(self, trainer: L.Trainer) -> list[tuple[str, str]]:
        """(name, value) rows: the logged metrics (learning rates to 4 significant digits) plus time and throughput."""
        metrics = sorted(trainer.callback_metrics.items())
        rows = [(k, f"{float(v):.4g}" if k.startswith("lr/") else f"{float(v):.4f}") for k, v in metrics]
        if self.fit_seconds:
            rows.append(("fit wall time (s)", f"{self.fit_seconds:.1f}"))
            rows.append(("train samples/s", f"{self.train_samples / self.fit_seconds:.1f}"))
            rows.append(("epochs / steps", f"{trainer.current_epoch} / {trainer.global_step}"))
        return rows


class EncoderFreezeSchedule(L.Callback):
    """Keeps the encoders' backbones frozen for the first ``steps`` optimizer steps (or ``epochs`` epochs), then
    trains them. The projections to the common width (and their position embeddings) train from the first step: they
    start from random weights.

    Whether they are frozen is read from the trainer's ``global_step`` (or ``current_epoch``) at the start of every
    training batch, so a resumed run freezes and unfreezes exactly where an uninterrupted one does. Frozen means: the
    encoders' trainable parameters get ``requires_grad=False`` (no gradient, so AdamW skips them: no update, no
    weight decay; they sit in the optimizer from the start, so its state and groups never change shape), and the
    encoders run in eval mode (BatchNorm statistics fixed, no dropout). Parameters frozen for good
    (``speed.freeze_vision``/``freeze_text``, parameters no output reaches) are never touched; after ``fit`` every
    parameter this schedule froze is trainable again.

    A callback rather than LightningModule hooks: the module stays orchestration only, and the schedule's state
    lives in one place. The module returns it from ``configure_callbacks`` (``optim.unfreeze_after_*``).

    Args:
        steps: optimizer steps with frozen encoders.
        epochs: epochs with frozen encoders (exclusive with ``steps``).
    """

    def __init__(self, steps: int | None = None, epochs: int | None = None) -> None:
        if (steps is None) == (epochs is None):
            raise ValueError(f"EncoderFreezeSchedule takes steps or epochs, not steps={steps}, epochs={epochs}")
        self.steps = steps
        self.epochs = epochs
        self._encoders: list[nn.Module] = []
        self._params: list[nn.Parameter] = []
        self._frozen: bool | None = None

    def is_frozen(self, trainer: L.Trainer) -> bool:
        """Whether the encoders are frozen for the trainer's next optimizer step."""
        if self.steps is not None:
            return trainer.global_step < self.steps
        assert self.epochs is not None
        return trainer.current_epoch < self.epochs

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        model: Any = pl_module.model
        backbones = [encoder_backbone(e) for e in (model.vision, model.text) if e is not None]
        self._params = [p for backbone in backbones for p in backbone.parameters() if p.requires_grad]
        self._encoders = [b for b in backbones if any(p.requires_grad for p in b.parameters())]
        self._frozen = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wrapped = getattr(trainer.strategy, "model", None)
        if isinstance(wrapped, DistributedDataParallel) and not wrapped.find_unused_parameters:
            when = (
                f"unfreeze_after_steps={self.steps}"
                if self.steps is not None
                else f"unfreeze_after_epochs={self.epochs}"
            )
            raise ConfigError(
                f"optim.{when} under DDP: frozen encoders get no gradients, which DDP must be told about; use "
                "trainer.strategy: ddp_find_unused_parameters_true"
            )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        frozen = self.is_frozen(trainer)
        if frozen != self._frozen:
            for p in self._params:
                p.requires_grad_(not frozen)
            if not frozen:
                for encoder in self._encoders:
                    encoder.train(pl_module.training)
            self._frozen = frozen
        if frozen:
            for encoder in self._encoders:
                if encoder.training:  # put back in training mode by LightningModule.train() (after validation)
                    encoder.eval()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            for p in self._params:
                p.requires_grad_(True)
            for encoder in self._encoders:
                encoder.train(pl_module.training)
            self._frozen = None


class EMAWeights(EMAWeightAveraging):
    """Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging` (an exponential moving average of every
    parameter and buffer, updated after each optimizer step), with the EMA weights kept in the model for the whole
    validation: Lightning swaps the raw weights back in the callbacks' ``on_validation_epoch_end``, before the
    LightningModule's own, where retrieval re-ranks with the model; here they come back at ``on_validation_end``
    (before any checkpoint callback saves).

    Checkpoints hold the EMA as their ``state_dict`` (what ``load_from_checkpoint``, ``validate``/``test`` and the
    saved ``model/`` use) and the raw weights as ``current_model_state`` (what a resumed run continues from).

    Args:
        decay: EMA decay per optimizer step.
    """

    def __init__(self, decay: float) -> None:
        super().__init__(decay=decay)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # not yet: see on_validation_end

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)  # swaps the raw weights back in
