"""Pictures of explanations: heat maps over the image, tokens coloured by relevance, and cross-attention grids.

Pure functions that return numpy arrays, HTML strings or matplotlib figures drawn on the Agg canvas (no pyplot, no
global backend switch, no window; see :func:`mmfuse.plots.new_figure`); the caller saves them. This is the one place
where tensors become numpy. matplotlib is imported on first use.

Pictures are shown at least :data:`DISPLAY_SIZE` pixels a side (:func:`upscale`): the shapes world's 64-px images by
whole-pixel blocks (nearest neighbour, so the pixels a map marks stay visible), photos smoothly (bicubic).
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmfuse.attribution.reshape import normalize_per_example, upsample
from mmfuse.plots import new_figure

__all__ = [
    "DISPLAY_SIZE",
    "Resample",
    "upscale",
    "to_rgb",
    "colorize",
    "overlay_heatmap",
    "token_html",
    "token_heatmap_figure",
    "cross_attention_maps",
    "select_token",
    "attention_grid_figure",
    "figure_to_array",
]


DISPLAY_SIZE = 256
"""Smallest side, in pixels, of a picture in a gallery (an image, a map over it, a cross-attention panel)."""

Resample = Literal["nearest", "bicubic"]
"""How a small picture is enlarged: ``nearest`` for synthetic pixel images, ``bicubic`` for photos."""

_INTERPOLATION: dict[str, str] = {"nearest": "nearest", "bicubic": "bicubic"}


def _matplotlib() -> Any:
    try:
        import matplotlib
        import matplotlib.patches  # noqa: F401  (loads the submodule used below)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("drawing explanations needs matplotlib: pip install matplotlib") from err
    return matplotlib


def _check_resample(resample: str) -> None:
    if resample not in _INTERPOLATION:
        raise ValueError(f"resample={resample!r}: use one of {sorted(_INTERPOLATION)}")


def upscale(pixels: np.ndarray, min_side: int = DISPLAY_SIZE, resample: Resample = "nearest") -> np.ndarray:
    """Pixels enlarged until the shorter side is at least ``min_side``; a picture that large already is returned
    as it is.

    Args:
        pixels: (H, W, 3) uint8.
        min_side: the smallest side wanted.
        resample: ``nearest`` repeats each pixel as a square block by a whole factor (a synthetic image stays
            crisp, each of its pixels visible); ``bicubic`` scales the shorter side to exactly ``min_side``
            (a photo stays smooth).

    Returns:
        (H', W', 3) uint8 with min(H', W') >= ``min_side``.

    Example:
        >>> upscale(np.zeros((64, 48, 3), np.uint8)).shape
        (384, 288, 3)
        >>> upscale(np.zeros((224, 224, 3), np.uint8), resample="bicubic").shape
        (256, 256, 3)
    """
    _check_resample(resample)
    height, width = pixels.shape[:2]
    short = min(height, width)
    if short >= min_side:
        return pixels
    if resample == "nearest":
        factor = math.ceil(min_side / short)
        return pixels.repeat(factor, axis=0).repeat(factor, axis=1)  # (H, W, 3) -> (H*f, W*f, 3)
    scale = min_side / short
    size = (max(min_side, round(width * scale)), max(min_side, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))


def to_rgb(image: Tensor) -> np.ndarray:
    """An image tensor as pixels.

    Args:
        image: (3, H, W) float in [0, 1].

    Returns:
        (H, W, 3) uint8.
    """
    pixels = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()  # (3, H, W) -> (H, W, 3)
    return (pixels * 255).round().astype(np.uint8)


def colorize(heat: Tensor, cmap: str = "jet") -> np.ndarray:
    """A map in colours, after min-max normalisation to [0, 1] (a constant map gets the colour of 0).

    Args:
        heat: (H, W) relevance.
        cmap: a matplotlib colormap name.

    Returns:
        (H, W, 3) uint8.
    """
    scaled = normalize_per_example(heat.detach()[None])[0].nan_to_num(0.0).cpu().numpy()
    rgba = _matplotlib().colormaps[cmap](scaled)  # (H, W) -> (H, W, 4) float in [0, 1]
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay_heatmap(image: Tensor, heat: Tensor, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """A heat map blended over its image: ``(1 - alpha) * image + alpha * colours``.

    Args:
        image: (3, H, W) float in [0, 1].
        heat: (h, w) relevance; bilinearly upsampled to (H, W) when smaller (e.g. a patch grid).
        alpha: weight of the heat map.
        cmap: a matplotlib colormap name.

    Returns:
        (H, W, 3) uint8.
    """
    size = (int(image.shape[-2]), int(image.shape[-1]))
    if tuple(heat.shape[-2:]) != size:
        heat = upsample(heat.detach()[None], size)[0]  # (h, w) -> (H, W)
    blend = (1 - alpha) * to_rgb(image).astype(np.float32) + alpha * colorize(heat, cmap).astype(np.float32)
    return blend.round().clip(0, 255).astype(np.uint8)


def token_html(tokens: Sequence[str], scores: Tensor, cmap: str = "Reds") -> str:
    """Tokens as HTML ``<span>`` elements with a background coloured by min-max normalised relevance.

    Each span's ``title`` holds the raw value (shown on hover); no script or style sheet is needed.

    Args:
        tokens: the token strings (e.g. ``tokenizer.convert_ids_to_tokens`` of the real tokens).
        scores: (len(tokens),) relevance.
        cmap: a matplotlib colormap name.

    Returns:
        One HTML fragment.
    """
    if len(tokens) != scores.numel():
        raise ValueError(f"{len(tokens)} tokens but {scores.numel()} scores")
    if not tokens:
        return ""
    raw = scores.detach().float().cpu()
    scaled = normalize_per_example(raw[None])[0].nan_to_num(0.0).tolist()
    colormap = _matplotlib().colormaps[cmap]
    spans = []
    for token, value, s in zip(tokens, raw.tolist(), scaled):
        r, g, b, _ = colormap(s)
        ink = "#fff" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "#000"
        style = f"background:rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f});color:{ink};padding:1px 3px"
        spans.append(f'<span style="{style}" title="{value:.4g}">{html.escape(token)}</span>')
    return " ".join(spans)


def token_heatmap_figure(tokens: Sequence[str], scores: Tensor, cmap: str = "Reds", title: str = "") -> Any:
    """Tokens in a row, each on a box coloured by min-max normalised relevance.

    Args:
        tokens: the token strings.
        scores: (len(tokens),) relevance.
        cmap: a matplotlib colormap name.
        title: figure title.

    Returns:
        A matplotlib Figure.
    """
    if len(tokens) != scores.numel():
        raise ValueError(f"{len(tokens)} tokens but {scores.numel()} scores")
    scaled = normalize_per_example(scores.detach().float().cpu()[None])[0].nan_to_num(0.0).tolist()
    colormap = _matplotlib().colormaps[cmap]
    widths = [0.12 + 0.09 * len(t) for t in tokens]
    figure = new_figure(max(1.0, sum(widths) + 0.2), 0.7 if not title else 0.95)
    ax = figure.add_axes((0, 0, 1, 0.75 if title else 1))
    ax.set_axis_off()
    ax.set_xlim(0, sum(widths) + 0.2)
    ax.set_ylim(0, 1)
    x = 0.1
    for token, s, width in zip(tokens, scaled, widths):
        r, g, b, _ = colormap(s)
        ink = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
        ax.add_patch(_matplotlib().patches.Rectangle((x, 0.2), width - 0.04, 0.6, color=(r, g, b)))
        ax.text(x + (width - 0.04) / 2, 0.5, token, ha="center", va="center", color=ink, fontsize=10)
        x += width
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def cross_attention_maps(
    attn_weights: Sequence[Tensor], grid_size: tuple[int, int], num_prefix_tokens: int = 0
) -> Tensor:
    """The fusion's text-to-image attention as maps over the image encoder's patch grid.

    Args:
        attn_weights: per fusion layer, (B, nh, L, N) attention (``ModelOutput.fusion.attn_weights``), where
            N = num_prefix_tokens + Gh * Gw.
        grid_size: (Gh, Gw) of the image encoder (``EncoderOutput.grid_size``).
        num_prefix_tokens: CLS / register tokens at the start of the image tokens (``EncoderOutput``).

    Returns:
        (B, layers, nh, L, Gh, Gw) attention from each text token to each patch; prefix tokens are dropped.
    """
    gh, gw = grid_size
    maps = []
    for weights in attn_weights:
        patches = weights.detach()[..., num_prefix_tokens:]  # (B, nh, L, N) -> (B, nh, L, Gh*Gw)
        if patches.shape[-1] != gh * gw:
            raise ValueError(f"{weights.shape[-1]} image tokens are not {num_prefix_tokens} prefix + {gh}x{gw} grid")
        maps.append(patches.reshape(*patches.shape[:-1], gh, gw))  # (B, nh, L, Gh*Gw) -> (B, nh, L, Gh, Gw)
    return torch.stack(maps, dim=1)  # (B, layers, nh, L, Gh, Gw)


def select_token(maps: Tensor, text_mask: Tensor, token: int | None = None) -> Tensor:
    """One text token's attention maps, or the mean over the real tokens.

    Args:
        maps: (B, layers, nh, L, Gh, Gw) from :func:`cross_attention_maps`.
        text_mask: (B, L) bool, True = real token.
        token: position of the token; None = mean over real tokens.

    Returns:
        (B, layers, nh, Gh, Gw).
    """
    if token is not None:
        return maps[:, :, :, token]
    weights = text_mask.to(maps.dtype)[:, None, None, :, None, None]  # (B, L) -> (B, 1, 1, L, 1, 1)
    return (maps * weights).sum(dim=3) / weights.sum(dim=3).clamp_min(1)


def attention_grid_figure(
    maps: Tensor,
    image: Tensor | None = None,
    title: str = "",
    alpha: float = 0.5,
    cmap: str = "jet",
    panel_size: int = DISPLAY_SIZE,
    resample: Resample = "nearest",
) -> Any:
    """A layers x heads grid of attention maps, over the image when given.

    Args:
        maps: (layers, nh, Gh, Gw) attention of one example (see :func:`select_token`).
        image: (3, H, W) float in [0, 1]; None draws the maps alone.
        title: figure title (e.g. the question and the answer); wrapped to the figure's width.
        alpha: weight of the maps over the image.
        cmap: a matplotlib colormap name.
        panel_size: side of each panel in pixels (at the figure's 100 dpi).
        resample: how a panel enlarges its picture: ``nearest`` for synthetic images, ``bicubic`` for photos.

    Returns:
        A matplotlib Figure, one row per fusion layer and one column per head, each panel ``panel_size`` pixels
        square.
    """
    _check_resample(resample)
    layers, heads = int(maps.shape[0]), int(maps.shape[1])
    side, gap, left, top = panel_size / 100, 0.08, 0.3, 0.25  # inches at 100 dpi
    width = left + heads * (side + gap)
    lines = textwrap.wrap(title, width=max(20, int(width * 13))) if title else []
    height = top + 0.2 * len(lines) + (0.1 if lines else 0.0) + layers * (side + gap)
    figure = new_figure(width, height)
    for i in range(layers):
        for j in range(heads):
            heat = maps[i, j].detach().float().cpu()
            picture = overlay_heatmap(image, heat, alpha, cmap) if image is not None else colorize(heat, cmap)
            x0, y0 = left + j * (side + gap), (layers - 1 - i) * (side + gap) + gap / 2  # lower-left corner
            ax = figure.add_axes((x0 / width, y0 / height, side / width, side / height))
            ax.imshow(picture, interpolation=_INTERPOLATION[resample])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"head {j}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"layer {i}", fontsize=8)
    if lines:
        figure.suptitle("\n".join(lines), fontsize=9, y=1 - 0.05 / height, va="top")
    return figure


def figure_to_array(figure: Any) -> np.ndarray:
    """The figure rendered on its Agg canvas as (H, W, 3) uint8 pixels."""
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
