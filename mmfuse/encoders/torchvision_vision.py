"""Any torchvision classification model as a token encoder (``model_name: torchvision:<name>``).

The model is built with :func:`torchvision.models.get_model` and cut with
:func:`torchvision.models.feature_extraction.create_feature_extractor` at one node of its traced graph, found from
the shapes of every node (free probes on the meta device) with one rule for every family: the tapped node is the
last one whose output is still a per-image spatial map, a square ``(B, C, G, G)`` map with ``G > 1`` or
``(B, N, C)`` tokens with ``N > 1``, at the weights' native input side, that grows with the input (so not a
fixed-size adaptive pool). That is the map right before the global pool (ResNet's ``layer4``, MobileNet's
``features.18``, ConvNeXt's last block, VGG's last max pool, Swin's NCHW ``permute``), or the final ``encoder.ln``
tokens of a ViT (class token first; the grid is that of its patch embedding). Its ``(B, C, Gh, Gw)`` map is
flattened to ``Gh * Gw`` tokens and projected to the common width.

Weights: a local state dict in torchvision's layout (``pretrained: <path>``), or the weights the name's tag names
(``torchvision:mobilenet_v2.IMAGENET1K_V1``; no tag: ``DEFAULT``)
from the torch hub cache (``pretrained: true``), downloaded only when ``HF_HUB_OFFLINE`` is not set.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from contextlib import redirect_stderr, suppress
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.feature_extraction import DualGraphModule, create_feature_extractor, get_graph_node_names

from mmfuse._weights import (
    TORCHVISION_PREFIX,
    TorchvisionMeta,
    load_state_dict_strict,
    read_state_dict,
    torchvision_meta,
    torchvision_names,
)
from mmfuse.encoders.base import VISION_ENCODERS, image_tokens_output
from mmfuse.encoders.timm_vision import TimmVisionEncoderConfig, first_line
from mmfuse.errors import ConfigError
from mmfuse.registry import close_matches
from mmfuse.types import EncoderOutput

__all__ = ["TorchvisionVisionEncoder", "FeatureGraph", "torchvision_hub_file", "vision_data_config"]

_OUTPUT = "features"  # key of the tapped node in the feature extractor's output dict
_PROBE_BATCH = 2  # batch of the shape probes: tells per-image maps from windows or heads folded into dim 0
_OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub reads as HF_HUB_OFFLINE switched on


class FeatureGraph(DualGraphModule):
    """Torchvision's feature extractor (a train and an eval graph, swapped by ``train()``), whose copies keep the
    train/eval mode of every module: torchvision's ``__deepcopy__`` leaves the whole copy in train mode."""

    def __deepcopy__(self, memo: dict[int, Any]) -> FeatureGraph:
        copied: FeatureGraph = super().__deepcopy__(memo)
        copied.train(self.training)  # swaps in the graph of that mode
        for original, module in zip(self.modules(), copied.modules(), strict=True):
            module.training = original.training
        return copied


@dataclass(frozen=True)
class _Tap:
    """Where the encoder cuts the model, and what it gives there at ``img_size``."""

    node: str
    channels: int
    grid_size: tuple[int, int]
    num_prefix_tokens: int


@VISION_ENCODERS.register("torchvision")
class TorchvisionVisionEncoder(nn.Module):
    """A torchvision classification model giving (B, N, D) tokens, normalised with its default weights' statistics.

    Args:
        cfg: encoder config (the timm encoder's): ``model_name`` is ``torchvision:<name>``; ``pretrained`` is a local
            state dict file, True for the weights the name's tag names (default: ``DEFAULT``) from the torch hub
            cache, or None;
            ``num_stages`` cuts at the last node of the N-th feature-map resolution (None = the last spatial map);
            ``model_kwargs`` go to ``torchvision.models.get_model``.
        out_dim: common width D that the tokens are projected to.
        img_size: input side used when ``cfg.img_size`` is None.
    """

    def __init__(self, cfg: TimmVisionEncoderConfig, out_dim: int, img_size: int) -> None:
        super().__init__()
        self.model_name, weights_tag = _checked_name(cfg.model_name)
        self.img_size = cfg.img_size or img_size
        meta = torchvision_meta(self.model_name, weights_tag)
        model = _build_model(self.model_name, dict(cfg.model_kwargs), self.img_size)
        if cfg.pretrained:  # True: the tagged (or DEFAULT) weights; a string: a local file
            state, source = _pretrained_state(cfg.pretrained, self.model_name, meta)
            load_state_dict_strict(model, state, source, f"{TORCHVISION_PREFIX}{self.model_name}")
        tap = _tap(model, self.model_name, cfg.num_stages, self.img_size, meta.image_size)
        self.feature_node = tap.node
        self.grid_size: tuple[int, int] = tap.grid_size
        self.num_prefix_tokens = tap.num_prefix_tokens
        graphs = create_feature_extractor(model, return_nodes={tap.node: _OUTPUT}, suppress_diff_warning=True)
        self.backbone = FeatureGraph(graphs, graphs.train_graph, graphs.eval_graph, "FeatureGraph")
        self.preprocess_cfg = {"mean": meta.mean, "std": meta.std, "size": self.img_size}
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(meta.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(meta.std).view(1, 3, 1, 1), persistent=False)
        self.out_dim = out_dim
        self.proj = nn.Linear(tap.channels, out_dim)
        gh, gw = self.grid_size
        self.pos_embed: nn.Parameter | None = (
            nn.Parameter(torch.randn(1, gh * gw, out_dim) * 0.02) if cfg.use_pos_embed else None
        )
        self.use_grad_checkpointing = False

    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay, as timm models list theirs: the grid's position embedding."""
        return {"pos_embed"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone in the backward pass instead of keeping its activations (one segment: a traced
        graph has no blocks to checkpoint one by one)."""
        self.use_grad_checkpointing = enable

    def forward_features(self, images: Tensor) -> Tensor:
        """The backbone's output at the tapped node, before the projection.

        Args:
            images: (B, 3, H, W) float in [0, 1].

        Returns:
            (B, C, Gh, Gw) feature map, or (B, N, C) tokens (a ViT: prefix tokens first).
        """
        x = (images - self.mean) / self.std
        if self.use_grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self.backbone, x, use_reentrant=False)[_OUTPUT]
        return self.backbone(x)[_OUTPUT]

    def forward(self, images: Tensor) -> EncoderOutput:
        """Encode images.

        Args:
            images: (B, 3, H, W) float in [0, 1], H = W = ``img_size``.

        Returns:
            EncoderOutput with tokens (B, N, D), N = num_prefix_tokens + Gh * Gw, and pooled (B, D) (the mean of
            the grid tokens).
        """
        features = self.forward_features(images)  # (B, C, Gh, Gw) map, or (B, N, C) tokens of a ViT
        return image_tokens_output(features, self.proj, self.pos_embed, self.num_prefix_tokens, self.grid_size)


def _checked_name(model_name: str) -> tuple[str, str | None]:
    """The torchvision name and weights tag in ``torchvision:<name>[.<WEIGHTS>]`` (``mobilenet_v2.IMAGENET1K_V1``: the
    tag names a member of the model's weights enum, as a timm tag does); unknown ones raise with close matches."""
    name, _, tag = model_name.removeprefix(TORCHVISION_PREFIX).partition(".")
    known = torchvision_names()
    if name not in known:
        hint = close_matches(name, known, n=6)
        raise ConfigError(
            f"model.vision.model_name={model_name!r} is not a torchvision classification model. Close matches: "
            f"{[TORCHVISION_PREFIX + h for h in hint]}"
        )
    tags = list(torchvision.models.get_model_weights(name).__members__)
    if tag and tag not in tags:
        raise ConfigError(f"model.vision.model_name={model_name!r}: {name} has no weights {tag!r}. Its weights: {tags}")
    return name, tag or None


def _build_model(name: str, kwargs: dict[str, Any], img_size: int) -> nn.Module:
    """``get_model(name, weights=None, **kwargs)``; a model built for one input side (a ViT) is built for
    ``img_size`` unless ``kwargs`` set ``image_size``."""
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except TypeError as err:  # a keyword the builder or the model class does not take (or takes from the builder)
        found = re.search(r"keyword argument '(\w+)'", str(err))
        if found and found.group(1) in kwargs:
            raise ConfigError(
                f"model.vision.model_kwargs.{found.group(1)} is not an argument of {TORCHVISION_PREFIX}{name} "
                "(settings of another backbone? clear them with --model.vision.model_kwargs '{}')"
            ) from err
        raise ConfigError(
            f"model.vision.model_kwargs={kwargs} do not fit {TORCHVISION_PREFIX}{name}: {first_line(err)}"
        ) from err
    except (ValueError, AssertionError) as err:  # a value the model refuses
        raise ConfigError(
            f"model.vision.model_kwargs={kwargs} do not fit {TORCHVISION_PREFIX}{name}: {first_line(err)}"
        ) from err
    fixed = getattr(model, "image_size", None)
    if isinstance(fixed, int) and fixed != img_size and "image_size" not in kwargs:
        return _build_model(name, {**kwargs, "image_size": img_size}, img_size)
    return model


def _pretrained_state(pretrained: Any, name: str, meta: TorchvisionMeta) -> tuple[Mapping[str, Tensor], str]:
    """The state dict that ``pretrained`` names, and how to name it in a message."""
    if pretrained is True:
        return _default_weights(name, meta), f"torchvision's default weights {meta.url!r}"
    file = Path(str(pretrained)).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"model.vision.pretrained={pretrained!r}: no such file (a torchvision model reads a local state dict "
            "file, or pretrained: true for torchvision's default weights)"
        )
    return read_state_dict(file), f"model.vision.pretrained weights {str(pretrained)!r}"


def torchvision_hub_file(url: str) -> Path:
    """Where torch hub keeps the file downloaded from ``url``: ``torch.hub.get_dir()/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _default_weights(name: str, meta: TorchvisionMeta) -> Mapping[str, Tensor]:
    """Torchvision's weights of ``name`` (the tag's, else ``DEFAULT``) from the torch hub cache; downloaded there unless
    offline."""
    if meta.url is None:
        raise ConfigError(f"model.vision.pretrained=True: {TORCHVISION_PREFIX}{name} has no default weights")
    file = torchvision_hub_file(meta.url)
    if file.is_file():
        return read_state_dict(file)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _OFFLINE_VALUES:
        raise ConfigError(
            f"model.vision.pretrained=True: the weights of {TORCHVISION_PREFIX}{name} are not in the torch "
            f"hub cache (looked for {file}) and HF_HUB_OFFLINE is set, so they are not downloaded; put the file from "
            f"{meta.url} there, or set model.vision.pretrained to a local state dict file"
        )
    try:
        state: Mapping[str, Tensor] = torch.hub.load_state_dict_from_url(
            meta.url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except OSError as err:  # no network, or a refused address: one line naming what was fetched
        raise ConfigError(f"model.vision.pretrained=True: could not download {meta.url} to {file} ({err})") from err
    return state


def _tap(model: nn.Module, name: str, num_stages: int | None, img_size: int, native_size: int) -> _Tap:
    """Choose the node to cut ``model`` at and measure its output at ``img_size`` (shape probes on meta)."""
    train_nodes, eval_nodes = get_graph_node_names(model, suppress_diff_warning=True)
    in_both = set(train_nodes)
    nodes = [node for node in eval_nodes if node in in_both]  # a node the extractor can return in either mode
    probe = create_feature_extractor(model, return_nodes=nodes, suppress_diff_warning=True).eval()
    # The node is chosen at the weights' native side, where the last map is still larger than 1x1; a model built
    # for one input side (a ViT) is probed at that side.
    fixed = isinstance(getattr(model, "image_size", None), int)
    select_size = img_size if fixed else max(img_size, native_size)
    shapes = _node_shapes(probe, select_size, name)
    grids = [node for node, shape in shapes.items() if _is_grid(shape)]
    if not fixed:  # a map must follow the input: VGG's adaptive pool to 7x7 is a resize, not the last stage
        with suppress(ConfigError):  # a model that takes one side only (MaxViT) keeps every map
            larger = _node_shapes(probe, 2 * select_size, name)
            grids = [node for node in grids if larger[node] != shapes[node]]
    if not grids:
        raise ConfigError(f"model.vision.model_name='{TORCHVISION_PREFIX}{name}' has no spatial feature map to tap")
    node = _chosen_node(grids, shapes, num_stages, name)
    at_size = shapes if select_size == img_size else _node_shapes(probe, img_size, name)
    shape = at_size[node]
    if len(shape) == 4:
        return _Tap(node, int(shape[1]), (int(shape[2]), int(shape[3])), 0)
    # (B, N, C) tokens: N = prefix tokens + the grid of the last square map before them (a ViT's patch embedding)
    order = list(at_size)
    maps = [n for n in order[: order.index(node)] if len(at_size[n]) == 4 and at_size[n][2] == at_size[n][3]]
    grid = (int(at_size[maps[-1]][2]), int(at_size[maps[-1]][3])) if maps else None
    if grid is None or grid[0] * grid[1] > shape[1]:
        raise ConfigError(
            f"model.vision.model_name='{TORCHVISION_PREFIX}{name}': the {tuple(shape)} tokens of {node!r} follow no "
            "patch grid that they could hold"
        )
    return _Tap(node, int(shape[2]), grid, int(shape[1]) - grid[0] * grid[1])


def _node_shapes(probe: nn.Module, size: int, name: str) -> dict[str, torch.Size]:
    """Output shape of every tensor node of ``probe`` for a (2, 3, size, size) batch, computed on the meta device."""
    images = torch.empty(_PROBE_BATCH, 3, size, size, device="meta")
    tensors = chain(probe.named_parameters(), probe.named_buffers())
    meta_state = {key: torch.empty_like(value, device="meta") for key, value in tensors}
    try:
        with redirect_stderr(io.StringIO()):  # torch.fx prints the failing line of the traced code to stderr
            outputs = torch.func.functional_call(probe, meta_state, (images,))
    except Exception as err:  # the model's own check of the input (ViT: wrong side; Inception: too small); one line
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise ConfigError(
            f"model.vision.img_size={size}: {TORCHVISION_PREFIX}{name} does not take {size}x{size} images ({reason})"
        ) from err
    return {node: value.shape for node, value in outputs.items() if isinstance(value, Tensor) and value is not images}


def _is_grid(shape: torch.Size) -> bool:
    """A per-image spatial map: a square (B, C, G, G) map with G > 1, or (B, N, C) tokens with N > 1.

    A square probe gives square NCHW maps; a channels-last (B, G, G, C) map (Swin's stages) is not square there.
    """
    if len(shape) == 4:
        return shape[0] == _PROBE_BATCH and shape[2] == shape[3] > 1
    return len(shape) == 3 and shape[0] == _PROBE_BATCH and shape[1] > 1


def _chosen_node(grids: list[str], shapes: Mapping[str, torch.Size], num_stages: int | None, name: str) -> str:
    """The last spatial node, or with ``num_stages = k`` the end of the k-th feature-map resolution."""
    last = grids[-1]
    if num_stages is None:
        return last
    if len(shapes[last]) != 4:
        raise ConfigError(
            f"model.vision.num_stages={num_stages}: {TORCHVISION_PREFIX}{name} gives tokens ({last!r}), not a "
            "stack of feature maps to cut; leave num_stages unset"
        )
    stages = _stage_ends([node for node in grids if len(shapes[node]) == 4], shapes)
    if not 1 <= num_stages <= len(stages):
        raise ConfigError(
            f"model.vision.num_stages={num_stages}: {TORCHVISION_PREFIX}{name} has {len(stages)} feature-map "
            f"resolutions, ending at {stages}"
        )
    return stages[num_stages - 1]


def _stage_ends(maps: list[str], shapes: Mapping[str, torch.Size]) -> list[str]:
    """Where each feature-map side ends, in the order the model reaches the sides; the last one is the last map.

    A side ends at its last node before the first node of the next side, skipping nodes that share a block (a
    module below the top level) with that node: they are the input side of the downsampling block itself
    (MobileNet's expansion conv before its strided depthwise conv, ConvNeXt's norm before its strided conv).
    """
    side = {node: int(shapes[node][2]) for node in maps}
    ends: dict[int, str] = {}  # side -> its last node; the dict keeps the order the sides are reached in
    for j in range(1, len(maps)):
        before, first = maps[j - 1], maps[j]
        if side[before] == side[first]:
            continue
        run = [node for node in maps[:j] if side[node] == side[before]]
        outside = [node for node in run if _shared_modules(node, first) < 2]
        if outside:
            ends[side[before]] = outside[-1]
    ends[side[maps[-1]]] = maps[-1]
    return list(ends.values())


def _shared_modules(node: str, other: str) -> int:
    """How many leading module names the two nodes' enclosing modules share (``features.4.conv.0`` and
    ``features.4.conv.1``: 3)."""
    shared = 0
    for a, b in zip(node.split(".")[:-1], other.split(".")[:-1], strict=False):
        if a != b:
            break
        shared += 1
    return shared


def vision_data_config(cfg: TimmVisionEncoderConfig, img_size: int) -> dict[str, Any]:
    """The data config of a ``torchvision:<name>[.<WEIGHTS>]`` encoder in timm's keys (``input_size`` at
    ``img_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``), from the transforms of the
    weights the name names (no tag: ``DEFAULT``); metadata only, nothing is built or downloaded. ``crop_pct`` is their
    crop side over their resize side (224 / 256 = 0.875 for most ImageNet-1k weights).

    Example:
        >>> cfg = vision_data_config(TimmVisionEncoderConfig(model_name="torchvision:resnet18"), 64)
        >>> cfg["input_size"], cfg["crop_pct"], cfg["interpolation"]
        ((3, 64, 64), 0.875, 'bilinear')
    """
    name, tag = _checked_name(cfg.model_name)
    enum = torchvision.models.get_model_weights(name)
    preset = (enum[tag] if tag else enum.DEFAULT).transforms()  # every classification model has one
    crop, resize = preset.crop_size[0], preset.resize_size[0]
    size = cfg.img_size or img_size
    return {
        "input_size": (3, size, size),
        "interpolation": preset.interpolation.value,
        "crop_pct": crop / resize,
        "crop_mode": "center",
        "mean": tuple(preset.mean),
        "std": tuple(preset.std),
    }
