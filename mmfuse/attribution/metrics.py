"""How good is an explanation? Localisation against ground-truth boxes, faithfulness to the model, and a sanity check.

* Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016) and its energy-based
  variant (Wang et al., "Score-CAM", CVPR-W 2020): does the map point at the object the question is about? Against
  boxes in the map's pixels, or any pixel region (``*_in_mask``), with two baseline maps to beat: the centre prior
  and random maps as coarse as the methods' own.
* Deletion / insertion (Petsiuk et al., "RISE", BMVC 2018), for image patches and for text tokens: does removing the
  most relevant inputs first destroy the prediction fastest, and does revealing them first restore it fastest?
* Model-parameter randomization (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018): an explanation
  that survives re-initialising the model's weights does not explain the model.

Everything is batched torch; :func:`faithfulness_report` runs all of it per method and writes JSON + Markdown. The
metrics of all methods and each method's randomization check are :mod:`mmfuse.progress` stages (reported by
``mmfuse explain --evaluate``, silent otherwise).
"""

from __future__ import annotations

import copy
import importlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.attribution.amp import spearman
from mmfuse.attribution.base import Attribution
from mmfuse.attribution.reshape import upsample
from mmfuse.io import write_atomic, write_json
from mmfuse.progress import Stage, stage
from mmfuse.stats import bootstrap_interval
from mmfuse.tables import format_table
from mmfuse.types import Batch

__all__ = [
    "ModelFn",
    "ExplainFn",
    "box_mask",
    "pointing_game",
    "pointing_game_in_mask",
    "patch_pointing_game",
    "energy_in_box",
    "energy_in_mask",
    "centre_prior_maps",
    "random_maps",
    "logits_fn",
    "deletion_insertion",
    "randomization_stages",
    "randomization_check",
    "METRICS",
    "faithfulness_report",
    "write_report",
    "format_report",
]

ModelFn = Callable[[Batch], Tensor]
"""``model_fn(batch) -> (B, K) logits``."""
ExplainFn = Callable[[nn.Module, Batch], Attribution]
"""``explain_fn(model, batch) -> Attribution``: one method with its target already chosen."""


# ----------------------------------------------------------------------------------------------- localisation


def box_mask(boxes: Sequence[Tensor], height: int, width: int, tolerance: float = 0.0) -> Tensor:
    """Pixels inside any of each example's boxes.

    A box is ``(x0, y0, x1, y1)`` in continuous pixel coordinates: pixel ``(row i, column j)`` covers
    ``[j, j + 1) x [i, i + 1)`` and is inside when its centre ``(j + 0.5, i + 0.5)`` lies in the box grown by
    ``tolerance`` pixels on every side. Integer boxes with exclusive right/bottom edges (``PIL.Image.getbbox``, the
    shapes world's ``boxes``) therefore cover exactly the pixels ``x0..x1-1``, ``y0..y1-1``.

    Args:
        boxes: per example a (K_b, 4) xyxy tensor; K_b may be 0.
        height: H of the map.
        width: W of the map.
        tolerance: margin in pixels added around every box.

    Returns:
        (B, H, W) bool.
    """
    count = max([len(b) for b in boxes] + [1])
    device = boxes[0].device if len(boxes) else torch.device("cpu")
    padded = torch.zeros(len(boxes), count, 4, device=device)
    valid = torch.zeros(len(boxes), count, dtype=torch.bool, device=device)
    for i, b in enumerate(boxes):
        padded[i, : len(b)] = b.reshape(-1, 4).float()
        valid[i, : len(b)] = True
    xs = torch.arange(width, device=device) + 0.5  # (W,) pixel centres
    ys = torch.arange(height, device=device) + 0.5  # (H,)
    x0, y0, x1, y1 = (padded[..., k, None] for k in range(4))  # each (B, K, 1)
    inside_x = (xs >= x0 - tolerance) & (xs <= x1 + tolerance)  # (B, K, W)
    inside_y = (ys >= y0 - tolerance) & (ys <= y1 + tolerance)  # (B, K, H)
    inside = inside_y[..., :, None] & inside_x[..., None, :] & valid[..., None, None]  # (B, K, H, W)
    return inside.any(dim=1)


def pointing_game(image_maps: Tensor, boxes: Sequence[Tensor], tolerance: float = 0.0) -> Tensor:
    """Hit when the map's maximum lies inside a target box.

    Ties: a hit when *any* of the tied maximal pixels lies inside a box (a map upsampled with nearest-neighbour
    from a patch grid has whole patches at its maximum). A constant map (all values equal, e.g. all zero) points
    nowhere and is a miss, as is a map holding NaN at its maximum.

    Args:
        image_maps: (B, H, W) relevance over pixels.
        boxes: per example a (K_b, 4) xyxy tensor of the *target* objects' boxes, in pixels of the map.
        tolerance: margin in pixels around each box (0 = the box itself; the original paper used 15 px on
            224 px images).

    Returns:
        (B,) bool.
    """
    _check_maps(image_maps, boxes)
    inside = box_mask(boxes, image_maps.shape[1], image_maps.shape[2], tolerance).to(image_maps.device)
    return pointing_game_in_mask(image_maps, inside)


def pointing_game_in_mask(image_maps: Tensor, masks: Tensor) -> Tensor:
    """:func:`pointing_game` against any pixel region: a hit when a maximal pixel of the map lies in ``masks``.

    The region may be anything drawn at the map's resolution, e.g. boxes mapped through an image's resize and crop
    with a tolerance measured in the original image (:func:`mmfuse.attribution.boxes.box_masks`). Ties, constant maps
    and NaN count as in :func:`pointing_game`.

    Args:
        image_maps: (B, H, W) relevance over pixels.
        masks: (B, H, W) bool, True = the target region.

    Returns:
        (B,) bool.
    """
    _check_masks(image_maps, masks)
    flat = image_maps.flatten(1)  # (B, H, W) -> (B, H*W)
    maxima, minima = flat.amax(dim=1), flat.amin(dim=1)
    is_max = image_maps == maxima[:, None, None]  # (B, H, W): every tied argmax
    return (is_max & masks.to(image_maps.device)).flatten(1).any(dim=1) & (maxima > minima)


def patch_pointing_game(grid_maps: Tensor, boxes: Sequence[Tensor], image_size: tuple[int, int]) -> Tensor:
    """The pointing game at the map's own resolution: a hit when the peak *patch* overlaps a target box.

    A map computed on a (Gh, Gw) patch grid knows nothing finer than a patch; upsampled, its peak sits at a patch
    centre, which can fall just outside a small object's tight box while the patch it stands for covers the object.
    This variant asks the question the map can answer. Ties count as in :func:`pointing_game`.

    Args:
        grid_maps: (B, Gh, Gw) relevance per patch (``Attribution.image_grid``).
        boxes: per example a (K_b, 4) xyxy tensor of the target objects' boxes, in pixels of the image.
        image_size: (H, W) of the image the boxes are in.

    Returns:
        (B,) bool.
    """
    _check_maps(grid_maps, boxes)
    _, gh, gw = grid_maps.shape
    cell_h, cell_w = image_size[0] / gh, image_size[1] / gw
    count = max([len(b) for b in boxes] + [1])
    padded = torch.full((len(boxes), count, 4), -1.0, device=grid_maps.device)  # (B, K, 4); -1 = no box
    for i, b in enumerate(boxes):
        padded[i, : len(b)] = b.reshape(-1, 4).float().to(grid_maps.device)
    x0, y0, x1, y1 = (padded[..., k, None] for k in range(4))  # each (B, K, 1)
    cols = torch.arange(gw, device=grid_maps.device) * cell_w  # (Gw,) left edges
    rows = torch.arange(gh, device=grid_maps.device) * cell_h  # (Gh,) top edges
    overlap_x = (torch.minimum(x1, cols + cell_w) - torch.maximum(x0, cols)) > 0  # (B, K, Gw)
    overlap_y = (torch.minimum(y1, rows + cell_h) - torch.maximum(y0, rows)) > 0  # (B, K, Gh)
    valid = (padded[..., 2] > padded[..., 0])[..., None, None]  # (B, K, 1, 1)
    inside = (overlap_y[..., :, None] & overlap_x[..., None, :] & valid).any(dim=1)  # (B, Gh, Gw)
    flat = grid_maps.flatten(1)  # (B, Gh, Gw) -> (B, Gh*Gw)
    maxima, minima = flat.amax(dim=1), flat.amin(dim=1)
    is_max = grid_maps == maxima[:, None, None]
    return (is_max & inside).flatten(1).any(dim=1) & (maxima > minima)


def energy_in_box(image_maps: Tensor, boxes: Sequence[Tensor], tolerance: float = 0.0) -> Tensor:
    """Fraction of the map's (non-negative) mass inside the target boxes: the energy-based pointing game.

    Negative values are clipped to 0 first. A map with no positive mass scores 0. A uniform map scores the boxes'
    share of the image area, which is the chance level to compare against.

    Args:
        image_maps: (B, H, W) relevance over pixels.
        boxes: per example a (K_b, 4) xyxy tensor of the target objects' boxes.
        tolerance: margin in pixels around each box.

    Returns:
        (B,) float in [0, 1].
    """
    _check_maps(image_maps, boxes)
    inside = box_mask(boxes, image_maps.shape[1], image_maps.shape[2], tolerance).to(image_maps.device)
    return energy_in_mask(image_maps, inside)


def energy_in_mask(image_maps: Tensor, masks: Tensor) -> Tensor:
    """:func:`energy_in_box` against any pixel region: the share of the map's non-negative mass inside ``masks``.

    Args:
        image_maps: (B, H, W) relevance over pixels.
        masks: (B, H, W) bool, True = the target region.

    Returns:
        (B,) float in [0, 1]; 0 for a map with no positive mass.
    """
    _check_masks(image_maps, masks)
    mass = image_maps.float().clamp_min(0).nan_to_num(0.0)
    total = mass.flatten(1).sum(dim=1)
    in_box = (mass * masks.to(mass.device)).flatten(1).sum(dim=1)
    return torch.where(total > 0, in_box / total.clamp_min(torch.finfo(mass.dtype).tiny), torch.zeros_like(total))


def centre_prior_maps(count: int, height: int, width: int, sigma: float = 0.25) -> Tensor:
    """The centre prior: a Gaussian bump at the image centre, the same for every example.

    Photographers centre their subjects, so this map is the baseline a localisation figure on photos must beat
    (TorchRay's ``center`` row points at the centre of each image). Its pointing game is the centre pixel's; its
    energy in box depends on ``sigma``.

    Args:
        count: B, maps to return.
        height: H of the maps.
        width: W of the maps.
        sigma: standard deviation as a fraction of each side.

    Returns:
        (B, H, W) float in (0, 1], 1 at the centre.
    """
    if sigma <= 0:
        raise ValueError(f"sigma={sigma}: the centre prior's width must be positive")
    ys = (torch.arange(height) + 0.5 - height / 2) / (sigma * height)  # (H,) pixel centres, in sigmas
    xs = (torch.arange(width) + 0.5 - width / 2) / (sigma * width)  # (W,)
    bump = torch.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))  # (H, W)
    return bump.expand(count, height, width).clone()


def random_maps(
    count: int, grid_size: tuple[int, int], size: tuple[int, int], generator: torch.Generator | None = None
) -> Tensor:
    """Uniform random relevance per patch of the encoder's grid, upsampled to pixels as the methods' maps are
    (bilinearly, :func:`~mmfuse.attribution.reshape.upsample`): chance level.

    Drawn on the patch grid and upsampled the same way, the random maps peak where the methods' maps can peak (near a
    patch centre) and as sharply: a nearest-neighbour upsampling would tie a whole patch at the maximum and hit a box
    far more often than any real map could.

    Args:
        count: B, maps to draw.
        grid_size: (Gh, Gw) of the vision encoder.
        size: (H, W) of the maps.
        generator: source of the random numbers (seeded by the caller); None = torch's global one.

    Returns:
        (B, H, W) float in [0, 1).
    """
    grid = torch.rand(count, *grid_size, generator=generator)  # (B, Gh, Gw)
    return upsample(grid, size)  # (B, Gh, Gw) -> (B, H, W)


def _check_maps(image_maps: Tensor, boxes: Sequence[Tensor]) -> None:
    if image_maps.dim() != 3:
        raise ValueError(f"image_maps must be (B, H, W), got shape {tuple(image_maps.shape)}")
    if len(boxes) != image_maps.shape[0]:
        raise ValueError(f"got {len(boxes)} box sets for {image_maps.shape[0]} maps")


def _check_masks(image_maps: Tensor, masks: Tensor) -> None:
    if image_maps.dim() != 3:
        raise ValueError(f"image_maps must be (B, H, W), got shape {tuple(image_maps.shape)}")
    if masks.shape != image_maps.shape:
        raise ValueError(f"masks of shape {tuple(masks.shape)} for maps of shape {tuple(image_maps.shape)}")


# ---------------------------------------------------------------------------------------- deletion / insertion


def logits_fn(model: nn.Module) -> ModelFn:
    """``batch -> (B, K) logits`` of an :class:`~mmfuse.models.ImageTextModel`."""

    def call(batch: Batch) -> Tensor:
        return model(batch.images, batch.input_ids, batch.attention_mask).logits

    return call


@torch.no_grad()
def deletion_insertion(
    model_fn: ModelFn,
    batch: Batch,
    maps: Tensor,
    modality: Literal["image", "text"] = "image",
    steps: int = 16,
    target: Tensor | None = None,
    image_baseline: Literal["mean", "blur"] | Tensor = "mean",
    text_replacement: int | None = None,
    removable: Tensor | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Deletion and insertion curves of the target class probability, and their areas (RISE, Petsiuk et al. 2018).

    Units (image patches of the map's grid, or text tokens) are ranked by decreasing relevance, ties in a seeded
    random order. Deletion replaces the top fraction ``k / steps`` of units by a baseline, for k = 0..steps;
    insertion starts from the all-baseline input and reveals the top fraction. The curve is the softmax
    probability of the target class; the area is the trapezoid rule over the fraction of units actually replaced
    (for text, ``round(k / steps * n)`` of an example's n removable tokens). A faithful map gives a low deletion
    area and a high insertion area. One forward of the whole batch per step and curve.

    Baselines:
        image ``"mean"``: each channel's mean over the batch's images (pass a (3,) tensor to use a dataset mean);
        ``"blur"``: the image under a Gaussian blur (sigma = H / 16); a tensor broadcastable to (B, 3, H, W).
        text: ``text_replacement`` (e.g. the tokenizer's [UNK] id) replaces removed tokens, which stay in the
        attention mask, so the sequence keeps its length and positions; None removes tokens from the attention
        mask instead. Only ``removable`` tokens take part (default: every real token; pass the real tokens minus
        special ones such as [CLS] / [SEP] to keep those fixed).

    Args:
        model_fn: ``batch -> (B, K) logits`` (see :func:`logits_fn`).
        batch: the inputs.
        maps: (B, Gh, Gw) relevance over image patches (the patch grid is the map's own grid, mapped onto the
            image with nearest-neighbour upsampling), or (B, L) relevance over tokens.
        modality: ``"image"`` or ``"text"``.
        steps: number of fraction steps (the curves have ``steps + 1`` points).
        target: (B,) class whose probability is tracked; None = the predicted class on the full input.
        image_baseline: see above.
        text_replacement: see above.
        removable: (B, L) bool tokens that may be removed (text only).
        seed: seed of the tie-breaking order.

    Returns:
        ``deletion_auc`` / ``insertion_auc`` (B,) (NaN for an example with nothing to remove),
        ``deletion_curve`` / ``insertion_curve`` (B, steps + 1) and ``fraction`` (B, steps + 1).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if target is None:
        target = model_fn(batch).argmax(dim=-1)
    scores, valid = _units(batch, maps, modality, removable)
    rank = _rank_units(scores, valid, seed)  # (B, U): position of each unit in the removal order
    n_valid = valid.sum(dim=1)  # (B,)
    fractions = torch.arange(steps + 1, device=scores.device) / steps  # (S+1,)
    counts = torch.round(fractions[None, :] * n_valid[:, None])  # (B, S+1) units replaced at each step
    empty = _baseline_batch(batch, modality, image_baseline, text_replacement)
    curves: dict[str, list[Tensor]] = {"deletion": [], "insertion": []}
    for k in range(steps + 1):
        top = (rank < counts[:, k : k + 1]) & valid  # (B, U) the k-th fraction of most relevant units
        for mode, replaced in (("deletion", top), ("insertion", valid & ~top)):
            perturbed = _perturb(batch, empty, replaced, modality, maps.shape[1:])
            probs = model_fn(perturbed).float().softmax(dim=-1)  # (B, K)
            curves[mode].append(probs.gather(1, target[:, None].to(probs.device))[:, 0])
    x = (counts / n_valid.clamp_min(1)[:, None]).float()  # (B, S+1) fraction actually replaced
    out: dict[str, Tensor] = {"fraction": x}
    for mode, values in curves.items():
        curve = torch.stack(values, dim=1)  # (B, S+1)
        auc = torch.trapezoid(curve, x, dim=1)
        out[f"{mode}_curve"] = curve
        out[f"{mode}_auc"] = auc.masked_fill(n_valid == 0, float("nan"))
    return out


def _units(batch: Batch, maps: Tensor, modality: str, removable: Tensor | None) -> tuple[Tensor, Tensor]:
    """(B, U) relevance per unit and (B, U) bool units that take part."""
    if modality == "image":
        if maps.dim() != 3:
            raise ValueError(f"image maps must be (B, Gh, Gw), got shape {tuple(maps.shape)}")
        scores = maps.flatten(1).float()  # (B, Gh, Gw) -> (B, Gh*Gw)
        return scores, torch.ones_like(scores, dtype=torch.bool)
    if modality == "text":
        if maps.shape != batch.input_ids.shape:
            raise ValueError(f"text maps must be (B, L) = {tuple(batch.input_ids.shape)}, got {tuple(maps.shape)}")
        valid = batch.attention_mask if removable is None else removable & batch.attention_mask
        return maps.float(), valid.to(maps.device)
    raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")


def _rank_units(scores: Tensor, valid: Tensor, seed: int) -> Tensor:
    """(B, U) rank of each unit by decreasing score (0 = most relevant); ties in a seeded random order."""
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.rand(scores.shape, generator=generator).argsort(dim=1).to(scores.device)  # (B, U)
    shuffled = scores.nan_to_num(float("-inf")).masked_fill(~valid, float("-inf")).gather(1, shuffle)
    order = shuffle.gather(1, shuffled.argsort(dim=1, descending=True, stable=True))  # (B, U) unit ids, best first
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return rank


def _baseline_batch(batch: Batch, modality: str, image_baseline: str | Tensor, text_replacement: int | None) -> Batch:
    """The fully removed input: images replaced by the baseline, or every token replaced / masked out."""
    if modality == "text":
        if text_replacement is None:
            return batch
        ids = torch.full_like(batch.input_ids, text_replacement)
        return Batch(batch.images, ids, batch.attention_mask, batch.labels)
    images = batch.images
    if isinstance(image_baseline, Tensor):
        base = image_baseline.to(images)
        base = base.view(1, 3, 1, 1) if base.dim() == 1 else base
    elif image_baseline == "mean":
        base = images.mean(dim=(0, 2, 3), keepdim=True)  # (1, 3, 1, 1)
    elif image_baseline == "blur":
        base = _gaussian_blur(images, sigma=images.shape[-2] / 16)
    else:
        raise ValueError(f"image_baseline must be 'mean', 'blur' or a tensor, got {image_baseline!r}")
    return Batch(base.expand_as(images), batch.input_ids, batch.attention_mask, batch.labels)


def _gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """(B, C, H, W) images blurred by a separable Gaussian with reflect padding."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)  # along W
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)  # along H


def _perturb(batch: Batch, empty: Batch, replaced: Tensor, modality: str, grid: torch.Size) -> Batch:
    """``batch`` with the ``replaced`` (B, U) units taken from ``empty``."""
    if modality == "image":
        cells = replaced.float().view(-1, 1, *grid)  # (B, Gh*Gw) -> (B, 1, Gh, Gw)
        pixels = F.interpolate(cells, size=batch.images.shape[-2:], mode="nearest").bool()  # (B, 1, H, W)
        images = torch.where(pixels, empty.images, batch.images)
        return Batch(images, batch.input_ids, batch.attention_mask, batch.labels)
    if empty is batch:  # no replacement token: removed tokens leave the attention mask
        return Batch(batch.images, batch.input_ids, batch.attention_mask & ~replaced, batch.labels)
    ids = torch.where(replaced, empty.input_ids, batch.input_ids)
    return Batch(batch.images, ids, batch.attention_mask, batch.labels)


# -------------------------------------------------------------------------------------- parameter randomization


def randomization_stages(model: nn.Module) -> list[list[str]]:
    """The cascade of the parameter randomization check, top-down, as lists of dotted module/parameter paths.

    Order: the head (one stage), then the fusion layers last to first (the i-th layers of parallel stacks, such
    as the text and image streams of co-attention, form one stage), then the vision encoder and the text encoder,
    each top-down by sub-module: the projection, then the blocks of each layer stack last to first, then the stem /
    embeddings. A module's parameters that sit above a layer stack (a final norm, the pooling projection, its own
    ``nn.Parameter``s) join the top stage of that module.
    """
    stages: list[list[str]] = []
    for name in ("head", "fusion", "vision", "text"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module) and _has_params(module):
            stages += _top_down(module, name, parallel=name == "fusion")
    return stages


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _is_stack(module: nn.Module) -> bool:
    """A ModuleList / Sequential of at least two parameterised blocks."""
    return isinstance(module, nn.ModuleList | nn.Sequential) and sum(_has_params(c) for c in module) >= 2


def _top_down(module: nn.Module, path: str, parallel: bool = False) -> list[list[str]]:
    """Stages of one module, top-down (see :func:`randomization_stages`); a module without a layer stack inside is
    one stage. With ``parallel`` the module's direct stacks run side by side and are grouped by depth."""
    if not any(_is_stack(m) for m in module.modules()):
        return [[path]]
    if _is_stack(module):
        blocks: Any = module
        return [[f"{path}.{i}"] for i in reversed(range(len(blocks))) if _has_params(blocks[i])]
    children = [(f"{path}.{n}", c) for n, c in module.named_children() if _has_params(c)]
    stacks: list[tuple[str, Any]] = [(p, c) for p, c in children if _is_stack(c)]
    pending = [f"{path}.{n}" for n, _ in module.named_parameters(recurse=False)]  # joins the top stage
    stages: list[list[str]] = []
    for p, child in reversed(children):
        if stacks and (p, child) == stacks[-1]:
            layer_stages = (
                _parallel_stages(stacks) if parallel else [g for q, c in reversed(stacks) for g in _top_down(c, q)]
            )
            stages += [pending + layer_stages[0], *layer_stages[1:]]
            pending = []
        elif stacks and any(p == q for q, _ in stacks):
            continue  # emitted with the last-declared stack
        elif stacks and not stages:
            pending.append(p)  # declared after the stacks: above them
        else:
            stages += _top_down(child, p)
    if pending:
        stages = [pending + stages[0], *stages[1:]] if stages else [pending]
    return stages


def _parallel_stages(stacks: list[tuple[str, Any]]) -> list[list[str]]:
    """The i-th blocks of side-by-side stacks as one stage, deepest first."""
    depth = max(len(c) for _, c in stacks)
    return [[f"{p}.{i}" for p, c in stacks if i < len(c)] for i in reversed(range(depth))]


def _reinitialise(model: nn.Module, paths: Sequence[str]) -> None:
    """Re-initialise the modules / parameters at ``paths`` in place with their own initialisers.

    Modules with ``reset_parameters`` (Linear, Conv, norms with their running statistics, Embedding) use it; other
    parameters (a ``cls_token``, a position embedding) are drawn from N(0, 0.02^2).
    """
    for path in paths:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            nn.init.normal_(model.get_parameter(path), std=0.02)
            continue
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
            else:
                for parameter in sub.parameters(recurse=False):
                    nn.init.normal_(parameter, std=0.02)


def _as_explain_fn(method: str | ExplainFn, target: Any) -> ExplainFn:
    """A method name (run through :func:`mmfuse.attribution.explain` with ``target``) or an explain function."""
    if not isinstance(method, str):
        return method
    explain = importlib.import_module("mmfuse.attribution").explain

    def run(model: nn.Module, batch: Batch) -> Attribution:
        kwargs = {} if target is None else {"target": target}
        return explain(model, batch, methods=(method,), **kwargs)[method]

    return run


def _image_map(attribution: Attribution) -> Tensor | None:
    """The grid-level image map when the method gives one (the upsampled map is a function of it), else pixels."""
    return attribution.image_grid if attribution.image_grid is not None else attribution.image


def randomization_check(
    model: nn.Module,
    batch: Batch,
    method: str | ExplainFn,
    target: Any = None,
    stages: Sequence[Sequence[str]] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Cascading model-parameter randomization (Adebayo et al. 2018) on a deep copy of ``model``.

    Stage 0 explains the unchanged copy again (its correlation with the original map checks that the method is
    deterministic, ~1). Each later stage re-initialises one more group of weights, top-down (see
    :func:`randomization_stages`), explains again and records the per-example Spearman rank correlation with the
    original map. A method whose map still correlates after the whole model is random does not depend on what
    the model learned. Weights are drawn from a generator seeded with ``seed``; the caller's RNG state and the
    caller's model are left untouched.

    Args:
        model: the trained model (not modified).
        batch: the inputs, on the model's device.
        method: a registered method name, or ``explain_fn(model, batch) -> Attribution``.
        target: the target passed to :func:`mmfuse.attribution.explain` with a method name. Pass a target that
            fixes the class (the original prediction): a predicted-class target follows the randomized model's
            own, changing prediction.
        stages: groups of dotted module/parameter paths, top-down; None = :func:`randomization_stages`.
        seed: seed of the re-initialisation.

    Returns:
        ``stages``: stage names (``"original"`` first); ``image`` / ``text``: (S + 1, B) float correlations of
        the image map (grid-level when available) / the token map over real tokens, or None when the method has
        no such map. A constant map (e.g. all zero) against a varying one counts as uncorrelated (0), see
        :func:`mmfuse.attribution.amp.spearman`.
    """
    explain_fn = _as_explain_fn(method, target)
    work = copy.deepcopy(model).eval()
    groups = [list(g) for g in (randomization_stages(work) if stages is None else stages)]
    name = method if isinstance(method, str) else getattr(method, "__name__", "explanation")
    rows: dict[str, list[Tensor]] = {"image": [], "text": []}

    def record(attribution: Attribution) -> None:
        ref_image, new_image = _image_map(reference), _image_map(attribution)
        if ref_image is not None and new_image is not None:
            rows["image"].append(spearman(ref_image.detach(), new_image.detach()).cpu())
        if reference.text is not None and attribution.text is not None:
            mask = batch.attention_mask.to(reference.text.device)
            rows["text"].append(spearman(reference.text.detach(), attribution.text.detach(), mask).cpu())

    with stage(f"randomization {name}", total=len(groups) + 1, unit="stages") as current:
        reference = explain_fn(work, batch)
        record(explain_fn(work, batch))
        current.advance(detail="original")
        devices = [p.device.index or 0 for p in work.parameters() if p.device.type == "cuda"][:1]
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for group in groups:
                _reinitialise(work, group)
                record(explain_fn(work, batch))
                current.advance(detail=", ".join(group))
    return {
        "stages": ["original", *(", ".join(g) for g in groups)],
        "image": torch.stack(rows["image"]) if rows["image"] else None,
        "text": torch.stack(rows["text"]) if rows["text"] else None,
    }


# ------------------------------------------------------------------------------------------------------ report


METRICS: dict[str, str] = {
    "pointing_game": "pointing game ↑",
    "pointing_game_patch": "pointing game, patch grid ↑",
    "energy_in_box": "energy in box ↑",
    "deletion_auc_image": "deletion AUC image ↓",
    "insertion_auc_image": "insertion AUC image ↑",
    "deletion_auc_text": "deletion AUC text ↓",
    "insertion_auc_text": "insertion AUC text ↑",
    "randomization_spearman_image": "randomized ρ image ↓",
    "randomization_spearman_text": "randomized ρ text ↓",
}
"""Per-example metrics of :func:`faithfulness_report`, with their column titles (arrow: which way is better)."""


def faithfulness_report(
    model: nn.Module,
    batches: Iterable[tuple[Batch, Sequence[Tensor]]],
    methods: Sequence[str],
    out_dir: str | Path | None = None,
    *,
    steps: int = 16,
    text_replacement: int | None = None,
    special_token_ids: Sequence[int] = (),
    tolerance: float = 0.0,
    randomization_examples: int = 32,
    n_boot: int = 1000,
    seed: int = 0,
    targets: Callable[[Tensor], Any] | None = None,
    attributions: Sequence[Mapping[str, Attribution]] | None = None,
) -> dict[str, Any]:
    """Every metric of this module for each method, summarised over examples (mean and bootstrap 95% CI).

    Each method explains the predicted class. A ``random`` row (uniform random maps over patches and tokens) gives
    the chance level of every metric. The randomization check runs on the first ``randomization_examples``
    examples and reports the correlation after the whole model is re-initialised (and the mean curve per stage).
    The image baseline of deletion / insertion is the mean colour of all evaluated images. Besides the pointing
    game on pixels at ``tolerance``, ``pointing_game_patch`` plays it on the map's own patch grid
    (:func:`patch_pointing_game`): a map made on patches peaks at a patch centre, which can lie just outside a
    small object's tight box while the patch covers the object.

    Args:
        model: an :class:`~mmfuse.models.ImageTextModel` (put in eval mode).
        batches: pairs of a batch (on the model's device) and per example the (K_b, 4) xyxy pixel boxes of the
            objects the text refers to.
        methods: registered method names.
        out_dir: when given, ``faithfulness.json`` and ``faithfulness.md`` are written there.
        steps: fraction steps of the deletion / insertion curves.
        text_replacement: token id replacing removed tokens (e.g. [UNK]); None masks them out.
        special_token_ids: tokens never removed ([CLS], [SEP]...).
        tolerance: pointing-game / energy margin in pixels.
        randomization_examples: examples in the randomization check (0 = skip it).
        n_boot: bootstrap resamples.
        seed: seed of the random maps, tie-breaking, re-initialisation and bootstrap.
        targets: ``classes (B,) -> target`` building a fixed-class target for :func:`mmfuse.attribution.explain`;
            None = :func:`mmfuse.attribution.targets` ``ClassLogit``.
        attributions: per batch, the methods' explanations already computed (of the predicted class, as
            :func:`mmfuse.attribution.explain` gives them); None computes them.

    Returns:
        JSON-able dict: ``n_examples``, ``accuracy``, ``settings``, ``methods`` (method -> metric -> summary),
        ``curves`` (mean deletion / insertion curves) and ``randomization`` (stages and mean curves).
    """
    model.eval()
    pairs = list(batches)
    if not pairs:
        raise ValueError("faithfulness_report needs at least one batch")
    settings: dict[str, Any] = {
        "steps": steps,
        "text_replacement": text_replacement,
        "special_token_ids": list(special_token_ids),
    }
    settings |= {"tolerance": tolerance, "image_baseline": "mean colour of the evaluated images", "seed": seed}
    image_mean = torch.cat([b.images for b, _ in pairs]).mean(dim=(0, 2, 3))  # (3,)
    if attributions is not None and len(attributions) != len(pairs):
        raise ValueError(f"{len(attributions)} precomputed attribution sets for {len(pairs)} batches")
    maps = sum(len(b) for b, _ in pairs) * (len(methods) + 1)  # one per example and method, the random row included
    with stage("faithfulness", total=maps, unit="maps") as current:
        values, curves, correct = _collect(model, pairs, methods, image_mean, settings, attributions, current)
    make_target = targets or _class_target
    randomization = _randomization(model, pairs, methods, randomization_examples, make_target, seed)
    for method, per_stage in randomization.pop("final").items():
        values[method].update(per_stage)
    summary = {
        method: {key: _summary(torch.cat(v), n_boot, seed) for key, v in metrics.items()}
        for method, metrics in values.items()
    }
    report = {
        "n_examples": sum(len(b) for b, _ in pairs),
        "accuracy": float(correct.float().mean()) if correct.numel() else None,
        "settings": settings | {"n_boot": n_boot, "randomization_examples": randomization_examples},
        "methods": summary,
        "curves": {m: {k: torch.cat(c).nanmean(dim=0).tolist() for k, c in cs.items()} for m, cs in curves.items()},
        "randomization": randomization,
    }
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def _summary(values: Tensor, n_boot: int, seed: int) -> dict[str, Any]:
    """``mean``, ``ci_low``, ``ci_high`` (None when no example has the metric) and ``n`` (examples that have it) of
    (n,) per-example values, NaN where the metric is undefined for an example."""
    per_example = values.detach().double().flatten().cpu().numpy()
    return bootstrap_interval(per_example, n_boot=n_boot, seed=seed, nan_policy="omit").as_dict("mean", brief=True)


def _collect(
    model: nn.Module, pairs: list[tuple[Batch, Sequence[Tensor]]], methods: Sequence[str], image_mean: Tensor,
    settings: dict[str, Any], precomputed: Sequence[Mapping[str, Attribution]] | None, progress: Stage,
) -> tuple[dict[str, dict[str, list[Tensor]]], dict[str, dict[str, list[Tensor]]], Tensor]:  # fmt: skip
    """Per-example localisation and deletion / insertion values and curves of every method and the random row;
    ``progress`` advances by a batch's examples as each method's metrics on it are done."""
    explain = importlib.import_module("mmfuse.attribution").explain
    model_fn = logits_fn(model)
    generator = torch.Generator().manual_seed(settings["seed"])
    values: dict[str, dict[str, list[Tensor]]] = {}
    curves: dict[str, dict[str, list[Tensor]]] = {}
    correct: list[Tensor] = []
    for k, (batch, boxes) in enumerate(pairs):
        with torch.no_grad():
            predicted = model_fn(batch).argmax(dim=-1)
        if batch.labels is not None:
            correct.append((predicted == batch.labels.to(predicted.device)).cpu())
        if precomputed is None:
            attributions = dict(explain(model, batch, methods=tuple(methods)))
        else:
            attributions = {m: _to_device(precomputed[k][m], batch.images.device) for m in methods}
        attributions["random"] = _random_attribution(model, batch, generator)
        special = torch.tensor(list(settings["special_token_ids"]), device=batch.input_ids.device, dtype=torch.long)
        removable = batch.attention_mask & ~torch.isin(batch.input_ids, special)
        for name, attribution in attributions.items():
            batch_values, batch_curves = _example_metrics(
                model, batch, boxes, attribution, predicted, image_mean, removable, settings
            )
            for key, v in batch_values.items():
                values.setdefault(name, {}).setdefault(key, []).append(v.detach().double().cpu())
            for key, c in batch_curves.items():
                curves.setdefault(name, {}).setdefault(key, []).append(c.detach().double().cpu())
            progress.advance(len(batch), detail=name)
    return values, curves, torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)


def _to_device(attribution: Attribution, device: torch.device) -> Attribution:
    def move(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(device)

    a = attribution
    return Attribution(a.method, image=move(a.image), image_grid=move(a.image_grid), text=move(a.text))


def _random_attribution(model: nn.Module, batch: Batch, generator: torch.Generator) -> Attribution:
    """Uniform random relevance over the image patches (upsampled to pixels) and the real tokens: chance level."""
    image = image_grid = None
    vision = getattr(model, "vision", None)
    if vision is not None:
        grid = torch.rand(len(batch), *vision.grid_size, generator=generator).to(batch.images.device)
        image_grid = grid
        image = F.interpolate(grid[:, None], size=batch.images.shape[-2:], mode="nearest")[:, 0]  # (B, H, W)
    text = None
    if getattr(model, "text", None) is not None:
        text = torch.rand(batch.input_ids.shape, generator=generator).to(batch.images.device) * batch.attention_mask
    return Attribution("random", image=image, image_grid=image_grid, text=text)


def _example_metrics(
    model: nn.Module, batch: Batch, boxes: Sequence[Tensor], attribution: Attribution, predicted: Tensor,
    image_mean: Tensor, removable: Tensor, settings: dict[str, Any],
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:  # fmt: skip
    """(B,) values of each metric that applies to the method's maps, and its (B, S + 1) curves."""
    values: dict[str, Tensor] = {}
    curves: dict[str, Tensor] = {}
    common = {"steps": settings["steps"], "target": predicted, "seed": settings["seed"]}
    if attribution.image is not None:
        vision: Any = model.vision
        values["pointing_game"] = pointing_game(attribution.image, boxes, settings["tolerance"]).float()
        if attribution.image_grid is not None:
            size = (attribution.image.shape[-2], attribution.image.shape[-1])
            values["pointing_game_patch"] = patch_pointing_game(attribution.image_grid, boxes, size).float()
        values["energy_in_box"] = energy_in_box(attribution.image, boxes, settings["tolerance"])
        grid = attribution.image_grid
        if grid is None:
            grid = F.adaptive_avg_pool2d(attribution.image[:, None], vision.grid_size)[:, 0]  # (B, Gh, Gw)
        result = deletion_insertion(logits_fn(model), batch, grid, "image", image_baseline=image_mean, **common)
        for mode in ("deletion", "insertion"):
            values[f"{mode}_auc_image"] = result[f"{mode}_auc"]
            curves[f"{mode}_image"] = result[f"{mode}_curve"]
    if attribution.text is not None:
        result = deletion_insertion(
            logits_fn(model), batch, attribution.text, "text", text_replacement=settings["text_replacement"],
            removable=removable, **common,
        )  # fmt: skip
        for mode in ("deletion", "insertion"):
            values[f"{mode}_auc_text"] = result[f"{mode}_auc"]
            curves[f"{mode}_text"] = result[f"{mode}_curve"]
    return values, curves


def _class_target(classes: Tensor) -> Any:
    """A target fixed to ``classes`` (B,), from :mod:`mmfuse.attribution.targets`."""
    targets = importlib.import_module("mmfuse.attribution.targets")
    return targets.ClassLogit(classes)


def _randomization(
    model: nn.Module, pairs: list[tuple[Batch, Sequence[Tensor]]], methods: Sequence[str], examples: int,
    make_target: Callable[[Tensor], Any], seed: int,
) -> dict[str, Any]:  # fmt: skip
    """The randomization check of each method on the first ``examples`` examples: final correlations and curves."""
    if examples <= 0:
        return {"stages": [], "curves": {}, "final": {}}
    batch = _first_examples([b for b, _ in pairs], examples)
    with torch.no_grad():
        predicted = logits_fn(model)(batch).argmax(dim=-1)
    result: dict[str, Any] = {"stages": [], "curves": {}, "final": {}}
    for method in methods:
        check = randomization_check(model, batch, method, target=make_target(predicted), seed=seed)
        result["stages"] = check["stages"]
        result["curves"][method] = {}
        result["final"][method] = {}
        for modality in ("image", "text"):
            if check[modality] is not None:
                result["curves"][method][modality] = check[modality].nanmean(dim=1).tolist()
                result["final"][method][f"randomization_spearman_{modality}"] = [check[modality][-1]]
    return result


def _first_examples(batches: list[Batch], n: int) -> Batch:
    """One batch of the first ``n`` examples of ``batches`` (text padded to the longest)."""
    taken: list[Batch] = []
    left = n
    for b in batches:
        if left <= 0:
            break
        taken.append(Batch(b.images[:left], b.input_ids[:left], b.attention_mask[:left], _head(b.labels, left)))
        left -= len(taken[-1])
    length = max(b.input_ids.shape[1] for b in taken)
    ids = torch.cat([F.pad(b.input_ids, (0, length - b.input_ids.shape[1])) for b in taken])
    mask = torch.cat([F.pad(b.attention_mask, (0, length - b.attention_mask.shape[1])) for b in taken])
    labels = None if any(b.labels is None for b in taken) else torch.cat([b.labels for b in taken])  # type: ignore[misc]
    return Batch(torch.cat([b.images for b in taken]), ids, mask, labels)


def _head(labels: Tensor | None, n: int) -> Tensor | None:
    return None if labels is None else labels[:n]


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``faithfulness.json`` (everything, NaN as null) and ``faithfulness.md`` (the summary table)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "faithfulness.json", out / "faithfulness.md"
    write_json(json_path, _json_safe(report))
    write_atomic(md_path, format_report(report))
    return json_path, md_path


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def format_report(report: dict[str, Any]) -> str:
    """The Markdown summary of a :func:`faithfulness_report` result."""
    keys = [k for k in METRICS if any(k in m for m in report["methods"].values())]
    lines = [
        "# Faithfulness of the explanations",
        "",
        f"{report['n_examples']} examples, accuracy {_number(report['accuracy'])}. Mean [bootstrap 95% CI] over "
        "examples; the `random` row is the chance level. Settings: "
        + ", ".join(f"{k}={v}" for k, v in report["settings"].items())
        + ".",
        "",
        format_table(
            ["method", *(METRICS[k] for k in keys)],
            [[method, *(_cell(metrics.get(k)) for k in keys)] for method, metrics in report["methods"].items()],
            "md",
        ),
    ]
    rand = report["randomization"]
    if rand["curves"]:
        lines += ["", "## Randomization curves (mean Spearman ρ with the original map after each stage)", ""]
        names = [f"{m} ({mod})" for m, c in rand["curves"].items() for mod in c]
        columns = [c for curves in rand["curves"].values() for c in curves.values()]
        rows = [[stage, *(_number(c[i]) for c in columns)] for i, stage in enumerate(rand["stages"])]
        lines.append(format_table(["stage", *names], rows, "md"))
    return "\n".join(lines) + "\n"


def _cell(summary: dict[str, Any] | None) -> str:
    if summary is None or summary["mean"] is None:
        return "–"
    return f"{summary['mean']:.3f} [{summary['ci_low']:.3f}, {summary['ci_high']:.3f}]"


def _number(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"
