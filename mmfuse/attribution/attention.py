"""Record the encoders' self-attention probabilities, switching fused attention off only while recording.

Fused kernels (``F.scaled_dot_product_attention``, flash) never materialise attention weights, so visualisation code
silently gets nothing (transformers #30978). Inside :func:`record_attention`, timm attention modules run with
``fused_attn = False`` and the weights are read where they leave ``attn_drop`` (the softmax output, unchanged in
eval mode, which is what multiplies the values), and Hugging Face models run with the ``eager`` implementation and
``output_attentions=True``; each switch is announced once with a ``UserWarning``. On exit every switch is put back,
so training keeps the fast path. The fusion's own cross-attention weights come from
``model(..., return_attn_weights=True)``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from mmfuse._compat import attn_implementation, set_attn_implementation

__all__ = ["AttentionRecord", "record_attention", "hf_model_of"]

logger = logging.getLogger(__name__)


@dataclass
class AttentionRecord:
    """Self-attention probabilities of one forward pass, in layer order; they stay in the autograd graph.

    Attributes:
        vision: per ViT block, (B, nh, N, N) over the vision encoder's tokens (prefix tokens first).
        text: per text-encoder layer, (B, nh, L, L).
    """

    vision: list[Tensor] = field(default_factory=list)
    text: list[Tensor] = field(default_factory=list)


def _timm_attention_modules(backbone: nn.Module) -> list[Any]:
    return [
        m
        for m in backbone.modules()
        if isinstance(getattr(m, "fused_attn", None), bool) and isinstance(getattr(m, "attn_drop", None), nn.Module)
    ]


@contextmanager
def _timm_attention(backbone: nn.Module, out: list[Tensor]) -> Iterator[None]:
    """timm self-attention on the explicit softmax path, recording its probabilities into ``out``."""
    modules = _timm_attention_modules(backbone)
    if not modules:
        logger.warning("%s has no timm attention modules: image self-attention is not traced", type(backbone).__name__)
    saved = [bool(m.fused_attn) for m in modules]

    def hook(_: nn.Module, __: Any, probs: Tensor) -> None:
        out.append(probs)

    handles = []
    try:
        for module in modules:
            module.fused_attn = False
            handles.append(module.attn_drop.register_forward_hook(hook))
        if any(saved):
            warnings.warn(
                f"{type(backbone).__name__}: timm fused attention hides attention weights; it runs unfused while "
                "explaining and is switched back afterwards",
                UserWarning,
                stacklevel=1,  # the switch, not a caller, is what the warning is about
            )
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in zip(modules, saved):
            module.fused_attn = flag


def hf_model_of(text_encoder: nn.Module) -> nn.Module | None:
    """The Hugging Face ``PreTrainedModel`` inside a text encoder (the encoder itself if it is one), else None."""
    for module in text_encoder.modules():
        if hasattr(module, "config") and hasattr(module, "get_input_embeddings"):
            return module
    return None


def _set_hf_attention(model: Any, implementation: str) -> None:
    if hasattr(model, "set_attn_implementation"):  # transformers >= 4.48; propagates to sub-configs
        model.set_attn_implementation(implementation)
    else:
        set_attn_implementation(model.config, implementation)


@contextmanager
def _hf_attention(model: nn.Module, out: list[Tensor]) -> Iterator[None]:
    """A transformers model on eager attention with ``output_attentions=True``, recording into ``out``."""
    config: Any = model.config
    saved = attn_implementation(config)

    def pre_hook(_: nn.Module, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return args, {**kwargs, "output_attentions": True}

    def hook(_: nn.Module, __: Any, ___: Any, output: Any) -> None:
        attentions = getattr(output, "attentions", None)
        if attentions is None:
            logger.warning("%s returned no attentions: text self-attention is not traced", type(model).__name__)
            return
        out.extend(attentions)

    handles = [
        model.register_forward_pre_hook(pre_hook, with_kwargs=True),
        model.register_forward_hook(hook, with_kwargs=True),
    ]
    try:
        if saved != "eager":
            _set_hf_attention(model, "eager")
            warnings.warn(
                f"{type(model).__name__}: {saved} attention returns no weights; it runs eager while explaining and "
                f"is switched back to {saved} afterwards",
                UserWarning,
                stacklevel=1,  # the switch, not a caller, is what the warning is about
            )
        yield
    finally:
        for handle in handles:
            handle.remove()
        if saved is not None and attn_implementation(config) != saved:
            _set_hf_attention(model, saved)


@contextmanager
def record_attention(model: nn.Module) -> Iterator[AttentionRecord]:
    """Record ViT and text-encoder self-attention of an image-text model during the forward passes inside.

    Only token-model vision encoders (ViT family: global attention over the encoder's tokens) are traced; a CNN has
    no self-attention to trace. Text encoders are traced when they wrap a transformers model.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` (``vision``/``text`` may be None).

    Yields:
        An :class:`AttentionRecord` filled by each forward pass; all switches are restored on exit.
    """
    record = AttentionRecord()
    with ExitStack() as stack:
        vision = getattr(model, "vision", None)
        if vision is not None and getattr(vision, "is_token_model", False):
            stack.enter_context(_timm_attention(vision.backbone, record.vision))
        text = getattr(model, "text", None)
        hf_model = None if text is None else hf_model_of(text)
        if hf_model is not None:
            stack.enter_context(_hf_attention(hf_model, record.text))
        yield record
