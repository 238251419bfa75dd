"""``mmfuse export MODEL_DIR --out DIR``: write ``model.pt2`` / ``model.onnx`` with a parity check and a latency
table (see :mod:`mmfuse.export`)."""

from __future__ import annotations

import argparse

from mmfuse.errors import ConfigError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmfuse export``."""
    parser.add_argument("model_dir", help="directory written by save_pretrained (config.json + model.safetensors)")
    parser.add_argument("--out", required=True, help="output directory for the exported files and the report")
    # checked by mmfuse.export (one line naming the known formats), which imports torch: not needed for --help
    parser.add_argument("--format", nargs="+", default=None, dest="formats", help="torch_export, onnx (default: both)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed abs difference of logits")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per format and batch size")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's current number)")


def run(args: argparse.Namespace) -> int:
    """Export, check and time; print a table. A parity failure ends as a :class:`ConfigError` (exit status 2)."""
    if args.repeats < 1 or (args.threads is not None and args.threads < 1):
        raise ConfigError(f"--repeats and --threads must be >= 1, got {args.repeats} and {args.threads}")
    from mmfuse.export import FORMATS, ParityError, export_model, summary_rows

    try:
        report = export_model(
            args.model_dir,
            args.out,
            formats=args.formats or FORMATS,
            atol=args.atol,
            repeats=args.repeats,
            threads=args.threads,
        )
    except ParityError as err:
        raise ConfigError(f"{err} (report in {args.out})") from err
    header = ("format", "batch", "max abs diff", "argmax", "median ms", "p90 ms")
    rows = [header, *summary_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    axes = ", ".join(f"{axis} {'dynamic' if on else 'fixed'}" for axis, on in report["dynamic_axes"].items())
    print(f"axes: {axes}; threads: {report['latency']['threads']}; report: {args.out}/export_report.md")
    return 0
