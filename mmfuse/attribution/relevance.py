"""Relevance through the encoders' self-attention and the cross-attention fusion, plus two attention baselines.

``fusion_relevance`` follows Chefer, Gur & Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal
and Encoder-Decoder Transformers" (ICCV 2021; reference code: hila-chefer/Transformer-MM-Explainability, LXMERT
generator). Four relevance matrices start at ``R_tt = I, R_ii = I, R_ti = 0, R_it = 0`` (t = text tokens, i =
image tokens) and every attention layer adds its gradient-weighted attention ``A_bar = mean_h((dA * A)^+)``:

* text self-attention (the text encoder's layers): ``R_tt += A_bar R_tt``, ``R_ti += A_bar R_ti``;
* image self-attention (ViT blocks; a CNN has none, so ``R_ii`` stays I): ``R_ii += A_bar R_ii``,
  ``R_it += A_bar R_it``;
* fusion cross-attention, text queries over image keys (bi-modal rules, Eq. 10-11):
  ``R_ti += R_tt_norm^T A_bar R_ii_norm`` and ``R_tt += A_bar R_it``, with ``R_norm = I + row-normalised (R - I)``;
  with co-attention the image queries add the mirrored terms (``R_it += R_ii_norm^T A_bar R_tt_norm``,
  ``R_ii += A_bar R_ti``), all computed from the matrices before the layer, since both streams read each other's
  previous state. The fusion MLPs are token-wise and add nothing.

The head reads the masked mean of the fused text tokens, so the output's relevance is the mask-weighted mean of the
text rows (with co-attention, plus the mean of the image rows): the image map is that mean over ``R_ti`` and the
text map over ``R_tt - I`` (each token's own residual path, the same 1/L for every real token, is left out, as
Chefer et al. zero the [CLS] self-relevance). All algebra runs in fp32 with autocast off.

Baselines: ``raw_attention`` (the last fusion layer's text-to-image attention averaged over heads and pooled over
text rows; the text map is the text encoder's last layer, pooled the same way) and ``rollout`` (Abnar & Zuidema,
2020: the product of ``0.5 I + 0.5 mean_h(A)`` over the same layers, on the joint text+image token graph).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmfuse.attribution.amp import full_precision
from mmfuse.attribution.attention import record_attention
from mmfuse.attribution.base import EXPLAINERS, Attribution
from mmfuse.attribution.hooks import explain_mode, gradients
from mmfuse.attribution.reshape import TokenLayout, normalize_per_example, relevance_to_grid, token_layout, upsample
from mmfuse.attribution.targets import Target
from mmfuse.types import Batch

__all__ = [
    "AttentionTrace",
    "trace_attention",
    "chefer_relevance",
    "attention_rollout",
    "fusion_relevance",
    "raw_attention",
    "rollout",
]

logger = logging.getLogger(__name__)


@dataclass
class AttentionTrace:
    """Every attention map of one forward pass (fp32, detached) and, when asked, the target's gradients.

    Attributes:
        text_self: per text-encoder layer, (B, nh, L, L).
        vision_self: per ViT block, (B, nh, N, N).
        text_to_image: per fusion layer, (B, nh, L, N).
        image_to_text: per fusion layer with co-attention, (B, nh, N, L); empty otherwise.
        grads: the same four lists of gradients (same shapes), or None.
        text_mask: (B, L) bool, True = real token.
        layout: token layout of the vision encoder (prefix tokens, grid).
        image_size: (H, W) of the input images.
    """

    text_self: list[Tensor]
    vision_self: list[Tensor]
    text_to_image: list[Tensor]
    image_to_text: list[Tensor]
    grads: list[list[Tensor]] | None
    text_mask: Tensor
    layout: TokenLayout
    image_size: tuple[int, int]


def _split(flat: list[Tensor], sizes: list[int]) -> list[list[Tensor]]:
    out, start = [], 0
    for size in sizes:
        out.append([t.detach().float() for t in flat[start : start + size]])
        start += size
    return out


def trace_attention(model: nn.Module, batch: Batch, target: Target, with_grads: bool = True) -> AttentionTrace:
    """One forward pass on the explicit attention paths (and one backward when ``with_grads``).

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` whose fusion returns attention weights.
        batch: a batch on the model's device.
        target: what the gradients are taken of.
        with_grads: also differentiate the target with respect to every attention map.

    Returns:
        The :class:`AttentionTrace`; every switch (SDPA, timm ``fused_attn``, HF eager) is restored.
    """
    vision = getattr(model, "vision", None)
    if not isinstance(vision, nn.Module):
        raise ValueError(f"{type(model).__name__} has no vision encoder: attention relevance needs both modalities")
    layout = token_layout(vision)
    with explain_mode(model), record_attention(model) as record, torch.set_grad_enabled(with_grads):
        output = model(batch.images, batch.input_ids, batch.attention_mask, return_attn_weights=True)
        cross = list(output.fusion.attn_weights or ())
        if not cross or output.image is None:
            raise ValueError(
                f"{type(model.fusion).__name__} returns no cross-attention weights; attention relevance needs the "
                "cross_attention fusion (use gradcam, grad_x_input or integrated_gradients)"
            )
        n_image = output.image.tokens.shape[1]
        vision_maps = [a for a in record.vision if a.shape[-2:] == (n_image, n_image)]
        if len(vision_maps) != len(record.vision):
            left_out = len(record.vision) - len(vision_maps)
            logger.warning("%d vision attention maps are not over the encoder's %d tokens; left out", left_out, n_image)
        groups = [record.text, vision_maps, cross, list(output.fusion.image_attn_weights or ())]
        flat = [t for group in groups for t in group]
        grads = gradients(target(output, batch), flat) if with_grads else None
    sizes = [len(group) for group in groups]
    text_self, vision_self, text_to_image, image_to_text = _split(flat, sizes)
    return AttentionTrace(
        text_self,
        vision_self,
        text_to_image,
        image_to_text,
        None if grads is None else _split(grads, sizes),
        batch.attention_mask.bool(),
        layout,
        (batch.images.shape[-2], batch.images.shape[-1]),
    )


def _grad_weighted(attn: Tensor, grad: Tensor) -> Tensor:
    """``A_bar = mean_h((grad * attn)^+)``: (B, nh, Q, K) -> (B, Q, K)."""
    return (grad * attn).clamp_min(0).mean(dim=1)


def _eye(batch: int, size: int, like: Tensor) -> Tensor:
    return torch.eye(size, dtype=like.dtype, device=like.device).expand(batch, size, size)


def _normalized_self(rel: Tensor) -> Tensor:
    """``I + row-normalised (R - I)`` (Chefer Eq. 8-9; rows with no added relevance stay I): (B, T, T)."""
    eye = _eye(rel.shape[0], rel.shape[-1], rel)
    residual = rel - eye
    sums = residual.sum(dim=-1, keepdim=True)
    return residual / torch.where(sums > 0, sums, torch.ones_like(sums)) + eye


def _readout(text_rows: Tensor, image_rows: Tensor | None, mask: Tensor) -> Tensor:
    """Relevance of the pooled output: mask-weighted mean of text rows (+ mean of image rows).

    Args:
        text_rows: (B, L, T) relevance rows of the text tokens.
        image_rows: (B, N, T) rows of the image tokens when the fusion also pools them (co-attention), else None.
        mask: (B, L) bool.

    Returns:
        (B, T) relevance of the output on the T columns.
    """
    weights = mask.float() / mask.float().sum(dim=1, keepdim=True).clamp_min(1.0)  # (B, L)
    out = torch.einsum("bl,blt->bt", weights, text_rows)
    if image_rows is not None:
        out = out + image_rows.mean(dim=1)  # (B, N, T) -> (B, T)
    return out


def chefer_relevance(trace: AttentionTrace) -> tuple[Tensor, Tensor]:
    """Chefer et al.'s bi-modal relevance propagation (see the module docstring for the rules).

    Args:
        trace: a trace taken with gradients.

    Returns:
        Text relevance (B, L), 0 on padding, and image relevance (B, N) over the fusion's image tokens.
    """
    if trace.grads is None:
        raise ValueError("chefer_relevance needs a trace taken with_grads=True")
    text_grads, vision_grads, ti_grads, it_grads = trace.grads
    mask = trace.text_mask
    B, L, N = mask.shape[0], mask.shape[1], trace.text_to_image[0].shape[-1]
    with full_precision(mask.device):
        r_tt, r_ii = _eye(B, L, trace.text_to_image[0]), _eye(B, N, trace.text_to_image[0])
        r_ti, r_it = r_tt.new_zeros(B, L, N), r_tt.new_zeros(B, N, L)
        for attn, grad in zip(trace.text_self, text_grads):
            a_tt = _grad_weighted(attn, grad)  # (B, L, L)
            r_tt, r_ti = r_tt + a_tt @ r_tt, r_ti + a_tt @ r_ti
        for attn, grad in zip(trace.vision_self, vision_grads):
            a_ii = _grad_weighted(attn, grad)  # (B, N, N)
            r_ii, r_it = r_ii + a_ii @ r_ii, r_it + a_ii @ r_it
        for k, (attn, grad) in enumerate(zip(trace.text_to_image, ti_grads)):
            a_ti = _grad_weighted(attn, grad)  # (B, L, N)
            tt_norm, ii_norm = _normalized_self(r_tt), _normalized_self(r_ii)
            add_ti, add_tt = tt_norm.transpose(1, 2) @ a_ti @ ii_norm, a_ti @ r_it
            if k < len(trace.image_to_text):
                a_it = _grad_weighted(trace.image_to_text[k], it_grads[k])  # (B, N, L)
                r_it, r_ii = r_it + ii_norm.transpose(1, 2) @ a_it @ tt_norm, r_ii + a_it @ r_ti
            r_ti, r_tt = r_ti + add_ti, r_tt + add_tt
        co = bool(trace.image_to_text)
        eye_tt, eye_ii = _eye(B, L, r_tt), _eye(B, N, r_ii)
        text = _readout(r_tt - eye_tt, r_it if co else None, mask) * mask
        image = _readout(r_ti, r_ii - eye_ii if co else None, mask)
    return text, image


def attention_rollout(trace: AttentionTrace) -> tuple[Tensor, Tensor]:
    """Attention rollout with residual ``0.5 I + 0.5 A`` on the joint graph of L text and N image tokens.

    Args:
        trace: a trace (gradients unused).

    Returns:
        Text relevance (B, L), 0 on padding, and image relevance (B, N).
    """
    mask = trace.text_mask
    B, L, N = mask.shape[0], mask.shape[1], trace.text_to_image[0].shape[-1]
    with full_precision(mask.device):
        joint = _eye(B, L + N, trace.text_to_image[0])  # (B, T, T), T = L + N: text tokens first
        text_rows, image_rows = joint[:, :L], joint[:, L:]  # (B, L, T), (B, N, T)
        for attn in trace.text_self:
            text_rows = 0.5 * text_rows + 0.5 * attn.mean(dim=1) @ text_rows
        for attn in trace.vision_self:
            image_rows = 0.5 * image_rows + 0.5 * attn.mean(dim=1) @ image_rows
        for k, attn in enumerate(trace.text_to_image):
            new_text = 0.5 * text_rows + 0.5 * attn.mean(dim=1) @ image_rows  # (B, L, N) @ (B, N, T)
            if k < len(trace.image_to_text):
                image_rows = 0.5 * image_rows + 0.5 * trace.image_to_text[k].mean(dim=1) @ text_rows
            text_rows = new_text
        out = _readout(text_rows, image_rows if trace.image_to_text else None, mask)  # (B, T)
    return out[:, :L] * mask, out[:, L:]


def _attribution(method: str, image: Tensor, text: Tensor | None, trace: AttentionTrace) -> Attribution:
    """Attribution from relevance over image tokens (B, N) and text tokens (B, L)."""
    with full_precision(image.device):
        grid = relevance_to_grid(image, trace.layout)  # (B, N) -> (B, Gh, Gw), prefix tokens dropped
        pixels = normalize_per_example(upsample(grid, trace.image_size))  # (B, Gh, Gw) -> (B, H, W)
    return Attribution(method=method, image=pixels, image_grid=grid, text=text)


@EXPLAINERS.register("fusion_relevance")
def fusion_relevance(model: nn.Module, batch: Batch, target: Target) -> Attribution:
    """Chefer et al. relevance through the text encoder, the ViT (if any) and the fusion (image and text maps)."""
    trace = trace_attention(model, batch, target, with_grads=True)
    text, image = chefer_relevance(trace)
    return _attribution("fusion_relevance", image, text, trace)


@EXPLAINERS.register("raw_attention")
def raw_attention(model: nn.Module, batch: Batch, target: Target) -> Attribution:
    """Last fusion layer's attention, mean over heads, pooled over text rows (``target`` is not used).

    The text map is the text encoder's last self-attention layer pooled the same way (None without one).
    """
    trace = trace_attention(model, batch, target, with_grads=False)
    mask = trace.text_mask
    with full_precision(mask.device):
        image = _readout(trace.text_to_image[-1].mean(dim=1), None, mask)  # (B, L, N) -> (B, N)
        text = _readout(trace.text_self[-1].mean(dim=1), None, mask) * mask if trace.text_self else None
    return _attribution("raw_attention", image, text, trace)


@EXPLAINERS.register("rollout")
def rollout(model: nn.Module, batch: Batch, target: Target) -> Attribution:
    """Attention rollout through the text encoder, the ViT (if any) and the fusion (``target`` is not used)."""
    trace = trace_attention(model, batch, target, with_grads=False)
    text, image = attention_rollout(trace)
    return _attribution("rollout", image, text, trace)
