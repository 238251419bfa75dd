"""Pictures of explanations: heat maps over the image, tokens coloured by relevance, and cross-attention grids.

Pure functions that return numpy arrays, HTML strings or matplotlib figures drawn on the Agg canvas (no pyplot, no
global backend switch, no window); the caller saves them. This is the one place where tensors become numpy.
matplotlib is imported on first use.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmfuse.attribution.reshape import normalize_per_example, upsample

__all__ = [
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


def _matplotlib() -> Any:
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401  (loads the submodules used below)
        import matplotlib.patches  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("drawing explanations needs matplotlib: pip install matplotlib") from err
    return matplotlib


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure with its own Agg canvas."""
    mpl = _matplotlib()
    figure = mpl.figure.Figure(figsize=(width, height), dpi=100)
    mpl.backends.backend_agg.FigureCanvasAgg(figure)
    return figure


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
    figure = _figure(max(1.0, sum(widths) + 0.2), 0.7 if not title else 0.95)
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
    maps: Tensor, image: Tensor | None = None, title: str = "", alpha: float = 0.5, cmap: str = "jet"
) -> Any:
    """A layers x heads grid of attention maps, over the image when given.

    Args:
        maps: (layers, nh, Gh, Gw) attention of one example (see :func:`select_token`).
        image: (3, H, W) float in [0, 1]; None draws the maps alone.
        title: figure title.
        alpha: weight of the maps over the image.
        cmap: a matplotlib colormap name.

    Returns:
        A matplotlib Figure, one row per fusion layer and one column per head.
    """
    layers, heads = int(maps.shape[0]), int(maps.shape[1])
    figure = _figure(1.4 * heads + 0.6, 1.4 * layers + (0.5 if title else 0.2))
    axes = figure.subplots(layers, heads, squeeze=False)
    for i in range(layers):
        for j in range(heads):
            heat = maps[i, j].detach().float().cpu()
            picture = overlay_heatmap(image, heat, alpha, cmap) if image is not None else colorize(heat, cmap)
            ax = axes[i][j]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"head {j}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"layer {i}", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def figure_to_array(figure: Any) -> np.ndarray:
    """The figure rendered on its Agg canvas as (H, W, 3) uint8 pixels."""
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
