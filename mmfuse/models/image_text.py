"""ImageTextModel: vision encoder + text encoder + fusion + head, plain ``nn.Module``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mmfuse.config import ModelConfig
from mmfuse.encoders import build_text_encoder, build_vision_encoder
from mmfuse.errors import ConfigError
from mmfuse.fusion import build_fusion
from mmfuse.heads import ContrastiveHead, build_head
from mmfuse.types import EncoderOutput, FusionOutput

__all__ = ["ImageTextModel", "ModelOutput"]


@dataclass
class ModelOutput:
    """Output of :class:`ImageTextModel`.

    Attributes:
        logits: (B, K) class scores.
        fusion: the fusion output (fused vector, fused tokens, attention weights when asked).
        image: the vision encoder output, or None when the fusion ignores images.
        text: the text encoder output, or None when the fusion ignores text.
    """

    logits: Tensor
    fusion: FusionOutput
    image: EncoderOutput | None
    text: EncoderOutput | None


class ImageTextModel(nn.Module):
    """Image and text encoders feeding a fusion module and a task head.

    Encoders that the fusion does not read (``image_only`` / ``text_only`` baselines) are not built, so every
    parameter of the model is trained.

    For ``task: retrieval`` the head is the two-class image-text matching (ITM) head, and a
    :class:`~mmfuse.heads.ContrastiveHead` (``contrastive``) embeds the encoders' pooled outputs for ranking (ITC);
    ``forward`` then gives the ITM logits of the given pairs. For other tasks ``contrastive`` is None.

    Args:
        cfg: a fully resolved config (see :func:`mmfuse.config.resolve_model_config`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.head.num_classes is None or cfg.vocab_size is None or cfg.vision.img_size is None:
            raise ConfigError("ImageTextModel needs a resolved config: call resolve_model_config(cfg, data_spec)")
        self.cfg = cfg
        self.fusion = build_fusion(cfg.fusion, dim=cfg.width)
        self.vision = (
            build_vision_encoder(cfg.vision, out_dim=cfg.width, img_size=cfg.vision.img_size)
            if self.fusion.uses_image
            else None
        )
        self.text = (
            build_text_encoder(
                cfg.text, out_dim=cfg.width, vocab_size=cfg.vocab_size, pad_token_id=cfg.pad_token_id or 0
            )
            if self.fusion.uses_text
            else None
        )
        self.head = build_head(cfg.head, dim=cfg.width, num_classes=cfg.head.num_classes)
        self.contrastive: ContrastiveHead | None = None
        if cfg.task == "retrieval":
            if self.vision is None or self.text is None:
                raise ConfigError(
                    f"model.task='retrieval' embeds both images and texts; model.fusion.name={cfg.fusion.name!r} "
                    "reads only one of them (use cross_attention or concat)"
                )
            self.contrastive = ContrastiveHead(cfg.contrastive, dim=cfg.width)

    def forward(
        self, images: Tensor, input_ids: Tensor, attention_mask: Tensor, return_attn_weights: bool = False
    ) -> ModelOutput:
        """Classify image-text pairs.

        Args:
            images: (B, 3, H, W) float in [0, 1].
            input_ids: (B, L) long token ids.
            attention_mask: (B, L) bool, True = real token.
            return_attn_weights: ask the fusion for its attention weights (slower path; for attribution).

        Returns:
            ModelOutput with logits (B, K).
        """
        image = self.vision(images) if self.vision is not None else None
        text = self.text(input_ids, attention_mask) if self.text is not None else None
        return self.fuse(image, text, return_attn_weights=return_attn_weights)

    def fuse(
        self, image: EncoderOutput | None, text: EncoderOutput | None, return_attn_weights: bool = False
    ) -> ModelOutput:
        """Fusion and head on encoder outputs computed already (retrieval encodes once, then fuses chosen pairs).

        Args:
            image: the vision encoder's output, tokens (B, N, D); None when the fusion ignores images.
            text: the text encoder's output, tokens (B, L, D) and mask (B, L); None when the fusion ignores text.
            return_attn_weights: ask the fusion for its attention weights.

        Returns:
            ModelOutput with logits (B, K).
        """
        fusion = self.fusion(image, text, return_attn_weights=return_attn_weights)
        return ModelOutput(logits=self.head(fusion.fused), fusion=fusion, image=image, text=text)

    def save_pretrained(self, directory: str | Path, tokenizer: Any = None, data_spec: Any = None) -> Path:
        """Write config, safetensors weights and tokenizer to ``directory`` (see :mod:`mmfuse.hub`)."""
        from mmfuse.hub import save_pretrained

        return save_pretrained(self, directory, tokenizer=tokenizer, data_spec=data_spec)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> ImageTextModel:
        """Load a model written by :meth:`save_pretrained`; needs no Lightning and no original weight files."""
        from mmfuse.hub import from_pretrained

        return from_pretrained(directory, map_location=map_location)
