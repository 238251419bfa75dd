"""``mmfuse explain``: explain a trained model's answers on examples of a split, as an HTML gallery, and with
``--evaluate`` measure how faithful each method is (see :mod:`mmfuse.attribution.metrics`); or, with
``--classifier``, explain a plain image classifier's top classes on a folder of photos
(see :mod:`mmfuse.attribution.photos`).

Examples::

    mmfuse explain --config experiments/shapes_color.yaml --ckpt runs/shapes_color/version_0/checkpoints/X.ckpt \\
        --out runs/explain --n 16
    mmfuse explain --model runs/shapes_color/version_0/model --out runs/explain --index 3 17 42 --evaluate
    mmfuse explain --classifier torchvision:mobilenet_v2 --weights mobilenet_v2-b0353104.pth --images photos/ \\
        --out runs/photos --top-k 3

Every input is checked before any model is loaded: a checkpoint of another architecture, an example index outside
the split, an unknown method, a missing file or an unreadable photo each end with a one-line message.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmfuse.commands._common import (
    add_config_overrides,
    build_cli,
    check_device,
    existing_path,
    load_pretrained,
    pick_split,
)
from mmfuse.errors import ConfigError
from mmfuse.progress import stage

if TYPE_CHECKING:
    import torch

    from mmfuse.types import Batch

__all__ = ["add_arguments", "run", "run_photos", "ExplainInputs", "prepare", "explain_examples"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmfuse explain``."""
    add = parser.add_argument
    add("--config", help="experiment YAML (or a run's config.yaml) the checkpoint was trained with; gives the data")
    add("--ckpt", help="checkpoint written by `mmfuse fit` (with --config)")
    add("--model", help="a save_pretrained directory (e.g. <run>/model) instead of --ckpt; without --config the "
        "data comes from the run's config.yaml next to it")  # fmt: skip
    add("--out", required=True, help="output directory: index.html + img/, and faithfulness.json/.md with --evaluate")
    add("--n", type=int, default=None, help="explain the first N examples of the split (default 16), or the first N "
        "photos (default all)")  # fmt: skip
    add("--index", type=int, nargs="+", default=None, help="explain these example indices instead of the first N")
    add("--split", default=None, help="split to explain: val, test, train or shift (default val)")
    add("--methods", nargs="+", default=None, help="attribution methods (default: every registered one; with "
        "--classifier: gradcam hirescam)")  # fmt: skip
    add("--evaluate", action="store_true", help="also measure pointing game, energy, deletion/insertion, randomization")
    add("--batch-size", type=int, default=32, help="examples per forward")
    add("--steps", type=int, default=16, help="steps of the deletion / insertion curves")
    add("--randomization-examples", type=int, default=32, help="examples in the randomization check (0 = skip)")
    add_config_overrides(parser)
    add("--device", default="cpu", help="cpu or cuda")
    add("--seed", type=int, default=0)
    photos = parser.add_argument_group("photos", "explain a plain image classifier on photos instead")
    photos.add_argument("--classifier", metavar="NAME", help="a timm model name, or torchvision:<name> (e.g. "
                        "torchvision:mobilenet_v2); random weights unless --weights")  # fmt: skip
    photos.add_argument("--weights", metavar="FILE", help="the classifier's state dict: a torch.save file (read "
                        "with weights_only=True) or .safetensors")  # fmt: skip
    photos.add_argument("--images", nargs="+", metavar="PATH", help="image files, or folders searched recursively")
    photos.add_argument("--top-k", type=int, default=2, help="classes explained per photo (default 2)")
    photos.add_argument("--target-layer", metavar="PATH", help="dotted module path of the CAM layer (default: the "
                        "model's last stage)")  # fmt: skip


@dataclasses.dataclass
class ExplainInputs:
    """Everything an explanation run needs, checked.

    Attributes:
        model: the trained :class:`~mmfuse.models.ImageTextModel`, in eval mode on the chosen device.
        tokenizer: its tokenizer.
        rows: the selected dataset rows (a Hugging Face dataset).
        indices: their indices in the split.
        class_names: label names.
        methods: method names to run.
    """

    model: Any
    tokenizer: Any
    rows: Any
    indices: list[int]
    class_names: tuple[str, ...]
    methods: list[str]


def run(args: argparse.Namespace) -> int:
    """Explain, write the gallery and (``--evaluate``) the faithfulness report; print where they are."""
    import torch

    from mmfuse.attribution.gallery import write_gallery
    from mmfuse.attribution.metrics import faithfulness_report, format_report

    torch.manual_seed(args.seed)
    if args.classifier is not None:
        return run_photos(args)
    args = _image_text_args(args)
    inputs = prepare(args)
    batch, boxes, attributions, predictions = explain_examples(inputs, args.batch_size)
    out = Path(args.out)
    index = write_gallery(
        out, inputs.model, inputs.tokenizer, batch, attributions, predictions, batch.labels, inputs.class_names,
        texts=list(inputs.rows["text"]), ids=[f"{args.split} #{i}" for i in inputs.indices],
    )  # fmt: skip
    print(f"gallery of {len(batch)} examples x {len(inputs.methods)} methods: {index}")
    if args.evaluate:
        tokenizer = inputs.tokenizer
        special = [i for i in tokenizer.all_special_ids if i != tokenizer.unk_token_id]
        starts = range(0, len(batch), args.batch_size)
        chunks = [(_rows_of(batch, s, args.batch_size).to(args.device), boxes[s : s + args.batch_size]) for s in starts]
        done = [{m: _slice(a, s, args.batch_size) for m, a in attributions.items()} for s in starts]
        report = faithfulness_report(
            inputs.model, chunks, inputs.methods, out, steps=args.steps, text_replacement=tokenizer.unk_token_id,
            special_token_ids=special, randomization_examples=args.randomization_examples, seed=args.seed,
            attributions=done,
        )  # fmt: skip
        print(format_report(report))
        print(f"faithfulness report: {out / 'faithfulness.json'}, {out / 'faithfulness.md'}")
    return 0


def prepare(args: argparse.Namespace) -> ExplainInputs:
    """Check every input, then load the data and the model (:class:`ConfigError` on bad input, before loading)."""
    args = _image_text_args(args)
    methods = _check_methods(args.methods)
    _check_numbers(args)
    if (args.model is None) == (args.ckpt is None) or (args.ckpt and not args.config):
        raise ConfigError("give --config and --ckpt, or --model (a save_pretrained directory) with or without --config")
    model_dir = existing_path(args.model, "--model", directory=True) if args.model else None
    ckpt = existing_path(args.ckpt, "--ckpt") if args.ckpt else None
    config = _data_config(args.config, model_dir)
    with stage("data", unit="examples") as current:
        cli = build_cli(config, args.overrides)
        if ckpt is not None:
            from mmfuse.training import check_checkpoint_matches

            check_checkpoint_matches(ckpt, dict(cli.model.hparams))
        datamodule = cli.datamodule
        datamodule.setup()
        split = pick_split(datamodule.splits, args.split)
        indices = _indices(args.index, args.n, split.num_rows, args.split)
        current.advance(len(indices), detail=args.split)
    with stage("model"):
        model, tokenizer = _load_model(args.ckpt, model_dir, datamodule)
        model = model.to(args.device).eval()
    return ExplainInputs(model, tokenizer, split.select(indices), indices, datamodule.spec.class_names, methods)


def _image_text_args(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the image-text defaults filled in (``--n 16``, ``--split val``); photo-only flags refused."""
    photo_flags = [flag for flag in _PHOTO_FLAGS if getattr(args, flag[2:].replace("-", "_")) is not None]
    if photo_flags:
        raise ConfigError(f"{', '.join(photo_flags)} explain photos and need --classifier")
    return argparse.Namespace(**{**vars(args), "n": 16 if args.n is None else args.n, "split": args.split or "val"})


def run_photos(args: argparse.Namespace) -> int:
    """``--classifier``: explain its top classes on the photos, write the gallery and print each photo's classes."""
    from mmfuse.attribution.classifiers import load_classifier
    from mmfuse.attribution.photos import explain_photos, write_photo_gallery

    paths, methods = _check_photo_args(args)
    with stage("model"):
        classifier = load_classifier(args.classifier, args.weights)
        model = classifier.model.to(args.device)
    results = explain_photos(
        model, paths, methods, args.target_layer, args.top_k, classifier.class_names, classifier.image_size,
        classifier.mean, classifier.std, args.batch_size,
    )  # fmt: skip
    weights = f"weights {args.weights}" if args.weights else "random weights"
    index = write_photo_gallery(args.out, results, title=f"{args.classifier} ({weights}), {classifier.image_size} px")
    for result in results:
        classes = ", ".join(f"{p.name} {100 * p.probability:.1f}%" for p in result.predictions)
        print(f"{result.path}: {classes}")
    print(f"gallery of {len(results)} photos x {len(methods)} methods x top {args.top_k} classes: {index}")
    return 0


_PHOTO_FLAGS = ("--weights", "--images", "--target-layer")
_IMAGE_TEXT_FLAGS = ("--config", "--ckpt", "--model", "--index", "--split")


def _check_photo_args(args: argparse.Namespace) -> tuple[list[Path], list[str]]:
    """The photos and CAM methods of ``--classifier``, checked (every photo decodes) before any model is built."""
    from mmfuse.attribution.gradcam import CAM_METHODS
    from mmfuse.attribution.photos import PHOTO_METHODS, find_photos
    from mmfuse.data.images import BadImageError, check_image

    given = [flag for flag in _IMAGE_TEXT_FLAGS if getattr(args, flag[2:]) is not None]
    given += ["--evaluate"] * args.evaluate + [arg for arg in args.overrides if arg.startswith("--")]
    if given:
        raise ConfigError(f"--classifier explains photos; {', '.join(given)} belong to an image-text model")
    if not args.images:
        raise ConfigError("--classifier needs --images (image files or folders)")
    if args.top_k < 1 or args.batch_size < 1 or (args.n is not None and args.n < 1):
        raise ConfigError(f"--top-k ({args.top_k}), --batch-size ({args.batch_size}) and --n ({args.n}) must be >= 1")
    methods = list(dict.fromkeys(args.methods or PHOTO_METHODS))
    unknown = [m for m in methods if m not in CAM_METHODS]
    if unknown:
        raise ConfigError(f"unknown CAM method(s) {unknown} for --classifier; known: {CAM_METHODS.names()}")
    check_device(args.device)
    if args.weights is not None:
        existing_path(args.weights, "--weights")
    paths = find_photos(args.images)[: args.n]
    for path in paths:
        try:
            check_image(path)
        except BadImageError as err:
            raise ConfigError(f"--images: {err}") from err
    return paths, methods


def explain_examples(inputs: ExplainInputs, batch_size: int) -> tuple[Batch, list[torch.Tensor], dict[str, Any], Any]:
    """Collate the selected rows and explain them in chunks.

    Returns:
        The batch of all examples (text padded to the longest), per example the (K, 4) xyxy boxes of the objects
        the question refers to, method -> :class:`~mmfuse.attribution.Attribution` over all examples, and the
        (B,) predicted classes.
    """
    import torch

    from mmfuse.attribution import explain
    from mmfuse.data.collate import ImageTextCollator

    rows = inputs.rows
    batch = ImageTextCollator(inputs.tokenizer)([rows[i] for i in range(rows.num_rows)])
    pairs = zip(rows["boxes"], rows["target_objects"])
    boxes = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4)[list(t)] for b, t in pairs]  # (K, 4) xyxy each
    device = next(inputs.model.parameters()).device
    parts: dict[str, list[Any]] = {}
    predictions = []
    with stage("attributions", total=len(batch) * len(inputs.methods), unit="maps") as current:
        for start in range(0, len(batch), batch_size):
            chunk = _rows_of(batch, start, batch_size).to(device)
            with torch.no_grad():
                predictions.append(
                    inputs.model(chunk.images, chunk.input_ids, chunk.attention_mask).logits.argmax(-1).cpu()
                )
            explained = explain(inputs.model, chunk, methods=tuple(inputs.methods), progress=current)
            for name, attribution in explained.items():
                parts.setdefault(name, []).append(attribution)
    return batch, boxes, {name: _concat(name, chunks) for name, chunks in parts.items()}, torch.cat(predictions)


def _rows_of(batch: Batch, start: int, size: int) -> Batch:
    from mmfuse.types import Batch

    rows = slice(start, start + size)
    labels = None if batch.labels is None else batch.labels[rows]
    return Batch(batch.images[rows], batch.input_ids[rows], batch.attention_mask[rows], labels)


def _slice(attribution: Any, start: int, size: int) -> Any:
    """The Attribution of examples ``start .. start + size``."""
    parts = {f: getattr(attribution, f) for f in ("image", "image_grid", "text")}
    return dataclasses.replace(
        attribution, **{f: None if t is None else t[start : start + size] for f, t in parts.items()}
    )


def _concat(name: str, chunks: list[Any]) -> Any:
    """One Attribution over all chunks (on the CPU)."""
    import torch

    from mmfuse.attribution import Attribution

    def cat(field: str) -> torch.Tensor | None:
        parts = [getattr(c, field) for c in chunks]
        return None if any(p is None for p in parts) else torch.cat([p.detach().cpu() for p in parts])

    return Attribution(name, image=cat("image"), image_grid=cat("image_grid"), text=cat("text"))


def _check_methods(methods: list[str] | None) -> list[str]:
    from mmfuse.attribution import EXPLAINERS

    known = EXPLAINERS.names()
    if methods is None:
        return known
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ConfigError(f"unknown attribution method(s) {unknown}; known: {known}")
    return list(dict.fromkeys(methods))


def _check_numbers(args: argparse.Namespace) -> None:
    if args.n < 1 or args.batch_size < 1 or args.steps < 1 or args.randomization_examples < 0:
        raise ConfigError(
            f"--n ({args.n}), --batch-size ({args.batch_size}) and --steps ({args.steps}) must be >= 1 and "
            f"--randomization-examples ({args.randomization_examples}) >= 0"
        )
    check_device(args.device)


def _data_config(config: str | None, model_dir: Path | None) -> Path:
    """The YAML that describes the data: --config, else the run's config.yaml next to a saved model."""
    if config is not None:
        return existing_path(config, "--config")
    assert model_dir is not None
    run_config = model_dir.resolve().parent / "config.yaml"
    if not run_config.is_file():
        raise ConfigError(
            f"--model {str(model_dir)!r}: no config.yaml in its run directory; pass --config for the data"
        )
    return run_config


def _indices(index: list[int] | None, n: int, size: int, split: str) -> list[int]:
    if index is None:
        return list(range(min(n, size)))
    bad = [i for i in index if not 0 <= i < size]
    if bad:
        raise ConfigError(f"--index {bad[0]} is out of range: the {split} split has {size} examples (0..{size - 1})")
    return list(dict.fromkeys(index))


def _load_model(ckpt: str | None, model_dir: Path | None, datamodule: Any) -> tuple[Any, Any]:
    """The trained model and its tokenizer, from a checkpoint or a save_pretrained directory."""
    if ckpt is not None:
        from mmfuse.training import FusionLitModule

        return FusionLitModule.load_from_checkpoint(ckpt, map_location="cpu").model, datamodule.tokenizer
    assert model_dir is not None
    return load_pretrained(model_dir, datamodule)
