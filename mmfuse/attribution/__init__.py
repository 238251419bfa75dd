"""Attribution: which image regions and which words made an image-text model give its answer.

One call explains a batch with several methods, each returning an :class:`Attribution` (image map, patch grid, text
map). Registered methods (:data:`EXPLAINERS`): ``gradcam`` and ``hirescam`` (image), ``fusion_relevance``,
``raw_attention`` and ``rollout`` (image and text, through the cross-attention fusion), ``grad_x_input`` and
``integrated_gradients`` (text). The imports below fill the registry. For a plain timm or torchvision image
classifier on photos: :func:`load_classifier`, :func:`explain_photos` and :func:`write_photo_gallery`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmfuse.attribution.amp import agreement, full_precision, spearman
from mmfuse.attribution.attention import AttentionRecord, record_attention
from mmfuse.attribution.base import EXPLAINERS, Attribution, Explainer
from mmfuse.attribution.classifiers import PhotoClassifier, load_classifier, load_weights
from mmfuse.attribution.gradcam import CAM_METHODS, GradCAM, HiResCAM, default_target_layer, gradcam, hirescam
from mmfuse.attribution.hooks import Capture, capture_output, explain_mode, hook_count, resolve_module
from mmfuse.attribution.photos import (
    PHOTO_METHODS,
    ClassExplanation,
    PhotoExplanation,
    explain_photos,
    find_photos,
    write_photo_gallery,
)
from mmfuse.attribution.relevance import (
    AttentionTrace,
    attention_rollout,
    chefer_relevance,
    fusion_relevance,
    raw_attention,
    rollout,
    trace_attention,
)
from mmfuse.attribution.reshape import TokenLayout, normalize_per_example, relevance_to_grid, to_grid, token_layout
from mmfuse.attribution.targets import ClassLogit, LabelClass, PredictedClass, ScalarOf, Target, logits_of
from mmfuse.attribution.text import grad_x_input, integrated_gradients
from mmfuse.types import Batch

if TYPE_CHECKING:
    from mmfuse.progress import Stage

__all__ = [
    "AttentionRecord",
    "AttentionTrace",
    "Attribution",
    "CAM_METHODS",
    "Capture",
    "ClassExplanation",
    "ClassLogit",
    "DEFAULT_METHODS",
    "EXPLAINERS",
    "Explainer",
    "GradCAM",
    "HiResCAM",
    "LabelClass",
    "PHOTO_METHODS",
    "PhotoClassifier",
    "PhotoExplanation",
    "PredictedClass",
    "ScalarOf",
    "Target",
    "TokenLayout",
    "agreement",
    "attention_rollout",
    "capture_output",
    "chefer_relevance",
    "default_target_layer",
    "explain",
    "explain_mode",
    "explain_photos",
    "find_photos",
    "full_precision",
    "fusion_relevance",
    "grad_x_input",
    "gradcam",
    "hirescam",
    "hook_count",
    "integrated_gradients",
    "load_classifier",
    "load_weights",
    "logits_of",
    "normalize_per_example",
    "raw_attention",
    "record_attention",
    "relevance_to_grid",
    "resolve_module",
    "rollout",
    "spearman",
    "to_grid",
    "token_layout",
    "trace_attention",
    "write_photo_gallery",
]

DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "fusion_relevance", "grad_x_input")


def explain(
    model: nn.Module,
    batch: Batch,
    methods: Sequence[str] = DEFAULT_METHODS,
    target: Target | None = None,
    method_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Stage | None = None,
) -> dict[str, Attribution]:
    """Explain one batch with several methods.

    The model is put in eval mode (and every parameter made differentiable) for the duration; each module's
    ``training`` flag and each parameter's ``requires_grad`` are restored afterwards, and so is every attention
    switch. The target is fixed once on the model's output (e.g. the predicted class), so every method explains
    the same class. Run it inside ``torch.autocast`` to explain in bf16/fp16; maps are computed in fp32.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel`.
        batch: the batch to explain (moved to the model's device).
        methods: names registered in :data:`EXPLAINERS`; an unknown name raises ``KeyError`` listing them.
        target: what to explain; default :class:`PredictedClass`.
        method_kwargs: extra keyword arguments per method, e.g. ``{"integrated_gradients": {"n_steps": 64}}``.
        progress: a :mod:`mmfuse.progress` stage advanced by the batch's examples after each method; None = none.

    Returns:
        method name -> :class:`Attribution` with ``image`` (B, H, W) in [0, 1], ``image_grid`` (B, Gh, Gw) and
        ``text`` (B, L) where the method gives them.
    """
    explainers = {name: EXPLAINERS.get(name) for name in methods}
    kwargs = dict(method_kwargs or {})
    unused = sorted(set(kwargs) - set(explainers))
    if unused:
        raise ValueError(f"method_kwargs for {unused}, which are not among methods={list(explainers)}")
    device = next(model.parameters()).device
    batch = batch.to(device)
    with explain_mode(model):
        with torch.no_grad():
            output = model(batch.images, batch.input_ids, batch.attention_mask)
        fixed = (target or PredictedClass()).fixed(output, batch)
        attributions = {}
        for name, explainer in explainers.items():
            attributions[name] = explainer(model, batch, fixed, **kwargs.get(name, {}))
            if progress is not None:
                progress.advance(len(batch), detail=name)
        return attributions
