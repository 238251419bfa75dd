"""``mmfuse runs list|compare|tag|plot``: the run directories under a root, side by side.

Examples::

    mmfuse runs list --root runs
    mmfuse runs tag shapes_color/version_3 color-baseline --root runs
    mmfuse runs compare shapes_color/version_4 shapes_color/version_5 --baseline color-baseline --format md
    mmfuse runs plot color-baseline shapes_color/version_5 --root runs --out curves.png --metrics val/acc,val/loss
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmfuse.errors import ConfigError
from mmfuse.runs import (
    RunInfo,
    compare_runs,
    find_runs,
    format_compare,
    format_runs,
    read_curves,
    resolve_run,
    tag_run,
)

__all__ = ["add_arguments", "run"]

DEFAULT_ROOT = "runs"
PLOT_FORMATS = (".png", ".pdf", ".svg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``list``, ``compare``, ``tag`` and ``plot`` actions, each with ``--root`` (default ``runs``)."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="{list,compare,tag,plot}")
    root_help = f"directory searched for run directories and holding tags.json (default: {DEFAULT_ROOT})"
    listing = actions.add_parser("list", help="one line per run: name, created, commit, tags, val/acc")
    listing.add_argument("--root", default=DEFAULT_ROOT, help=root_help)
    listing.add_argument("--format", choices=["text", "md"], default="text")
    compare = actions.add_parser("compare", help="config differences and metrics of runs")
    compare.add_argument("refs", nargs="+", metavar="RUN", help="run path, run name under the root, or tag")
    compare.add_argument("--baseline", metavar="TAG_OR_RUN", help="show each metric's change against this run")
    compare.add_argument("--root", default=DEFAULT_ROOT, help=root_help)
    compare.add_argument("--format", choices=["text", "md", "json"], default="text")
    tag = actions.add_parser("tag", help="give a run a unique name, stored in <root>/tags.json")
    tag.add_argument("ref", metavar="RUN", help="run path, run name under the root, or tag")
    tag.add_argument("name", metavar="NAME", help="the tag: letters, digits and . _ / -")
    tag.add_argument("--force", action="store_true", help="move the tag if another run has it")
    tag.add_argument("--root", default=DEFAULT_ROOT, help=root_help)
    plot = actions.add_parser("plot", help="overlay the training curves of runs in one figure, a colour per run")
    plot.add_argument("refs", nargs="+", metavar="RUN", help="run path, run name under the root, or tag")
    plot.add_argument("--root", default=DEFAULT_ROOT, help=root_help)
    plot.add_argument("--out", default="curves.png", help="image file: .png, .pdf or .svg (default: curves.png)")
    plot.add_argument("--metrics", metavar="NAMES", help="comma-separated metrics.csv columns, e.g. "
                      "val/acc,val/loss (default: every logged column)")  # fmt: skip


def _list(args: argparse.Namespace) -> int:
    runs = find_runs(args.root)
    if not runs:
        raise ConfigError(f"no runs under {args.root!r} (no directory there holds config.yaml or provenance.json)")
    print(format_runs(runs, args.format))
    return 0


def _compare(args: argparse.Namespace) -> int:
    runs = [resolve_run(ref, args.root) for ref in args.refs]
    baseline = None if args.baseline is None else resolve_run(args.baseline, args.root)
    comparison = compare_runs(runs, baseline)
    if args.format == "json":
        print(json.dumps(comparison, indent=2, default=str))
    else:
        print(format_compare(comparison, args.format))
    return 0


def _tag(args: argparse.Namespace) -> int:
    tagged = tag_run(args.ref, args.name, args.root, force=args.force)
    print(f"tagged {tagged.name} as {args.name}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from mmfuse.plots import plot_curves  # matplotlib: imported only for this action

    out = Path(args.out)
    if out.suffix.lower() not in PLOT_FORMATS:
        raise ConfigError(f"--out {args.out!r}: give a {', '.join(PLOT_FORMATS)} file")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {args.out!r}: no such directory {str(out.parent)!r}")
    metrics = None if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
    if metrics is not None and not metrics:
        raise ConfigError(f"--metrics {args.metrics!r}: give comma-separated metrics.csv columns, e.g. val/acc")
    runs = [resolve_run(ref, args.root) for ref in args.refs]
    curves = {_label(run): read_curves(run.path) for run in runs}
    path = plot_curves(curves, out, metrics=metrics)
    for label, columns in curves.items():
        if not set(columns) & set(metrics or columns):
            print(f"mmfuse runs plot: {label} logged none of the drawn metrics: no line of it", file=sys.stderr)
    print(f"curves of {', '.join(curves)} written to {path}")
    return 0


def _label(run: RunInfo) -> str:
    """A run's name in the legend: its name, then its tags."""
    return run.name + (f" ({', '.join(run.tags)})" if run.tags else "")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; bad references raise :class:`ConfigError`, which ``mmfuse`` prints as one line."""
    actions = {"list": _list, "compare": _compare, "tag": _tag, "plot": _plot}
    return actions[args.action](args)
