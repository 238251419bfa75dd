"""Precisions as Lightning names them, and one plain PyTorch training step in each.

``32-true`` here means true float32: TF32 is switched off for matmuls *and* cuDNN convolutions (PyTorch allows TF32
convolutions by default); ``tf32`` is float32 storage with TF32 matmuls and convolutions
(``torch.set_float32_matmul_precision("high")``). ``bf16-mixed`` and ``16-mixed`` autocast the forward pass
(``16-mixed`` with a ``GradScaler``); ``bf16-true`` casts the model, the images and AdamW's state to bfloat16.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfuse._compat import grad_scaler_scale
from mmfuse.bench.config import PrecisionPlan
from mmfuse.types import Batch

if TYPE_CHECKING:
    from mmfuse.bench.sizes import ModelSize
    from mmfuse.models import ImageTextModel, ModelOutput

__all__ = [
    "TrainStep",
    "precision_mode",
    "skip_reason",
    "synthetic_batches",
]


def skip_reason(plan: PrecisionPlan, device: torch.device) -> str | None:
    """Why ``plan`` is not run on ``device``, or None when it is."""
    if device.type != "cuda":
        if plan.name == "16-mixed":
            return "fp16 autocast on CPU is not a training precision (Lightning runs bf16-mixed there instead)"
        if plan.use_tf32:
            return "TF32 is a tensor-core mode of NVIDIA GPUs; on CPU it is the same as 32-true"
        return None
    uses_bf16 = torch.bfloat16 in (plan.autocast_dtype, plan.param_dtype)
    if uses_bf16 and not torch.cuda.is_bf16_supported(including_emulation=False):
        return f"{torch.cuda.get_device_name(device)} has no bfloat16 tensor cores (needs Ampere or newer)"
    return None


@contextmanager
def precision_mode(plan: PrecisionPlan) -> Iterator[None]:
    """TF32 on for ``tf32`` and off otherwise (matmuls and cuDNN convolutions); the previous settings come back."""
    previous = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if plan.use_tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = plan.use_tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous[0])
        torch.backends.cudnn.allow_tf32 = previous[1]


def synthetic_batches(
    size: ModelSize, batch_size: int, count: int = 2, seed: int = 0, device: torch.device | str = "cpu"
) -> list[Batch]:
    """``count`` random batches shaped for ``size``, the same for a given seed on every device.

    Returns:
        Batches with images (B, 3, H, W) float32 in [0, 1], input_ids (B, L) long, attention_mask (B, L) bool
        (1..L real tokens per row, padding at the end) and labels (B,) long.
    """
    generator = torch.Generator().manual_seed(seed)
    side, seq_len, spec = size.spec.image_size, size.seq_len, size.spec
    batches = []
    for _ in range(count):
        images = torch.rand(batch_size, 3, side, side, generator=generator)
        lengths = torch.randint(1, seq_len + 1, (batch_size, 1), generator=generator)
        mask = torch.arange(seq_len)[None, :] < lengths  # (B, L)
        input_ids = torch.randint(0, spec.vocab_size, (batch_size, seq_len), generator=generator)
        labels = torch.randint(0, spec.num_classes, (batch_size,), generator=generator)
        batch = Batch(images, input_ids.masked_fill(~mask, spec.pad_token_id), mask, labels)
        batches.append(batch.to(device))
    return batches


class TrainStep:
    """One plain PyTorch optimizer step: forward (autocast per plan), float32 cross-entropy, backward, AdamW.

    Args:
        model: the model, already in the plan's parameter dtype and on its device.
        plan: the precision.
        device: where the model lives.
        lr: AdamW learning rate.
        use_compile: run the forward and backward through ``torch.compile(model, dynamic=False)``.
        optimizer: the optimizer to step; None = ``AdamW(model.parameters(), lr=lr)``.
    """

    def __init__(
        self,
        model: ImageTextModel,
        plan: PrecisionPlan,
        device: torch.device,
        lr: float,
        use_compile: bool = False,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.plan = plan
        self.device = device
        self.model_fn: Callable[..., ModelOutput] = torch.compile(model, dynamic=False) if use_compile else model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr) if optimizer is None else optimizer
        self.scaler = torch.amp.GradScaler(device.type) if plan.use_grad_scaler else None
        self.scales: list[Tensor] = []  # the scale after every step, kept on the device (no host sync)
        self.initial_scale = None if self.scaler is None else float(self.scaler.get_scale())  # no sync before use

    def __call__(self, batch: Batch) -> Tensor:
        """Train on ``batch``; returns the detached float32 loss, a 0-d tensor.

        Args:
            batch: images (B, 3, H, W) in the parameter dtype, input_ids (B, L) long, attention_mask (B, L) bool,
                labels (B,) long, all on the model's device.
        """
        assert batch.labels is not None
        autocast_dtype = self.plan.autocast_dtype
        with torch.autocast(self.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = self.model_fn(batch.images, batch.input_ids, batch.attention_mask).logits
        loss = F.cross_entropy(logits.float(), batch.labels)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            scale = grad_scaler_scale(self.scaler)  # the device tensor; get_scale() would sync the host every step
            assert scale is not None
            self.scales.append(scale.detach().clone())
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def scaler_stats(self) -> tuple[int | None, float | None]:
        """(steps the GradScaler skipped for inf/NaN gradients, final scale); (None, None) without a scaler.

        A skipped step is one where the scale went down: the scaler halves it exactly when it skips the step.
        """
        if self.initial_scale is None or not self.scales:
            return None, None
        scales = [self.initial_scale, *torch.stack(self.scales).float().cpu().tolist()]
        skipped = sum(after < before for before, after in zip(scales, scales[1:]))
        return skipped, scales[-1]
