"""Classifiers by name (timm, torchvision), their preprocessing, class names and weights files; Grad-CAM on
torchvision classifiers (default layers and parity with pytorch-grad-cam)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer

from mmfuse.attribution import CAM_METHODS, ClassLogit, GradCAM, HiResCAM, default_target_layer, load_classifier
from mmfuse.attribution.classifiers import imagenet_class_names, load_weights
from mmfuse.errors import ConfigError


def test_torchvision_classifier_takes_its_weights_metadata() -> None:
    classifier = load_classifier("torchvision:resnet18")
    imagenet = (224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (classifier.image_size, classifier.mean, classifier.std) == imagenet
    assert classifier.class_names is not None and len(classifier.class_names) == 1000
    assert classifier.class_names[:2] == ("tench", "goldfish") and not classifier.model.training


def test_timm_classifier_takes_its_data_config_and_imagenet_names() -> None:
    classifier = load_classifier("resnet10t")
    assert classifier.image_size == timm.data.resolve_model_data_config(classifier.model)["input_size"][-1] == 176
    assert classifier.class_names is not None and classifier.class_names[281] == "tabby"
    assert imagenet_class_names(classifier.model, 10) is None  # a head of no ImageNet label set's size


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("resnet10tt", "'resnet10tt' is not a timm model (nor torchvision:<name>); close names: ['resnet10t'"),
        ("torchvision:mobilenet_v9", "'torchvision:mobilenet_v9' is not a torchvision classification model"),
    ],
)
def test_unknown_names_get_close_matches(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_classifier(name)
    assert message in str(err.value)
    if name.startswith("torchvision:"):
        assert "mobilenet_v2" in str(err.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_files_are_loaded(tmp_path: Path, suffix: str) -> None:
    trained = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    fresh = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    load_weights(fresh, path)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, state[key])


def _save(obj: object) -> Callable[[Path], None]:
    return lambda path: torch.save(obj, path)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (_save(timm.create_model("resnet10t", pretrained=False, num_classes=3).state_dict()), "do not fit ResNet"),
        (_save([torch.zeros(2)]), "expected a state dict (parameter name -> tensor), got a list"),
        (_save({"head": nn.Linear(2, 2)}), "not a readable state dict"),  # a module: refused by weights_only
        (lambda path: path.write_bytes(b"garbage"), "not a readable state dict"),
    ],
)
def test_bad_weights_files_are_named(tmp_path: Path, write: Callable[[Path], None], message: str) -> None:
    path = tmp_path / "weights.pth"
    write(path)
    with pytest.raises(ConfigError) as err:
        load_weights(timm.create_model("resnet10t", pretrained=False), path)
    assert str(path) in str(err.value) and message in str(err.value)
    with pytest.raises(ConfigError, match="no such file"):
        load_weights(nn.Linear(2, 2), tmp_path / "missing.pth")


def _tiny_vit() -> nn.Module:
    vit = VisionTransformer(32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5)
    for p in vit.parameters():  # torchvision zero-initialises the head: a constant logit would have no gradient
        nn.init.normal_(p, std=0.3)
    return vit


# torchvision classifier, its input side, the default layer, and pytorch-grad-cam's reshape for it.
TORCHVISION = {
    "resnet18": (lambda: torchvision.models.get_model("resnet18", weights=None, num_classes=5), 64, "layer4", None),
    "mobilenet_v2": (
        lambda: torchvision.models.get_model("mobilenet_v2", weights=None, num_classes=5), 64, "features.18", None
    ),
    "vit": (
        _tiny_vit, 32, "encoder.layers.encoder_layer_1.ln_1",
        lambda t: t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2),  # (B, 1+16, C) -> (B, C, 4, 4)
    ),
    "swin": (
        lambda: SwinTransformer([4, 4], 16, [1, 1], [1, 1], [2, 2], num_classes=5), 32, "features.3",
        lambda t: t.permute(0, 3, 1, 2),  # (B, H, W, C) -> (B, C, H, W)
    ),
}  # fmt: skip


@pytest.mark.parametrize("cam_class", [GradCAM, HiResCAM])
@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_classifiers_match_pytorch_grad_cam(name: str, cam_class: type[GradCAM]) -> None:
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    build, size, layer, reshape = TORCHVISION[name]
    model = build().eval()
    assert default_target_layer(model) == layer
    images, classes = torch.randn(2, 3, size, size), [1, 3]
    ours = cam_class(model)(images, ClassLogit(torch.tensor(classes))).image
    cam = getattr(pgc, cam_class.__name__)(model, [model.get_submodule(layer)], reshape)
    try:
        reference = torch.from_numpy(cam(images, [ClassifierOutputTarget(k) for k in classes]))
    finally:
        cam.activations_and_grads.release()
    assert ours is not None and ours.shape == reference.shape == (2, size, size)
    # HiResCAM on the random Swin sums products of ~1e-6: float32 rounding, not a layout error, sets that tolerance.
    tolerance = 1e-3 if (name, cam_class) == ("swin", HiResCAM) else 1e-4
    assert (ours - reference).abs().max().item() < tolerance


def test_model_without_a_known_last_stage_needs_a_target_layer() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match=r"pass target_layer=.*top-level modules: \['0', '1', '2', '3'\]"):
        GradCAM(model)
    assert GradCAM(model, "0")(torch.randn(1, 3, 8, 8)).image is not None
    assert CAM_METHODS.names() == ["gradcam", "hirescam"]
