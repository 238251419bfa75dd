"""Tiny image-text models and batches for the attribution tests."""

from __future__ import annotations

import dataclasses

import torch

from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.fusion import FusionConfig
from mmfuse.models import ImageTextModel
from mmfuse.types import Batch
from tests.conftest import TINY_SPEC, TINY_TEXT, TINY_VISION, random_text_batch

# 64 px so that the tiny CNNs keep a 2x2 grid after their 32x reduction (the ViT gets 8x8 patches of 8 px).
SPEC = dataclasses.replace(TINY_SPEC, image_size=64)


def make_model(vision: str = "resnet", text: str = "bert", co_attention: bool = False) -> ImageTextModel:
    """A random-init tiny model with the cross-attention fusion, in training mode like a model mid-fit."""
    cfg = ModelConfig(
        width=16, vision=TINY_VISION[vision], text=TINY_TEXT[text], fusion=FusionConfig(co_attention=co_attention)
    )
    return ImageTextModel(resolve_model_config(cfg, SPEC))


def make_batch(lengths: tuple[int, ...] = (6, 4, 2), length: int = 6) -> Batch:
    """Random images (B, 3, 64, 64) and token ids with padding at the end of the shorter rows."""
    ids, mask = random_text_batch(len(lengths), length, SPEC.vocab_size, list(lengths))
    images = torch.rand(len(lengths), 3, SPEC.image_size, SPEC.image_size)
    return Batch(images, ids, mask, torch.arange(len(lengths)) % SPEC.num_classes)
