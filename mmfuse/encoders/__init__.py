"""Image and text encoders; the imports below fill the registries."""

from mmfuse.encoders.base import (
    TEXT_ENCODERS,
    VISION_ENCODERS,
    build_text_encoder,
    build_vision_encoder,
    encoder_backbone,
)
from mmfuse.encoders.hf_text import HFTextEncoder, HFTextEncoderConfig
from mmfuse.encoders.timm_vision import TimmVisionEncoder, TimmVisionEncoderConfig
from mmfuse.encoders.torchvision_vision import TorchvisionVisionEncoder

__all__ = [
    "encoder_backbone",
    "VISION_ENCODERS",
    "TEXT_ENCODERS",
    "build_vision_encoder",
    "build_text_encoder",
    "TimmVisionEncoder",
    "TimmVisionEncoderConfig",
    "TorchvisionVisionEncoder",
    "HFTextEncoder",
    "HFTextEncoderConfig",
]
