"""The encoder contract, swept over timm architectures, Hugging Face text towers and torchvision models (timm-style).

Every vision model goes through an :class:`~mmfuse.models.ImageTextModel` with the cross-attention fusion at 64 px
(random init): output shapes, grid size and prefix tokens read from the model, padding invariance, a gradient for
every trained parameter, and Grad-CAM at the default layer equal to ``pytorch_grad_cam.GradCAM`` within 1e-4 -- both
inside the image-text model and on the plain timm classifier (NHWC and token models included).

The default run checks a representative subset (``CI_*``); the whole sweep is one marker away::

    pytest tests/test_contract_sweep.py -m "sweep or not sweep"
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pytest
import timm
import torch
from torch import nn

from mmfuse.attribution import ClassLogit, GradCAM, default_target_layer
from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.encoders import HFTextEncoderConfig, TimmVisionEncoderConfig
from mmfuse.encoders.timm_vision import is_channels_last
from mmfuse.errors import ConfigError
from mmfuse.fusion import FusionConfig
from mmfuse.models import ImageTextModel
from mmfuse.types import Batch
from tests.conftest import TINY_SPEC, TINY_TEXT, random_text_batch

pgc = pytest.importorskip("pytorch_grad_cam")

SIZE = 64
SPEC = dataclasses.replace(TINY_SPEC, image_size=SIZE)

# Architecture -> model_kwargs (empty: the architecture's own size, cheap enough at 64 px).
TIMM_SWEEP: dict[str, dict[str, Any]] = {
    # CNNs
    "resnet18": {"channels": [8, 16, 32, 64], "stem_width": 8},
    "resnet10t": {},
    "ecaresnet26t": {},
    "skresnet18": {},
    "resnest14d": {},
    "res2net50_14w_8s": {},
    "nf_resnet26": {},
    "botnet26t_256": {},
    "convnext_atto": {},
    "convnextv2_atto": {},
    "inception_next_atto": {},
    "efficientnet_b0": {},
    "tinynet_e": {},
    "mnasnet_small": {},
    "fbnetc_100": {},
    "mobilenetv3_small_050": {},
    "mobilenetv4_conv_small": {},
    "lcnet_050": {},
    "regnetx_002": {},
    "regnety_002": {},
    "densenet121": {},
    "dla34": {},
    "dpn48b": {},
    "hrnet_w18_small": {},
    "ese_vovnet19b_slim": {},
    "cs3darknet_focus_s": {},
    "gernet_s": {},
    "rexnet_100": {},
    "ghostnetv2_100": {},
    "hgnetv2_b0": {},
    "mobileone_s0": {},
    "repvit_m0_9": {},
    "xception41": {},
    # hybrids and hierarchical transformers (NCHW and NHWC stages)
    "swin_tiny_patch4_window7_224": {"embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2)},
    "mambaout_femto": {},
    "sequencer2d_s": {},
    "mobilevit_xxs": {},
    "fastvit_t8": {},
    "efficientvit_b0": {},
    "efficientformerv2_s0": {},
    "edgenext_xx_small": {},
    "tiny_vit_5m_224": {},
    "levit_128s": {},
    "pvt_v2_b0": {},
    "twins_pcpvt_small": {},
    "coat_lite_tiny": {},
    "gcvit_xxtiny": {},
    "maxvit_nano_rw_256": {},
    "nest_tiny": {},
    "poolformerv2_s12": {},
    "davit_tiny": {},
    "focalnet_tiny_srf": {},
    "hiera_tiny_224": {},
    "xcit_nano_12_p16_224": {},
    "pit_ti_224": {},
    "mixer_s16_224": {},
    "volo_d1_224": {},
    "tnt_s_patch16_224": {},
    # token models (prefix tokens + patch grid)
    "vit_tiny_patch16_224": {"depth": 2},
    "vit_small_patch16_224.augreg_in21k": {"depth": 2},
    "vit_tiny_r_s16_p8_224": {},
    "deit_tiny_patch16_224": {"depth": 2},
    "deit3_small_patch16_224": {"depth": 2},
    "flexivit_small": {"depth": 2},
    "vit_small_patch14_dinov2": {"depth": 2},
    "eva02_tiny_patch14_224": {"depth": 2},
    "beit_base_patch16_224": {"depth": 1, "embed_dim": 64, "num_heads": 2},
    "cait_xxs24_224": {"depth": 2},
}
CI_TIMM = (
    "resnet18",
    "convnext_atto",
    "efficientnet_b0",
    "swin_tiny_patch4_window7_224",
    "mambaout_femto",
    "vit_tiny_patch16_224",
    "eva02_tiny_patch14_224",
    "hrnet_w18_small",
    "levit_128s",
)
# Plain timm classifiers whose default CAM layer is not yet found generically (the image-text model's default layer,
# vision.proj, is checked for every one of them above). Each reason is what happens at mmfuse's default layer.
PLAIN_CLASSIFIER_SKIPS = {
    "hrnet_w18_small": "the last stage returns a list of branch maps (mmfuse takes the first)",
    "levit_128s": "the stages give (B, N, C) tokens and the model exposes no patch grid",
    "twins_pcpvt_small": "feature_info names 'block.3', which is not a module path of the model",
    "coat_lite_tiny": "the model has no feature_info entries to read the last stage from",
    "hiera_tiny_224": "the stages give (B, N, C) tokens and the model exposes no prefix count",
    "xcit_nano_12_p16_224": "its patch embedding has no grid_size",
    "pit_ti_224": "the last stage returns a (tokens, cls_tokens) tuple",
    "mixer_s16_224": "token blocks without a prefix count",
    "volo_d1_224": "the last stage feeds a class-attention head, so the layer is not the last spatial map",
    "tnt_s_patch16_224": "its blocks have no norm1 (the ViT default layer)",
    "cait_xxs24_224": "the class token joins after the patch blocks, so norm1 tokens hold no prefix",
}
# Names that cannot run at 64 px: each must end in one line that says so, never a traceback.
NEEDS_ANOTHER_SIZE = ("crossvit_tiny_240",)


def _sweep(names: Any, ci: tuple[str, ...]) -> list[Any]:
    return [pytest.param(name, marks=() if name in ci else pytest.mark.sweep) for name in names]


@functools.cache
def _family_of() -> dict[str, str]:
    """Architecture -> timm module (its family), from timm's own registry."""
    return {arch: module for module in timm.list_modules() for arch in timm.list_models(module=module)}


def _image_text_model(vision: TimmVisionEncoderConfig, text: HFTextEncoderConfig = TINY_TEXT["bert"]) -> nn.Module:
    cfg = ModelConfig(width=16, vision=vision, text=text, fusion=FusionConfig(num_layers=1, num_heads=2))
    return ImageTextModel(resolve_model_config(cfg, SPEC))


class _ImagesOnly(nn.Module):
    """An image-text model as an image classifier over fixed texts (the form pytorch-grad-cam takes)."""

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        super().__init__()
        self.model, self.input_ids, self.attention_mask = model, input_ids, attention_mask

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, self.input_ids, self.attention_mask).logits


def _reference_cam(model: nn.Module, layer: nn.Module, images: torch.Tensor, classes: list[int], reshape: Any) -> Any:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = pgc.GradCAM(model, [layer], reshape)
    try:
        return torch.from_numpy(cam(images, [ClassifierOutputTarget(k) for k in classes]))
    finally:
        cam.activations_and_grads.release()


def _token_reshape(prefix: int, grid: tuple[int, int]) -> Any:
    """The reshape users write for pytorch-grad-cam: (B, N, C) tokens -> (B, C, Gh, Gw), prefix tokens dropped."""

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, prefix:].reshape(tokens.shape[0], grid[0], grid[1], tokens.shape[2]).permute(0, 3, 1, 2)

    return reshape


def check_contract(model: nn.Module) -> None:
    """Shapes, grid, prefix tokens, padding invariance and a gradient for every trained parameter."""
    encoder = model.vision
    ids, mask = random_text_batch(2, 6, SPEC.vocab_size, [6, 3])
    images = torch.rand(2, 3, SIZE, SIZE)
    model.train()
    out = model(images, ids, mask)
    gh, gw = encoder.grid_size
    assert out.logits.shape == (2, SPEC.num_classes)
    assert out.image is not None and out.image.grid_size == (gh, gw)
    assert out.image.num_prefix_tokens == encoder.num_prefix_tokens == getattr(encoder, "num_prefix_tokens", 0)
    assert out.image.tokens.shape == (2, encoder.num_prefix_tokens + gh * gw, 16)
    out.logits.sum().backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    model.eval()
    with torch.no_grad():
        base = model(images, ids, mask).logits
        padded_ids = torch.cat([ids, torch.full((2, 3), SPEC.pad_token_id)], dim=1)  # (B, L) -> (B, L + 3)
        padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
        padded = model(images, padded_ids, padded_mask).logits
    torch.testing.assert_close(padded, base, rtol=1e-4, atol=1e-5)


def check_gradcam_parity(model: nn.Module) -> float:
    """mmfuse Grad-CAM at the default layer (``vision.proj``) against pytorch-grad-cam on the same layer."""
    model.eval()
    ids, mask = random_text_batch(2, 6, SPEC.vocab_size, [6, 4])
    images = torch.rand(2, 3, SIZE, SIZE)
    classes = [1, 3]
    layer = default_target_layer(model)
    assert layer == "vision.proj"
    ours = GradCAM(model)(Batch(images, ids, mask), ClassLogit(torch.tensor(classes)))
    encoder = model.vision
    reshape = _token_reshape(encoder.num_prefix_tokens, encoder.grid_size)
    wrapper = _ImagesOnly(model, ids, mask)
    reference = _reference_cam(wrapper, model.get_submodule(layer), images, classes, reshape)
    assert ours.image is not None and ours.image.shape == reference.shape == (2, SIZE, SIZE)
    return float((ours.image - reference).abs().max())


@pytest.mark.parametrize("name", _sweep(TIMM_SWEEP, CI_TIMM))
def test_timm_vision_contract(name: str) -> None:
    vision = TimmVisionEncoderConfig(model_name=name, model_kwargs=TIMM_SWEEP[name])
    model = _image_text_model(vision)
    check_contract(model)
    diff = check_gradcam_parity(model)
    assert diff < 1e-4, f"{name}: max |mmfuse - pytorch_grad_cam| = {diff:.2e}"


@pytest.mark.parametrize("name", _sweep(TIMM_SWEEP, CI_TIMM))
def test_timm_classifier_gradcam_matches_pytorch_grad_cam(name: str) -> None:
    """The plain timm classifier at mmfuse's default layer, against pytorch-grad-cam with the reshape a user writes
    for that layer's layout (tokens, NHWC stages or NCHW maps)."""
    if name in PLAIN_CLASSIFIER_SKIPS:
        pytest.skip(f"{name}: {PLAIN_CLASSIFIER_SKIPS[name]}")
    try:
        model = timm.create_model(name, num_classes=5, img_size=SIZE, **TIMM_SWEEP[name])
    except TypeError:
        model = timm.create_model(name, num_classes=5, **TIMM_SWEEP[name])
    model.eval()
    layer = default_target_layer(model)
    images = torch.rand(2, 3, SIZE, SIZE)
    classes = [1, 3]
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        model(images)
    handle.remove()
    activation = seen[0]
    if activation.dim() == 3:
        reshape = _token_reshape(int(model.num_prefix_tokens), tuple(model.patch_embed.grid_size))
    elif is_channels_last(model):
        reshape = lambda a: a.permute(0, 3, 1, 2)  # noqa: E731 - (B, H, W, C) -> (B, C, H, W)
    else:
        reshape = None
    ours = GradCAM(model)(images, ClassLogit(torch.tensor(classes)))
    reference = _reference_cam(model, model.get_submodule(layer), images, classes, reshape)
    assert ours.image is not None
    diff = float((ours.image - reference).abs().max())
    assert diff < 1e-4, f"{name} at {layer}: max |mmfuse - pytorch_grad_cam| = {diff:.2e}"


def test_the_sweep_spans_enough_architectures_and_families() -> None:
    archs = {timm.models.split_model_name_tag(name)[0] for name in TIMM_SWEEP}
    families = {_family_of()[arch] for arch in archs}
    assert len(archs) >= 40 and len(families) >= 15, (len(archs), sorted(families))


@pytest.mark.parametrize("name", NEEDS_ANOTHER_SIZE)
def test_a_model_that_needs_another_image_size_says_so(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"does not run on {SIZE} px images.*pretrained config uses \d+ px"):
        _image_text_model(TimmVisionEncoderConfig(model_name=name))
