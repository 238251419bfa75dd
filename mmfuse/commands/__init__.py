"""Tool subcommands of ``mmfuse`` beside LightningCLI's ``fit|validate|test|predict``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; the table below
maps the command name to that module, imported only when the command runs.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["COMMANDS", "run_command"]

COMMANDS: dict[str, tuple[str, str]] = {
    "runs": ("mmfuse.commands.runs", "list, compare, tag and plot run directories"),
    "export": ("mmfuse.commands.export", "export a saved model to torch.export / ONNX with a parity check"),
    "explain": ("mmfuse.commands.explain", "explain answers: attribution gallery and faithfulness metrics"),
    "bench": ("mmfuse.commands.bench", "benchmark training speed: mixed precision, MFU, loss parity, Lightning cost"),
    "audit": ("mmfuse.commands.audit", "audit a dataset: balance, duplicates, leakage, label errors, mismatches"),
    "baselines": ("mmfuse.commands.baselines", "baseline ladder: majority, text-only, image-only, late fusion, model"),
    "probe": ("mmfuse.commands.probe", "probe a model: counterfactual invariance and robustness outside the lab"),
    "report": ("mmfuse.commands.report", "gather audit, baselines and probes of a checkpoint into one model report"),
    "env": ("mmfuse.commands.env", "versions, hardware, threads and precisions of this machine, for a bug report"),
}


def run_command(name: str, argv: list[str]) -> int:
    """Parse ``argv`` for the tool command ``name`` and run it, reporting the progress of its stages on stderr
    (:mod:`mmfuse.progress`); returns the exit status."""
    from mmfuse.progress import reporting

    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"mmfuse {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not hasattr(args, "overrides"):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:  # config overrides, `--section.key value` (mmfuse.commands._common.add_config_overrides)
        from mmfuse.commands._common import config_overrides

        args.overrides = config_overrides(unknown)
    with reporting(name):
        return int(module.run(args) or 0)
