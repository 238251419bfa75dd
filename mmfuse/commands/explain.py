"""``mmfuse explain``: explain a trained model's answers on examples of a split, as an HTML gallery, and with
``--evaluate`` measure how faithful each method is (see :mod:`mmfuse.attribution.metrics`); or, with
``--classifier``, explain a plain image classifier's top classes on a folder of photos
(see :mod:`mmfuse.attribution.photos`).

A classifier's maps explain its predicted class; a retrieval model's (``model.task: retrieval``) explain the ITM
match logit of each image-caption pair, whatever its answer. ``--precision bf16-mixed`` or ``16-mixed`` runs
everything the command asks of the model (answers, maps and, with ``--evaluate``, the metrics' forward passes)
under autocast, with the methods' own algebra in fp32 (:mod:`mmfuse.attribution.amp`). The methods then also run
once in fp32 for the same classes, and ``faithfulness.json`` / ``.md`` get, per method, the Spearman rank
correlation between each example's autocast map and its fp32 map (mean with a bootstrap interval), with or without
``--evaluate``: a map made in reduced precision is never shown without how far it moved.

Examples::

    mmfuse explain --config experiments/shapes_color.yaml --ckpt runs/shapes_color/version_0/checkpoints/X.ckpt \\
        --out runs/explain --n 16
    mmfuse explain --model runs/shapes_color/version_0/model --out runs/explain --index 3 17 42 --evaluate
    mmfuse explain --model runs/shapes_color/version_0/model --out runs/explain_bf16 --precision bf16-mixed
    mmfuse explain --classifier torchvision:mobilenet_v2 --weights mobilenet_v2-b0353104.pth --images photos/ \\
        --out runs/photos --top-k 3

Every input is checked before any model is loaded: a checkpoint of another architecture, an example index outside
the split, an unknown method or precision, a missing file or an unreadable photo each end with a one-line message.
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

    from mmfuse.attribution import Attribution
    from mmfuse.attribution.viz import Resample
    from mmfuse.progress import Stage
    from mmfuse.types import Batch

__all__ = [
    "add_arguments",
    "run",
    "run_photos",
    "ExplainInputs",
    "Explained",
    "prepare",
    "explain_examples",
    "predict_classes",
    "explain_batch",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmfuse explain``."""
    add = parser.add_argument
    add("--config", help="experiment YAML (or a run's config.yaml) the checkpoint was trained with; gives the data")
    add("--ckpt", help="checkpoint written by `mmfuse fit` (with --config)")
    add("--model", help="a save_pretrained directory (e.g. <run>/model) instead of --ckpt; without --config the "
        "data comes from the run's config.yaml next to it")  # fmt: skip
    add("--out", required=True, help="output directory: index.html + img/, and faithfulness.json/.md with --evaluate "
        "or a reduced --precision")  # fmt: skip
    add("--n", type=int, default=None, help="explain the first N examples of the split (default 16), or the first N "
        "photos (default all)")  # fmt: skip
    add("--index", type=int, nargs="+", default=None, help="explain these example indices instead of the first N")
    add("--split", default=None, help="split to explain: val, test, train or shift (default val; data without a val "
        "split: its data.val_split)")  # fmt: skip
    add("--methods", nargs="+", default=None, help="attribution methods (default: every registered one; with "
        "--classifier: gradcam hirescam)")  # fmt: skip
    add("--evaluate", action="store_true", help="also measure pointing game, energy, deletion/insertion, randomization "
        "(needs the shapes world's object boxes)")  # fmt: skip
    add("--precision", default="32-true", metavar="{32-true,bf16-mixed,16-mixed}", help="autocast the model's "
        "passes to bf16 or fp16 (the methods' algebra stays fp32) and write each method's rank agreement with its "
        "fp32 maps to faithfulness.json/.md (default 32-true)")  # fmt: skip
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
        rows: the selected dataset rows: a Hugging Face dataset for the shapes world, else :attr:`examples`.
        indices: their indices in the split.
        class_names: label names (for a retrieval model its ITM classes, ``no_match`` and ``match``).
        methods: method names to run.
        split: the split's name.
        is_retrieval: the model ranks image-text pairs; its maps explain the ITM match logit.
        max_length: the data's text truncation length; None = the collator's default.
        examples: the selected examples, one dict each (``image``, ``text``, ``label``, and in the shapes world
            ``boxes`` and ``target_objects``).
    """

    model: Any
    tokenizer: Any
    rows: Any
    indices: list[int]
    class_names: tuple[str, ...]
    methods: list[str]
    split: str = "val"
    is_retrieval: bool = False
    max_length: int | None = None
    examples: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Explained:
    """The examples and their explanations.

    Attributes:
        batch: all examples (text padded to the longest); a retrieval model's labels are all ``match``.
        boxes: per example the (K, 4) xyxy boxes of the objects the question refers to; None when the data
            records none (only the shapes world does).
        predictions: (B,) the model's answers.
        attributions: method -> :class:`~mmfuse.attribution.Attribution` over all examples, at the run's precision.
        reference: the same in fp32, explaining the same classes, when the run's precision is not ``32-true``.
    """

    batch: Batch
    boxes: list[torch.Tensor] | None
    predictions: torch.Tensor
    attributions: dict[str, Attribution]
    reference: dict[str, Attribution] | None = None


def run(args: argparse.Namespace) -> int:
    """Explain, write the gallery and (``--evaluate``, or a reduced ``--precision``) the faithfulness report; print
    where they are."""
    import torch

    from mmfuse.attribution.amp import agreement_report, format_agreement
    from mmfuse.attribution.gallery import write_gallery

    torch.manual_seed(args.seed)
    if args.classifier is not None:
        return run_photos(args)
    args = _image_text_args(args)
    inputs = prepare(args)
    explained = explain_examples(inputs, args.batch_size, args.precision)
    out = Path(args.out)
    batch = explained.batch
    resample: Resample = "nearest" if explained.boxes is not None else "bicubic"  # the shapes world; photos
    index = write_gallery(
        out, inputs.model, inputs.tokenizer, batch, explained.attributions, explained.predictions, batch.labels,
        inputs.class_names, texts=[example["text"] for example in inputs.examples],
        ids=[f"{inputs.split} #{i}" for i in inputs.indices], resample=resample,
        note=_gallery_note(inputs, args.precision),
    )  # fmt: skip
    print(f"gallery of {len(batch)} examples x {len(inputs.methods)} methods: {index}")
    report = _evaluate(args, inputs, explained) if args.evaluate else None
    agreement = None
    if explained.reference is not None:
        agreement = agreement_report(
            explained.attributions, explained.reference, batch.attention_mask, args.precision, seed=args.seed
        )
        print(format_agreement(agreement))
    if report is not None or agreement is not None:
        json_path, md_path = _write_report(out, report, agreement, len(batch))
        print(f"faithfulness report: {json_path}, {md_path}")
    return 0


def _gallery_note(inputs: ExplainInputs, precision: str) -> str | None:
    """What the gallery's maps explain, and in which precision, when that is not a classifier's fp32 answer."""
    notes = ["Maps explain the ITM match logit of each image-caption pair."] if inputs.is_retrieval else []
    if precision != "32-true":
        notes.append(f"Maps made under {precision} autocast (algebra in fp32); faithfulness.md compares them to fp32.")
    return " ".join(notes) or None


def _evaluate(args: argparse.Namespace, inputs: ExplainInputs, explained: Explained) -> dict[str, Any]:
    """The faithfulness report of the maps (:func:`~mmfuse.attribution.metrics.faithfulness_report`), with the
    model's forward passes at the run's precision; printed."""
    from mmfuse.attribution.amp import autocast_to
    from mmfuse.attribution.metrics import faithfulness_report, format_report

    batch, boxes, tokenizer = explained.batch, explained.boxes, inputs.tokenizer
    assert boxes is not None  # prepare refuses --evaluate on data without boxes
    special = [i for i in tokenizer.all_special_ids if i != tokenizer.unk_token_id]
    starts = range(0, len(batch), args.batch_size)
    chunks = [(_rows_of(batch, s, args.batch_size).to(args.device), boxes[s : s + args.batch_size]) for s in starts]
    done = [{m: _slice(a, s, args.batch_size) for m, a in explained.attributions.items()} for s in starts]
    with autocast_to(args.precision, next(inputs.model.parameters()).device):
        report = faithfulness_report(
            inputs.model, chunks, inputs.methods, steps=args.steps, text_replacement=tokenizer.unk_token_id,
            special_token_ids=special, randomization_examples=args.randomization_examples, seed=args.seed,
            attributions=done,
        )  # fmt: skip
    report["settings"]["precision"] = args.precision
    print(format_report(report))
    return report


def _write_report(
    out: Path, report: dict[str, Any] | None, agreement: dict[str, Any] | None, n_examples: int
) -> tuple[Path, Path]:
    """``faithfulness.json`` and ``.md``: the faithfulness report (``--evaluate``) and the agreement with fp32 maps
    (a reduced ``--precision``, under the key ``precision``), whichever the run has."""
    from mmfuse.attribution.amp import format_agreement
    from mmfuse.attribution.metrics import format_report, write_report
    from mmfuse.io import write_atomic, write_json

    if report is None:
        assert agreement is not None
        json_path, md_path = out / "faithfulness.json", out / "faithfulness.md"
        write_json(json_path, {"n_examples": n_examples, "precision": agreement})
        write_atomic(md_path, "# Faithfulness of the explanations\n\n" + format_agreement(agreement))
        return json_path, md_path
    if agreement is not None:
        report["precision"] = agreement
    json_path, md_path = write_report(report, out)
    if agreement is not None:
        write_atomic(md_path, format_report(report) + "\n" + format_agreement(agreement))
    return json_path, md_path


def prepare(args: argparse.Namespace) -> ExplainInputs:
    """Check every input, then load the data and the model (:class:`ConfigError` on bad input, before loading)."""
    from mmfuse.heads import MATCHING_CLASSES

    args = _image_text_args(args)
    methods = _check_methods(args.methods)
    _check_numbers(args)
    _check_precision(args.precision, args.device)
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
        splits = _splits(datamodule)
        name = args.split or _default_split(datamodule, splits)
        split = pick_split(splits, name)
        indices = _indices(args.index, args.n, len(split), name)
        examples = _read_examples(split, indices, name)
        if args.evaluate and "boxes" not in examples[0]:
            raise ConfigError(
                f"--evaluate scores maps against the objects' boxes, which the {name} split of {config} does not "
                "record (the shapes world does); without --evaluate, a reduced --precision still measures the maps' "
                "agreement with fp32"
            )
        current.advance(len(indices), detail=name)
    with stage("model"):
        model, tokenizer = _load_model(args.ckpt, model_dir, datamodule)
        model = model.to(args.device).eval()
    is_retrieval = getattr(getattr(model, "cfg", None), "task", None) == "retrieval"
    class_names = MATCHING_CLASSES if is_retrieval else datamodule.spec.class_names
    max_length = getattr(datamodule, "max_length", None)
    rows = split.select(indices) if hasattr(split, "select") else examples
    return ExplainInputs(
        model, tokenizer, rows, indices, class_names, methods, name, is_retrieval, max_length, examples
    )


def _image_text_args(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the image-text defaults filled in (``--n 16``); photo-only flags refused."""
    photo_flags = [flag for flag in _PHOTO_FLAGS if getattr(args, flag[2:].replace("-", "_")) is not None]
    if photo_flags:
        raise ConfigError(f"{', '.join(photo_flags)} explain photos and need --classifier")
    return argparse.Namespace(**{**vars(args), "n": 16 if args.n is None else args.n})


def _splits(datamodule: Any) -> Any:
    """The data module's splits by name: the shapes world's Hugging Face datasets (``splits``) or the datasets of
    data on disk (``datasets``); both give ``len`` and one example dict per index."""
    splits = getattr(datamodule, "splits", None)
    return splits if splits is not None else datamodule.datasets


def _default_split(datamodule: Any, splits: Any) -> str:
    """``val``; for data without one, the split the experiment validates on (``data.val_split``), if it has one."""
    val_split = getattr(datamodule, "val_split", None)
    return str(val_split) if "val" not in splits and val_split in splits else "val"


def _read_examples(split: Any, indices: list[int], name: str) -> list[dict[str, Any]]:
    """The examples at ``indices`` of a split (:class:`ConfigError` for one that cannot be read)."""
    examples = [split[i] for i in indices]
    bad = [i for i, example in zip(indices, examples) if example is None]  # data on disk with skip_bad: unreadable
    if bad:
        raise ConfigError(f"--index {bad[0]}: example {bad[0]} of the {name} split is a bad record; choose others")
    return examples


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
    given += ["--evaluate"] * args.evaluate + ["--precision"] * (args.precision != "32-true")
    given += [arg for arg in args.overrides if arg.startswith("--")]
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


def explain_examples(inputs: ExplainInputs, batch_size: int, precision: str = "32-true") -> Explained:
    """Collate the selected rows, then answer and explain them in chunks at ``precision``, and once more in fp32
    when ``precision`` is not ``32-true``.

    A classifier's maps explain its answer at ``precision``, a retrieval model's the ITM match logit; the fp32
    reference explains the same classes, so the two differ only by the precision.
    """
    import torch

    from mmfuse.data.collate import ImageTextCollator
    from mmfuse.heads import MATCH

    tokenizer, length = inputs.tokenizer, inputs.max_length
    collate = ImageTextCollator(tokenizer) if length is None else ImageTextCollator(tokenizer, length)
    batch = collate(inputs.examples)
    if inputs.is_retrieval:  # every row pairs an image with one of its own captions
        batch = dataclasses.replace(batch, labels=torch.full((len(batch),), MATCH))
    predictions = predict_classes(inputs.model, batch, batch_size, precision)
    classes = torch.full_like(predictions, MATCH) if inputs.is_retrieval else predictions
    maps = len(batch) * len(inputs.methods)
    with stage("attributions", total=maps, unit="maps") as current:
        attributions = explain_batch(inputs, batch, classes, batch_size, precision, current)
    reference = None
    if precision != "32-true":
        with stage("fp32 reference", total=maps, unit="maps") as current:
            reference = explain_batch(inputs, batch, classes, batch_size, "32-true", current)
    return Explained(batch, _boxes(inputs.examples), predictions, attributions, reference)


def predict_classes(model: Any, batch: Batch, batch_size: int, precision: str) -> torch.Tensor:
    """(B,) the model's answers (top classes) at ``precision``, in chunks of ``batch_size``, on the CPU."""
    import torch

    from mmfuse.attribution.amp import autocast_to

    device = next(model.parameters()).device
    answers = []
    for start in range(0, len(batch), batch_size):
        chunk = _rows_of(batch, start, batch_size).to(device)
        with autocast_to(precision, device), torch.no_grad():
            answers.append(model(chunk.images, chunk.input_ids, chunk.attention_mask).logits.argmax(-1).cpu())
    return torch.cat(answers)


def explain_batch(
    inputs: ExplainInputs,
    batch: Batch,
    classes: torch.Tensor,
    batch_size: int,
    precision: str,
    progress: Stage | None = None,
) -> dict[str, Attribution]:
    """Every method of ``inputs`` on ``batch``, explaining the logits of ``classes`` (B,), in chunks of
    ``batch_size`` at ``precision`` (``32-true``: autocast off).

    Returns:
        method -> :class:`~mmfuse.attribution.Attribution` over the whole batch, on the CPU; ``progress`` (a
        :mod:`mmfuse.progress` stage) advances by each chunk's examples after each method.
    """
    from mmfuse.attribution import ClassLogit, explain
    from mmfuse.attribution.amp import autocast_to

    device = next(inputs.model.parameters()).device
    parts: dict[str, list[Any]] = {}
    for start in range(0, len(batch), batch_size):
        chunk = _rows_of(batch, start, batch_size).to(device)
        target = ClassLogit(classes[start : start + batch_size].to(device))
        with autocast_to(precision, device):
            explained = explain(inputs.model, chunk, methods=tuple(inputs.methods), target=target, progress=progress)
        for name, attribution in explained.items():
            parts.setdefault(name, []).append(attribution)
    return {name: _concat(name, chunks) for name, chunks in parts.items()}


def _boxes(examples: list[dict[str, Any]]) -> list[torch.Tensor] | None:
    """Per example the (K, 4) xyxy boxes of the objects its question refers to; None for data without boxes."""
    import torch

    if "boxes" not in examples[0]:
        return None
    return [torch.tensor(e["boxes"], dtype=torch.float32).reshape(-1, 4)[list(e["target_objects"])] for e in examples]


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


def _check_precision(precision: str, device: str) -> None:
    """:class:`ConfigError` for a precision that is unknown, or whose autocast does not run on ``device`` here."""
    import torch

    from mmfuse.attribution.amp import autocast_dtype, unsupported_reason

    dtype = autocast_dtype(precision)
    reason = None if dtype is None else unsupported_reason(torch.device(device), dtype)
    if reason is not None:
        raise ConfigError(f"--precision {precision}: {reason}")


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
