"""Grad-CAM and HiResCAM for a plain image classifier on photos, and a static HTML gallery of the maps.

Each photo is decoded by :mod:`mmfuse.data.images` (EXIF rotation, any PIL mode to RGB, a pixel limit), scaled so
that its shorter side is the model's input size and centre-cropped: the map covers exactly what the model saw. For
each of the model's top-k classes every CAM method gives one map, computed for the whole batch and all k classes in
one forward and one backward per method. The gallery is the same kind of page as :mod:`mmfuse.attribution.gallery`
writes for image-text models: PNG files next to an ``index.html`` that opens offline, with no script.
"""

from __future__ import annotations

import html
import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageFile
from torch import Tensor, nn

from mmfuse.attribution.classifiers import imagenet_class_names, preprocessing_of
from mmfuse.attribution.gallery import _STYLE, IMAGE_DIR
from mmfuse.attribution.gradcam import CAM_METHODS, GradCAM
from mmfuse.attribution.hooks import explain_mode
from mmfuse.attribution.targets import ClassLogit
from mmfuse.attribution.viz import overlay_heatmap, to_rgb, upscale
from mmfuse.data.images import load_image
from mmfuse.errors import ConfigError
from mmfuse.progress import track

__all__ = [
    "PHOTO_METHODS",
    "ClassExplanation",
    "PhotoExplanation",
    "find_photos",
    "explain_photos",
    "write_photo_gallery",
]

PHOTO_METHODS: tuple[str, ...] = ("gradcam", "hirescam")
_PHOTO_STYLE = "td.cls { text-align: left; white-space: nowrap; }"


@dataclass(frozen=True)
class ClassExplanation:
    """One of a photo's top classes and its maps.

    Attributes:
        index: class index.
        name: class name (``class <index>`` when the names are unknown).
        probability: softmax probability.
        maps: method name -> (H, W) map in [0, 1] over the model's input.
    """

    index: int
    name: str
    probability: float
    maps: dict[str, Tensor]


@dataclass(frozen=True)
class PhotoExplanation:
    """A photo, as the model saw it, and its top classes with their maps.

    Attributes:
        path: the image file.
        image: (3, H, W) float in [0, 1]: the photo resized and centre-cropped to the model's input.
        predictions: the top-k classes, most probable first.
    """

    path: Path
    image: Tensor
    predictions: tuple[ClassExplanation, ...]


def find_photos(paths: Sequence[str | Path]) -> list[Path]:
    """Image files among ``paths``: a file is taken as it is, a directory gives every image file under it.

    A file under a directory counts as an image when PIL can decode its suffix (``.jpg``, ``.png``, ``.jfif``...);
    other files (licences, JSON) are skipped. Directories are walked recursively, in sorted order.

    Raises:
        ConfigError: a path that does not exist, or no image file at all.
    """
    suffixes = _decodable_suffixes()
    photos: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            photos += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        elif path.is_file():
            photos.append(path)
        else:
            raise ConfigError(f"images {str(path)!r}: no such file or directory")
    if not photos:
        raise ConfigError(f"images {[str(p) for p in paths]}: no image files (by suffix: .jpg, .png, ...) there")
    return list(dict.fromkeys(photos))


def _decodable_suffixes() -> set[str]:
    """File suffixes of the formats PIL opens and decodes (not save-only formats, not stubs such as HDF5)."""
    suffixes = set()
    for suffix, fmt in Image.registered_extensions().items():  # also loads every PIL plugin, filling Image.OPEN
        factory = Image.OPEN.get(fmt, (None,))[0]
        is_stub = inspect.isclass(factory) and issubclass(factory, ImageFile.StubImageFile)
        if factory is not None and not is_stub:
            suffixes.add(suffix)
    return suffixes


def explain_photos(
    model: nn.Module,
    paths: Sequence[str | Path],
    methods: Sequence[str] = PHOTO_METHODS,
    target_layer: str | None = None,
    top_k: int = 2,
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 16,
) -> list[PhotoExplanation]:
    """Explain a classifier's top-k classes on photos with CAM methods.

    Args:
        model: a timm or torchvision classifier, ``model(images) -> (B, K)`` logits; explained on its device, in
            eval mode (its own train/eval flags are restored afterwards).
        paths: image files (see :func:`find_photos` for folders).
        methods: names in :data:`~mmfuse.attribution.gradcam.CAM_METHODS` (``gradcam``, ``hirescam``).
        target_layer: dotted module path; None = :func:`~mmfuse.attribution.gradcam.default_target_layer`.
        top_k: classes explained per photo, most probable first.
        class_names: class index -> name; None = ImageNet names for a head of ImageNet's size, else ``class <k>``.
        image_size: square input side; None, like ``mean`` and ``std``, = the model's own
            (:func:`~mmfuse.attribution.classifiers.preprocessing_of`).
        mean: per-channel mean of the [0, 1] pixels the model was trained on.
        std: per-channel standard deviation.
        batch_size: photos per forward.

    Returns:
        One :class:`PhotoExplanation` per path, in order.

    Raises:
        ConfigError: an unknown method or target layer, or top_k outside 1..K.
        mmfuse.data.images.BadImageError: a missing or unreadable image, naming the file.
    """
    if top_k < 1 or batch_size < 1:
        raise ValueError(f"top_k ({top_k}) and batch_size ({batch_size}) must be >= 1")
    cams = {name: _cam_method(name)(model, target_layer) for name in dict.fromkeys(methods)}
    if image_size is None or mean is None or std is None:
        own_size, own_mean, own_std = preprocessing_of(model)
        image_size, mean, std = image_size or own_size, mean or own_mean, std or own_std
    device = next(model.parameters()).device
    shift = torch.tensor(mean, device=device)[:, None, None]  # (3,) -> (3, 1, 1)
    scale = torch.tensor(std, device=device)[:, None, None]
    reading = track(paths, "read photos", unit="photos")
    images = [load_image(path, image_size) for path in reading]  # each (3, S, S) in [0, 1]
    results: list[PhotoExplanation] = []
    for start in track(range(0, len(images), batch_size), "explain photos", unit="batches"):
        chunk = torch.stack(images[start : start + batch_size]).to(device)  # (b, 3, S, S)
        probabilities, classes, maps = _explain_batch(model, (chunk - shift) / scale, cams, top_k)
        names = class_names or imagenet_class_names(model, probabilities.shape[1])
        for i, path in enumerate(paths[start : start + batch_size]):
            predictions = []
            for rank, k in enumerate(classes[i].tolist()):
                class_maps = {method: maps[method][rank, i] for method in maps}  # each (S, S)
                predictions.append(ClassExplanation(k, _name(names, k), float(probabilities[i, k]), class_maps))
            results.append(PhotoExplanation(Path(path), chunk[i].cpu(), tuple(predictions)))
    return results


def _cam_method(name: str) -> type[GradCAM]:
    if name not in CAM_METHODS:
        raise ConfigError(f"unknown CAM method {name!r} for a classifier; known: {CAM_METHODS.names()}")
    return CAM_METHODS.get(name)


def _explain_batch(
    model: nn.Module, images: Tensor, cams: dict[str, GradCAM], top_k: int
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Probabilities, top-k classes and maps of one batch.

    Args:
        model: the classifier.
        images: (b, 3, S, S) normalised images on the model's device.
        cams: method name -> CAM on the model.
        top_k: classes per image.

    Returns:
        (b, K) probabilities on the CPU, (b, k) top classes, and method -> (k, b, S, S) maps on the CPU.
    """
    with explain_mode(model), torch.no_grad():
        probabilities = model(images).float().softmax(dim=-1)  # (b, K)
    if top_k > probabilities.shape[1]:
        raise ConfigError(f"top_k={top_k} but the classifier has {probabilities.shape[1]} classes")
    classes = probabilities.topk(top_k, dim=1).indices  # (b, k)
    repeated = images.repeat(top_k, 1, 1, 1)  # (b, 3, S, S) -> (k*b, 3, S, S), rank-major
    target = ClassLogit(classes.T.reshape(-1))  # (b, k) -> (k, b) -> (k*b,): the r-th class of each image
    maps = {}
    for name, cam in cams.items():
        image = cam(repeated, target).image
        assert image is not None
        maps[name] = image.reshape(top_k, *images.shape[:1], *image.shape[1:]).cpu()  # (k*b, S, S) -> (k, b, S, S)
    return probabilities.cpu(), classes.cpu(), maps


def _name(names: Sequence[str] | None, index: int) -> str:
    return names[index] if names is not None and 0 <= index < len(names) else f"class {index}"


def write_photo_gallery(out_dir: str | Path, results: Sequence[PhotoExplanation], title: str = "") -> Path:
    """Write ``index.html`` and its PNG files (under ``img/``) into ``out_dir``.

    Per photo: its file name above the input as the model saw it and, per top class, its name and probability
    beside each method's map over the photo. Pictures smaller than :data:`~mmfuse.attribution.viz.DISPLAY_SIZE`
    are enlarged smoothly (bicubic) to that size.

    Args:
        out_dir: output directory (created).
        results: from :func:`explain_photos`.
        title: a line under the heading (e.g. the model's name).

    Returns:
        The path of ``index.html``.
    """
    out = Path(out_dir)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    root = os.path.commonpath([p.path.resolve().parent for p in results]) if results else ""
    sections = []
    for i, result in enumerate(track(results, "gallery", unit="photos")):
        key = f"photo{i:03d}"
        Image.fromarray(upscale(to_rgb(result.image), resample="bicubic")).save(out / IMAGE_DIR / f"{key}_input.png")
        rows = []
        for rank, prediction in enumerate(result.predictions, start=1):
            cells = []
            for method, heat in prediction.maps.items():
                src = f"{IMAGE_DIR}/{key}_top{rank}_{method}.png"
                Image.fromarray(upscale(overlay_heatmap(result.image, heat), resample="bicubic")).save(out / src)
                cells.append(f'<td><img class="photo" src="{src}" alt="{html.escape(method)} map"></td>')
            label = f"#{rank} <b>{html.escape(prediction.name)}</b> {100 * prediction.probability:.1f}%"
            rows.append(f'<td class="cls">{label}</td>{"".join(cells)}</tr>')
        methods = list(result.predictions[0].maps) if result.predictions else []
        name = os.path.relpath(result.path.resolve(), root) if root else str(result.path)
        picture = f'<td rowspan="{len(rows)}"><img class="photo" src="{IMAGE_DIR}/{key}_input.png" alt="input"></td>'
        head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
        body = "".join(f"<tr>{picture if r == 0 else ''}{row}" for r, row in enumerate(rows))
        sections.append(
            f'<section id="{key}"><h2>{html.escape(name)}</h2>'
            f"<table><tr><th>input</th><th>class</th>{head}</tr>{body}</table></section>"
        )
    index = out / "index.html"
    index.write_text(_page(sections, title, len(results)))
    return index


def _page(sections: list[str], title: str, count: int) -> str:
    subtitle = f"<p>{html.escape(title)}</p>\n" if title else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>mmfuse explanations: photos</title>'
        f"<style>{_STYLE}{_PHOTO_STYLE}</style></head><body>\n<h1>Explanations of an image classifier</h1>\n"
        f"{subtitle}<p>{count} photos, each cropped to the square the model saw. Per top class, each method's map "
        "is min-max normalised on its own.</p>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
