"""Grad-CAM: parity with pytorch-grad-cam on timm classifiers, default layers, and the image-text model."""

from __future__ import annotations

import pytest
import timm
import torch

from mmfuse.attribution import ClassLogit, GradCAM, HiResCAM, default_target_layer, hook_count
from mmfuse.errors import ConfigError
from tests.attribution.conftest import make_batch, make_model

# Random-init timm classifiers at a small input size (parity needs no trained weights).
CLASSIFIERS = {
    "resnet18": ({}, "layer4", 64),
    "vit_tiny_patch16_224": ({"img_size": 64}, "blocks.11.norm1", 64),
}


def _pytorch_grad_cam(
    model: torch.nn.Module, layer: str, images: torch.Tensor, classes: list[int], method: str = "GradCAM"
) -> torch.Tensor:
    """The reference: pytorch-grad-cam's ``GradCAM`` (or ``HiResCAM``) on the same layer and targets."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    prefix = getattr(model, "num_prefix_tokens", 0)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)

    def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:  # the hand-written reshape users have to write
        gh, gw = grid
        grid_tokens = tokens[:, prefix:].reshape(tokens.shape[0], gh, gw, tokens.shape[2])  # (B, N, C) -> (B,Gh,Gw,C)
        return grid_tokens.permute(0, 3, 1, 2)  # (B, Gh, Gw, C) -> (B, C, Gh, Gw)

    cam = getattr(pgc, method)(model, [model.get_submodule(layer)], reshape_transform if grid else None)
    try:
        maps = cam(images, [ClassifierOutputTarget(k) for k in classes])
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(maps)


@pytest.mark.parametrize("cam_class", [GradCAM, HiResCAM])
@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_matches_pytorch_grad_cam(name: str, cam_class: type[GradCAM]) -> None:
    kwargs, layer, size = CLASSIFIERS[name]
    model = timm.create_model(name, pretrained=False, num_classes=5, **kwargs).eval()
    images = torch.randn(2, 3, size, size)
    classes = [1, 3]
    assert default_target_layer(model) == layer
    ours = cam_class(model)(images, ClassLogit(torch.tensor(classes)))
    reference = _pytorch_grad_cam(model, layer, images, classes, cam_class.__name__)
    assert ours.image is not None and ours.image_grid is not None
    assert ours.image.shape == reference.shape == (2, size, size)
    diff = (ours.image - reference).abs().max().item()
    print(f"{name}: max |mmfuse - pytorch_grad_cam| = {diff:.2e}")
    assert diff < 1e-4
    assert ours.image.amax(dim=(1, 2)).gt(0.99).all(), "maps are normalised to [0, 1] per example"


@pytest.mark.parametrize("vision", ["resnet", "vit", "convnext"])
def test_default_layer_of_image_text_models_is_what_the_fusion_reads(vision: str) -> None:
    model = make_model(vision)
    assert default_target_layer(model) == "vision.proj"
    result = GradCAM(model)(make_batch())
    assert result.image_grid is not None and result.image_grid.shape[1:] == model.vision.grid_size


def test_bad_layer_lists_nearby_paths() -> None:
    model = make_model("resnet")
    with pytest.raises(ConfigError, match="vision.backbone.layer4") as err:
        GradCAM(model, "vision.backbone.layer5")
    assert "vision.backbone.layer3" in str(err.value)
    with pytest.raises(ConfigError, match="vision.backbone"):
        GradCAM(model, "vison.backbone")


def test_hooks_are_removed_even_after_an_error() -> None:
    model = make_model("vit")
    before = hook_count(model)
    cam = GradCAM(model)
    cam(make_batch())
    assert hook_count(model) == before

    def failing(output: object, batch: object = None) -> torch.Tensor:
        raise RuntimeError("target failed")

    with pytest.raises(RuntimeError, match="target failed"):
        cam(make_batch(), failing)  # type: ignore[arg-type]
    assert hook_count(model) == before
