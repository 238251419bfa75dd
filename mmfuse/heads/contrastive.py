"""Image-text contrastive (ITC) head: projections of both pooled encoder outputs into one normalised embedding
space, and a learned temperature. Its loss is the retrieval objective's (:func:`mmfuse.tasks.contrastive_loss`).

Reference: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (CLIP, 2021) for
the projections and the learned logit scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.errors import ConfigError

__all__ = ["ContrastiveHead", "ContrastiveHeadConfig"]


@dataclass(frozen=True)
class ContrastiveHeadConfig:
    """Config of :class:`ContrastiveHead` (built for ``model.task: retrieval``).

    Attributes:
        embed_dim: E, the width of the shared embedding space.
        temperature: initial softmax temperature (CLIP: 0.07); the logit scale is 1 / temperature.
        learn_temperature: learn the temperature (as CLIP's ``logit_scale``) or keep it fixed.
        max_logit_scale: upper clamp of the learned logit scale (CLIP: 100), which keeps the loss stable.
        itm_weight: weight of the image-text matching (ITM) loss added to this contrastive loss (weight 1) in
            training; ALBEF and BLIP add them with equal weight. A smaller one lets the contrastive ranking lead when
            few pairs train both.
    """

    embed_dim: int = 256
    temperature: float = 0.07
    learn_temperature: bool = True
    max_logit_scale: float = 100.0
    itm_weight: float = field(default=1.0, metadata={"training_only": True})  # shapes no weight

    def __post_init__(self) -> None:
        if not self.itm_weight >= 0.0:
            raise ConfigError(f"model.contrastive.itm_weight={self.itm_weight}: must be >= 0")
        if self.embed_dim <= 0 or not 0.0 < self.temperature or 1.0 / self.temperature > self.max_logit_scale:
            raise ConfigError(
                f"model.contrastive: embed_dim={self.embed_dim} must be positive and temperature={self.temperature} "
                f"in (1 / max_logit_scale, inf) = ({1.0 / self.max_logit_scale}, inf)"
            )


class ContrastiveHead(nn.Module):
    """Linear projections of pooled image and text features to L2-normalised E-dim embeddings, and a logit scale.

    Args:
        cfg: head config.
        dim: D, the width of the pooled encoder outputs.
    """

    def __init__(self, cfg: ContrastiveHeadConfig, dim: int) -> None:
        super().__init__()
        self.image_proj = nn.Linear(dim, cfg.embed_dim)
        self.text_proj = nn.Linear(dim, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)), cfg.learn_temperature)
        self.max_log_scale = math.log(cfg.max_logit_scale)

    def embed_image(self, pooled: Tensor) -> Tensor:
        """Args: pooled (B, D) image summary vectors. Returns: (B, E) unit-norm embeddings."""
        return F.normalize(self.image_proj(pooled), dim=-1)

    def embed_text(self, pooled: Tensor) -> Tensor:
        """Args: pooled (B, D) text summary vectors. Returns: (B, E) unit-norm embeddings."""
        return F.normalize(self.text_proj(pooled), dim=-1)

    def scale(self) -> Tensor:
        """The logit scale 1 / temperature, a scalar clamped to ``max_logit_scale``."""
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    def forward(self, image_pooled: Tensor, text_pooled: Tensor) -> Tensor:
        """Scaled text-to-image similarity logits.

        Args:
            image_pooled: (Bi, D) pooled image features.
            text_pooled: (Bt, D) pooled text features.

        Returns:
            (Bt, Bi) logits ``scale * cos(text, image)``; row t scores text t against every image.
        """
        return self.scale() * self.embed_text(text_pooled) @ self.embed_image(image_pooled).T
