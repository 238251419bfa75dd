"""Training augmentation and evaluation transforms: timm's, images kept in [0, 1], augmentation a function of
(seed, epoch, index) in any worker, evaluation crops from the vision encoder's data config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mmfuse.data.files import ImageTextDataModule
from mmfuse.data.formats import FileSourceConfig
from mmfuse.data.images import load_image
from mmfuse.data.loader import SampleKey
from mmfuse.data.transforms import (
    AugmentConfig,
    PreprocessConfig,
    build_eval_transform,
    build_train_transform,
    seeded,
)
from mmfuse.encoders import TimmVisionEncoder, timm_vision, torchvision_vision
from mmfuse.encoders.timm_vision import TimmVisionEncoderConfig
from mmfuse.errors import ConfigError
from tests.conftest import TINY_VISION
from tests.data._make import write_captions_csv

AUGMENT = AugmentConfig(scale=(0.3, 1.0), auto_augment="rand-m9-mstd0.5", re_prob=0.5, re_mode="pixel")


def noise_captions(root: Path, num_images: int = 8, captions_per_image: int = 1) -> Path:
    """A captions CSV dataset of noise images (so that every crop, flip and colour change shows)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(num_images):
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / "images" / f"img{i:04d}.png")
        rows += [(f"img{i:04d}.png", f"picture {i} caption {k}") for k in range(captions_per_image)]
    write_captions_csv(root / "captions.txt", rows)
    return root


def _module(root: Path, tmp_path: Path, **kwargs: Any) -> ImageTextDataModule:
    source = FileSourceConfig(format="captions_csv", root=str(root), split_sizes={"train": 8})
    kwargs = {"image_size": 16, "batch_size": 2, "cache_dir": str(tmp_path / "cache"), "seed": 3, **kwargs}
    return ImageTextDataModule(source, **kwargs)


def _epoch_images(dm: ImageTextDataModule, epoch: int) -> tuple[list[int], torch.Tensor]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    batches = list(loader)
    indices = [int(i) for batch in batches for i in batch.indices]  # type: ignore[union-attr]
    return indices, torch.cat([batch.images for batch in batches])


def test_augmentation_is_a_function_of_seed_epoch_and_index_in_any_worker(tmp_path: Path) -> None:
    root = noise_captions(tmp_path / "noise")
    in_main = _module(root, tmp_path, augment=AUGMENT)
    in_workers = _module(root, tmp_path, augment=AUGMENT, num_workers=2)  # persistent workers outlive an epoch
    rng_state = torch.get_rng_state()
    order, images = _epoch_images(in_main, 0)
    assert torch.equal(torch.get_rng_state(), rng_state), "augmenting in the main process leaves its RNG alone"
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.float32
    for epoch in (0, 1):
        expected = _epoch_images(in_main, epoch)
        got = _epoch_images(in_workers, epoch)
        assert got[0] == expected[0] and torch.equal(got[1], expected[1]), f"epoch {epoch}: workers differ"
    train = in_main.train_dataloader().dataset
    direct = torch.stack([train[SampleKey(i, 0, 3)]["image"] for i in order])
    assert torch.equal(direct, images)  # the loader adds nothing: the key alone decides
    next_order, next_images = _epoch_images(in_main, 1)
    by_index = dict(zip(next_order, next_images, strict=True))
    changed = [i for i, image in zip(order, images, strict=True) if not torch.equal(by_index[i], image)]
    assert changed == order, "another epoch draws another augmentation of every image"
    other_seed = _module(root, tmp_path, augment=AUGMENT, seed=4).train_dataloader().dataset
    assert not torch.equal(other_seed[SampleKey(order[0], 0, 4)]["image"], images[0])


def test_without_augment_training_resizes_and_centre_crops_as_before(tmp_path: Path) -> None:
    root = noise_captions(tmp_path / "noise")
    dm = _module(root, tmp_path, preprocess=PreprocessConfig(crop_pct=0.5))  # evaluation's crop, not training's
    dm.setup("fit")
    paths = dm.datasets["train"].manifest["image_path"]  # type: ignore[index]
    for epoch in (0, 1):
        order, images = _epoch_images(dm, epoch)
        assert torch.equal(images, torch.stack([load_image(paths[i], 16) for i in order]))


def _halves(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image


def test_augment_fields_reach_timm() -> None:
    whole = {"scale": (1.0, 1.0), "ratio": (2.0, 2.0), "color_jitter": None}  # the whole 40x20 image, squashed
    kept = build_train_transform(16, AugmentConfig(**whole, hflip=0.0))(_halves())
    flipped = build_train_transform(16, AugmentConfig(**whole, hflip=1.0))(_halves())
    assert isinstance(kept, torch.Tensor) and kept.shape == (3, 16, 16) and 0 <= kept.min() <= kept.max() <= 1
    assert kept[0, :, 0].min() > 0.9 and kept[2, :, -1].min() > 0.9  # red on the left, blue on the right
    torch.testing.assert_close(flipped, kept.flip(-1), atol=0, rtol=0)
    with seeded(0):
        jittered = build_train_transform(16, AugmentConfig(**{**whole, "color_jitter": 0.9}, hflip=0.0))(_halves())
    assert not torch.equal(jittered, kept)
    names = [type(step).__name__ for step in build_train_transform(16, AUGMENT).steps]
    assert "RandAugment" in names and "ColorJitter" not in names  # timm's rule: RandAugment replaces the jitter
    mean = (0.25, 0.5, 0.75)
    erasing = AugmentConfig(**whole, hflip=0.0, re_prob=1.0, re_mode="const")
    with seeded(0):
        erased = build_train_transform(16, erasing, PreprocessConfig(mean=mean))(_halves())
    mask = (erased - kept).abs().sum(0) > 0  # (H, W) erased pixels
    assert mask.any() and torch.allclose(erased[:, mask], torch.tensor(mean)[:, None].expand(3, int(mask.sum())))


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"auto_augment": "rand-m9-foo3"}, "data.augment.auto_augment='rand-m9-foo3'"),
        ({"auto_augment": "nonsense"}, "data.augment.auto_augment='nonsense'"),
        ({"interpolation": "cubic"}, "data.augment.interpolation='cubic'"),
        ({"hflip": 1.5}, "data.augment.hflip=1.5"),
        ({"scale": (0.0, 1.0)}, "data.augment.scale=[0.0, 1.0]"),
        ({"re_mode": "zeros"}, "data.augment.re_mode='zeros'"),
    ],
)
def test_a_bad_augmentation_is_a_one_line_config_error(tmp_path: Path, fields: dict[str, Any], named: str) -> None:
    source = FileSourceConfig(format="captions_csv", root=str(tmp_path))
    with pytest.raises(ConfigError) as info:
        ImageTextDataModule(source, image_size=16, augment=AugmentConfig(**fields))
    assert named in str(info.value) and "\n" not in str(info.value)


def _framed(size: int = 40) -> Image.Image:
    """A white square with a 4 px black frame."""
    image = Image.new("RGB", (size, size), (0, 0, 0))
    image.paste((255, 255, 255), (4, 4, size - 4, size - 4))
    return image


def test_evaluation_crop_and_interpolation_follow_the_preprocess_config() -> None:
    whole = build_eval_transform(20, PreprocessConfig(crop_pct=1.0))(_framed())
    centre = build_eval_transform(20, PreprocessConfig(crop_pct=0.5))(_framed())
    assert isinstance(whole, Image.Image) and whole.size == centre.size == (20, 20)
    assert np.asarray(whole)[0, 10].max() == 0 and np.asarray(centre).min() == 255  # the frame is cropped away
    nearest = np.asarray(build_eval_transform(20, PreprocessConfig(interpolation="nearest"))(_framed(37)))
    bicubic = np.asarray(build_eval_transform(20, PreprocessConfig(interpolation="bicubic"))(_framed(37)))
    assert set(np.unique(nearest)) == {0, 255} and len(np.unique(bicubic)) > 2
    with pytest.raises(ConfigError, match="data.preprocess.interpolation='cubic'"):
        PreprocessConfig(interpolation="cubic")


def test_evaluation_splits_use_the_preprocess_config(tmp_path: Path) -> None:
    root = tmp_path / "framed"
    (root / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        _framed().save(root / "images" / name)
    write_captions_csv(root / "captions.txt", [("a.png", "a framed square"), ("b.png", "another framed square")])
    source = FileSourceConfig(format="captions_csv", root=str(root), split_sizes={"train": 1, "test": 1})
    modules = [
        ImageTextDataModule(source, image_size=20, cache_dir=str(tmp_path / "cache"), preprocess=preprocess)
        for preprocess in (None, PreprocessConfig(crop_pct=0.5))
    ]
    plain, cropped = (next(iter(dm.test_dataloader())).images for dm in modules)
    assert plain[0, :, 0].max() == 0 and cropped.min() == 1  # None: the whole image; crop_pct 0.5: the centre


def test_the_encoders_data_configs_are_resolved_without_building_them() -> None:
    cfg = TINY_VISION["vit"]
    resolved = timm_vision.vision_data_config(cfg, 32)
    assert resolved == TimmVisionEncoder(cfg, out_dim=8, img_size=32).data_config
    assert PreprocessConfig.from_data_config(resolved) == PreprocessConfig(
        crop_pct=0.9, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    tagged = timm_vision.vision_data_config(TimmVisionEncoderConfig(model_name="resnet50.tv_in1k"), 64)
    assert tagged["crop_pct"] == 0.875 and tagged["interpolation"] == "bilinear"  # the tag's own weights
    tv = torchvision_vision.vision_data_config(TimmVisionEncoderConfig(model_name="torchvision:resnet50"), 64)
    assert tv["interpolation"] == "bilinear" and tv["crop_pct"] == pytest.approx(224 / 232)  # IMAGENET1K_V2
    v1_cfg = TimmVisionEncoderConfig(model_name="torchvision:resnet50.IMAGENET1K_V1")
    v1 = torchvision_vision.vision_data_config(v1_cfg, 64)
    assert v1["crop_pct"] == 224 / 256 and v1["input_size"] == (3, 64, 64)
