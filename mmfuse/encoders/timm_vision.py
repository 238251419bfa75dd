"""Any timm model as a token encoder, by name alone: architectures and pretrained tags (``resnet18.a1_in1k``).

Token models (the ViT family: ``num_prefix_tokens`` and a patch grid) give their ``forward_features`` tokens, prefix
tokens included; every other model (CNNs, hierarchical and hybrid transformers) is built with ``features_only=True``
and gives one feature stage (timm's ``feature_info``, ``out_indices``) flattened to ``Gh * Gw`` tokens, NCHW or NHWC
as timm reports it (``output_fmt``). Nothing below knows a model family: layouts, grids and widths are read from the
model. Weights: ``pretrained: true`` takes the ones the name (its tag) names, through the Hugging Face cache;
``pretrained: <path>`` a local file or directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from torch import Tensor, nn

from mmfuse.encoders.base import VISION_ENCODERS, image_tokens_output
from mmfuse.errors import ConfigError
from mmfuse.registry import close_matches
from mmfuse.types import EncoderOutput

__all__ = [
    "TimmVisionEncoder",
    "TimmVisionEncoderConfig",
    "resolve_local_weights",
    "first_line",
    "is_channels_last",
    "vision_data_config",
]

_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.pth",
    "pytorch_model.pth",
    "open_clip_model.safetensors",
)
_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")  # names timm resolves itself (a hub repo, a local model dir)


@dataclass(frozen=True)
class TimmVisionEncoderConfig:
    """Config of a vision encoder: :class:`TimmVisionEncoder`, or torchvision's for a ``torchvision:`` name.

    Attributes:
        name: registry key of the family used when ``model_name`` has no ``family:`` prefix.
        model_name: any name of ``timm.list_models()`` or ``timm.list_models(pretrained=True)`` (a tag such as
            ``resnet18.a1_in1k`` picks the weights and their data config: mean/std, input size, crop),
            ``hf-hub:<repo>``, or ``torchvision:<name>``.
        img_size: input side in pixels; None takes the dataset's image size. Passed to every model that takes one.
        pretrained: ``true`` = the weights the name names, through the Hugging Face cache (downloaded when online,
            read from the cache with ``HF_HUB_OFFLINE=1``); a path = a local weights file, or a directory holding
            ``model.safetensors`` / ``pytorch_model.bin``; None or ``false`` = random init.
        num_stages: keep only the first N feature stages (a feature-map model) or blocks (a token model); None = all.
        model_kwargs: extra keyword arguments for the model's constructor (e.g. ``depth``, ``embed_dim``); backbone
            specific, so a model that does not take one is named in the error.
        use_pos_embed: add a learned position embedding to the grid tokens after projection. A CNN's flattened
            feature map reaches the fusion as an unordered set (attention is permutation-invariant), so questions
            about where things are need this; ViT tokens already carry their own.
    """

    name: Literal["timm"] = "timm"
    model_name: str = "resnet18"
    img_size: int | None = None
    pretrained: bool | str | None = None
    num_stages: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    use_pos_embed: bool = False


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (for one-line errors)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def is_channels_last(model: nn.Module) -> bool:
    """Whether a timm model's feature maps are (B, H, W, C): its ``output_fmt`` is ``"NHWC"`` (a string on whole
    models such as Swin, a ``timm.layers.Format`` on ``features_only`` wrappers)."""
    fmt = getattr(model, "output_fmt", None)
    return str(getattr(fmt, "value", fmt)) == "NHWC"


def resolve_local_weights(path: str, field_name: str) -> Path:
    """The weights file at ``path`` (a file, or a directory holding a known weights file)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for candidate in _WEIGHT_FILES:
            if (p / candidate).is_file():
                return p / candidate
        raise ConfigError(f"{field_name}={path!r}: directory holds none of {list(_WEIGHT_FILES)}")
    raise ConfigError(f"{field_name}={path!r}: no such file or directory")


def check_model_name(name: str) -> None:
    """Raise a ConfigError listing close names (architectures and pretrained tags) unless timm knows ``name``."""
    if name.startswith(_HUB_PREFIXES):
        return
    arch, tag = timm.models.split_model_name_tag(name)
    if timm.is_model(arch) and (not tag or name in timm.list_models(pretrained=True)):
        return
    if timm.is_model(arch):
        tags = timm.list_pretrained(f"{arch}.*")
        raise ConfigError(f"model.vision.model_name={name!r}: {arch} has no pretrained tag {tag!r}. Its tags: {tags}")
    hint = close_matches(name, timm.list_models() + timm.list_models(pretrained=True), n=8)
    raise ConfigError(f"model.vision.model_name={name!r} is not a timm model. Close matches: {hint}")


def _create(name: str, kwargs: dict[str, Any], img_size: int, **extra: Any) -> nn.Module:
    """``timm.create_model`` with ``img_size`` given to every model that takes one; any failure inside timm becomes a
    one-line ConfigError naming the field (the original exception is its ``__cause__``)."""
    try:
        try:
            return timm.create_model(name, img_size=img_size, **kwargs, **extra)
        except TypeError as err:
            if "'img_size'" not in str(err):
                raise
        return timm.create_model(name, **kwargs, **extra)
    except Exception as err:  # noqa: BLE001 - any failure inside timm becomes one line naming the config
        raise _build_error(name, kwargs, err) from err


def _build_error(name: str, kwargs: dict[str, Any], err: BaseException) -> ConfigError:
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(err))
    if unexpected and unexpected.group(1) in kwargs:
        return ConfigError(
            f"model.vision.model_kwargs.{unexpected.group(1)} is not an argument of {name} (settings of another "
            "backbone? clear them with --model.vision.model_kwargs '{}')"
        )
    return ConfigError(
        f"model.vision.model_name={name!r} with model_kwargs={kwargs} cannot be built: {first_line(err)}"
    )


def _pretrained_error(name: str, err: BaseException) -> ConfigError:
    cfg = timm.models.get_pretrained_cfg(name)
    source = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or "no source known to timm"
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    from huggingface_hub import constants

    where = f"the Hugging Face cache {constants.HF_HUB_CACHE}" + (" (HF_HUB_OFFLINE=1: no download)" if offline else "")
    return ConfigError(
        f"model.vision.pretrained=true: weights of {name} ({source}) could not be loaded from {where}: "
        f"{first_line(err)}; give a local file with model.vision.pretrained: <path>"
    )


def _mismatch_error(model_name: str, weights: str, err: BaseException) -> ConfigError:
    """Weights of another architecture: name the first key that does not fit."""
    text = str(err)
    found = re.search(r"size mismatch for ([\w.]+)", text) or re.search(r'"([^"]+)"', text)
    detail = f"first key that does not fit: {found.group(1)!r}" if found else first_line(err)
    return ConfigError(f"model.vision.pretrained={weights!r} does not fit {model_name}: {detail}")


@VISION_ENCODERS.register("timm")
class TimmVisionEncoder(nn.Module):
    """A timm backbone giving (B, N, D) tokens, normalised with the model's own data config.

    Args:
        cfg: encoder config.
        out_dim: common width D that the tokens are projected to.
        img_size: input side used when ``cfg.img_size`` is None.
    """

    def __init__(self, cfg: TimmVisionEncoderConfig, out_dim: int, img_size: int) -> None:
        super().__init__()
        check_model_name(cfg.model_name)
        self.img_size = cfg.img_size or img_size
        kwargs: dict[str, Any] = dict(cfg.model_kwargs)
        with torch.device("meta"):  # cheap probe: which kind of model is this, and what does it expect?
            probe = _create(cfg.model_name, kwargs, self.img_size)
        self.is_token_model = _is_token_model(probe)
        self.backbone: Any  # a timm model; typed loosely because its attributes depend on the family
        self.backbone = self._build_backbone(cfg, kwargs)
        self.num_prefix_tokens = int(self.backbone.num_prefix_tokens) if self.is_token_model else 0
        self.channels_last_output = is_channels_last(self.backbone)
        data_cfg = timm.data.resolve_model_data_config(probe)
        self.data_config: dict[str, Any] = {**data_cfg, "input_size": (3, self.img_size, self.img_size)}
        self.preprocess_cfg = {"mean": tuple(data_cfg["mean"]), "std": tuple(data_cfg["std"]), "size": self.img_size}
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data_cfg["std"]).view(1, 3, 1, 1), persistent=False)
        native_dim, self.grid_size = self._measure(cfg.model_name, tuple(data_cfg["input_size"]))
        self.out_dim = out_dim
        self.proj = nn.Linear(native_dim, out_dim)
        gh, gw = self.grid_size
        self.pos_embed: nn.Parameter | None = (
            nn.Parameter(torch.randn(1, gh * gw, out_dim) * 0.02) if cfg.use_pos_embed else None
        )

    def _build_backbone(self, cfg: TimmVisionEncoderConfig, kwargs: dict[str, Any]) -> Any:
        extra: dict[str, Any] = {"pretrained": cfg.pretrained not in (None, False)}
        if isinstance(cfg.pretrained, str):
            extra["pretrained_cfg_overlay"] = {
                "file": str(resolve_local_weights(cfg.pretrained, "model.vision.pretrained"))
            }
        if self.is_token_model:
            extra["num_classes"] = 0
        else:
            extra |= {"features_only": True, "out_indices": ((cfg.num_stages - 1) if cfg.num_stages else -1,)}

        backbone: Any  # a timm model; its attributes depend on the family
        try:
            backbone = _create(cfg.model_name, kwargs, self.img_size, **extra)
        except ConfigError as err:
            cause = err.__cause__
            if isinstance(cfg.pretrained, str) and isinstance(cause, RuntimeError) and "state_dict" in str(cause):
                raise _mismatch_error(cfg.model_name, cfg.pretrained, cause) from cause
            if cfg.pretrained is True and cause is not None and not isinstance(cause, TypeError):
                raise _pretrained_error(cfg.model_name, cause) from cause
            raise
        if self.is_token_model:
            # Keep the blocks up to the tapped one and drop the head's own norm / attention pool, which no loss of
            # ours reaches (DDP rejects parameters without gradients). timm's generic pruning, no per-family code.
            blocks = len(backbone.feature_info) if hasattr(backbone, "feature_info") else None
            if cfg.num_stages and blocks is not None and not 1 <= cfg.num_stages <= blocks:
                raise ConfigError(f"model.vision.num_stages={cfg.num_stages}: {cfg.model_name} has {blocks} blocks")
            if hasattr(backbone, "prune_intermediate_layers") and blocks is not None:
                keep = (cfg.num_stages or blocks) - 1
                backbone.prune_intermediate_layers(indices=[keep], prune_norm=False, prune_head=True)
            elif cfg.num_stages:
                raise ConfigError(
                    f"model.vision.num_stages: {cfg.model_name} cannot be cut (no prune_intermediate_layers)"
                )
        return backbone

    def _measure(self, model_name: str, native_size: tuple[int, ...]) -> tuple[int, tuple[int, int]]:
        """(native width C, grid (Gh, Gw)), read from one forward pass at ``img_size``.

        The same pass finds the parameters that no output of the tapped stage reaches (a feature-map model's unused
        branches, e.g. HRNet's later fuse layers): they are frozen, so every trained parameter gets a gradient.
        """
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.enable_grad():
                features = self._features(torch.zeros(1, 3, self.img_size, self.img_size))
        except Exception as err:  # noqa: BLE001 - a size the family cannot take is a config problem, said once
            raise ConfigError(
                f"model.vision.model_name={model_name!r} does not run on {self.img_size} px images: "
                f"{first_line(err)}; give a size it takes with model.vision.img_size and the data's image_size "
                f"(its pretrained config uses {native_size[-1]} px)"
            ) from err
        finally:
            self.backbone.train(was_training)
        named = [(name, p) for name, p in self.backbone.named_parameters() if p.requires_grad]
        reached = torch.autograd.grad(features.float().sum(), [p for _, p in named], allow_unused=True)
        self.unused_parameters = [name for (name, p), grad in zip(named, reached) if grad is None]
        for name, p in named:
            if name in self.unused_parameters:
                p.requires_grad_(False)
        features = features.detach()
        if self.is_token_model:
            grid = self.backbone.patch_embed.grid_size
            gh, gw = int(grid[0]), int(grid[1])
            if features.dim() != 3 or features.shape[1] != self.num_prefix_tokens + gh * gw:
                raise ConfigError(
                    f"model.vision.model_name={model_name!r}: forward_features gave {tuple(features.shape)}, not "
                    f"{self.num_prefix_tokens} prefix tokens and a {gh}x{gw} grid"
                )
            return int(features.shape[-1]), (gh, gw)
        return int(features.shape[1]), (int(features.shape[2]), int(features.shape[3]))

    def _features(self, x: Tensor) -> Tensor:
        """(B, N, C) tokens of a token model, or a (B, C, Gh, Gw) feature map (NHWC stages permuted)."""
        if self.is_token_model:
            return self.backbone.forward_features(x)  # (B, N, C)
        fmap = self.backbone(x)[-1]
        # (B, Gh, Gw, C) -> (B, C, Gh, Gw) for NHWC stages (Swin, ...); NCHW maps pass through
        return fmap.permute(0, 3, 1, 2) if self.channels_last_output else fmap

    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay, as timm models list theirs: the grid's position embedding."""
        return {"pos_embed"}

    def forward(self, images: Tensor) -> EncoderOutput:
        """Encode images.

        Args:
            images: (B, 3, H, W) float in [0, 1], H = W = ``img_size``.

        Returns:
            EncoderOutput with tokens (B, N, D), N = num_prefix_tokens + Gh * Gw, and pooled (B, D).
        """
        x = (images - self.mean) / self.std
        return image_tokens_output(self._features(x), self.proj, self.pos_embed, self.num_prefix_tokens, self.grid_size)


def vision_data_config(cfg: TimmVisionEncoderConfig, img_size: int) -> dict[str, Any]:
    """The data config a :class:`TimmVisionEncoder` of ``cfg`` uses (``input_size`` at ``img_size``,
    ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``), without building it: timm's
    ``resolve_model_data_config`` of the model made on the meta device (no weights are read), as the encoder does.

    Example:
        >>> cfg = vision_data_config(TimmVisionEncoderConfig(model_name="resnet18.a1_in1k"), 64)
        >>> cfg["input_size"], cfg["crop_pct"], cfg["interpolation"]
        ((3, 64, 64), 0.95, 'bicubic')
    """
    check_model_name(cfg.model_name)
    with torch.device("meta"):
        probe = _create(cfg.model_name, dict(cfg.model_kwargs), cfg.img_size or img_size)
    size = cfg.img_size or img_size
    return {**timm.data.resolve_model_data_config(probe), "input_size": (3, size, size)}


def _is_token_model(model: nn.Module) -> bool:
    """A model whose ``forward_features`` gives (B, num_prefix_tokens + Gh * Gw, C) tokens: a prefix-token count and
    a patch grid, as timm's ViT family exposes them."""
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    return isinstance(getattr(model, "num_prefix_tokens", None), int) and grid is not None and len(grid) == 2
