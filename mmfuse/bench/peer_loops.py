"""Training loops without Lightning, run one step at a time: the peers that :mod:`mmfuse.bench.overhead` times
against ``FusionLitModule`` under ``lightning.Trainer``.

Both do the work of ``FusionLitModule.training_step`` without its logging and metric (forward, float32
cross-entropy, backward), then AdamW and the warm-up schedule with the module's settings (:func:`plain_optimizer`):

- :class:`PlainLoop`: plain PyTorch, the AMP sweep's own step (``torch.autocast`` for ``bf16-mixed``), so that
  the comparison also says whether the step the sweep times matches the one Lightning's precision plugin runs;
- :class:`AccelerateLoop`: Hugging Face Accelerate, ``Accelerator(mixed_precision="no"|"bf16")``,
  ``accelerator.prepare(model, optimizer, scheduler)``, forward and loss under ``accelerator.autocast()`` and
  ``accelerator.backward(loss)``. Accelerate is optional (``pip install 'mmfuse[bench]'``) and imported only here,
  when such a loop is built; :func:`accelerate_missing` says why it cannot run.

Each loop times its own steps and its setup on :func:`loop_clock`: on CPU the CPU time of this process (which time
spent waiting for other processes does not inflate), on CUDA wall time after a synchronize. It also records the
kernel's share of each step (:func:`system_time`: mostly page faults on freshly mapped memory).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.nn.functional as F

from mmfuse.bench.config import get_precision
from mmfuse.bench.precision import TrainStep
from mmfuse.bench.timing import synchronize
from mmfuse.config import OptimConfig
from mmfuse.models import ImageTextModel
from mmfuse.types import Batch

__all__ = [
    "AccelerateLoop",
    "PeerLoop",
    "PlainLoop",
    "accelerate_missing",
    "clock_marks",
    "loop_clock",
    "plain_optimizer",
    "system_time",
]


def loop_clock(device: torch.device) -> float:
    """Seconds on the loops' clock: wall time on CUDA (after a synchronize); on CPU the CPU time of this process,
    which time spent waiting for other processes' work does not inflate."""
    if device.type == "cuda":
        synchronize(device)
        return time.perf_counter()
    return time.process_time()


def system_time() -> float:
    """Kernel CPU seconds of this process so far (page faults, memory mapping): a part of :func:`loop_clock` on CPU
    that depends on how the allocator reuses memory, not on the loop's own work."""
    return os.times().system


def clock_marks(device: torch.device) -> tuple[float, float]:
    """(loop clock, wall clock) now."""
    return loop_clock(device), time.perf_counter()


def plain_optimizer(model: torch.nn.Module, cfg: OptimConfig, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with ``cfg``'s learning rate, betas and weight decay (none on biases and norm weights), and the
    module's schedule (:func:`~mmfuse.training.optim.warmup_schedule`), stepped every optimizer step: the work of
    ``FusionLitModule.configure_optimizers`` for a loop without Lightning (whose
    :func:`~mmfuse.training.optim.param_groups` also exempts embeddings from decay, the same arithmetic per step)."""
    from mmfuse.training.optim import warmup_schedule

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
        fused=cfg.fused,
    )
    return optimizer, warmup_schedule(optimizer, cfg, total_steps)


def accelerate_missing() -> str | None:
    """Why :class:`AccelerateLoop` cannot run here, or None when ``accelerate`` imports."""
    try:
        import accelerate  # noqa: F401
    except ImportError as err:
        return f"accelerate is not installed ({err}); pip install 'mmfuse[bench]'"
    return None


class PeerLoop:
    """A training loop stepped from outside, which times its steps and its time to the first step.

    A subclass builds what it needs in ``__init__`` after ``super().__init__`` (which starts the setup clock),
    calls :meth:`_end_setup` last, and trains on one batch in :meth:`_train`.

    Args:
        batches: the batches, cycled.
        device: where the model lives.

    Attributes:
        setup: (loop clock, wall) seconds of the setup.
        first_step: (loop clock, wall) seconds of the setup plus the first step; None before the first step.
        system_s: kernel CPU seconds of each step (:func:`system_time`).
    """

    def __init__(self, batches: list[Batch], device: torch.device) -> None:
        self.batches, self.device = batches, device
        self.setup: tuple[float, float] = (0.0, 0.0)
        self.first_step: tuple[float, float] | None = None
        self.system_s: list[float] = []
        self._setup_start = clock_marks(device)

    def _end_setup(self) -> None:
        end = clock_marks(self.device)
        self.setup = (end[0] - self._setup_start[0], end[1] - self._setup_start[1])

    def _train(self, batch: Batch) -> None:
        raise NotImplementedError

    def step(self, index: int) -> float:
        """Train on batch ``index`` (cycled); returns the seconds it took on :func:`loop_clock`."""
        start, system = clock_marks(self.device), system_time()
        self._train(self.batches[index % len(self.batches)].to(self.device))
        end = clock_marks(self.device)
        self.system_s.append(system_time() - system)
        if self.first_step is None:
            self.first_step = (self.setup[0] + end[0] - start[0], self.setup[1] + end[1] - start[1])
        return end[0] - start[0]


class PlainLoop(PeerLoop):
    """The plain PyTorch loop: the AMP sweep's :class:`~mmfuse.bench.precision.TrainStep` (autocast forward per
    precision, float32 cross-entropy, backward, optimizer step) with the module's optimizer settings and schedule.

    Args:
        model: its own copy of the model, on ``device``.
        batches: the batches, cycled.
        cfg: optimizer settings.
        precision: ``32-true`` or ``bf16-mixed``.
        device: where the model lives.
    """

    def __init__(
        self, model: ImageTextModel, batches: list[Batch], cfg: OptimConfig, precision: str, device: torch.device
    ) -> None:
        super().__init__(batches, device)
        self.model = model.train()
        optimizer, self.scheduler = plain_optimizer(model, cfg, len(batches))
        # the AMP sweep's own step, so that the Lightning comparison also checks the step the sweep times
        self.train_step = TrainStep(model, get_precision(precision), device, lr=cfg.lr, optimizer=optimizer)
        self._end_setup()

    def _train(self, batch: Batch) -> None:
        self.train_step(batch)
        self.scheduler.step()


class AccelerateLoop(PeerLoop):
    """The Accelerate loop; arguments as :class:`PlainLoop`. ``model`` must be a copy that no Accelerator has
    prepared before (``prepare`` wraps its ``forward`` in autocast for bf16 and marks it prepared)."""

    def __init__(
        self, model: ImageTextModel, batches: list[Batch], cfg: OptimConfig, precision: str, device: torch.device
    ) -> None:
        super().__init__(batches, device)
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        # Accelerate keeps one state per process, fixed by the first Accelerator (a second one with another
        # mixed_precision raises): reset it, so that every loop sets up from scratch as a new training script does.
        AcceleratorState._reset_state(reset_partial_state=True)
        mixed = "bf16" if precision == "bf16-mixed" else "no"
        self.accelerator = Accelerator(mixed_precision=mixed, cpu=device.type == "cpu")
        optimizer, scheduler = plain_optimizer(model, cfg, len(batches))
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model.train(), optimizer, scheduler)
        self._end_setup()

    def _train(self, batch: Batch) -> None:
        assert batch.labels is not None
        with self.accelerator.autocast():
            logits = self.model(batch.images, batch.input_ids, batch.attention_mask).logits
            loss = F.cross_entropy(logits, batch.labels)
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
