"""Loss parity across precisions: from the same initial weights and the same batches, train a few steps in each
precision and compare the losses with ``32-true``'s, so that a speedup never hides a run that stopped learning."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import torch

from mmfuse.bench.amp import PreparedModel
from mmfuse.bench.config import get_precision
from mmfuse.bench.precision import TrainStep, precision_mode, skip_reason, synthetic_batches
from mmfuse.types import Batch

__all__ = ["ParityResult", "run_parity", "train_losses"]

logger = logging.getLogger(__name__)
REFERENCE = "32-true"


@dataclass
class ParityResult:
    """Losses of one precision next to the ``32-true`` reference.

    Attributes:
        size: model size name.
        precision: precision name.
        batch_size: batch size B.
        steps: optimizer steps K.
        status: ``ok`` or ``skipped`` (``reason`` says why).
        reason: why it did not run.
        losses: the K per-step losses.
        reference_losses: the K per-step losses of ``32-true``.
        final_loss_gap: |loss_K - reference_K|.
        max_step_gap: max over steps of |loss_k - reference_k|.
        nonfinite_losses: steps with an inf or NaN loss.
    """

    size: str
    precision: str
    batch_size: int
    steps: int
    status: str = "ok"
    reason: str | None = None
    losses: list[float] = field(default_factory=list)
    reference_losses: list[float] = field(default_factory=list)
    final_loss_gap: float | None = None
    max_step_gap: float | None = None
    nonfinite_losses: int | None = None


def train_losses(
    prepared: PreparedModel, precision: str, batches: list[Batch], steps: int, lr: float, seed: int = 0
) -> list[float]:
    """Per-step losses of ``steps`` plain training steps in ``precision`` on a deep copy of the initial weights,
    cycling through ``batches`` (float32 images; cast here for ``bf16-true``). Dropout masks repeat across
    precisions: the RNG is seeded with ``seed`` before the first step."""
    plan = get_precision(precision)
    device = _device_of(prepared)
    model = copy.deepcopy(prepared.reset()).to(plan.param_dtype)
    losses = []
    with precision_mode(plan), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        step = TrainStep(model, plan, device, lr=lr)
        for i in range(steps):
            batch = batches[i % len(batches)]
            images = batch.images.to(plan.param_dtype)
            losses.append(step(Batch(images, batch.input_ids, batch.attention_mask, batch.labels)))
    return torch.stack(losses).float().cpu().tolist()


def _device_of(prepared: PreparedModel) -> torch.device:
    return next(prepared.model.parameters()).device


def run_parity(
    prepared: PreparedModel,
    precisions: tuple[str, ...],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    num_batches: int = 4,
) -> list[ParityResult]:
    """Train ``steps`` steps in ``32-true`` and in every precision (``32-true`` itself included when listed) from
    the same weights on the same ``num_batches`` cycled batches; report the loss gaps to ``32-true``.

    The batches repeat, so the loss falls as the model memorises their random labels: a precision whose loss stays
    flat while ``32-true``'s falls shows up as a growing gap.
    """
    device = _device_of(prepared)
    batches = synthetic_batches(prepared.size, batch_size, count=num_batches, seed=seed + 1, device=device)
    reference = train_losses(prepared, REFERENCE, batches, steps, lr, seed)
    results = []
    for name in precisions:
        result = ParityResult(prepared.size.name, name, batch_size, steps, reference_losses=reference)
        reason = skip_reason(get_precision(name), device)
        if reason is not None:
            result.status, result.reason = "skipped", reason
        else:
            losses = train_losses(prepared, name, batches, steps, lr, seed)
            gaps = [abs(a - b) if math.isfinite(a - b) else math.inf for a, b in zip(losses, reference)]
            result.losses, result.final_loss_gap, result.max_step_gap = losses, gaps[-1], max(gaps)
            result.nonfinite_losses = sum(not math.isfinite(loss) for loss in losses)
            logger.info(
                "parity %s %s: final loss %.4f (32-true %.4f), max step gap %.4f",
                *(result.size, name, losses[-1], reference[-1], result.max_step_gap),
            )
        results.append(result)
    return results
