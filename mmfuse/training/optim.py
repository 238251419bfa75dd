"""AdamW parameter groups for fine-tuning: a learning-rate multiplier per module, layer-wise learning-rate decay
inside the encoders (BEiT, arXiv:2106.08254, as timm's ``param_groups_layer_decay``), and no weight decay on norms,
biases and embeddings (timm's ``param_groups_weight_decay`` rule, plus ``nn.Embedding`` weights).

Layers come from the libraries, never from parameter-name patterns of our own: a timm backbone's ``group_matcher``
(through :func:`timm.models.group_parameters`, the call ``param_groups_layer_decay`` makes), and for a transformers
model the ``nn.ModuleList`` of its ``config.num_hidden_layers`` blocks. A parameter ``k`` groups below the top gets
``layer_decay ** k`` times the learning rate; the top is the encoder's projection and everything outside the encoders.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

import timm
import torch
from timm.models import group_parameters
from torch import nn
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from mmfuse.config import OptimConfig
from mmfuse.encoders import HFTextEncoder, TimmVisionEncoder, TimmVisionEncoderConfig, encoder_backbone
from mmfuse.encoders.timm_vision import first_line
from mmfuse.errors import ConfigError
from mmfuse.models import ImageTextModel

__all__ = ["check_optim_config", "encoder_layers", "param_groups", "warmup_schedule"]


def param_groups(model: ImageTextModel, cfg: OptimConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups of the model's trainable parameters (``requires_grad``; frozen ones are left out).

    Returns:
        One group per module, encoder layer and decay kind, each with ``params``, ``lr`` (``cfg.lr`` times its
        ``lr_scale``), ``lr_scale`` (``lr_mult`` of its module times ``layer_decay ** (top - layer)``; in an encoder
        the multiplier scales the pretrained backbone, while the projection to the common width, new and randomly
        initialised, trains at ``cfg.lr`` like the fusion and heads),
        ``weight_decay`` (``cfg.weight_decay``, or 0 for norms, biases and embeddings) and ``name``
        (``<module>[.layer<k>|.proj][/no_decay]``, e.g. ``text.layer0/no_decay`` for the text embeddings,
        ``vision.proj`` for the vision encoder's projection).
    """
    _check_lr_mult(model, cfg)
    layers = _layer_scales(model, cfg.layer_decay) if cfg.layer_decay is not None else {}
    exempt = _no_weight_decay(model)
    groups: dict[str, dict[str, Any]] = {}
    for module_name, module in model.named_children():
        is_encoder = module is model.vision or module is model.text  # lr_mult scales an encoder's backbone only
        scaled = {id(p) for p in (encoder_backbone(module) if is_encoder else module).parameters()}
        for p in module.parameters():
            if not p.requires_grad:
                continue
            adapter = id(p) not in scaled  # an encoder's projection (and position embedding), outside its backbone
            mult = 1.0 if adapter else cfg.lr_mult.get(module_name, 1.0)
            layer, scale = layers.get(id(p), (None, 1.0))
            decays = id(p) not in exempt
            name = (
                module_name
                + (".proj" if adapter else "" if layer is None else f".layer{layer}")
                + ("" if decays else "/no_decay")
            )
            group = groups.setdefault(
                name,
                {
                    "name": name,
                    "params": [],
                    "lr": cfg.lr * mult * scale,
                    "lr_scale": mult * scale,
                    "weight_decay": cfg.weight_decay if decays else 0.0,
                },
            )
            group["params"].append(p)
    return list(groups.values())


def warmup_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> Any:
    """The learning-rate schedule of ``cfg``, stepped every optimizer step: linear warm-up over
    ``cfg.warmup_ratio`` of ``total_steps``, then cosine decay to zero (``schedule: cosine``) or constant."""
    warmup = int(cfg.warmup_ratio * total_steps)
    if cfg.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def check_optim_config(model: ImageTextModel, cfg: OptimConfig) -> None:
    """Raise a one-line ConfigError for an ``lr_mult`` key that is not a module of ``model``, or a ``layer_decay``
    on an encoder without layers (checked when the LightningModule is built, before any training)."""
    _check_lr_mult(model, cfg)
    if cfg.layer_decay is not None:
        _layer_scales(model, cfg.layer_decay)


def _check_lr_mult(model: ImageTextModel, cfg: OptimConfig) -> None:
    modules = [name for name, _ in model.named_children()]
    unknown = [name for name in cfg.lr_mult if name not in modules]
    if unknown:
        raise ConfigError(
            f"optim.lr_mult: {unknown[0]!r} is not a module of this model; its modules: {sorted(modules)}"
        )


def encoder_layers(
    model: ImageTextModel, kind: Literal["vision", "text"], layer_decay: float
) -> tuple[dict[int, int], int]:
    """The layer of each parameter of an encoder's backbone, and the top layer.

    Returns:
        (``{id(parameter): layer}``, ``top``): layers count from 0 at the input (a ViT's patch embedding, a text
        model's embeddings); ``top`` is one above the backbone's last layer: that of the projection.

    Raises:
        ConfigError: the encoder has no layers (torchvision's feature graphs, a text model without a list of
            ``num_hidden_layers`` blocks).
    """
    encoder = getattr(model, kind)
    if isinstance(encoder, TimmVisionEncoder):
        return _timm_layers(encoder.backbone, model.cfg.vision, encoder.img_size, layer_decay)
    if isinstance(encoder, HFTextEncoder):
        return _hf_layers(encoder.model, layer_decay)
    named = model.cfg.vision.model_name if kind == "vision" else model.cfg.text.pretrained or model.cfg.text.model_type
    raise ConfigError(
        f"optim.layer_decay={layer_decay}: the {kind} encoder {named!r} ({type(encoder).__name__}) has no "
        "layers to decay over; use a timm or transformers encoder, or set optim.layer_decay: null"
    )


def _layer_scales(model: ImageTextModel, layer_decay: float) -> dict[int, tuple[int, float]]:
    """``{id(parameter): (layer, layer_decay ** (top - layer))}`` of the parameters of the encoders' backbones
    (frozen backbones, e.g. ``speed.freeze_vision``, are skipped)."""
    scales: dict[int, tuple[int, float]] = {}
    for kind in ("vision", "text"):
        encoder = getattr(model, kind)
        if encoder is None or not any(p.requires_grad for p in encoder_backbone(encoder).parameters()):
            continue
        layers, top = encoder_layers(model, kind, layer_decay)
        scales |= {key: (layer, layer_decay ** (top - layer)) for key, layer in layers.items()}
    return scales


def _timm_layers(
    backbone: nn.Module, cfg: TimmVisionEncoderConfig, img_size: int, layer_decay: float
) -> tuple[dict[int, int], int]:
    """Layers of a timm backbone from its ``group_matcher``. A ``features_only`` wrapper (CNNs, hierarchical
    transformers) has none: the matcher of the whole model (built on the meta device, no weights) applies, because
    the wrapper's parameters are the first ones of the whole model, in the same order and shapes."""
    matched: Any = backbone
    if not hasattr(backbone, "group_matcher"):
        with torch.device("meta"):
            try:
                matched = timm.create_model(cfg.model_name, img_size=img_size, **cfg.model_kwargs)
            except TypeError:  # a model that takes no img_size
                matched = timm.create_model(cfg.model_name, **cfg.model_kwargs)
    try:
        by_name: dict[str, int] = group_parameters(matched, matched.group_matcher(coarse=False), reverse=True)
    except (AttributeError, NotImplementedError) as err:
        raise ConfigError(
            f"optim.layer_decay={layer_decay}: the vision encoder {cfg.model_name!r} has no layer grouping "
            f"in timm ({first_line(err)}); set optim.layer_decay: null"
        ) from err
    whole = list(matched.named_parameters())
    own = list(backbone.named_parameters())
    if matched is not backbone:
        if len(own) > len(whole) or any(p.shape != q.shape for (_, p), (_, q) in zip(own, whole, strict=False)):
            raise ConfigError(
                f"optim.layer_decay={layer_decay}: the layers of {cfg.model_name!r} cannot be matched to its "
                "feature extractor's parameters; set optim.layer_decay: null"
            )
        own_to_whole = {id(p): name for (_, p), (name, _) in zip(own, whole, strict=False)}
    else:
        own_to_whole = {id(p): name for name, p in own}
    last = max((by_name[name] for name in own_to_whole.values() if name in by_name), default=0)
    layers = {key: by_name.get(name, last) for key, name in own_to_whole.items()}  # unmatched: the last group, as timm
    return layers, last + 1


def _hf_layers(model: nn.Module, layer_decay: float) -> tuple[dict[int, int], int]:
    """Layers of a transformers model: block ``i`` of the ``nn.ModuleList`` holding its ``config.num_hidden_layers``
    blocks (``encoder.layer``, ``transformer.layer``, ``encoder.layers``, ``encoder.block``...) is layer ``i + 1``;
    parameters registered before the blocks (the embeddings) are layer 0, those after them (a final norm) the top."""
    config: Any = getattr(model, "config", None)
    depth = int(getattr(config, "num_hidden_layers", 0) or 0)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and depth and len(m) == depth]
    if not candidates:
        kind = getattr(config, "model_type", type(model).__name__)
        raise ConfigError(
            f"optim.layer_decay={layer_decay}: the text encoder {kind!r} has no list of its "
            f"num_hidden_layers={depth} blocks; set optim.layer_decay: null"
        )
    blocks = max(candidates, key=lambda m: sum(p.numel() for p in m.parameters()))
    in_block = {id(p): i + 1 for i, block in enumerate(blocks) for p in block.parameters()}
    layers: dict[int, int] = {}
    after_blocks = False
    for p in model.parameters():  # registration order: embeddings, the blocks, then anything on top
        after_blocks = after_blocks or id(p) in in_block
        layers[id(p)] = in_block.get(id(p), depth + 1 if after_blocks else 0)
    return layers, depth + 1


def _no_weight_decay(model: nn.Module) -> set[int]:
    """``id``s of the parameters without weight decay: ndim <= 1 (biases, norm weights, scalars), ``nn.Embedding``
    weights, and the names any submodule lists in its ``no_weight_decay()`` (timm: ``pos_embed``, ``cls_token``)."""
    exempt = {id(p) for p in model.parameters() if p.ndim <= 1}
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            exempt.add(id(module.weight))
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed):
            patterns = list(listed())
            for name, p in module.named_parameters():
                if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):  # timm's _matches_pattern
                    exempt.add(id(p))
    return exempt
