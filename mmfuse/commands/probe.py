"""``mmfuse probe``: probe a trained checkpoint for counterfactual invariance and for robustness outside the lab.

Examples::

    mmfuse probe counterfactual --config experiments/shapes_color.yaml --ckpt runs/.../X.ckpt --out runs/probe \\
        --data.world.protected_attribute true [--lists my_terms.json] [--tolerance 0.02] [--image-edit shapes_frame]
    mmfuse probe robustness --config experiments/shapes_color.yaml --ckpt runs/.../X.ckpt --out runs/probe \\
        --data.world.shift true

``counterfactual`` writes ``counterfactual.json`` / ``.md`` and exits 1 when an attribute fails the tolerance (0 when
every attribute passes), so it can gate a pipeline. ``robustness`` writes ``robustness.json`` / ``.md`` / ``.png``.
A retrieval checkpoint (``model.task: retrieval``) is probed on its ranking instead of its predicted class: the
captions' own images' ranks under swapped attribute terms, and recall@K under perturbations
(:mod:`mmfuse.probes.retrieval_counterfactual`, :mod:`mmfuse.probes.retrieval_robustness`); ``--n`` then counts
images, each with every caption of it.
Every input is checked before the model is loaded: a malformed lexicon file, an unknown attribute, corruption or
image edit, a checkpoint of another architecture or a missing split each end with a one-line message.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmfuse.commands._common import add_config_overrides, build_cli, check_device, existing_path, pick_split
from mmfuse.errors import ConfigError
from mmfuse.progress import stage

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmfuse probe counterfactual|robustness``."""
    sub = parser.add_subparsers(dest="probe", required=True, metavar="{counterfactual,robustness}")
    cf = sub.add_parser("counterfactual", help="swap protected attributes; flip rate and mean |Δp| (retrieval: Δrank)")
    _common(cf, default_n=1000)
    add = cf.add_argument
    add("--lists", nargs="+", default=[], metavar="FILE", help="lexicon files that add or extend attributes")
    add("--no-builtin-lists", action="store_true", help="use only the --lists files, not the shipped lists")
    add("--attributes", nargs="+", default=None, metavar="NAME", help="probe only these text attributes")
    add("--no-text", action="store_true", help="probe no text attribute (image edits only)")
    add("--image-edit", action="append", default=[], metavar="NAME|MODULE:FUNCTION",
        help="counterfactual image edit: a registered name (shapes_frame) or an import path; repeatable")  # fmt: skip
    add("--tolerance", type=float, default=0.02,
        help="largest flip rate that passes (retrieval: of the top-1 image; default 0.02)")  # fmt: skip
    add("--dp-tolerance", type=float, default=None,
        help="largest mean |Δp| that passes (retrieval: of the match probability; default: not checked)")  # fmt: skip
    add("--show", type=int, default=5, help="examples with the largest change listed per attribute")
    rb = sub.add_parser("robustness", help="accuracy (retrieval: recall@K) under corruptions, perturbations, a shift")
    _common(rb, default_n=500)
    add = rb.add_argument
    add("--image-corruptions", nargs="*", default=None, metavar="NAME", help="default: all; none = give no names")
    add("--text-perturbations", nargs="*", default=None, metavar="NAME", help="default: all; none = give no names")
    add("--joint", choices=["mixed", "pairs", "none"], default="mixed",
        help="image+text at one severity: a random pair per example (mixed), every pair, or none")  # fmt: skip
    add("--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="which of 1..5 (default all)")
    add("--shift-split", default=None, help="the shifted split (default: 'shift' if the data has one; not retrieval)")
    add("--k", type=int, default=5, help="retrieval: the K of recall@K (default 5)")
    add("--no-plot", action="store_true", help="skip robustness.png (needs matplotlib)")


def _common(parser: argparse.ArgumentParser, default_n: int) -> None:
    add = parser.add_argument
    add("--config", required=True, help="experiment YAML (or a run's config.yaml) the checkpoint was trained with")
    add("--ckpt", required=True, help="checkpoint written by `mmfuse fit`")
    add("--out", required=True, help="output directory")
    add("--split", default="test", help="split to probe (default test)")
    add("--n", type=int, default=default_n,
        help=f"probe the first N examples of the split (retrieval: N images, each with all its captions; default "
             f"{default_n})")  # fmt: skip
    add("--batch-size", type=int, default=64, help="examples per forward")
    add("--n-boot", type=int, default=1000, help="bootstrap resamples")
    add("--level", type=float, default=0.95, help="confidence level of the intervals")
    add_config_overrides(parser)
    add("--device", default="cpu", help="cpu or cuda")
    add("--seed", type=int, default=0, help="seed of the perturbations and of the bootstrap")


def run(args: argparse.Namespace) -> int:
    """Run the chosen probe; returns 0, or 1 when a counterfactual probe fails its tolerance."""
    if args.probe == "counterfactual":
        return _counterfactual(args)
    return _robustness(args)


def _counterfactual(args: argparse.Namespace) -> int:
    from mmfuse.probes import counterfactual_report, load_lexicons, resolve_image_edit, retrieval_counterfactual_report

    _check_numbers(args)
    if not 0.0 <= args.tolerance <= 1.0 or (args.dp_tolerance is not None and not 0.0 <= args.dp_tolerance <= 1.0):
        raise ConfigError(f"--tolerance ({args.tolerance}) and --dp-tolerance ({args.dp_tolerance}) must be in [0, 1]")
    lexicons = {} if args.no_text else load_lexicons(args.lists, include_builtin=not args.no_builtin_lists)
    if args.attributes and not args.no_text:
        unknown = [a for a in args.attributes if a not in lexicons]
        if unknown:
            raise ConfigError(f"--attributes {unknown}: the lists define {list(lexicons)}")
    edits = [resolve_image_edit(spec) for spec in args.image_edit]
    if args.no_text and not edits:
        raise ConfigError("--no-text leaves nothing to probe: give --image-edit")

    def check(datamodule: Any, task: str) -> None:
        if task == "retrieval" and (edits or args.no_text):
            flags = "--image-edit" if edits else "--no-text"
            raise ConfigError(
                f"{flags}: a retrieval model is probed by swapping terms in its captions only (image edits apply to "
                "classification models)"
            )
        world = getattr(datamodule, "world", None)
        if "shapes_frame" in args.image_edit and not getattr(world, "protected_frame", False):
            raise ConfigError(
                "--image-edit shapes_frame needs a world with a protected frame: --data.world.protected_attribute "
                "true --data.world.protected_frame true (and a model trained on it)"
            )

    _, model, data, task = _prepare(args, check)
    settings = {"tolerance": args.tolerance, "dp_tolerance": args.dp_tolerance, "batch_size": args.batch_size,
                "n_boot": args.n_boot, "level": args.level, "seed": args.seed, "n_shown": args.show}  # fmt: skip
    if task == "retrieval":
        report: Any = retrieval_counterfactual_report(
            model, data, lexicons, attributes=args.attributes, split=args.split, **settings
        )
    else:
        attributes = [] if args.no_text else args.attributes
        report = counterfactual_report(model, data, lexicons, attributes=attributes, image_edits=edits, **settings)
    json_path, md_path = report.write(args.out)
    summary = report.to_markdown().split("\n## ")[0]
    print(summary.rstrip())
    print(f"counterfactual report: {json_path}, {md_path}")
    return 0 if report.passed else 1


def _robustness(args: argparse.Namespace) -> int:
    from mmfuse.probes import IMAGE_CORRUPTIONS, TEXT_PERTURBATIONS, ProbeData, robustness_report

    _check_numbers(args)
    bad = [s for s in args.severities if not 1 <= s <= 5]
    if bad:
        raise ConfigError(f"--severities {bad}: choose from 1..5")
    if args.k < 1:
        raise ConfigError(f"--k {args.k}: recall@K needs K >= 1")
    _check_names(args.image_corruptions, "--image-corruptions", IMAGE_CORRUPTIONS.names())
    _check_names(args.text_perturbations, "--text-perturbations", TEXT_PERTURBATIONS.names())
    if not args.no_plot:
        _check_matplotlib()

    def check(datamodule: Any, task: str) -> None:
        if task == "retrieval" and args.shift_split is not None:
            raise ConfigError(
                f"--shift-split {args.shift_split!r}: a retrieval model is not compared across splits (recall@K "
                "depends on how many images a split holds); probe the other split with --split instead"
            )

    datamodule, model, data, task = _prepare(args, check)
    if task == "retrieval":
        return _retrieval_robustness(args, model, data)
    splits = _splits(datamodule)
    shift_name = args.shift_split or ("shift" if "shift" in splits and args.split != "shift" else None)
    shift = None
    if shift_name is not None:
        split = pick_split(splits, shift_name, "--shift-split")
        shift = ProbeData.from_split(split, data.collate, limit=args.n, class_names=datamodule.spec.class_names)
    report = robustness_report(
        model, data, image_corruptions=args.image_corruptions, text_perturbations=args.text_perturbations,
        joint=args.joint, shift=shift, split=args.split, severities=args.severities, batch_size=args.batch_size,
        n_boot=args.n_boot, level=args.level, seed=args.seed,
    )  # fmt: skip
    with stage("write", unit="files") as written:
        paths = report.write(args.out, plot=not args.no_plot)
        written.advance(len(paths))
    print(f"clean accuracy on {args.split} ({report.clean.n} examples): {report.clean.format()}")
    for kind in ("image", "text", "joint", "shift"):
        for name, conditions in report.curves(kind).items():
            drops = ", ".join("n/a" if (d := c.relative_drop.estimate) is None else f"{d:.1%}" for c in conditions)
            print(f"  {kind:<5} {name:<28} relative drop by severity: {drops}")
    print("robustness report: " + ", ".join(map(str, paths)))
    return 0


def _retrieval_robustness(args: argparse.Namespace, model: Any, data: Any) -> int:
    from mmfuse.probes import retrieval_robustness_report

    report = retrieval_robustness_report(
        model, data, image_corruptions=args.image_corruptions, text_perturbations=args.text_perturbations,
        joint=args.joint, split=args.split, severities=args.severities, k=args.k, batch_size=args.batch_size,
        n_boot=args.n_boot, level=args.level, seed=args.seed,
    )  # fmt: skip
    with stage("write", unit="files") as written:
        paths = report.write(args.out, plot=not args.no_plot)
        written.advance(len(paths))
    clean = ", ".join(f"{d} {interval.format()}" for d, interval in report.clean.items())
    print(f"clean recall@{report.k} on {args.split} ({report.n_images} images, {report.n_captions} captions): {clean}")
    for kind in ("image", "text", "joint"):
        for name, conditions in report.curves(kind).items():
            recalls = "; ".join(
                "/".join(f"{c.recall[d].estimate:.3f}" for d in ("t2i", "i2t")) for c in conditions
            )  # a recall is always defined: the queries are never empty
            print(f"  {kind:<5} {name:<28} t2i/i2t recall@{report.k} by severity: {recalls}")
    print("robustness report: " + ", ".join(map(str, paths)))
    return 0


def _prepare(args: argparse.Namespace, check: Callable[[Any, str], None] | None = None) -> tuple[Any, Any, Any, str]:
    """Check the files, build the data and the model from the config and the checkpoint, and take the examples.

    ``check`` sees the configured data module and the model's task before its data is generated or loaded.

    Returns:
        The data module, the model in eval mode on ``--device``, the examples (:class:`~mmfuse.probes.ProbeData`,
        or :class:`~mmfuse.probes.RetrievalData` for a retrieval model) and the model's task.
    """
    from mmfuse.probes import ProbeData, RetrievalData
    from mmfuse.training import FusionLitModule, check_checkpoint_matches

    ckpt = existing_path(args.ckpt, "--ckpt")
    with stage("data", unit="examples") as current:
        cli = build_cli(existing_path(args.config, "--config"), args.overrides)
        check_checkpoint_matches(ckpt, dict(cli.model.hparams))
        task = str(cli.model.model_cfg.task)
        datamodule = cli.datamodule
        if Path(args.out).is_file():
            raise ConfigError(f"--out {args.out!r} is a file; give a directory")
        if check is not None:
            check(datamodule, task)
        datamodule.setup()
        split = pick_split(_splits(datamodule), args.split)
        collate = _collate(datamodule)
        if task == "retrieval":
            data: Any = RetrievalData.from_split(split, collate, limit=args.n)
            current.advance(len(data.texts), detail=f"{args.split}: {len(data.images)} images")
        else:
            data = ProbeData.from_split(split, collate, limit=args.n, class_names=datamodule.spec.class_names)
            current.advance(len(data), detail=args.split)
    with stage("model"):
        model = FusionLitModule.load_from_checkpoint(ckpt, map_location="cpu").model.to(args.device).eval()
    return datamodule, model, data, task


def _splits(datamodule: Any) -> Any:
    """The split mapping of a set-up data module: ``splits`` (the shapes world) or ``datasets`` (data on disk)."""
    splits = getattr(datamodule, "splits", None)
    return splits if splits is not None else getattr(datamodule, "datasets", None) or {}


def _collate(datamodule: Any) -> Any:
    """The data's collate function, truncating texts where the data module does (``max_length``, when it has one)."""
    from mmfuse.data.collate import ImageTextCollator

    max_length = getattr(datamodule, "max_length", None)
    if max_length is None:
        return ImageTextCollator(datamodule.tokenizer)
    return ImageTextCollator(datamodule.tokenizer, max_length)


def _check_numbers(args: argparse.Namespace) -> None:
    if args.n < 1 or args.batch_size < 1 or args.n_boot < 1 or not 0.0 < args.level < 1.0:
        raise ConfigError(
            f"--n ({args.n}), --batch-size ({args.batch_size}) and --n-boot ({args.n_boot}) must be >= 1 and "
            f"--level ({args.level}) in (0, 1)"
        )
    check_device(args.device)


def _check_names(chosen: list[str] | None, flag: str, known: list[str]) -> None:
    unknown = [c for c in chosen or [] if c not in known]
    if unknown:
        raise ConfigError(f"{flag} {unknown}: known names are {known}")


def _check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ConfigError("robustness curves need matplotlib (pip install matplotlib), or pass --no-plot") from err
