"""FLOPs of a training step (counted by ``torch.utils.flop_counter.FlopCounterMode`` on the real model and inputs),
the dense peak rate of the device per precision, and model FLOPs utilisation (MFU).

Peaks of known GPUs come from NVIDIA's datasheets (dense tensor-core rates, not the 2:4-sparsity figures); any
other device, the CPU included, gets the rate of a large matmul measured in the same dtype, and the result says so.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from mmfuse._compat import cpu_flash_attention_ops

__all__ = [
    "PEAK_TABLE",
    "PeakFlops",
    "count_flops",
    "count_step_flops",
    "datasheet_peak",
    "measure_matmul_flops",
    "mfu",
    "peak_flops",
]

# (device-name pattern, label, {kind: dense peak TFLOP/s}); first match wins, so specific variants come first.
# kind: "bf16" / "fp16" (tensor cores, fp32 accumulate), "tf32" (tensor cores), "fp32" (CUDA cores, no tensor cores).
PEAK_TABLE: tuple[tuple[str, str, dict[str, float]], ...] = (
    (r"H200 NVL", "H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H100 NVL", "H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H100 PCIe", "H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    (r"H200|H100|GH200", "H100/H200 SXM", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    (r"A100", "A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"L40S", "L40S", {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6}),
    (r"\bA10\b", "A10", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    (r"RTX 4090", "RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}),
)
_MATMUL_SIDE = {"cpu": 1024, "cuda": 4096}
_KIND_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _cpu_sdpa_flop(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


def _cpu_sdpa_backward_flop(
    grad_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any
) -> int:
    return int(sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape))


# CPU SDPA runs a fused kernel that FlopCounterMode does not know; its FLOPs are those of any other SDPA kernel.
# (FlopCounterMode calls these with tensor shapes in place of tensors.)
_CPU_SDPA, _CPU_SDPA_BACKWARD = cpu_flash_attention_ops()
_EXTRA_FORMULAS: dict[object, Callable[..., int]] = {
    _CPU_SDPA: _cpu_sdpa_flop,
    _CPU_SDPA_BACKWARD: _cpu_sdpa_backward_flop,
}


@dataclass(frozen=True)
class PeakFlops:
    """A device's peak rate for one precision kind.

    Attributes:
        flops_per_s: peak FLOP/s.
        kind: ``fp32``, ``tf32``, ``bf16`` or ``fp16``.
        source: ``datasheet:<GPU>`` or ``measured:<n>x<n> matmul`` (the rate this device reached on one matmul).
    """

    flops_per_s: float
    kind: str
    source: str


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matmuls, convolutions and attention that ``fn()`` runs (elementwise ops count zero).

    Example:
        >>> count_flops(lambda: torch.ones(8, 4) @ torch.ones(4, 2))  # 2 * 8 * 4 * 2
        128
    """
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        fn()
    return int(counter.get_total_flops())


def count_step_flops(
    model: nn.Module, images: Tensor, input_ids: Tensor, attention_mask: Tensor, labels: Tensor
) -> int:
    """FLOPs of one training step's forward, cross-entropy and backward (the optimizer's elementwise update counts
    zero). The gradients it leaves are cleared.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` (or anything returning ``.logits``).
        images: (B, 3, H, W) float.
        input_ids: (B, L) long.
        attention_mask: (B, L) bool.
        labels: (B,) long.
    """

    def step() -> None:
        logits = model(images, input_ids, attention_mask).logits
        F.cross_entropy(logits.float(), labels).backward()

    total = count_flops(step)
    model.zero_grad(set_to_none=True)
    return total


def mfu(step_flops: float, step_seconds: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s of the step over the peak FLOP/s.

    Example:
        >>> mfu(1e12, 0.01, 1e15)
        0.1
    """
    return step_flops / step_seconds / peak


def datasheet_peak(device_name: str, kind: str) -> PeakFlops | None:
    """The datasheet peak of a GPU whose ``torch.cuda.get_device_name()`` is ``device_name``, or None.

    Example:
        >>> datasheet_peak("NVIDIA H200", "bf16").flops_per_s
        989500000000000.0
    """
    for pattern, label, peaks in PEAK_TABLE:
        if re.search(pattern, device_name) and kind in peaks:
            return PeakFlops(peaks[kind] * 1e12, kind, f"datasheet:{label}")
    return None


def measure_matmul_flops(kind: str, device: torch.device, side: int | None = None, repeats: int = 3) -> PeakFlops:
    """FLOP/s of an ``n x n`` matmul in the dtype of ``kind`` (median of ``repeats`` after one warm-up)."""
    n = side or _MATMUL_SIDE.get(device.type, 1024)
    a = torch.randn(n, n, device=device).to(_KIND_DTYPES[kind])
    b = torch.randn(n, n, device=device).to(_KIND_DTYPES[kind])
    times = []
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if kind == "tf32" else "highest")
    try:
        for i in range(repeats + 1):
            _synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            _synchronize(device)
            if i:
                times.append(time.perf_counter() - start)
    finally:
        torch.set_float32_matmul_precision(previous)
    return PeakFlops(2 * n**3 / statistics.median(times), kind, f"measured:{n}x{n} matmul")


def peak_flops(kind: str, device: torch.device, side: int | None = None) -> PeakFlops:
    """Datasheet peak of a known GPU, else the measured rate of a ``side x side`` matmul on ``device`` for ``kind``
    (``side`` None = 1024 on CPU, 4096 on GPU)."""
    if device.type == "cuda":
        found = datasheet_peak(torch.cuda.get_device_name(device), kind)
        if found is not None:
            return found
    return measure_matmul_flops(kind, device, side=side)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
