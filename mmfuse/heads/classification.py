"""Classification head; a VQA question over an answer vocabulary is classification too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from mmfuse.heads.base import HEADS

__all__ = ["ClassificationHead", "ClassificationHeadConfig"]


@dataclass(frozen=True)
class ClassificationHeadConfig:
    """Config of :class:`ClassificationHead`.

    Attributes:
        name: registry key.
        num_classes: number of classes; None takes it from the data, and a value that disagrees with the data
            is an error.
        hidden_dim: width of one hidden layer; 0 = a single linear layer.
        dropout: dropout before the output layer.
    """

    name: Literal["classification"] = "classification"
    num_classes: int | None = None
    hidden_dim: int = 0
    dropout: float = 0.0


@HEADS.register("classification")
class ClassificationHead(nn.Module):
    """``logits = Linear(Dropout(act(Linear(x))))`` or ``Linear(Dropout(x))``.

    Args:
        cfg: head config.
        dim: input width D.
        num_classes: number of classes K.
    """

    def __init__(self, cfg: ClassificationHeadConfig, dim: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if cfg.hidden_dim:
            layers += [nn.Linear(dim, cfg.hidden_dim), nn.GELU()]
            dim = cfg.hidden_dim
        layers += [nn.Dropout(cfg.dropout), nn.Linear(dim, num_classes)]
        self.net = nn.Sequential(*layers)
        self.num_classes = num_classes

    def forward(self, fused: Tensor) -> Tensor:
        """Args: fused (B, D). Returns: (B, K) logits."""
        return self.net(fused)
