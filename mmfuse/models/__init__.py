"""Pure PyTorch models."""

from mmfuse.models.image_text import ImageTextModel, ModelOutput

__all__ = ["ImageTextModel", "ModelOutput"]
