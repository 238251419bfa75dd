"""Any timm model as a token encoder.

Token models (ViT family: they have ``num_prefix_tokens``) give their ``forward_features`` tokens, prefix tokens
included; every other model (CNNs, hierarchical transformers) is built with ``features_only=True`` and gives its
last kept feature map flattened to ``Gh * Gw`` tokens. Weights come only from a local file or directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from torch import Tensor, nn

from mmfuse.encoders.base import VISION_ENCODERS
from mmfuse.errors import ConfigError
from mmfuse.registry import close_matches
from mmfuse.types import EncoderOutput

__all__ = ["TimmVisionEncoder", "TimmVisionEncoderConfig", "resolve_local_weights"]

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "pytorch_model.pth")


@dataclass(frozen=True)
class TimmVisionEncoderConfig:
    """Config of :class:`TimmVisionEncoder`.

    Attributes:
        name: registry key.
        model_name: any name from ``timm.list_models()``.
        img_size: input side in pixels; None takes the dataset's image size.
        pretrained: local weights file, or a directory holding one of ``model.safetensors`` / ``pytorch_model.bin``;
            None = random init. Never fetched from a hub.
        num_stages: keep only the first N feature stages of a feature-map model (None = all).
        model_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``depth``, ``embed_dim``).
        use_pos_embed: add a learned position embedding to the grid tokens after projection. A CNN's flattened
            feature map reaches the fusion as an unordered set (attention is permutation-invariant), so questions
            about where things are need this; ViT tokens already carry their own.
    """

    name: Literal["timm"] = "timm"
    model_name: str = "resnet18"
    img_size: int | None = None
    pretrained: str | None = None
    num_stages: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    use_pos_embed: bool = False


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
    raise ConfigError(f"{field_name}={path!r}: no such file or directory (weights are only read from local paths)")


def _check_model_name(name: str) -> None:
    if name not in timm.list_models():
        hint = close_matches(name, timm.list_models(), n=6)
        raise ConfigError(f"model.vision.model_name={name!r} is not a timm model. Close matches: {hint}")


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
        _check_model_name(cfg.model_name)
        self.img_size = cfg.img_size or img_size
        kwargs: dict[str, Any] = dict(cfg.model_kwargs)
        if cfg.pretrained is not None:
            file = resolve_local_weights(cfg.pretrained, "model.vision.pretrained")
            kwargs["pretrained_cfg_overlay"] = {"file": str(file)}
        with torch.device("meta"):  # cheap probe: which kind of model is this, and what does it expect?
            probe = timm.create_model(cfg.model_name, **cfg.model_kwargs)
        self.is_token_model = hasattr(probe, "num_prefix_tokens")
        data_cfg = timm.data.resolve_model_data_config(probe)
        self.backbone: Any  # a timm model; typed loosely because its attributes depend on the family
        if self.is_token_model:
            self.backbone = timm.create_model(
                cfg.model_name, pretrained=cfg.pretrained is not None, num_classes=0, img_size=self.img_size, **kwargs
            )
            self.num_prefix_tokens = int(self.backbone.num_prefix_tokens)
            gh, gw = self.backbone.patch_embed.grid_size
            self.grid_size: tuple[int, int] = (int(gh), int(gw))
            native_dim = int(self.backbone.num_features)
        else:
            out_index = (cfg.num_stages - 1) if cfg.num_stages else -1
            self.backbone = timm.create_model(
                cfg.model_name,
                pretrained=cfg.pretrained is not None,
                features_only=True,
                out_indices=(out_index,),
                **kwargs,
            )
            self.num_prefix_tokens = 0
            native_dim = int(self.backbone.feature_info.channels()[-1])
            self.grid_size = self._measure_grid()
        self.preprocess_cfg = {"mean": tuple(data_cfg["mean"]), "std": tuple(data_cfg["std"]), "size": self.img_size}
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data_cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.out_dim = out_dim
        self.proj = nn.Linear(native_dim, out_dim)
        gh, gw = self.grid_size
        self.pos_embed: nn.Parameter | None = (
            nn.Parameter(torch.randn(1, gh * gw, out_dim) * 0.02) if cfg.use_pos_embed else None
        )

    @torch.no_grad()
    def _measure_grid(self) -> tuple[int, int]:
        was_training = self.backbone.training
        self.backbone.eval()
        fmap = self.backbone(torch.zeros(1, 3, self.img_size, self.img_size))[-1]
        self.backbone.train(was_training)
        return int(fmap.shape[-2]), int(fmap.shape[-1])

    def forward(self, images: Tensor) -> EncoderOutput:
        """Encode images.

        Args:
            images: (B, 3, H, W) float in [0, 1], H = W = ``img_size``.

        Returns:
            EncoderOutput with tokens (B, N, D), N = num_prefix_tokens + Gh * Gw, and pooled (B, D).
        """
        x = (images - self.mean) / self.std
        if self.is_token_model:
            tokens = self.backbone.forward_features(x)  # (B, N, C)
        else:
            fmap = self.backbone(x)[-1]  # (B, C, Gh, Gw)
            tokens = fmap.flatten(2).transpose(1, 2)  # (B, C, Gh, Gw) -> (B, Gh*Gw, C)
        tokens = self.proj(tokens)  # (B, N, C) -> (B, N, D)
        if self.pos_embed is not None:
            prefix, grid = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens :]
            tokens = torch.cat([prefix, grid + self.pos_embed], dim=1)  # (B, Gh*Gw, D) + (1, Gh*Gw, D)
        return EncoderOutput(
            tokens=tokens,
            mask=None,
            pooled=tokens[:, self.num_prefix_tokens :].mean(dim=1),
            num_prefix_tokens=self.num_prefix_tokens,
            grid_size=self.grid_size,
        )
