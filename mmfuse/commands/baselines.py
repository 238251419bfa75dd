"""``mmfuse baselines``: the baseline ladder of a model on its data (see :mod:`mmfuse.audit.baselines`).

Examples::

    mmfuse baselines --config experiments/shapes_color.yaml \\
        --ckpt runs/shapes_color/version_0/checkpoints/X.ckpt --out runs/baselines
    mmfuse baselines --config experiments/shapes_color.yaml --out runs/baselines --trainer.max_epochs 1
    mmfuse baselines --config runs/shapes_color/version_0/config.yaml \
        --ckpt runs/shapes_color/version_0/checkpoints/X.ckpt --out runs/baselines --trained --trained-epochs 1

Rows: the majority class; linear probes on the model's frozen pooled text features, pooled image features and both
concatenated (fit on the training split); the model's own predictions. Every accuracy comes with a bootstrap
interval over the evaluation examples, and the model's gain over the best simpler rung with a paired one, graded
against ``--min-gain``. Without ``--ckpt`` / ``--model`` the configured model is trained first, as ``mmfuse fit``
would (shorten it with ``--trainer.max_epochs 1``).

``--trained`` adds the simpler models trained end to end as rungs: the config with its fusion switched to
``text_only``, ``image_only`` and ``concat`` (``--model.fusion.name``; the model's own fusion is skipped), each
trained as ``mmfuse fit`` would under ``<out>/trained/<fusion>`` (``--trained-epochs N`` shortens their schedule)
and scored by its own predictions on the evaluation split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from mmfuse.commands._common import build_cli
from mmfuse.commands.audit import ModelInputs, add_source_arguments, load_model, prepare, read_features
from mmfuse.errors import ConfigError

__all__ = ["TRAINED_FUSIONS", "add_arguments", "run"]

# (fusion of the config's model, rung) of the simpler models --trained trains end to end, simplest first.
TRAINED_FUSIONS: tuple[tuple[str, str], ...] = (
    ("text_only", "text only (trained)"),
    ("image_only", "image only (trained)"),
    ("concat", "concat / late fusion (trained)"),
)


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
    add("--trained", action="store_true", help="also train the text-only, image-only and concat fusions of the "
        "config end to end and add them as rungs")  # fmt: skip
    add("--trained-epochs", type=int, default=None, help="epochs each --trained fusion trains for (default: the "
        "config's trainer.max_epochs)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build the ladder, write ``baselines.json`` / ``baselines.md`` into ``--out``, print the table."""
    from mmfuse.audit import baseline_ladder, write_ladder
    from mmfuse.stats import check_level

    check_level(args.level, "--level")
    if args.n_boot < 1:
        raise ConfigError(f"--n-boot {args.n_boot}: must be >= 1")
    if args.trained_epochs is not None and not args.trained:
        raise ConfigError(f"--trained-epochs {args.trained_epochs}: the schedule of --trained, which is not given")
    if args.trained_epochs is not None and args.trained_epochs < 1:
        raise ConfigError(f"--trained-epochs {args.trained_epochs}: must be >= 1")
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
    trained, runs = _trained_rungs(args, inputs, splits[split]) if args.trained else ([], {})
    seconds = time.perf_counter() - start
    ladder = baseline_ladder(
        features[args.train_split], splits[args.train_split].labels, features[split], splits[split].labels,
        f"model ({inputs.fusion})", split, args.min_gain, args.level, args.n_boot, args.seed, trained,
    )  # fmt: skip
    extra = {"config": args.config, "model": inputs.origin, "train_split": args.train_split, "seconds": seconds}
    if args.trained:
        extra["trained"] = runs
    try:
        paths = write_ladder(ladder, args.out, extra)
    except OSError as err:
        raise ConfigError(f"--out {args.out!r}: cannot write the ladder there ({err})") from err
    print(ladder.to_markdown())
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


def _trained_rungs(
    args: argparse.Namespace, inputs: ModelInputs, evaluation: Any
) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """Train the config with each fusion of :data:`TRAINED_FUSIONS` but the model's own (under
    ``<out>/trained/<fusion>``), and score each on ``evaluation`` (a :class:`~mmfuse.audit.SplitData`).

    Returns the rungs and, per fusion, its run directory and optimizer steps."""
    from mmfuse.audit import extract_features
    from mmfuse.audit.baselines import TrainedRung

    schedule = [] if args.trained_epochs is None else [f"--trainer.max_epochs={args.trained_epochs}"]
    rungs, runs = [], {}
    for fusion, name in TRAINED_FUSIONS:
        if fusion == inputs.fusion:
            continue
        overrides = [*args.overrides, f"--model.fusion.name={fusion}", *schedule]
        cli = build_cli(Path(args.config), overrides, Path(args.out) / "trained" / fusion)
        cli.datamodule.setup()
        model, tokenizer, _ = load_model(cli, None, None)  # trains it, as mmfuse fit would
        steps, epochs = int(cli.trainer.global_step), int(cli.trainer.current_epoch)
        read = {"tokenizer": tokenizer, "batch_size": args.batch_size, "device": args.device}
        features = extract_features(model.to(args.device).eval(), evaluation.rows, **read)
        method = f"the {fusion} fusion trained end to end (steps: {steps}, epochs: {epochs})"
        rungs.append(TrainedRung(name, method, features.logits.argmax(1) == evaluation.labels))
        runs[fusion] = {"run": cli.trainer.log_dir, "epochs": epochs, "steps": steps}
    return rungs, runs


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
