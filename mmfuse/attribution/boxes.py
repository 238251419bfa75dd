"""Ground truth for explanations of real photos: the COCO categories a caption names, and their boxes drawn at the
model's input resolution.

* :class:`CategoryMatcher` finds the categories a caption names through an editable synonym list (shipped:
  ``mmfuse/attribution/coco_synonyms.json``, a JSON object category -> words and phrases; a user file replaces it).
* :func:`read_instances` reads a COCO ``instances_*.json``: each image's size and its boxes per category.
* :func:`pointing_examples` pairs each caption with the first category it names that the image holds.
* :func:`eval_geometry` says where a photo's pixels land after the evaluation transform's resize and crop (timm's
  ``transforms_imagenet_eval``, which :func:`mmfuse.data.transforms.build_eval_transform` builds), and
  :func:`box_masks` draws the boxes there, optionally grown by a tolerance measured in the photo's own pixels.

The masks feed :func:`mmfuse.attribution.metrics.pointing_game_in_mask` and
:func:`~mmfuse.attribution.metrics.energy_in_mask`. The tolerance follows TorchRay's pointing game (Fong et al.,
"Understanding deep networks via extremal perturbations", ICCV 2019; ``torchray.benchmark.pointing_game``): a point
hits when it lies within 15 px of the object in the original image.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmfuse.data.transforms import PreprocessConfig
from mmfuse.errors import ConfigError
from mmfuse.io import read_json

__all__ = [
    "SYNONYMS_FILE",
    "CategoryMatcher",
    "Mention",
    "load_category_synonyms",
    "ImageBoxes",
    "CocoInstances",
    "read_instances",
    "PointingExample",
    "pointing_examples",
    "InputGeometry",
    "eval_geometry",
    "box_masks",
]

SYNONYMS_FILE = Path(__file__).with_name("coco_synonyms.json")
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> tuple[str, ...]:
    """Lower-case words (letters and digits); punctuation, hyphens and apostrophes split words."""
    return tuple(_WORD.findall(text.lower()))


# ------------------------------------------------------------------------------------------------------- synonyms


def load_category_synonyms(
    path: str | Path = SYNONYMS_FILE, categories: Iterable[str] | None = None
) -> dict[str, tuple[str, ...]]:
    """A synonym list: a JSON object mapping a category name to the words and phrases that name it.

    Args:
        path: the JSON file.
        categories: the category names the list may use (e.g. those of an ``instances_*.json``); None = any.

    Raises:
        ConfigError: naming the file and the entry at fault: a value that is not a non-empty list of non-empty
            strings, a category not in ``categories``, or a phrase listed under two categories.
    """
    where = f"synonym file {str(path)!r}"
    raw = read_json(path, "synonym file", "a JSON object mapping categories to lists of words")
    known = None if categories is None else set(categories)
    table: dict[str, tuple[str, ...]] = {}
    owner: dict[tuple[str, ...], str] = {}
    for category, phrases in raw.items():
        if known is not None and category not in known:
            raise ConfigError(f"{where}: category {category!r} is not one of the annotation's {len(known)} categories")
        if not isinstance(phrases, list) or not phrases or not all(isinstance(p, str) and _words(p) for p in phrases):
            raise ConfigError(f"{where}: key {category!r}: expected a non-empty list of words or phrases")
        for phrase in phrases:
            other = owner.setdefault(_words(phrase), category)
            if other != category:
                raise ConfigError(f"{where}: {phrase!r} is listed under both {other!r} and {category!r}")
        table[category] = tuple(phrases)
    return table


@dataclass(frozen=True)
class Mention:
    """A category named in a text.

    Attributes:
        category: the category name.
        words: the words that named it, lower case (``men``, ``teddy bears``).
        position: index of its first word among the text's words.
    """

    category: str
    words: str
    position: int


class CategoryMatcher:
    """Finds the categories a text names: whole words, longest phrase first, plurals and case folded.

    A phrase matches when the text's words equal it, its last word possibly in a regular plural (``dogs``,
    ``buses``, ``puppies``); irregular plurals (``men``, ``people``, ``knives``) are listed in the synonym file. The
    longest phrase at a position wins, so ``hot dog`` names ``hot dog`` and not ``dog``. In a compound of two
    category words the last one is the head: a mention followed at once by another (``baby elephant``,
    ``passenger jets``, ``pizza oven``) only modifies it and is dropped.

    Example:
        >>> matcher = CategoryMatcher({"person": ("man", "men", "baby"), "dog": ("dog",), "hot dog": ("hot dog",)})
        >>> [m.category for m in matcher.mentions("Two Men and their baby DOGS eat hot dogs.")]
        ['person', 'dog', 'hot dog']
    """

    def __init__(self, synonyms: Mapping[str, Sequence[str]]) -> None:
        self.phrases: dict[tuple[str, ...], str] = {}
        for category, phrases in synonyms.items():
            for phrase in phrases:
                self.phrases[_words(phrase)] = category
        self.longest = max((len(p) for p in self.phrases), default=0)

    @classmethod
    def from_file(cls, path: str | Path = SYNONYMS_FILE, categories: Iterable[str] | None = None) -> CategoryMatcher:
        """The matcher of a synonym file (:func:`load_category_synonyms`)."""
        return cls(load_category_synonyms(path, categories))

    def mentions(self, text: str) -> list[Mention]:
        """Every category named in ``text``, in the order of the text (a category may appear twice)."""
        words = _words(text)
        found: list[Mention] = []
        start = 0
        while start < len(words):
            for length in range(min(self.longest, len(words) - start), 0, -1):
                span = words[start : start + length]
                category = self._lookup(span)
                if category is not None:
                    found.append(Mention(category, " ".join(span), start))
                    start += length
                    break
            else:
                start += 1
        ends = [m.position + len(m.words.split()) for m in found]
        return [m for i, m in enumerate(found) if i + 1 == len(found) or found[i + 1].position != ends[i]]

    def categories(self, text: str) -> list[str]:
        """The distinct categories named in ``text``, first mention first."""
        return list(dict.fromkeys(m.category for m in self.mentions(text)))

    def _lookup(self, span: tuple[str, ...]) -> str | None:
        head, last = span[:-1], span[-1]
        for singular in _singulars(last):
            category = self.phrases.get((*head, singular))
            if category is not None:
                return category
        return None


def _singulars(word: str) -> list[str]:
    """``word`` and the singulars a regular English plural could stand for (``puppies`` -> ``puppy``)."""
    forms = [word]
    if word.endswith("ies") and len(word) > 4:
        forms.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        forms.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        forms.append(word[:-1])
    return forms


# ------------------------------------------------------------------------------------------------ COCO instances


@dataclass(frozen=True)
class ImageBoxes:
    """One annotated image.

    Attributes:
        width: W of the image, as annotated.
        height: H of the image.
        boxes: category name -> (K, 4) xyxy float boxes in the image's pixels (COCO's ``[x, y, w, h]`` converted;
            crowd regions included, as TorchRay's masks include them).
    """

    width: int
    height: int
    boxes: Mapping[str, Tensor]


@dataclass(frozen=True)
class CocoInstances:
    """What a COCO ``instances_*.json`` holds, as far as boxes go.

    Attributes:
        categories: every category name, in the file's order.
        images: image id (as a string, like the caption records of :mod:`mmfuse.data.coco`) -> :class:`ImageBoxes`;
            images without annotations have no boxes.
    """

    categories: tuple[str, ...]
    images: Mapping[str, ImageBoxes]


def read_instances(path: str | Path) -> CocoInstances:
    """The categories and per-image boxes of a COCO ``instances_*.json`` (``images``, ``annotations`` with
    ``bbox``, ``categories``).

    Raises:
        ConfigError: naming the file, for a missing section or an annotation of an unknown image or category.
    """
    data = read_json(path, "COCO instances file", "a COCO instances JSON object")
    where = f"COCO instances file {str(path)!r}"
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if missing:
        raise ConfigError(f"{where}: no {missing[0]!r} list")
    names = {c["id"]: c["name"] for c in data["categories"]}
    sizes = {str(image["id"]): (int(image["width"]), int(image["height"])) for image in data["images"]}
    boxes: dict[str, dict[str, list[list[float]]]] = {image_id: {} for image_id in sizes}
    for ann in data["annotations"]:
        image_id, category = str(ann.get("image_id")), names.get(ann.get("category_id"))
        if image_id not in sizes or category is None:
            raise ConfigError(f"{where}: annotation {ann.get('id')} names an unknown image or category")
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes[image_id].setdefault(category, []).append([x, y, x + w, y + h])
    images = {
        image_id: ImageBoxes(*sizes[image_id], {c: torch.tensor(b).reshape(-1, 4) for c, b in per_image.items()})
        for image_id, per_image in boxes.items()
    }
    return CocoInstances(tuple(names.values()), images)


@dataclass(frozen=True)
class PointingExample:
    """One caption and the category its explanation is scored against.

    Attributes:
        image_id: the image's id (string).
        image: the image path as the caption record gives it.
        caption_id: the caption's id.
        text: the caption.
        category: the first category the caption names that the image holds.
        words: the caption's words that named it.
        boxes: (K, 4) xyxy boxes of that category in the image's pixels.
        size: (W, H) of the image, as annotated.
        named: every category the caption names that the image holds, first mention first.
    """

    image_id: str
    image: str
    caption_id: str
    text: str
    category: str
    words: str
    boxes: Tensor
    size: tuple[int, int]
    named: tuple[str, ...]


def pointing_examples(
    records: Iterable[Mapping[str, Any]], instances: Mapping[str, ImageBoxes], matcher: CategoryMatcher
) -> list[PointingExample]:
    """One example per caption that names a category its image holds; captions naming none are left out.

    The first category named is the caption's subject in most COCO captions (``A man riding a horse``): one map,
    one target, so that the examples of a caption are not counted twice.

    Args:
        records: caption records with ``image_id``, ``image``, ``record_id`` and ``text`` (those of
            :class:`mmfuse.data.coco.CocoCaptionsReader`).
        instances: image id -> its boxes (``read_instances(path).images``).
        matcher: the synonym matcher.
    """
    examples = []
    for record in records:
        boxes = instances.get(str(record["image_id"]))
        if boxes is None or not isinstance(record.get("text"), str):
            continue
        mentions = [m for m in matcher.mentions(record["text"]) if m.category in boxes.boxes]
        if not mentions:
            continue
        first = mentions[0]
        named = tuple(dict.fromkeys(m.category for m in mentions))
        examples.append(
            PointingExample(
                str(record["image_id"]), str(record["image"]), str(record["record_id"]), record["text"],
                first.category, first.words, boxes.boxes[first.category], (boxes.width, boxes.height), named,
            )
        )  # fmt: skip
    return examples


# -------------------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class InputGeometry:
    """Where an image's pixels land in the model's input: ``x_in = x * scale_x - offset_x`` (and likewise for y),
    in continuous pixel coordinates (pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``).

    Attributes:
        scale_x: input pixels per image pixel, horizontally.
        scale_y: the same, vertically.
        offset_x: input coordinate of the crop's left edge, in the resized image (negative when padded).
        offset_y: the same for the top edge.
        height: H of the input.
        width: W of the input.
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    height: int
    width: int

    def to_input(self, boxes: Tensor) -> Tensor:
        """(K, 4) xyxy boxes in image pixels -> the same boxes in input pixels (not clipped to the input)."""
        scale = boxes.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        offset = boxes.new_tensor([self.offset_x, self.offset_y, self.offset_x, self.offset_y])
        return boxes.float() * scale - offset

    def pixel_centres(self) -> tuple[Tensor, Tensor]:
        """The input's pixel centres in image coordinates: ``(W,)`` x and ``(H,)`` y."""
        xs = (torch.arange(self.width) + 0.5 + self.offset_x) / self.scale_x
        ys = (torch.arange(self.height) + 0.5 + self.offset_y) / self.scale_y
        return xs, ys


def eval_geometry(
    size: tuple[int, int],
    image_size: int,
    preprocess: PreprocessConfig,
    decoded_size: tuple[int, int] | None = None,
) -> InputGeometry:
    """The resize and crop of :func:`mmfuse.data.transforms.build_eval_transform` as an :class:`InputGeometry`.

    timm's evaluation transform resizes to ``floor(image_size / crop_pct)`` and keeps the centre ``image_size``
    square: ``center`` resizes the shorter side (torchvision's ``Resize(int)``), ``squash`` both sides, ``border``
    the longer side (timm's ``ResizeKeepRatio``) and then pads.

    Args:
        size: (W, H) of the image the boxes are given in (COCO's ``width`` and ``height``).
        image_size: side of the model's square input.
        preprocess: the encoder's resize and crop settings.
        decoded_size: (W, H) the decoder produced when it differs from ``size`` (a JPEG decoded at a reduced scale,
            see :func:`mmfuse.data.images.decode_image`); None = ``size``.
    """
    width, height = size
    if width <= 0 or height <= 0 or image_size <= 0:
        raise ValueError(f"image size {size} and input side {image_size} must be positive")
    dec_w, dec_h = decoded_size or size
    scale_side = math.floor(image_size / preprocess.crop_pct)
    if preprocess.crop_mode == "squash":
        new_w, new_h = scale_side, scale_side
    elif preprocess.crop_mode == "border":
        ratio = max(dec_w / scale_side, dec_h / scale_side)
        new_w, new_h = round(dec_w / ratio), round(dec_h / ratio)
    else:  # torchvision Resize(int): the shorter side becomes scale_side, the longer one is truncated
        short, long = min(dec_w, dec_h), max(dec_w, dec_h)
        new_short, new_long = scale_side, int(scale_side * long / short)
        new_w, new_h = (new_short, new_long) if dec_w <= dec_h else (new_long, new_short)
    offset_x, offset_y = _crop_offset(new_w, image_size), _crop_offset(new_h, image_size)
    return InputGeometry(new_w / width, new_h / height, offset_x, offset_y, image_size, image_size)


def _crop_offset(side: int, crop: int) -> float:
    """Left (top) edge of a centre crop of ``crop`` pixels from ``side``, padding first when ``side`` is smaller
    (torchvision's ``center_crop`` and timm's ``center_crop_or_pad``)."""
    pad = (crop - side) // 2 if crop > side else 0
    padded = side + (crop - side if crop > side else 0)
    return float(int(round((padded - crop) / 2.0)) - pad)


def box_masks(boxes: Sequence[Tensor], geometries: Sequence[InputGeometry], tolerance: float = 0.0) -> Tensor:
    """Each example's boxes drawn at the model's input resolution.

    An input pixel is inside when its centre, taken back to the image's own pixels, lies within ``tolerance`` of a
    box (Euclidean distance; 0 = inside the closed box). The tolerance is thus measured in the original image, as
    TorchRay's 15 px are, however much the transform shrinks it.

    Args:
        boxes: per example a (K, 4) xyxy tensor in the image's pixels; K may be 0.
        geometries: per example its :class:`InputGeometry`; all of one input size.
        tolerance: margin in the image's pixels.

    Returns:
        (B, H, W) bool.
    """
    if len(boxes) != len(geometries):
        raise ValueError(f"got {len(boxes)} box sets for {len(geometries)} geometries")
    if tolerance < 0:
        raise ValueError(f"tolerance={tolerance}: a margin cannot be negative")
    if len({(g.height, g.width) for g in geometries}) > 1:
        raise ValueError("box_masks needs one input size for all examples")
    masks = []
    for example_boxes, geometry in zip(boxes, geometries):
        xs, ys = geometry.pixel_centres()  # (W,), (H,) in image pixels
        b = example_boxes.reshape(-1, 4).float()
        x0, y0, x1, y1 = (b[:, k, None] for k in range(4))  # each (K, 1)
        dx = (x0 - xs).clamp_min(0) + (xs - x1).clamp_min(0)  # (K, W): distance outside the box, horizontally
        dy = (y0 - ys).clamp_min(0) + (ys - y1).clamp_min(0)  # (K, H)
        distance = torch.sqrt(dy[:, :, None] ** 2 + dx[:, None, :] ** 2)  # (K, H, W)
        masks.append((distance <= tolerance).any(dim=0))  # (H, W); False everywhere when K = 0
    if not masks:
        return torch.zeros(0, 0, 0, dtype=torch.bool)
    return torch.stack(masks)
