"""COCO boxes at the model's input resolution (checked against the real evaluation transform), the caption-word
matcher, and the pointing game they feed; the COCO files come from ``../shared/data/coco-mini`` (skipped when
absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmfuse.attribution.boxes import (
    SYNONYMS_FILE,
    CategoryMatcher,
    InputGeometry,
    box_masks,
    eval_geometry,
    load_category_synonyms,
    pointing_examples,
    read_instances,
)
from mmfuse.attribution.metrics import (
    centre_prior_maps,
    energy_in_mask,
    pointing_game,
    pointing_game_in_mask,
    random_maps,
)
from mmfuse.attribution.reshape import upsample
from mmfuse.data.coco import CocoCaptionsReader
from mmfuse.data.formats import FileSourceConfig
from mmfuse.data.transforms import PreprocessConfig, build_eval_transform
from mmfuse.errors import ConfigError
from tests.data._make import shared_dataset

PREPROCESS = {
    "center 0.875": PreprocessConfig("bilinear", 0.875, "center"),
    "center 1.0": PreprocessConfig("bicubic", 1.0, "center"),
    "squash 0.875": PreprocessConfig("bilinear", 0.875, "squash"),
    "border 1.0": PreprocessConfig("bilinear", 1.0, "border"),
}
SIZES = [(640, 480), (480, 640), (333, 500), (300, 200)]  # landscape, portrait, odd, smaller than the resize


def _white_box_image(size: tuple[int, int], box: torch.Tensor) -> Image.Image:
    """A black (W, H) image with the integer xyxy ``box`` white."""
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    x0, y0, x1, y1 = box.reshape(4).int().tolist()
    pixels[y0:y1, x0:x1] = 255
    return Image.fromarray(pixels)


def _transformed(size: tuple[int, int], box: torch.Tensor, preprocess: PreprocessConfig) -> torch.Tensor:
    """(224, 224) float in [0, 1]: the white box after the real evaluation transform."""
    image = build_eval_transform(224, preprocess)(_white_box_image(size, box))
    return torch.from_numpy(np.asarray(image)[..., 0].astype(np.float32) / 255.0)


# ----------------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("mode", list(PREPROCESS))
@pytest.mark.parametrize("size", SIZES)
def test_box_masks_match_the_pixels_the_eval_transform_moves_the_box_to(size: tuple[int, int], mode: str) -> None:
    w, h = size
    box = torch.tensor([[0.3 * w, 0.35 * h, 0.62 * w, 0.6 * h]]).round()
    seen = _transformed(size, box, PREPROCESS[mode]) > 0.5
    mask = box_masks([box], [eval_geometry(size, 224, PREPROCESS[mode])])[0]
    assert mask.shape == (224, 224)
    iou = (seen & mask).sum() / (seen | mask).sum()
    assert iou >= 0.98, f"{mode} {size}: IoU {float(iou):.3f}"


def test_centre_crop_drops_the_sides_and_keeps_the_aspect_ratio() -> None:
    geometry = eval_geometry((640, 480), 224, PREPROCESS["center 0.875"])
    # shorter side 480 -> 256, longer 640 -> 341; the centre 224 columns start at round(117 / 2) = 58
    assert geometry.scale_x == pytest.approx(341 / 640) and geometry.scale_y == pytest.approx(256 / 480)
    assert (geometry.offset_x, geometry.offset_y) == (58.0, 16.0)
    left_edge = torch.tensor([[0.0, 0.0, 100.0, 480.0]])  # 100 px strip at the left: 53 px resized, 58 cropped off
    assert not box_masks([left_edge], [geometry])[0].any()


def test_decoded_size_rescales_a_jpeg_decoded_at_half_scale() -> None:
    full = eval_geometry((1280, 960), 224, PREPROCESS["center 0.875"])
    half = eval_geometry((1280, 960), 224, PREPROCESS["center 0.875"], decoded_size=(640, 480))
    box = torch.tensor([[600.0, 400.0, 800.0, 600.0]])
    torch.testing.assert_close(half.to_input(box), full.to_input(box), atol=1.0, rtol=0.0)


def test_tolerance_is_measured_in_the_original_image() -> None:
    geometry = InputGeometry(0.5, 0.5, 0.0, 0.0, 100, 100)  # a 200 px image shown at half size
    box = torch.tensor([[80.0, 80.0, 120.0, 120.0]])  # input pixels 40..59
    tight, loose = box_masks([box], [geometry])[0], box_masks([box], [geometry], tolerance=15.0)[0]
    assert tight[50, 40:60].all() and not tight[50, 39] and not tight[50, 60]
    # 15 image px = 7.5 input px: column j has its centre at 2j + 1 image px, so columns 32..67 are within 15 px
    assert loose[50, 32] and not loose[50, 31] and loose[50, 67] and not loose[50, 68]
    assert not loose[33, 33]  # the corner is rounded: sqrt(13^2 + 13^2) > 15
    assert loose[36, 36]


def test_box_masks_of_an_example_without_boxes_are_empty() -> None:
    geometry = InputGeometry(1.0, 1.0, 0.0, 0.0, 8, 8)
    masks = box_masks([torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 2.0, 2.0]])], [geometry, geometry], 1.0)
    assert masks.shape == (2, 8, 8) and not masks[0].any() and masks[1].any()


# ------------------------------------------------------------------------------------- the pointing game on top


def test_pointing_game_hits_only_through_the_true_mapping() -> None:
    """The map is the transformed image itself, so it peaks on the object: mapped as the transform maps it, the box
    is hit; mapped naively (each side scaled to 224, the crop ignored) the same map misses it."""
    size, preprocess = (640, 480), PREPROCESS["center 0.875"]
    box = torch.tensor([[430.0, 300.0, 470.0, 340.0]])
    heat = _transformed(size, box, preprocess)[None]  # (1, 224, 224)
    true_mask = box_masks([box], [eval_geometry(size, 224, preprocess)])
    naive = box * torch.tensor([224 / 640, 224 / 480, 224 / 640, 224 / 480])
    assert pointing_game_in_mask(heat, true_mask).item()
    assert not pointing_game(heat, [naive]).item()
    assert energy_in_mask(heat, true_mask).item() > 0.95


def test_a_peak_just_beside_the_box_hits_within_the_tolerance_only() -> None:
    size, preprocess = (640, 480), PREPROCESS["center 0.875"]
    geometry = eval_geometry(size, 224, preprocess)
    box = torch.tensor([[300.0, 200.0, 340.0, 240.0]])
    beside = geometry.to_input(torch.tensor([[350.0, 220.0, 350.0, 220.0]]))[0, :2]  # 10 px right of the box
    heat = torch.zeros(1, 224, 224)
    heat[0, int(beside[1]), int(beside[0])] = 1.0
    assert not pointing_game_in_mask(heat, box_masks([box], [geometry])).item()
    assert pointing_game_in_mask(heat, box_masks([box], [geometry], tolerance=15.0)).item()


def test_mask_metrics_agree_with_the_box_metrics_on_an_identity_geometry() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 16, 16, generator=generator)
    boxes = [torch.tensor([[2.0, 3.0, 9.0, 7.0]])] * 4
    masks = box_masks(boxes, [InputGeometry(1.0, 1.0, 0.0, 0.0, 16, 16)] * 4)
    assert torch.equal(pointing_game_in_mask(maps, masks), pointing_game(maps, boxes))


def test_baseline_maps() -> None:
    prior = centre_prior_maps(2, 224, 224)
    assert prior.shape == (2, 224, 224) and int(prior[0].argmax()) in {111 * 224 + 111, 111 * 224 + 112}
    centre = torch.tensor([[100.0, 100.0, 124.0, 124.0]])
    assert pointing_game(prior, [centre, centre]).all()
    first = random_maps(3, (7, 7), (224, 224), torch.Generator().manual_seed(1))
    again = random_maps(3, (7, 7), (224, 224), torch.Generator().manual_seed(1))
    assert first.shape == (3, 224, 224) and torch.equal(first, again)
    # upsampled as the methods' maps are (bilinearly), so that no whole 32 px patch ties at the peak
    torch.testing.assert_close(
        first, upsample(torch.rand(3, 7, 7, generator=torch.Generator().manual_seed(1)), (224, 224))
    )


# ----------------------------------------------------------------------------------------------------- synonyms


def test_matcher_folds_case_and_plurals_and_prefers_the_longest_phrase() -> None:
    matcher = CategoryMatcher.from_file()
    assert matcher.categories("Two MEN walk their Puppies past parked Buses.") == ["person", "dog", "bus"]
    assert matcher.categories("A woman's hand holds two hot dogs") == ["person", "hot dog"]
    assert matcher.categories("Teddy bears sit on a bench") == ["teddy bear", "bench"]
    assert matcher.categories("ladies and children with knives") == ["person", "knife"]
    assert matcher.categories("a glass building at dusk") == []
    assert matcher.categories("A baby elephant and two passenger jets near a woman") == [
        "elephant",
        "airplane",
        "person",
    ]
    mention = matcher.mentions("Three giraffes.")[0]
    assert (mention.category, mention.words, mention.position) == ("giraffe", "giraffes", 1)


def test_a_user_synonym_file_replaces_the_shipped_one(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"dog": ["hound"], "person": ["skipper"]}))
    matcher = CategoryMatcher.from_file(path, categories=["dog", "person", "cat"])
    assert matcher.categories("the skipper and his hound, and a dog") == ["person", "dog"]
    assert matcher.categories("a dog") == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"dog": "puppy"}, "'dog'"),
        ({"dog": []}, "'dog'"),
        ({"dog": ["pup"], "cat": ["pup"]}, "'pup' is listed under both"),
        ({"unicorn": ["unicorn"]}, "'unicorn' is not one of"),
    ],
)
def test_a_bad_synonym_file_is_refused_naming_the_entry(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message):
        load_category_synonyms(path, categories=["dog", "cat"])


# ------------------------------------------------------------------------------------------ real COCO (coco-mini)


def test_shipped_synonyms_cover_the_80_coco_categories() -> None:
    categories = read_instances(shared_dataset("coco-mini") / "annotations/instances_val2017.json").categories
    table = load_category_synonyms(SYNONYMS_FILE, categories)
    assert sorted(table) == sorted(categories) and len(table) == 80


def test_coco_mini_captions_pair_with_boxes_of_a_named_category() -> None:
    root = shared_dataset("coco-mini")
    instances = read_instances(root / "annotations/instances_val2017.json")
    assert len(instances.categories) == 80 and len(instances.images) == 79
    reader = CocoCaptionsReader(FileSourceConfig(format="coco", root=str(root)), root)
    records = [r for r in reader.read().records() if r["split"] == "val"]
    examples = pointing_examples(records, instances.images, CategoryMatcher.from_file(categories=instances.categories))
    assert len(examples) >= len(records) // 2  # most COCO captions name an annotated category
    for example in examples:
        assert example.category in example.named and example.boxes.shape[1:] == (4,) and len(example.boxes)
        assert example.image.startswith("val2017/") and (root / example.image).is_file()
        w, h = example.size
        assert (example.boxes[:, 2] <= w + 1).all() and (example.boxes[:, 3] <= h + 1).all()
    plane = [e for e in examples if e.text.startswith("A plane floating on top of a lake")]
    assert [e.category for e in plane] == ["airplane"]
