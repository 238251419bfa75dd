"""``mmfuse baselines``: the baseline ladder of a model on its data (see :mod:`mmfuse.audit.baselines`).

Examples::

    mmfuse baselines --config experiments/shapes_color.yaml \\
        --ckpt runs/shapes_color/version_0/checkpoints/X.ckpt --out runs/baselines
    mmfuse baselines --config experiments/shapes_color.yaml --out runs/baselines --trainer.max_epochs 1

Rows: the majority class; linear probes on the model's frozen pooled text features, pooled image features and both
concatenated (fit on the training split); the model's own predictions. Every accuracy comes with a bootstrap
interval over the evaluation examples, and the model's gain over the best simpler rung with a paired one, graded
against ``--min-gain``. Without ``--ckpt`` / ``--model`` the configured model is trained first, as ``mmfuse fit``
would (shorten it with ``--trainer.max_epochs 1``).
"""

from __future__ import annotations

import argparse
import time

from mmfuse.commands.audit import add_source_arguments, prepare, read_features
from mmfuse.errors import ConfigError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmfuse baselines``."""
    add_source_arguments(parser)
    add = parser.add_argument
    add("--split", default=None, help="evaluation split (default: the data's test split)")
    add("--train-split", default="train", help="split the probes are fit on (default train)")
    add("--min-gain", type=_gain, default=0.0, help="accuracy gain over the best simpler rung that warrants the model "
        "(default 0.0; none = report only)")  # fmt: skip
    add("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    add("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    add("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Build the ladder, write ``baselines.json`` / ``baselines.md`` into ``--out``, print the table."""
    from mmfuse.audit import baseline_ladder, write_ladder
    from mmfuse.stats import check_level

    check_level(args.level, "--level")
    if args.n_boot < 1:
        raise ConfigError(f"--n-boot {args.n_boot}: must be >= 1")
    if args.split is not None and args.split == args.train_split:
        raise ConfigError(f"--split {args.split!r} is the split the probes are fit on; evaluate on another split")
    inputs = prepare(args, need_model=True, split_names=_names(args))
    split = args.split or _test_split(inputs.datamodule)
    if split == args.train_split:
        raise ConfigError(f"the data's test split {split!r} is the split the probes are fit on; pass --train-split")
    missing = [name for name in (args.train_split, split) if name not in inputs.splits]
    if missing:
        raise ConfigError(f"split(s) {missing} not in the data; it has {sorted(inputs.splits)}")
    splits = {name: inputs.splits[name] for name in (args.train_split, split)}
    start = time.perf_counter()
    features, _ = read_features(inputs, splits, 0, args.seed, args)
    seconds = time.perf_counter() - start
    ladder = baseline_ladder(
        features[args.train_split], splits[args.train_split].labels, features[split], splits[split].labels,
        f"model ({inputs.fusion})", split, args.min_gain, args.level, args.n_boot, args.seed,
    )  # fmt: skip
    extra = {"config": args.config, "model": inputs.origin, "train_split": args.train_split, "seconds": seconds}
    try:
        paths = write_ladder(ladder, args.out, extra)
    except OSError as err:
        raise ConfigError(f"--out {args.out!r}: cannot write the ladder there ({err})") from err
    print(ladder.to_markdown())
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


def _names(args: argparse.Namespace) -> list[str] | None:
    """The splits to read: training and evaluation split (None = all, when the evaluation split is the data's)."""
    return None if args.split is None else [args.train_split, args.split]


def _test_split(datamodule: object) -> str:
    """The split the data module tests on (``test_split``; else ``test`` when present, else ``val``)."""
    configured = getattr(datamodule, "test_split", None)
    if configured:
        return str(configured)
    names = getattr(datamodule, "splits", None) or getattr(datamodule, "datasets", None) or {}
    return "test" if "test" in names else "val"


def _gain(text: str) -> float | None:
    if text.lower() == "none":
        return None
    value = float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not an accuracy difference in [-1, 1]")
    return value
