"""``mmfuse audit``: audit a dataset before trusting results on it (see :mod:`mmfuse.audit`).

Examples::

    mmfuse audit --config experiments/shapes_color.yaml --ckpt runs/shapes_color/version_0/checkpoints/X.ckpt \\
        --out runs/audit
    mmfuse audit --config experiments/shapes_color.yaml --data-only --out runs/audit --max-imbalance-ratio 1.5

Class balance, duplicates and leakage need only the data (image-caption data on disk, ``ImageTextDataModule``, is
compared image by image: the captions of one image are no duplicates of each other). Label errors and image-text
mismatches need frozen features of a model trained on the data: ``--ckpt`` (with the ``--config`` it was trained
with) or ``--model`` (a ``save_pretrained`` directory); without either, the configured model is first trained as
``mmfuse fit`` would (shorten it with ``--trainer.max_epochs 1``), because a random network's features do not
separate classes that depend on image and text together. A retrieval model (``model.task: retrieval``) is read for
its contrastive embeddings instead, and the captions that do not describe their image are flagged
(:mod:`mmfuse.audit.caption_mismatch`). Every threshold of :class:`~mmfuse.audit.AuditConfig` is a flag
(``--max-label-error-fraction 0.02``; ``none`` = report without grading).

Bad input (a wrong config key, a checkpoint of another model, an ``--out`` that cannot be written, a threshold out
of range) ends with a one-line message before any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.commands._common import add_config_overrides, build_cli, check_device, existing_path, load_pretrained
from mmfuse.errors import ConfigError
from mmfuse.progress import Stage, stage

__all__ = [
    "add_arguments",
    "run",
    "ModelInputs",
    "audit_config",
    "check_out_dir",
    "build_cli",
    "load_model",
    "read_features",
    "read_retrieval_features",
    "prepare",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmfuse audit``."""
    add_source_arguments(parser)
    add = parser.add_argument
    add("--splits", nargs="+", default=None, help="splits to audit (default: every split of the data)")
    add("--data-only", action="store_true", help="skip label errors and mismatches (no model is loaded or trained)")
    add("--no-plots", action="store_true", help="write no PNG plots (no matplotlib needed)")
    add("--strict", action="store_true", help="exit with status 1 when a graded figure fails")
    group = parser.add_argument_group("thresholds and settings (defaults of mmfuse.audit.AuditConfig)")
    hints = typing.get_type_hints(_audit_config_type())
    for f in dataclasses.fields(_audit_config_type()):
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"default {f.default}")
            continue
        kind = _scalar(hints[f.name])
        optional = kind is not str and _is_optional(hints[f.name])
        group.add_argument(
            flag,
            type=_optional(kind) if optional else kind,
            default=None,
            metavar=kind.__name__.upper(),
            help=f"default {f.default}" + (" (none = report only)" if optional else ""),
        )


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments that say where data and model come from (shared with ``mmfuse baselines``)."""
    add = parser.add_argument
    add("--config", required=True, help="experiment YAML (or a run's config.yaml) that gives the data and the model")
    add("--ckpt", help="checkpoint written by `mmfuse fit` with this config (default: train the configured model)")
    add("--model", help="a save_pretrained directory (e.g. <run>/model) instead of --ckpt")
    add("--out", required=True, help="output directory")
    add_config_overrides(parser)
    add("--batch-size", type=int, default=128, help="examples per forward when reading features")
    add("--device", default="cpu", help="cpu or cuda")


@dataclasses.dataclass
class ModelInputs:
    """A set-up data module and the model whose frozen features the probes read.

    Attributes:
        datamodule: the configured data module (set up).
        model: the :class:`~mmfuse.models.ImageTextModel` (eval mode), or None with ``--data-only``.
        tokenizer: its tokenizer.
        origin: where the model came from, for the report.
        fusion: the configured fusion's name.
        splits: the chosen splits, read (:class:`~mmfuse.audit.SplitData` by name).
    """

    datamodule: Any
    model: Any
    tokenizer: Any
    origin: str
    fusion: str
    splits: dict[str, Any]


def run(args: argparse.Namespace) -> int:
    """Audit, write ``audit.json`` / ``audit.md`` / plots into ``--out``, print the graded figures."""
    from mmfuse.audit import audit_data, audit_model, write_audit
    from mmfuse.audit.markdown import checks_table

    cfg = audit_config(args)
    if not args.no_plots:
        _require_plots()
    inputs = prepare(args, need_model=not args.data_only, split_names=args.splits)
    splits = inputs.splits
    report = audit_data(splits, inputs.datamodule.spec.class_names, cfg)
    report.source = {"config": args.config, "features": inputs.origin, "splits": ", ".join(splits)}
    if inputs.model is not None and getattr(inputs.model, "contrastive", None) is not None:
        from mmfuse.audit import audit_captions

        start = time.perf_counter()
        embeddings = read_retrieval_features(inputs, splits, cfg, args)
        report.seconds["features"] = time.perf_counter() - start
        audit_captions(report, splits, embeddings)
    elif inputs.model is not None:
        start = time.perf_counter()
        features, negatives = read_features(inputs, splits, cfg.mismatch_negatives, cfg.seed, args)
        report.seconds["features"] = time.perf_counter() - start
        audit_model(report, splits, features, negatives)
    try:
        with stage("write", unit="files") as written:
            paths = write_audit(report, args.out, plots=not args.no_plots)
            written.advance(len(paths))
    except OSError as err:
        raise ConfigError(f"--out {args.out!r}: cannot write the report there ({err})") from err
    print(checks_table(report.checks))
    print(f"audit {'PASSED' if report.passed else 'FAILED'}: " + ", ".join(str(p) for p in paths))
    return 1 if args.strict and not report.passed else 0


def prepare(args: argparse.Namespace, need_model: bool, split_names: list[str] | None = None) -> ModelInputs:
    """Check every input, then build the data, read the splits ``split_names`` (None = all) and (``need_model``)
    load or train the model."""
    from mmfuse.audit import splits_of

    _check_source_arguments(args)
    check_out_dir(args.out)
    ckpt = existing_path(args.ckpt, "--ckpt") if args.ckpt else None
    model_dir = existing_path(args.model, "--model", directory=True) if args.model else None
    config = existing_path(args.config, "--config")
    fit_root = Path(args.out) / "fit" if need_model and ckpt is None and model_dir is None else None
    with stage("data", unit="examples") as current:
        cli = build_cli(config, args.overrides, fit_root)
        if ckpt is not None:
            from mmfuse.training import check_checkpoint_matches

            check_checkpoint_matches(ckpt, dict(cli.model.hparams))
        datamodule = cli.datamodule
        datamodule.setup()
        splits = splits_of(datamodule, split_names)
        current.advance(sum(len(s) for s in splits.values()), detail=", ".join(splits))
    fusion = str(cli.model.model_cfg.fusion.name)
    if not need_model:
        return ModelInputs(datamodule, None, datamodule.tokenizer, "none (--data-only)", fusion, splits)
    model, tokenizer, origin = load_model(cli, ckpt, model_dir)
    return ModelInputs(datamodule, model.to(args.device).eval(), tokenizer, origin, fusion, splits)


def audit_config(args: argparse.Namespace) -> Any:
    """The :class:`~mmfuse.audit.AuditConfig` of the flags that were given (the others keep their defaults)."""
    from mmfuse.audit import AuditConfig

    given: dict[str, Any] = {}
    for name in AuditConfig.field_names():
        value = getattr(args, name, None)
        if value is not None:
            given[name] = None if value is _NONE else value
    return AuditConfig(**given)


def check_out_dir(out: str) -> None:
    """:class:`ConfigError` when ``out`` cannot become a writable directory (checked without creating it)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {out!r} is a file, not a directory")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out!r}: {str(parent)!r} is a file, so no directory can be made below it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out!r}: {str(parent)!r} is not writable")


def load_model(cli: Any, ckpt: Path | None, model_dir: Path | None) -> tuple[Any, Any, str]:
    """The model and tokenizer from ``ckpt`` or ``model_dir``; with neither, the configured model trained as
    ``mmfuse fit`` would. Returns (model, tokenizer, where it came from)."""
    datamodule = cli.datamodule
    if ckpt is not None:
        from mmfuse.training import FusionLitModule

        with stage("model"):
            model = FusionLitModule.load_from_checkpoint(str(ckpt), map_location="cpu").model
        return model, datamodule.tokenizer, f"checkpoint {ckpt}"
    if model_dir is not None:
        with stage("model"):
            loaded = load_pretrained(model_dir, datamodule)
        return (*loaded, f"saved model {model_dir}")
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=datamodule)
    steps = int(cli.trainer.global_step)
    origin = f"the configured model trained here ({steps} steps, {time.perf_counter() - start:.0f} s)"
    return cli.model.model, datamodule.tokenizer, origin


def read_features(
    inputs: ModelInputs, splits: dict[str, Any], num_negatives: int, seed: int, args: argparse.Namespace
) -> tuple[dict[str, Any], Any]:
    """Frozen features of every split, and of ``num_negatives`` shuffled pairs of the reference split (the matching
    probe's negatives; None when ``num_negatives`` is 0 or the split has fewer than 2 examples)."""
    from mmfuse.audit.mismatch import derangement
    from mmfuse.audit.report import reference_split
    from mmfuse.audit.source import ShuffledPairs

    ref = splits[reference_split(splits)]
    pairs = None
    if len(ref) >= 2 and num_negatives >= 2:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(len(ref), size=min(num_negatives, len(ref)), replace=False))
        pairs = ShuffledPairs(ref, chosen, chosen[derangement(len(chosen), seed)])
    total = sum(len(s) for s in splits.values()) + (0 if pairs is None else len(pairs))
    with stage("features", total=total, unit="examples") as current:
        features = {name: _features(inputs, s.rows, name, current, args) for name, s in splits.items()}
        negatives = None if pairs is None else _features(inputs, pairs, "shuffled pairs", current, args)
    return features, negatives


def read_retrieval_features(
    inputs: ModelInputs, splits: dict[str, Any], cfg: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """A retrieval model's embeddings of every split of 2 images or more (with ``cfg.caption_itm``, the ITM head's
    match probabilities of each caption with its own image and with its random other images too)."""
    from mmfuse.audit import extract_retrieval_features
    from mmfuse.audit.report import other_images

    chosen = {name: s for name, s in splits.items() if s.num_images >= 2}
    max_length = int(getattr(inputs.datamodule, "max_length", 64))
    total = sum(s.num_images + len(s) for s in chosen.values())
    embeddings = {}
    with stage("embeddings", total=total, unit="images and captions") as current:
        for name, split in chosen.items():
            current.advance(0, detail=name)
            pairs = None
            if cfg.caption_itm:
                pairs = np.concatenate([split.image_of()[:, None], other_images(split, cfg)], axis=1)  # (n, 1 + k)
            embeddings[name] = extract_retrieval_features(
                inputs.model, split, inputs.tokenizer, args.batch_size, args.device, max_length, pairs, current
            )
    return embeddings


def _features(inputs: ModelInputs, rows: Any, name: str, progress: Stage, args: argparse.Namespace) -> Any:
    """:func:`~mmfuse.audit.extract_features` of ``rows`` (called ``name`` beside the bar)."""
    from mmfuse.audit import extract_features

    progress.advance(0, detail=name)
    read = {"tokenizer": inputs.tokenizer, "batch_size": args.batch_size, "device": args.device}
    return extract_features(inputs.model, rows, **read, progress=progress)


def _check_source_arguments(args: argparse.Namespace) -> None:
    if args.ckpt and args.model:
        raise ConfigError("give --ckpt or --model, not both")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: must be >= 1")
    check_device(args.device)


def _require_plots() -> None:
    from mmfuse.audit.plots import require_matplotlib

    try:
        require_matplotlib()
    except ImportError as err:
        raise ConfigError(str(err)) from err


# ------------------------------------------------------------------------------------------ threshold flags

_NONE = object()  # "none" on the command line: report the figure without grading it


def _audit_config_type() -> type:
    from mmfuse.audit import AuditConfig

    return AuditConfig


def _is_optional(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)


def _scalar(hint: Any) -> type:
    """``float`` of ``float | None``, ``int`` of ``int``..."""
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] if _is_optional(hint) else [hint]
    kind = kinds[0]
    assert isinstance(kind, type)
    return kind


def _optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return _NONE if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse
