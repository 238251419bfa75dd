"""Text-token attribution on the word embeddings of the text encoder: gradient x input and integrated gradients.

Both differentiate the target with respect to the output of the transformers model's input (word) embedding layer
(position and token-type embeddings are added later and are not attributed) and sum over the hidden dimension:

* ``grad_x_input``: ``sum_d e * dF/de`` (Shrikumar et al. 2016; Simonyan et al. 2014) from one forward/backward.
* ``integrated_gradients``: ``sum_d (e - e0) * mean_alpha dF/de(e0 + alpha (e - e0))`` (Sundararajan et al., ICML
  2017), the quantity captum's ``LayerIntegratedGradients`` computes on the embedding layer, with the padding
  token's embedding as the baseline ``e0``. Its path is evaluated in chunks of ``internal_batch_size`` rows so memory
  stays bounded at large ``n_steps``; the image side is re-run with each chunk.

Signed scores are turned into relevance with ``sign``: ``"positive"`` (the default, ReLU: evidence *for* the
target, like Grad-CAM's ReLU and Chefer's positive clamp, so deleting the top tokens lowers the score),
``"absolute"`` (|.|: evidence for or against) or ``"signed"`` (raw, for analysis). Padding is 0.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from mmfuse.attribution.amp import full_precision
from mmfuse.attribution.attention import hf_model_of
from mmfuse.attribution.base import EXPLAINERS, Attribution
from mmfuse.attribution.hooks import capture_output, explain_mode, gradients
from mmfuse.attribution.targets import Target
from mmfuse.types import Batch

__all__ = ["grad_x_input", "integrated_gradients", "embedding_layer_path", "integration_points"]

Sign = Literal["positive", "absolute", "signed"]


def embedding_layer_path(model: nn.Module) -> str:
    """Dotted path of the text encoder's word-embedding layer (``get_input_embeddings()`` of the HF model)."""
    text = getattr(model, "text", None)
    hf_model = None if text is None else hf_model_of(text)
    if hf_model is None:
        raise ValueError(f"{type(model).__name__} has no transformers text encoder: no text map")
    embeddings = hf_model.get_input_embeddings()  # type: ignore[operator]
    return next(name for name, module in model.named_modules() if module is embeddings)


def _pad_token_id(model: nn.Module) -> int:
    model_pad = getattr(getattr(model, "cfg", None), "pad_token_id", None)
    text = getattr(model, "text", None)
    hf_model: Any = hf_model_of(text) if isinstance(text, nn.Module) else None
    hf_pad = None if hf_model is None else getattr(hf_model.config, "pad_token_id", None)
    return int(model_pad if model_pad is not None else hf_pad if hf_pad is not None else 0)


def _relevance(scores: Tensor, mask: Tensor, sign: Sign) -> Tensor:
    """(B, L) signed scores -> relevance under ``sign``, 0 on padding."""
    if sign not in ("positive", "absolute", "signed"):
        raise ValueError(f"sign={sign!r}; expected 'positive', 'absolute' or 'signed'")
    if sign == "positive":
        scores = scores.clamp_min(0)
    elif sign == "absolute":
        scores = scores.abs()
    return scores * mask.to(scores.dtype)


@EXPLAINERS.register("grad_x_input")
def grad_x_input(model: nn.Module, batch: Batch, target: Target, sign: Sign = "positive") -> Attribution:
    """Gradient x input on the word embeddings, summed over the hidden dimension (text map only).

    Args:
        model: an image-text model with a transformers text encoder.
        batch: a batch on the model's device.
        target: what to explain.
        sign: how signed scores become relevance (module docstring); default ReLU.

    Returns:
        Attribution with ``text`` (B, L).
    """
    with explain_mode(model), capture_output(model, embedding_layer_path(model)) as capture:
        output = model(batch.images, batch.input_ids, batch.attention_mask)
        assert capture.output is not None
        embeddings = capture.output  # (B, L, Dt)
        (grad,) = gradients(target(output, batch), [embeddings])
    with full_precision(grad.device):
        scores = (grad.float() * embeddings.detach().float()).sum(dim=-1)  # (B, L, Dt) -> (B, L)
    return Attribution(method="grad_x_input", text=_relevance(scores, batch.attention_mask, sign))


def integration_points(n_steps: int, method: str = "gausslegendre") -> tuple[Tensor, Tensor]:
    """Path positions alpha in [0, 1] and quadrature weights (summing to 1), in float64.

    Args:
        n_steps: number of points.
        method: ``gausslegendre`` (captum's default; exact for polynomials of degree 2n-1) or ``riemann_trapezoid``.

    Returns:
        (n_steps,) alphas and (n_steps,) weights.
    """
    if method == "riemann_trapezoid":
        if n_steps < 2:
            raise ValueError("riemann_trapezoid needs n_steps >= 2")
        weights = torch.full((n_steps,), 1.0 / (n_steps - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (n_steps - 1)
        return torch.linspace(0, 1, n_steps, dtype=torch.float64), weights
    if method != "gausslegendre":
        raise ValueError(f"method={method!r}; expected 'gausslegendre' or 'riemann_trapezoid'")
    k = torch.arange(1, n_steps, dtype=torch.float64)
    off_diagonal = k / torch.sqrt(4 * k * k - 1)  # Golub-Welsch: Jacobi matrix of the Legendre recurrence
    jacobi = torch.diag(off_diagonal, 1) + torch.diag(off_diagonal, -1)
    nodes, vectors = torch.linalg.eigh(jacobi)
    return 0.5 * (nodes + 1), vectors[0] ** 2  # [-1, 1] -> [0, 1]; weights 2 v0^2 halved


def _repeat(batch: Batch, k: int) -> Batch:
    """The batch repeated k times, example-minor: rows [j*B, (j+1)*B) are copy j."""
    labels = None if batch.labels is None else batch.labels.repeat(k)
    images = batch.images.repeat(k, 1, 1, 1)  # (B, 3, H, W) -> (k*B, 3, H, W)
    return Batch(images, batch.input_ids.repeat(k, 1), batch.attention_mask.repeat(k, 1), labels)


def _path_gradients(
    model: nn.Module, batch: Batch, target: Target, path: str, inputs: Tensor, baseline: Tensor, alphas: Tensor
) -> Tensor:
    """Gradients at k points of the straight path, in one forward/backward.

    Args:
        inputs: (B, L, Dt) word embeddings of the batch; baseline: (B, L, Dt) those of the padding token.
        alphas: (k,) path positions.

    Returns:
        (k, B, L, Dt) gradients of the target at ``baseline + alpha (inputs - baseline)``.
    """
    k, (B, L, Dt) = alphas.shape[0], inputs.shape
    points = baseline[None] + alphas[:, None, None, None] * (inputs - baseline)[None]  # (k, B, L, Dt)
    points = points.reshape(k * B, L, Dt).detach().requires_grad_(True)  # (k, B, L, Dt) -> (k*B, L, Dt)
    repeated = _repeat(batch, k)
    module = model.get_submodule(path)
    handle = module.register_forward_hook(lambda _, __, ___: points)
    try:
        output = model(repeated.images, repeated.input_ids, repeated.attention_mask)
        (grad,) = gradients(target(output, repeated), [points])
    finally:
        handle.remove()
    return grad.reshape(k, B, L, Dt)  # (k*B, L, Dt) -> (k, B, L, Dt)


@EXPLAINERS.register("integrated_gradients")
def integrated_gradients(
    model: nn.Module,
    batch: Batch,
    target: Target,
    n_steps: int = 32,
    internal_batch_size: int = 64,
    method: str = "gausslegendre",
    sign: Sign = "positive",
) -> Attribution:
    """Integrated gradients on the word embeddings from the padding-token baseline (text map only).

    Args:
        model: an image-text model with a transformers text encoder.
        batch: a batch on the model's device.
        target: what to explain; fixed on the real input first (the predicted class stays the same along the path).
        n_steps: points on the path.
        internal_batch_size: rows per forward pass (path points x examples); bounds memory.
        method: quadrature rule (:func:`integration_points`).
        sign: how signed scores become relevance (module docstring); default ReLU.

    Returns:
        Attribution with ``text`` (B, L).
    """
    path = embedding_layer_path(model)
    embedding = model.get_submodule(path)
    with explain_mode(model):
        with torch.no_grad():
            output = model(batch.images, batch.input_ids, batch.attention_mask)
            inputs = embedding(batch.input_ids)  # (B, L, Dt)
            baseline = embedding(torch.full_like(batch.input_ids, _pad_token_id(model)))
        fixed = target.fixed(output, batch)
        alphas, weights = (t.to(inputs.device) for t in integration_points(n_steps, method))
        per_chunk = max(1, internal_batch_size // len(batch))
        average = torch.zeros(inputs.shape, dtype=torch.float64, device=inputs.device)
        for start in range(0, n_steps, per_chunk):
            chunk = slice(start, start + per_chunk)
            grads = _path_gradients(model, batch, fixed, path, inputs, baseline, alphas[chunk].to(inputs.dtype))
            average += (weights[chunk, None, None, None] * grads.double()).sum(dim=0)  # (k, B, L, Dt) -> (B, L, Dt)
    with full_precision(inputs.device):
        scores = ((inputs - baseline).double() * average).sum(dim=-1).float()  # (B, L, Dt) -> (B, L)
    return Attribution(method="integrated_gradients", text=_relevance(scores, batch.attention_mask, sign))
