"""Attribution under mixed precision: fp32 algebra inside autocast, and a bf16/fp16-vs-fp32 agreement check.

Every method runs the model in whatever autocast context the caller opened (bf16 on CPU, bf16/fp16 on CUDA) and
does its own arithmetic (gradient weighting, relevance products, upsampling) in fp32 with autocast switched off,
so reduced precision only enters through the model's activations and gradients. :func:`agreement` measures how
much that changes a map: the per-example Spearman rank correlation between an autocast map and the fp32 map.
:func:`agreement_report` summarises it over examples for every method (mean with a bootstrap interval), as
``mmfuse explain --precision`` writes it.

Precisions carry Lightning's names (:data:`PRECISIONS`). fp16 autocast on a CPU needs a torch whose CPU autocast
casts to float16 (older releases warn and run fp32); :func:`unsupported_reason` probes that instead of trusting
the version number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse import stats
from mmfuse.attribution.base import EXPLAINERS, Attribution
from mmfuse.attribution.hooks import explain_mode
from mmfuse.attribution.reshape import normalize_per_example
from mmfuse.attribution.targets import PredictedClass, Target
from mmfuse.errors import ConfigError
from mmfuse.tables import format_table
from mmfuse.types import Batch

__all__ = [
    "PRECISIONS",
    "full_precision",
    "autocast_dtype",
    "unsupported_reason",
    "autocast_to",
    "spearman",
    "agreement",
    "compare_maps",
    "agreement_report",
    "format_agreement",
]

PRECISIONS: dict[str, torch.dtype | None] = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
"""Precision name (Lightning's) -> autocast dtype; None = fp32, autocast off."""


@contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Autocast off for ``device``'s type: matmuls and reductions inside run in the inputs' dtype (cast to fp32)."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def autocast_dtype(precision: str, flag: str = "--precision") -> torch.dtype | None:
    """The autocast dtype of a precision name; :class:`ConfigError` naming ``flag`` for an unknown one."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{flag} {precision!r}: use {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def unsupported_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why ``torch.autocast`` cannot run in ``dtype`` on ``device`` here, or None when it can.

    A CUDA GPU needs native bf16 for bfloat16 (compute capability 8.0 or newer). Otherwise a small linear map is
    run under autocast: the dtype must reach its output (a torch whose CPU autocast lacks float16 warns and stays
    in fp32, which would pass fp32 maps off as fp16 ones).
    """
    if not torch.amp.is_autocast_available(device.type):
        return f"torch {torch.__version__} has no autocast for {device.type}"
    if (
        device.type == "cuda"
        and dtype == torch.bfloat16
        and not torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        return f"{torch.cuda.get_device_name(device)} has no bfloat16 units (compute capability 8.0 or newer has)"
    ones = torch.ones(4, 4, device=device)  # no module: the probe draws nothing from the global generator
    with warnings.catch_warnings(record=True), torch.autocast(device_type=device.type, dtype=dtype):
        out_dtype = F.linear(ones, ones).dtype
    if out_dtype != dtype:
        return f"torch {torch.__version__}'s {device.type} autocast does not cast to {dtype} (it ran in {out_dtype})"
    return None


@contextmanager
def autocast_to(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast in ``precision``'s dtype on ``device``; for ``32-true``, autocast off (:func:`full_precision`)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        with full_precision(device):
            yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
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


def compare_maps(reduced: Attribution, reference: Attribution, text_mask: Tensor) -> dict[str, dict[str, Tensor]]:
    """Per example, how a reduced-precision map differs from the fp32 map of the same examples and class.

    The image side compares the patch grids (``image_grid``, before upsampling), the text side the text maps over
    real tokens; a modality is left out when either map lacks it.

    Args:
        reduced: the map made under autocast.
        reference: the fp32 map.
        text_mask: (B, L) bool, True = real token.

    Returns:
        ``image`` and/or ``text`` -> ``spearman`` (B,) rank correlation; ``same_peak`` (B,) bool, True where the
        fp32 map's maximum is also a maximum of the reduced map; ``max_abs_difference`` (B,) the largest difference
        between the two maps after per-example min-max normalisation to [0, 1]; ``finite`` (B,) bool, False where
        the reduced map holds inf or NaN (its correlation is then NaN).
    """
    pairs = {"image": (reduced.image_grid, reference.image_grid), "text": (reduced.text, reference.text)}
    out = {}
    for modality, (low, full) in pairs.items():
        if low is None or full is None:
            continue
        valid = text_mask.detach().bool().cpu() if modality == "text" else torch.ones(low.shape, dtype=torch.bool)
        low, full = (t.detach().float().cpu().masked_fill(~valid, 0.0) for t in (low, full))
        finite = torch.isfinite(low).flatten(1).all(dim=1)  # (B, ...) -> (B,)
        rho = spearman(low, full, valid).masked_fill(~finite, float("nan"))
        peak = full.masked_fill(~valid, -torch.inf).flatten(1).argmax(dim=1)  # (B,) position of the fp32 maximum
        ranked = low.masked_fill(~valid, -torch.inf).flatten(1)  # (B, ...) -> (B, P)
        same_peak = ranked.gather(1, peak[:, None])[:, 0] == ranked.amax(dim=1)
        gap = (normalize_per_example(low) - normalize_per_example(full)).abs().flatten(1).amax(dim=1)  # (B,)
        out[modality] = {"spearman": rho, "same_peak": same_peak, "max_abs_difference": gap, "finite": finite}
    return out


def agreement_report(
    reduced: Mapping[str, Attribution],
    reference: Mapping[str, Attribution],
    text_mask: Tensor,
    precision: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The agreement of every method's reduced-precision maps with its fp32 maps, summarised over examples.

    Args:
        reduced: method -> its maps of B examples under autocast.
        reference: method -> its fp32 maps of the same examples, explaining the same classes.
        text_mask: (B, L) bool, True = real token.
        precision: the reduced precision's name (a key of :data:`PRECISIONS`).
        n_boot: bootstrap resamples of the interval.
        seed: seed of the bootstrap.

    Returns:
        JSON-able dict: ``precision``, ``dtype``, ``reference`` (``32-true``), ``n_examples``, ``n_boot``, and
        ``methods``: method -> ``image`` / ``text`` -> ``spearman`` (``mean``, ``ci_low``, ``ci_high`` (95%
        percentile bootstrap over examples), ``n``: examples with a finite map), ``spearman_per_example``,
        ``same_peak`` (the share of examples whose fp32 maximum is a maximum of the reduced map),
        ``max_abs_difference`` (the largest over examples with a finite map; None without one) and
        ``nonfinite_examples``.
    """
    methods: dict[str, Any] = {}
    for method, attribution in reduced.items():
        methods[method] = {}
        for modality, values in compare_maps(attribution, reference[method], text_mask).items():
            rho = values["spearman"].double().numpy()
            gaps = values["max_abs_difference"][values["finite"]]
            interval = stats.bootstrap_interval(rho, n_boot=n_boot, seed=seed, nan_policy="omit")
            methods[method][modality] = {
                "spearman": interval.as_dict("mean", brief=True),
                "spearman_per_example": [None if math.isnan(r) else round(float(r), 6) for r in rho],
                "same_peak": float(values["same_peak"].float().mean()),
                "max_abs_difference": float(gaps.max()) if gaps.numel() else None,
                "nonfinite_examples": int((~values["finite"]).sum()),
            }
    dtype = autocast_dtype(precision)
    return {
        "precision": precision,
        "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        "reference": "32-true",
        "n_examples": int(text_mask.shape[0]),
        "n_boot": n_boot,
        "methods": methods,
    }


def format_agreement(report: dict[str, Any]) -> str:
    """The Markdown section of an :func:`agreement_report`."""
    rows = []
    for method, modalities in report["methods"].items():
        for modality, values in modalities.items():
            s = values["spearman"]
            rho = stats.Interval(s["mean"], s["ci_low"], s["ci_high"], s["n"]).format()
            gap = "–" if values["max_abs_difference"] is None else f"{values['max_abs_difference']:.3f}"
            nonfinite = values["nonfinite_examples"]
            rows.append([method, modality, rho, s["n"], f"{values['same_peak']:.3f}", gap, nonfinite])
    headers = ["method", "map", "Spearman ρ with fp32", "n", "same peak", "max abs difference", "non-finite maps"]
    intro = (
        f"{report['n_examples']} examples, each explained under {report['dtype']} autocast and in fp32 for the same "
        "class. Spearman rank correlation per example between the two maps (image: the patch grid before "
        "upsampling; text: the real tokens), mean [bootstrap 95% CI over examples]; same peak: the share of examples "
        "whose fp32 maximum is also a maximum of the reduced map; max abs difference: the largest gap between the "
        "two maps once each is min-max normalised to [0, 1]."
    )
    title = f"## Agreement of {report['precision']} maps with fp32"
    return f"{title}\n\n{intro}\n\n{format_table(headers, rows, 'md', align='llrrrrr')}\n"
