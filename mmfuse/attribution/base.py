"""What every attribution method returns, and the registry that names the methods.

A method is a callable ``method(model, batch, target) -> Attribution`` registered in :data:`EXPLAINERS`; ``model``
is an :class:`~mmfuse.models.ImageTextModel` (in eval mode), ``batch`` a :class:`~mmfuse.types.Batch` on the
model's device, and ``target`` a :class:`~mmfuse.attribution.targets.Target` that picks one scalar per example from
the model's output (e.g. the logit of the predicted class).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from mmfuse.registry import Registry

__all__ = ["Attribution", "EXPLAINERS", "Explainer"]


@dataclass
class Attribution:
    """One method's explanation of a batch; relevance is non-negative, larger = more responsible.

    Attributes:
        method: registry name of the method.
        image: (B, H, W) relevance over pixels at the input resolution, or None when the method has no image map.
        image_grid: (B, gh, gw) relevance over the image tokens (the encoder's patch grid) before upsampling.
        text: (B, L) relevance per token, 0 on padding, or None when the method has no text map.
    """

    method: str
    image: Tensor | None = None
    image_grid: Tensor | None = None
    text: Tensor | None = None


Explainer = Callable[..., Attribution]
EXPLAINERS: Registry[Explainer] = Registry("explainer")
