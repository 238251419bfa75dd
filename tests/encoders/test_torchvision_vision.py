"""TorchvisionVisionEncoder: torchvision classifiers by name (``torchvision:<name>``) inside the image-text model,
weights from a local file or the torch hub cache, one-line errors, the speed switches, save/load, and Grad-CAM
parity with pytorch-grad-cam at the default layer."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import Tensor, nn

from mmfuse.attribution import ClassLogit, GradCAM, default_target_layer
from mmfuse.config import FusionConfig, ModelConfig, SpeedConfig, resolve_model_config
from mmfuse.encoders import (
    TimmVisionEncoder,
    TimmVisionEncoderConfig,
    TorchvisionVisionEncoder,
    build_vision_encoder,
)
from mmfuse.encoders.torchvision_vision import torchvision_hub_file
from mmfuse.errors import ConfigError
from mmfuse.models import ImageTextModel
from mmfuse.types import Batch
from tests.conftest import TINY_SPEC, TINY_TEXT, random_text_batch

# The torchvision models the encoder contract covers (random init, 64 px): CNNs of five families, a ViT and a Swin.
TORCHVISION_SWEEP: list[str] = [
    "resnet18",
    "mobilenet_v2",
    "efficientnet_b0",
    "convnext_tiny",
    "regnet_x_400mf",
    "vit_b_16",
    "swin_t",
]
SIZE = 64
SPEC = dataclasses.replace(TINY_SPEC, image_size=SIZE)
# (num_prefix_tokens, grid) at 64 px: stride-32 feature maps give 2x2; ViT-B/16 a class token and 64/16 = 4x4 patches.
LAYOUT = {"vit_b_16": (1, (4, 4))}
DEFAULT_LAYOUT = (0, (2, 2))


def _config(name: str, **changes: object) -> TimmVisionEncoderConfig:
    return dataclasses.replace(TimmVisionEncoderConfig(model_name=f"torchvision:{name}"), **changes)


def _batch() -> Batch:
    ids, mask = random_text_batch(3, 6, SPEC.vocab_size, [6, 4, 2])
    return Batch(torch.rand(3, 3, SIZE, SIZE), ids, mask, torch.tensor([1, 3, 0]))


@pytest.fixture(scope="module")
def model_of() -> Iterator[Callable[[str], ImageTextModel]]:
    """Image-text models with a torchvision encoder, built once per name (the contract and Grad-CAM share them)."""
    built: dict[str, ImageTextModel] = {}

    def get(name: str) -> ImageTextModel:
        if name not in built:
            cfg = ModelConfig(width=16, vision=_config(name), text=TINY_TEXT["bert"], fusion=FusionConfig())
            built[name] = ImageTextModel(resolve_model_config(cfg, SPEC))
        return built[name]

    yield get
    built.clear()


@pytest.mark.parametrize("name", TORCHVISION_SWEEP)
def test_contract_through_the_image_text_model(name: str, model_of: Callable[[str], ImageTextModel]) -> None:
    model = model_of(name).train()
    vision = model.vision
    assert isinstance(vision, TorchvisionVisionEncoder)
    batch = _batch()
    out = model(batch.images, batch.input_ids, batch.attention_mask)
    assert out.image is not None and out.logits.shape == (3, SPEC.num_classes)
    prefix, grid = LAYOUT.get(name, DEFAULT_LAYOUT)
    assert (vision.num_prefix_tokens, vision.grid_size) == (out.image.num_prefix_tokens, out.image.grid_size)
    assert (out.image.num_prefix_tokens, out.image.grid_size) == (prefix, grid)
    assert out.image.tokens.shape == (3, prefix + grid[0] * grid[1], 16) and out.image.pooled.shape == (3, 16)
    assert torch.isfinite(out.logits).all()
    torch.nn.functional.cross_entropy(out.logits, batch.labels).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    assert not missing, f"no gradient: {missing[:5]}"
    model.eval()
    with torch.no_grad():
        first = model(batch.images, batch.input_ids, batch.attention_mask).logits
        torch.testing.assert_close(model(batch.images, batch.input_ids, batch.attention_mask).logits, first)


class _ImagesOnly(nn.Module):
    """The image-text model as a function of images alone, text fixed: the model pytorch-grad-cam calls."""

    def __init__(self, model: ImageTextModel, input_ids: Tensor, attention_mask: Tensor) -> None:
        super().__init__()
        self.model, self.input_ids, self.attention_mask = model, input_ids, attention_mask

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) images -> (B, K) logits."""
        return self.model(images, self.input_ids, self.attention_mask).logits


def _pytorch_grad_cam(model: ImageTextModel, batch: Batch, classes: list[int]) -> Tensor:
    """The reference: pytorch-grad-cam's GradCAM on ``vision.proj``, with the reshape users write for its tokens."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    vision = model.vision
    assert isinstance(vision, TorchvisionVisionEncoder)
    prefix, (gh, gw) = vision.num_prefix_tokens, vision.grid_size

    def reshape_transform(tokens: Tensor) -> Tensor:
        grid = tokens[:, prefix:].reshape(tokens.shape[0], gh, gw, tokens.shape[2])  # (B, N, D) -> (B, Gh, Gw, D)
        return grid.permute(0, 3, 1, 2)  # (B, Gh, Gw, D) -> (B, D, Gh, Gw)

    wrapped = _ImagesOnly(model, batch.input_ids, batch.attention_mask)
    cam = pgc.GradCAM(wrapped, [vision.proj], reshape_transform)
    try:
        maps = cam(batch.images, [ClassifierOutputTarget(k) for k in classes])
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(maps)


@pytest.mark.parametrize("name", TORCHVISION_SWEEP)
def test_gradcam_at_the_default_layer_matches_pytorch_grad_cam(
    name: str, model_of: Callable[[str], ImageTextModel]
) -> None:
    model = model_of(name).eval()
    batch = _batch()
    classes = [1, 3, 0]
    assert default_target_layer(model) == "vision.proj"
    ours = GradCAM(model)(batch, ClassLogit(torch.tensor(classes)))
    reference = _pytorch_grad_cam(model, batch, classes)
    assert ours.image is not None and ours.image_grid is not None
    assert ours.image_grid.shape[1:] == LAYOUT.get(name, DEFAULT_LAYOUT)[1]
    assert ours.image.shape == reference.shape == (3, SIZE, SIZE)
    diff = (ours.image - reference).abs().max().item()
    print(f"{name}: max |mmfuse - pytorch_grad_cam| = {diff:.2e}")
    assert diff < 1e-4


def test_the_name_prefix_picks_the_family() -> None:
    assert isinstance(build_vision_encoder(_config("mobilenet_v2"), out_dim=8, img_size=32), TorchvisionVisionEncoder)
    assert isinstance(build_vision_encoder(TimmVisionEncoderConfig(), out_dim=8, img_size=32), TimmVisionEncoder)


def test_preprocessing_comes_from_the_default_weights_metadata() -> None:
    encoder = TorchvisionVisionEncoder(_config("vit_b_16"), out_dim=8, img_size=32)
    transforms = torchvision.models.get_model_weights("vit_b_16").DEFAULT.transforms()
    assert encoder.preprocess_cfg == {"mean": tuple(transforms.mean), "std": tuple(transforms.std), "size": 32}
    assert encoder.feature_node == "encoder.ln" and encoder.grid_size == (2, 2) and encoder.num_prefix_tokens == 1


def test_the_tap_is_the_last_map_that_follows_the_input() -> None:
    # AlexNet's adaptive average pool resizes any map to 6x6 (a resize, not a stage): its last max pool is tapped.
    encoder = TorchvisionVisionEncoder(_config("alexnet"), out_dim=8, img_size=96)
    assert encoder.feature_node == "features.12" and encoder.grid_size == (2, 2)


def test_num_stages_cuts_at_an_earlier_resolution() -> None:
    assert TorchvisionVisionEncoder(_config("resnet18", num_stages=3), out_dim=8, img_size=64).grid_size == (8, 8)
    with pytest.raises(ConfigError, match=r"^model.vision.num_stages=9: torchvision:resnet18 has 5 feature-map"):
        TorchvisionVisionEncoder(_config("resnet18", num_stages=9), out_dim=8, img_size=64)
    with pytest.raises(ConfigError, match=r"^model.vision.num_stages=2: torchvision:vit_b_16 gives tokens"):
        TorchvisionVisionEncoder(_config("vit_b_16", num_stages=2), out_dim=8, img_size=32)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_name": "torchvision:resnet_18"}, r"^model.vision.model_name='torchvision:resnet_18' is not a torchv"),
        ({"model_kwargs": {"depth": 3}}, r"^model.vision.model_kwargs.depth is not an argument of torchvision:resnet"),
        ({"img_size": 8}, None),  # a size the model takes: 8 px -> a 1x1 map
    ],
)
def test_bad_names_and_kwargs_are_one_line_errors(changes: dict[str, object], message: str | None) -> None:
    cfg = _config("resnet18", **changes)
    if message is None:
        assert TorchvisionVisionEncoder(cfg, out_dim=8, img_size=64).grid_size == (1, 1)
        return
    with pytest.raises(ConfigError, match=message) as err:
        TorchvisionVisionEncoder(cfg, out_dim=8, img_size=64)
    assert "\n" not in str(err.value)
    if "model_name" in changes:
        assert "torchvision:resnet18" in str(err.value)


def test_a_size_the_model_cannot_take_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^model.vision.img_size=32: torchvision:inception_v3 does not take 32x32"):
        TorchvisionVisionEncoder(_config("inception_v3"), out_dim=8, img_size=32)


def test_local_weights_load_and_weights_of_another_architecture_name_the_key(tmp_path: Path) -> None:
    source = torchvision.models.get_model("mobilenet_v2", weights=None)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(source.state_dict(), path)
    encoder = TorchvisionVisionEncoder(_config("mobilenet_v2", pretrained=str(path)), out_dim=8, img_size=32)
    loaded = encoder.backbone.get_submodule("features.18.0").weight
    torch.testing.assert_close(loaded, source.features[18][0].weight, rtol=0, atol=0)

    torch.save(torchvision.models.get_model("resnet18", weights=None).state_dict(), tmp_path / "resnet18.pth")
    thinner = torchvision.models.get_model("mobilenet_v2", weights=None, width_mult=0.5).state_dict()
    save_file({k: v.contiguous() for k, v in thinner.items()}, tmp_path / "thin.safetensors")
    cases = {
        "resnet18.pth": r"'features\.0\.0\.weight' is missing there$",
        "thin.safetensors": r"'features\.0\.0\.weight' has shape \(16, 3, 3, 3\) there, \(32, 3, 3, 3\) in the model$",
    }
    for file, message in cases.items():
        cfg = _config("mobilenet_v2", pretrained=str(tmp_path / file))
        with pytest.raises(ConfigError, match=message) as err:
            TorchvisionVisionEncoder(cfg, out_dim=8, img_size=32)
        assert f"{file}' do not fit torchvision:mobilenet_v2" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no such file"):
        TorchvisionVisionEncoder(_config("mobilenet_v2", pretrained=str(tmp_path / "nope.pth")), out_dim=8, img_size=32)


def test_pretrained_true_reads_the_torch_hub_cache_and_names_it_when_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # what torch.hub.set_dir sets
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _config("mobilenet_v2", pretrained=True)
    cached = torchvision_hub_file(torchvision.models.get_model_weights("mobilenet_v2").DEFAULT.url)
    assert cached.parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(ConfigError, match=r"^model.vision.pretrained=True: the weights of torch") as err:
        TorchvisionVisionEncoder(cfg, out_dim=8, img_size=32)
    assert f"looked for {cached})" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)

    source = torchvision.models.get_model("mobilenet_v2", weights=None)
    cached.parent.mkdir(parents=True)
    torch.save(source.state_dict(), cached)
    encoder = TorchvisionVisionEncoder(cfg, out_dim=8, img_size=32)
    loaded = encoder.backbone.get_submodule("features.18.0").weight
    torch.testing.assert_close(loaded, source.features[18][0].weight, rtol=0, atol=0)


def test_speed_switches_and_save_load_round_trip(tmp_path: Path) -> None:
    from mmfuse.training.lit_module import apply_speed_switches

    weights = tmp_path / "mobilenet_v2.pth"
    torch.save(torchvision.models.get_model("mobilenet_v2", weights=None).state_dict(), weights)
    vision = _config("mobilenet_v2", pretrained=str(weights))
    cfg = ModelConfig(width=16, vision=vision, text=TINY_TEXT["bert"], fusion=FusionConfig())
    model = ImageTextModel(resolve_model_config(cfg, SPEC)).train()
    batch = _batch()
    fast = copy.deepcopy(model)  # a copy keeps every module's train/eval mode (FeatureGraph.__deepcopy__)
    apply_speed_switches(fast, SpeedConfig(activation_checkpointing=True))
    assert isinstance(fast.vision, TorchvisionVisionEncoder) and fast.vision.use_grad_checkpointing
    for m in (model, fast):
        torch.manual_seed(0)  # the same dropout masks in both (checkpointing replays the RNG state)
        m(batch.images, batch.input_ids, batch.attention_mask).logits.sum().backward()
    for (key, p), q in zip(model.named_parameters(), fast.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None, key
        torch.testing.assert_close(q.grad, p.grad, msg=key)

    apply_speed_switches(fast, SpeedConfig(freeze_vision=True))
    assert not fast.vision.backbone.training and not any(p.requires_grad for p in fast.vision.backbone.parameters())
    assert fast.vision.proj.weight.requires_grad

    model.eval()
    nhwc = copy.deepcopy(model)
    apply_speed_switches(nhwc, SpeedConfig(channels_last=True))
    assert nhwc.vision is not None
    assert nhwc.vision.backbone.get_submodule("features.0.0").weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(batch.images, batch.input_ids, batch.attention_mask).logits
        torch.testing.assert_close(nhwc(batch.images, batch.input_ids, batch.attention_mask).logits, expected)

    weights.unlink()  # the saved model needs no weights file: its config names the architecture only
    loaded = ImageTextModel.from_pretrained(model.save_pretrained(tmp_path / "saved")).eval()
    assert loaded.cfg.vision.pretrained is None
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch.images, batch.input_ids, batch.attention_mask).logits, expected)


def test_a_weights_tag_picks_those_weights_and_an_unknown_tag_lists_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"looked for .*mobilenet_v2-b0353104.pth"):  # IMAGENET1K_V1, not DEFAULT
        TorchvisionVisionEncoder(_config("mobilenet_v2.IMAGENET1K_V1", pretrained=True), out_dim=8, img_size=32)
    with pytest.raises(ConfigError, match=r"mobilenet_v2 has no weights 'V9'. Its weights: \['IMAGENET1K_V1'"):
        TorchvisionVisionEncoder(_config("mobilenet_v2.V9"), out_dim=8, img_size=32)
