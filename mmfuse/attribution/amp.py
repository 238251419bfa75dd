"""Attribution under mixed precision: fp32 algebra inside autocast, and a bf16/fp16-vs-fp32 agreement check.

Every method runs the model in whatever autocast context the caller opened (bf16 on CPU, bf16/fp16 on CUDA) and
does its own arithmetic (gradient weighting, relevance products, upsampling) in fp32 with autocast switched off,
so reduced precision only enters through the model's activations and gradients. :func:`agreement` measures how
much that changes a map: the per-example Spearman rank correlation between an autocast map and the fp32 map.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from mmfuse import stats
from mmfuse.attribution.base import EXPLAINERS
from mmfuse.attribution.hooks import explain_mode
from mmfuse.attribution.targets import PredictedClass, Target
from mmfuse.types import Batch

__all__ = ["full_precision", "spearman", "agreement"]


@contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Autocast off for ``device``'s type: matmuls and reductions inside run in the inputs' dtype (cast to fp32)."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def spearman(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """:func:`mmfuse.stats.spearman` of two batches of maps (ties share average ranks; constant rows give 1 against
    a constant row, else 0).

    Args:
        a: (B, ...) maps.
        b: (B, ...) maps of the same shape.
        mask: (B, ...) bool, True = compare; None = everything.

    Returns:
        (B,) float32 correlations in [-1, 1], on ``a``'s device.
    """
    rows_a, rows_b = (t.detach().flatten(1).double().cpu().numpy() for t in (a, b))  # (B, ...) -> (B, P)
    valid = None if mask is None else mask.detach().flatten(1).bool().cpu().numpy()
    return torch.from_numpy(stats.spearman(rows_a, rows_b, valid)).float().to(a.device)


def agreement(model: nn.Module, batch: Batch, method: str, dtype: torch.dtype, target: Target | None = None) -> Tensor:
    """How well a method's map under autocast ranks the same regions as its fp32 map.

    The target is fixed on the fp32 output first, so both runs explain the same class. The image grid is compared
    when the method has one, else the text map over real tokens.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel`.
        batch: a batch on the model's device.
        method: a name registered in :data:`~mmfuse.attribution.EXPLAINERS`.
        dtype: autocast dtype (``torch.bfloat16`` or ``torch.float16``).
        target: what to explain; default the predicted class.

    Returns:
        (B,) Spearman correlation between the autocast and fp32 maps.
    """
    explainer = EXPLAINERS.get(method)
    device = batch.images.device
    with explain_mode(model), torch.no_grad():
        output = model(batch.images, batch.input_ids, batch.attention_mask)
    fixed = (target or PredictedClass()).fixed(output, batch)
    with explain_mode(model):
        reference = explainer(model, batch, fixed)
        with torch.autocast(device_type=device.type, dtype=dtype):
            reduced = explainer(model, batch, fixed)
    if reference.image_grid is not None and reduced.image_grid is not None:
        return spearman(reduced.image_grid, reference.image_grid)
    if reference.text is None or reduced.text is None:
        raise ValueError(f"method {method!r} returned neither an image grid nor a text map")
    return spearman(reduced.text, reference.text, batch.attention_mask)
