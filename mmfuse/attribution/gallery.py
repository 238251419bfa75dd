"""A static HTML gallery of explanations: per example the image, the question, prediction vs label, every method's
image overlay and token colours side by side, and the fusion's cross-attention per layer x head.

The page is plain HTML with relative links to PNG files next to it: it opens offline in any browser, with no
script. Wrong predictions are marked. Each example's question and answer head its block, and every picture is at
least :data:`~mmfuse.attribution.viz.DISPLAY_SIZE` pixels a side (the shapes world's small images enlarged by
whole-pixel blocks; see :func:`~mmfuse.attribution.viz.upscale`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from mmfuse.attribution.base import Attribution
from mmfuse.attribution.viz import (
    Resample,
    attention_grid_figure,
    cross_attention_maps,
    overlay_heatmap,
    select_token,
    to_rgb,
    token_html,
    upscale,
)
from mmfuse.progress import stage
from mmfuse.types import Batch

__all__ = ["write_gallery", "pooled_cross_attention"]

IMAGE_DIR = "img"
_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
section { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; margin: 1em 0; }
section.wrong { border: 2px solid #c0392b; background: #fdf2f1; }
.badge { color: #fff; background: #c0392b; padding: 1px 6px; border-radius: 4px; font-size: 0.85em; }
.ok { color: #fff; background: #27ae60; padding: 1px 6px; border-radius: 4px; font-size: 0.85em; }
table { border-collapse: collapse; } td, th { padding: 4px 8px; vertical-align: top; text-align: center; }
img.px { image-rendering: pixelated; }
.tokens { max-width: 200px; line-height: 1.9; font-family: monospace; font-size: 0.85em; }
.q { font-size: 1.1em; }
"""


def pooled_cross_attention(model: nn.Module, batch: Batch, batch_size: int = 32) -> Tensor | None:
    """The fusion's text-to-image attention, mean over real tokens, per layer and head.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` (its train/eval state is restored afterwards).
        batch: the examples.
        batch_size: examples per forward.

    Returns:
        (B, layers, nh, Gh, Gw) on the CPU, or None when the fusion has no cross-attention weights.
    """
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    pooled: list[Tensor] = []
    try:
        for start in range(0, len(batch), batch_size):
            rows = slice(start, start + batch_size)
            chunk = Batch(batch.images[rows], batch.input_ids[rows], batch.attention_mask[rows]).to(device)
            with torch.no_grad():
                out = model(chunk.images, chunk.input_ids, chunk.attention_mask, return_attn_weights=True)
            if not out.fusion.attn_weights or out.image is None or out.image.grid_size is None:
                return None
            maps = cross_attention_maps(out.fusion.attn_weights, out.image.grid_size, out.image.num_prefix_tokens)
            pooled.append(select_token(maps, chunk.attention_mask).cpu())  # (b, layers, nh, Gh, Gw)
    finally:
        model.train(was_training)
    return torch.cat(pooled)


def write_gallery(
    out_dir: str | Path,
    model: nn.Module,
    tokenizer: Any,
    examples: Batch,
    attributions: Mapping[str, Attribution],
    predictions: Tensor,
    labels: Tensor | None,
    class_names: Sequence[str],
    *,
    texts: Sequence[str] | None = None,
    ids: Sequence[int | str] | None = None,
    resample: Resample = "nearest",
    note: str | None = None,
) -> Path:
    """Write ``index.html`` and its PNG files (under ``img/``) into ``out_dir``.

    Args:
        out_dir: output directory (created).
        model: the explained model (for the cross-attention grid).
        tokenizer: the tokenizer of the examples (token strings for the text maps).
        examples: the B examples.
        attributions: method name -> :class:`Attribution` of the same B examples (``image`` (B, H, W), ``text``
            (B, L), either may be None).
        predictions: (B,) predicted classes.
        labels: (B,) true classes, or None.
        class_names: class index -> name.
        texts: the questions as written; None decodes the token ids.
        ids: a name per example (e.g. its index in the split); None numbers them from 0.
        resample: how pictures smaller than :data:`~mmfuse.attribution.viz.DISPLAY_SIZE` are enlarged:
            ``nearest`` for synthetic images (the shapes world), ``bicubic`` for photos.
        note: a sentence shown under the page's summary (e.g. what the maps explain, or their precision).

    Returns:
        The path of ``index.html``.
    """
    out = Path(out_dir)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    with stage("gallery", total=len(examples), unit="examples") as current:
        attention = pooled_cross_attention(model, examples)
        sections = []
        for i in current.track(range(len(examples))):
            key = f"ex{i:03d}"
            tokens = tokenizer.convert_ids_to_tokens(examples.input_ids[i][examples.attention_mask[i]].tolist())
            cells = _method_cells(out, key, examples.images[i], tokens, attributions, i, resample)
            question = (
                texts[i] if texts is not None else tokenizer.decode(examples.input_ids[i], skip_special_tokens=True)
            )
            label = None if labels is None else int(labels[i])
            grid = None
            if attention is not None:
                grid = f"{IMAGE_DIR}/{key}_attention.png"
                answer = _class_name(class_names, int(predictions[i]))
                title = f"{question} → {answer}  (cross-attention, mean over the question's tokens)"
                figure = attention_grid_figure(attention[i], examples.images[i].cpu(), title=title, resample=resample)
                figure.savefig(out / grid)
            _save_png(upscale(to_rgb(examples.images[i]), resample=resample), out / IMAGE_DIR / f"{key}_input.png")
            name = ids[i] if ids is not None else i
            sections.append(_section(key, name, question, int(predictions[i]), label, class_names, cells, grid))
    wrong = sum(1 for i in range(len(examples)) if labels is not None and int(predictions[i]) != int(labels[i]))
    index = out / "index.html"
    index.write_text(_page(sections, list(attributions), len(examples), wrong if labels is not None else None, note))
    return index


def _method_cells(
    out: Path,
    key: str,
    image: Tensor,
    tokens: list[str],
    attributions: Mapping[str, Attribution],
    i: int,
    resample: Resample,
) -> list[tuple[str, str, str]]:
    """Per method: its name, the ``<img>`` of its overlay (or a dash) and its token spans (or a dash)."""
    cells = []
    for method, attribution in attributions.items():
        picture = "–"
        if attribution.image is not None:
            path = f"{IMAGE_DIR}/{key}_{method}.png"
            overlay = overlay_heatmap(image.cpu(), attribution.image[i].detach().float().cpu())
            _save_png(upscale(overlay, resample=resample), out / path)
            picture = f'<img class="px" src="{path}" alt="{html.escape(method)} heat map">'
        spans = "–"
        if attribution.text is not None:
            spans = token_html(tokens, attribution.text[i, : len(tokens)].detach().float().cpu())
        cells.append((method, picture, spans))
    return cells


def _save_png(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels).save(path)


def _section(
    key: str, name: int | str, question: str, predicted: int, label: int | None, class_names: Sequence[str],
    cells: list[tuple[str, str, str]], grid: str | None,
) -> str:  # fmt: skip
    """One example's HTML block."""
    is_wrong = label is not None and predicted != label
    verdict = (
        "" if label is None else ('<span class="badge">✗ wrong</span>' if is_wrong else '<span class="ok">✓</span>')
    )
    label_text = "" if label is None else f" · label <b>{html.escape(_class_name(class_names, label))}</b>"
    head = "".join(f"<th>{html.escape(m)}</th>" for m, _, _ in cells)
    pictures = "".join(f"<td>{p}</td>" for _, p, _ in cells)
    spans = "".join(f'<td class="tokens">{s}</td>' for _, _, s in cells)
    attention = "" if grid is None else f'<figure><img src="{grid}" alt="cross-attention grid"></figure>'
    return (
        f'<section id="{key}" class="{"wrong" if is_wrong else "right"}">'
        f'<h2>{html.escape(str(name))}</h2><p class="q">{html.escape(question)}</p>'
        f"<p>prediction <b>{html.escape(_class_name(class_names, predicted))}</b>{label_text} {verdict}</p>"
        f"<table><tr><th>input</th>{head}</tr>"
        f'<tr><td><img class="px" src="{IMAGE_DIR}/{key}_input.png" alt="input image"></td>{pictures}</tr>'
        f"<tr><td></td>{spans}</tr></table>{attention}</section>"
    )


def _class_name(class_names: Sequence[str], index: int) -> str:
    return class_names[index] if 0 <= index < len(class_names) else str(index)


def _page(sections: list[str], methods: list[str], count: int, wrong: int | None, note: str | None = None) -> str:
    """The whole page around the example sections."""
    summary = f"{count} examples" + ("" if wrong is None else f", {wrong} predicted wrongly (red)")
    remark = "" if note is None else f"<p>{html.escape(note)}</p>\n"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>mmfuse explanations</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>Explanations</h1>\n"
        f"<p>{summary}. Methods: {html.escape(', '.join(methods))}. Each heat map and each row of token colours "
        "is min-max normalised on its own (hover a token for its raw relevance).</p>\n"
        + remark
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
