"""``mmfuse runs list|compare|tag``: the run directories under a root, side by side.

Examples::

    mmfuse runs list --root runs
    mmfuse runs tag shapes_color/version_3 color-baseline --root runs
    mmfuse runs compare shapes_color/version_4 shapes_color/version_5 --baseline color-baseline --format md
"""

from __future__ import annotations

import argparse
import json

from mmfuse.errors import ConfigError
from mmfuse.runs import compare_runs, find_runs, format_compare, format_runs, resolve_run, tag_run

__all__ = ["add_arguments", "run"]

DEFAULT_ROOT = "runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``list``, ``compare`` and ``tag`` actions, each with ``--root`` (default ``runs``)."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="{list,compare,tag}")
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


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; bad references raise :class:`ConfigError`, which ``mmfuse`` prints as one line."""
    actions = {"list": _list, "compare": _compare, "tag": _tag}
    return actions[args.action](args)
