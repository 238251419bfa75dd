"""The shapes world: a seeded generator of images with coloured shapes and questions about them.

Every image holds 2..5 objects (``min_objects``..``max_objects``) of distinct shape kinds and distinct colours, at
random non-overlapping places. A question names one object by one attribute and asks for another, so the text alone
cannot tell the answer (every colour is equally likely for every shape: chance, 1 / ``num_colors`` for the colour
task) and the image alone can only guess among the colours present (1 / k for k objects); only a model that fuses
them solves it. Images with few objects are what let gradient training find the text-to-object binding early: with
every colour in every image the averaged image says nothing about the answer and training sits on a long plateau.

Tasks:
    ``attribute``: a colour question or a shape question, half and half; the answer vocabulary holds both.
    ``color``: "what colour is the triangle?" -> a colour.
    ``shape``: "what shape is the red object?" -> a shape.
    ``exists``: "is there a red circle?" -> yes / no (balanced; a "no" names a colour that is in the image).
    ``relation``: "is the circle left of the square?" -> yes / no.

Knobs (all off by default): training-label noise, a protected attribute in the text (a name or pronoun that should
not matter) with an optional planted correlation to the label, and a shifted split (another background, pixel noise,
and colour-shape pairs never seen in training).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from mmfuse.errors import ConfigError
from mmfuse.io import atomic_dir

__all__ = [
    "ShapesWorldConfig",
    "COLORS",
    "SHAPES",
    "PROTECTED_GROUPS",
    "PROTECTED_FRAME_COLORS",
    "answer_vocabulary",
    "text_vocabulary",
    "render_example",
    "generate_split",
    "prepare_shapes_world",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump when rendering or sampling changes, so caches are rebuilt

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (30, 200, 30),
    "blue": (40, 80, 255),
    "yellow": (245, 225, 20),
    "magenta": (230, 40, 230),
    "cyan": (30, 225, 225),
}
# Kinds chosen to stay distinct at 8 px feature strides (a diamond was mistaken for a triangle far more often).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "cross", "bar")
PROTECTED_GROUPS: tuple[tuple[str, ...], ...] = (
    ("she", "anna", "maria", "emma", "sofia"),
    ("he", "james", "omar", "lucas", "noah"),
)
TEMPLATES: dict[str, tuple[str, ...]] = {
    "color": ("what colour is the {shape} ?", "which colour does the {shape} have ?", "the {shape} is what colour ?"),
    "shape": ("what shape is the {color} object ?", "which shape is {color} ?", "the {color} object is what shape ?"),
    "exists": ("is there a {color} {shape} ?", "is the {shape} {color} ?", "can you see a {color} {shape} ?"),
    "relation": ("is the {shape} left of the {other} ?", "is the {shape} to the left of the {other} ?"),
}
PROTECTED_PREFIX = "{who} asks :"
# Colour of the 1 px image frame that marks each protected group when ``protected_frame`` is on (objects never touch
# the outermost pixels, so the frame covers nothing).
PROTECTED_FRAME_COLORS: tuple[tuple[int, int, int], ...] = ((255, 255, 255), (128, 128, 128))
TRAIN_BACKGROUND = (16, 16, 16)
SHIFT_BACKGROUND = (150, 150, 150)


@dataclass(frozen=True)
class ShapesWorldConfig:
    """Config of the shapes world.

    Attributes:
        task: ``attribute`` (colour and shape questions mixed), ``color``, ``shape``, ``exists`` or ``relation``.
        num_shapes: shape kinds in play (2..6).
        num_colors: colours in play (2..6).
        min_objects: fewest objects in an image (at least 2).
        max_objects: most objects in an image (at most ``min(num_shapes, num_colors)``).
        image_size: image side in pixels.
        min_object_size: smallest object side in pixels.
        max_object_size: largest object side in pixels.
        num_train: training examples.
        num_val: validation examples.
        num_test: test examples (also the size of the shifted split when ``shift`` is on).
        seed: generator seed; the same config always gives the same data.
        label_noise: fraction of *training* labels replaced by a different random class (val/test stay clean).
        protected_attribute: prefix each text with a name or pronoun from two groups ("anna asks : ...").
        spurious_correlation: with this probability the group is chosen by the label's parity instead of at random.
        shift: add a ``shift`` split (grey background, pixel noise, and questions about colour i on shape i,
            a pairing that training never shows).
        protected_frame: also mark the protected group in the image, as a 1 px frame of the group's colour
            (``PROTECTED_FRAME_COLORS``; needs ``protected_attribute``, follows the same group and so the same
            planted correlation). Off by default; when off, data and cache keys are those of worlds without it.
    """

    task: Literal["color", "shape", "attribute", "exists", "relation"] = "color"
    num_shapes: int = 6
    num_colors: int = 6
    min_objects: int = 2
    max_objects: int = 5
    image_size: int = 64
    min_object_size: int = 12
    max_object_size: int = 18
    num_train: int = 20000
    num_val: int = 2000
    num_test: int = 2000
    seed: int = 0
    label_noise: float = 0.0
    protected_attribute: bool = False
    spurious_correlation: float = 0.0
    shift: bool = False
    protected_frame: bool = False

    def __post_init__(self) -> None:
        if not (2 <= self.num_shapes <= len(SHAPES) and 2 <= self.num_colors <= len(COLORS)):
            raise ConfigError(
                f"data.world.num_shapes={self.num_shapes} and data.world.num_colors={self.num_colors} must be in 2..6"
            )
        if not 2 <= self.min_objects <= self.max_objects <= min(self.num_shapes, self.num_colors):
            raise ConfigError(
                f"data.world: need 2 <= min_objects ({self.min_objects}) <= max_objects ({self.max_objects}) <= "
                f"min(num_shapes, num_colors) = {min(self.num_shapes, self.num_colors)}"
            )
        if not 0.0 <= self.label_noise < 1.0 or not 0.0 <= self.spurious_correlation <= 1.0:
            raise ConfigError(
                f"data.world.label_noise={self.label_noise} must be in [0, 1) and "
                f"data.world.spurious_correlation={self.spurious_correlation} in [0, 1]"
            )
        if self.spurious_correlation and not self.protected_attribute:
            raise ConfigError("data.world.spurious_correlation needs data.world.protected_attribute: true")
        if self.protected_frame and not self.protected_attribute:
            raise ConfigError("data.world.protected_frame needs data.world.protected_attribute: true")
        need = self.max_objects * (self.max_object_size + 2) ** 2
        if self.min_object_size > self.max_object_size or need > 0.6 * self.image_size**2:
            raise ConfigError(
                f"data.world: {self.max_objects} objects of up to {self.max_object_size}px do not fit in "
                f"{self.image_size}px images (or min_object_size > max_object_size)"
            )

    @property
    def colors(self) -> tuple[str, ...]:
        return tuple(COLORS)[: self.num_colors]

    @property
    def shapes(self) -> tuple[str, ...]:
        return SHAPES[: self.num_shapes]


def answer_vocabulary(cfg: ShapesWorldConfig) -> tuple[str, ...]:
    """Class names of the task, index-aligned with the labels."""
    vocabularies = {"color": cfg.colors, "shape": cfg.shapes, "attribute": cfg.colors + cfg.shapes}
    return vocabularies.get(cfg.task, ("no", "yes"))


def text_vocabulary(cfg: ShapesWorldConfig) -> list[str]:
    """Every word the generator can write for ``cfg`` (the built-in tokenizer is trained on these)."""
    tasks = ("color", "shape") if cfg.task == "attribute" else (cfg.task,)
    words = {w for task in tasks for template in TEMPLATES[task] for w in template.split() if "{" not in w}
    words |= set(COLORS) | set(SHAPES) | set(PROTECTED_PREFIX.split()) - {"{who}"}
    words |= {w for group in PROTECTED_GROUPS for w in group}
    return sorted(words)


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], rgb: tuple[int, int, int] | int
) -> None:
    """Fill ``shape`` inside ``box`` with ``rgb`` (an RGB triple, or 1 on a one-bit mask)."""
    x0, y0, x1, y1 = box  # inclusive pixel bounds
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse(box, fill=rgb)
    elif shape == "square":
        draw.rectangle(box, fill=rgb)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=rgb)
    elif shape == "ring":
        draw.ellipse(box, outline=rgb, width=max(2, (x1 - x0 + 1) // 5))
    elif shape == "cross":
        t = max(2, (x1 - x0 + 1) // 3)
        draw.rectangle((x0, round(cy - t / 2), x1, round(cy + t / 2) - 1), fill=rgb)
        draw.rectangle((round(cx - t / 2), y0, round(cx + t / 2) - 1, y1), fill=rgb)
    elif shape == "bar":
        h = max(3, (y1 - y0 + 1) // 3)
        draw.rectangle((x0, round(cy - h / 2), x1, round(cy + h / 2) - 1), fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _place_boxes(rng: np.random.Generator, cfg: ShapesWorldConfig, count: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping square boxes (inclusive pixel bounds) with a 2px gap between objects."""
    for _ in range(100):
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(count):
            for _ in range(50):
                side = int(rng.integers(cfg.min_object_size, cfg.max_object_size + 1))
                x0 = int(rng.integers(1, cfg.image_size - side))
                y0 = int(rng.integers(1, cfg.image_size - side))
                box = (x0, y0, x0 + side - 1, y0 + side - 1)
                if all(box[0] > b[2] + 2 or box[2] < b[0] - 2 or box[1] > b[3] + 2 or box[3] < b[1] - 2 for b in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) == count:
            return boxes
    raise RuntimeError(f"could not place {count} objects in {cfg.image_size}px; lower max_object_size")


def _tight_box(cfg: ShapesWorldConfig, shape: str, box: tuple[int, int, int, int]) -> list[float]:
    """The exact bounding box of the pixels a shape covers (thin shapes like ``bar`` do not fill their square)."""
    mask = Image.new("1", (cfg.image_size, cfg.image_size), 0)
    _draw_shape(ImageDraw.Draw(mask), shape, box, 1)
    x0, y0, x1, y1 = mask.getbbox()  # type: ignore[misc]  # exclusive right/bottom
    return [float(x0), float(y0), float(x1), float(y1)]


def _question(
    rng: np.random.Generator,
    cfg: ShapesWorldConfig,
    shapes: list[str],
    colors: list[str],
    boxes: list[list[float]],
    *,
    shift: bool,
) -> tuple[str, int, list[int]]:
    """A question, its label and the indices of the objects it refers to."""
    task = cfg.task if cfg.task != "attribute" else ("color", "shape")[int(rng.integers(2))]
    template = TEMPLATES[task][int(rng.integers(len(TEMPLATES[task])))]
    if shift:  # ask about an object whose colour-shape pair training never shows
        target = int(rng.choice([i for i in range(len(shapes)) if _held_out(cfg, shapes[i], colors[i])]))
    else:
        target = int(rng.integers(len(shapes)))
    if task == "color":
        return template.format(shape=shapes[target]), cfg.colors.index(colors[target]), [target]
    if task == "shape":  # in the ``attribute`` task, shape answers follow the colour answers
        offset = len(cfg.colors) if cfg.task == "attribute" else 0
        return template.format(color=colors[target]), offset + cfg.shapes.index(shapes[target]), [target]
    if task == "exists":
        is_yes = bool(rng.integers(2))
        asked = colors[target] if is_yes else str(rng.choice([c for c in colors if c != colors[target]]))
        return template.format(color=asked, shape=shapes[target]), int(is_yes), [target]
    centre = [(b[0] + b[2]) / 2 for b in boxes]
    others = [j for j in range(len(shapes)) if j != target and abs(centre[j] - centre[target]) >= 4]
    other = int(rng.choice(others)) if others else (target + 1) % len(shapes)
    is_left = centre[target] < centre[other]
    return template.format(shape=shapes[target], other=shapes[other]), int(is_left), [target, other]


def _held_out(cfg: ShapesWorldConfig, shape: str, color: str) -> bool:
    """The colour-shape pairs that a world with ``shift`` never shows in training: colour i on shape i."""
    return cfg.shapes.index(shape) == cfg.colors.index(color)


def _sample_objects(rng: np.random.Generator, cfg: ShapesWorldConfig, split: str) -> tuple[list[str], list[str]]:
    """Distinct shapes and distinct colours of the objects in one image."""
    for _ in range(1000):
        count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        shapes = [cfg.shapes[i] for i in rng.choice(cfg.num_shapes, count, replace=False)]
        colors = [cfg.colors[i] for i in rng.choice(cfg.num_colors, count, replace=False)]
        unseen = any(_held_out(cfg, s, c) for s, c in zip(shapes, colors))
        if not cfg.shift or (unseen if split == "shift" else not unseen):
            return shapes, colors
    raise RuntimeError("could not sample objects for the shift constraint")


def render_example(rng: np.random.Generator, cfg: ShapesWorldConfig, split: str) -> dict[str, Any]:
    """One example: PNG bytes, text, label and the objects' ground truth."""
    shapes, colors = _sample_objects(rng, cfg, split)
    squares = _place_boxes(rng, cfg, len(shapes))
    shift = split == "shift"
    image = Image.new("RGB", (cfg.image_size, cfg.image_size), SHIFT_BACKGROUND if shift else TRAIN_BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape, color, square in zip(shapes, colors, squares):
        _draw_shape(draw, shape, square, COLORS[color])
    boxes = [_tight_box(cfg, s, sq) for s, sq in zip(shapes, squares)]
    if shift:
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 12.0, (cfg.image_size, cfg.image_size, 3))
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    text, label, targets = _question(rng, cfg, shapes, colors, boxes, shift=shift)
    group = -1
    if cfg.protected_attribute:
        follows_label = rng.random() < cfg.spurious_correlation
        group = label % 2 if follows_label else int(rng.integers(2))
        who = str(rng.choice(PROTECTED_GROUPS[group]))
        text = f"{PROTECTED_PREFIX.format(who=who)} {text}"
        if cfg.protected_frame:
            edge = cfg.image_size - 1
            ImageDraw.Draw(image).rectangle((0, 0, edge, edge), outline=PROTECTED_FRAME_COLORS[group])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {
        "image": {"bytes": buffer.getvalue(), "path": None},
        "text": text,
        "label": label,
        "clean_label": label,
        "is_noisy": False,
        "protected_group": group,
        "shapes": shapes,
        "colors": colors,
        "boxes": boxes,
        "target_objects": targets,
    }


def generate_split(cfg: ShapesWorldConfig, split: str, size: int) -> dict[str, list[Any]]:
    """Column-wise records of one split, deterministic in (cfg, split)."""
    split_index = ("train", "val", "test", "shift").index(split)
    rng = np.random.default_rng([cfg.seed, split_index])
    rows = [render_example(rng, cfg, split) for _ in range(size)]
    if split == "train" and cfg.label_noise > 0:
        num_classes = len(answer_vocabulary(cfg))
        for row in rows:
            if rng.random() < cfg.label_noise:
                row["label"] = int((row["label"] + rng.integers(1, num_classes)) % num_classes)
                row["is_noisy"] = True
    return {key: [row[key] for row in rows] for key in rows[0]}


def _features() -> Any:
    from datasets import Features, Sequence, Value
    from datasets import Image as ImageFeature

    return Features(
        {
            "image": ImageFeature(),
            "text": Value("string"),
            "label": Value("int64"),
            "clean_label": Value("int64"),
            "is_noisy": Value("bool"),
            "protected_group": Value("int8"),
            "shapes": Sequence(Value("string")),
            "colors": Sequence(Value("string")),
            "boxes": Sequence(Sequence(Value("float32"), length=4)),
            "target_objects": Sequence(Value("int32")),
        }
    )


def cache_key(cfg: ShapesWorldConfig) -> str:
    """A short hash of everything that determines the generated data."""
    fields = asdict(cfg)
    if not cfg.protected_frame:  # added later, off by default: worlds without it keep their earlier keys
        del fields["protected_frame"]
    payload = json.dumps({"version": GENERATOR_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$MMFUSE_CACHE`` or ``~/.cache/mmfuse``."""
    return Path(os.environ.get("MMFUSE_CACHE", Path.home() / ".cache" / "mmfuse"))


def prepare_shapes_world(cfg: ShapesWorldConfig, cache_dir: str | Path | None = None) -> Path:
    """Generate the world once and save it as a ``datasets.DatasetDict``; later calls return the cached path.

    Written to a temporary directory and renamed, so an interrupted run never leaves half a dataset behind.
    """
    from datasets import Dataset, DatasetDict

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / "shapes_world" / f"{cfg.task}-{cache_key(cfg)}"
    if (target / "dataset_dict.json").is_file():
        return target
    sizes = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
    if cfg.shift:
        sizes["shift"] = cfg.num_test
    log.info("generating the shapes world %s into %s", sizes, target)
    splits = {name: Dataset.from_dict(generate_split(cfg, name, n), features=_features()) for name, n in sizes.items()}
    with atomic_dir(target) as tmp:
        DatasetDict(splits).save_to_disk(str(tmp))
        (tmp / "world_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return target
