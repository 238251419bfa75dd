"""The ``mmfuse`` command: ``mmfuse fit|validate|test|predict --config experiments/X.yaml`` trains and evaluates with
LightningCLI (:mod:`mmfuse.training.cli`), and the tool commands of :mod:`mmfuse.commands` (``mmfuse runs``,
``mmfuse export``, ``mmfuse env``...) do the rest.

This module imports neither torch nor Lightning: ``mmfuse --help``, ``mmfuse runs list`` and the tool commands'
``--help`` start without Lightning, timm or transformers (``tests/test_startup.py``, timed by
``benchmarks/startup.py``); the training commands import their machinery when they run (seconds). ``mmfuse`` alone
prints the same overview as ``mmfuse --help`` and exits with status 2 (no command given); an unknown command ends
with one line naming close matches, status 2.

Shell completion (optional, not a dependency): jsonargparse writes a static completion script with `shtab
<https://github.com/iterative/shtab>`_ for ``fit|validate|test|predict`` and all their options (the tool commands'
plain argparse parsers are not in it); TAB then reads the script and starts no Python::

    pip install shtab
    JSONARGPARSE_ADD_PRINT_COMPLETION_ARGUMENT=true mmfuse --print_completion shtab-bash > ~/.mmfuse-completion.bash
    echo 'source ~/.mmfuse-completion.bash' >> ~/.bashrc
    # zsh: --print_completion shtab-zsh, saved as _mmfuse in a directory of $fpath
"""

from __future__ import annotations

import logging
import sys
from importlib import metadata

from mmfuse.commands import COMMANDS, run_command
from mmfuse.errors import ConfigError
from mmfuse.registry import close_matches

__all__ = ["TRAINING_COMMANDS", "main", "overview"]

# LightningCLI's subcommands (mmfuse.training.cli), one line each for the overview.
TRAINING_COMMANDS: dict[str, str] = {
    "fit": "train on an experiment YAML (--config experiments/X.yaml; any field: --trainer.max_epochs 5)",
    "validate": "evaluate a checkpoint (--ckpt_path X) on the validation split",
    "test": "evaluate a checkpoint (--ckpt_path X) on the test split, with a summary table",
    "predict": "write predictions.jsonl of a checkpoint (--ckpt_path X)",
}
_HELP = ("-h", "--help")


def overview() -> str:
    """The text of ``mmfuse --help``: the package's description (pyproject.toml's) and every command with its
    one-line summary."""
    description = metadata.metadata("mmfuse")["Summary"]
    width = max(len(name) for name in [*TRAINING_COMMANDS, *COMMANDS])
    lines = ["usage: mmfuse <command> [options]", "", description, ""]
    lines += ["training commands (LightningCLI; `mmfuse fit --help` lists every config field):"]
    lines += [f"  {name:<{width}}  {summary}" for name, summary in TRAINING_COMMANDS.items()]
    lines += ["", "tool commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "`mmfuse <command> --help` shows a command's options."]
    return "\n".join(lines)


def _unknown_command(name: str) -> ConfigError:
    known = [*TRAINING_COMMANDS, *COMMANDS]
    close = close_matches(name, known, n=3)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"commands: {', '.join(known)}"
    return ConfigError(f"unknown command {name!r} ({hint})")


def main(args: list[str] | None = None) -> None:
    """Console entry point: dispatch to a tool command or to LightningCLI; configuration errors end with a one-line
    message instead of a traceback (exit status 2).

    Args:
        args: the command line after ``mmfuse``; None = ``sys.argv[1:]``.
    """
    # mmfuse's own progress from INFO, other libraries' from WARNING (their INFO lines, such as matplotlib's font
    # cache being built, are not the run's). Lightning prints through the console handler it gives its package
    # logger (lightning/__init__.py): its records stop there instead of being printed again by the root handler.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mmfuse").setLevel(logging.INFO)
    logging.getLogger("lightning").propagate = False
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv and argv[0] in COMMANDS:
            sys.exit(run_command(argv[0], argv[1:]))
        if not argv or argv[0] in _HELP:
            print(overview())
            sys.exit(0 if argv else 2)
        if argv[0] not in TRAINING_COMMANDS and not argv[0].startswith("-"):
            raise _unknown_command(argv[0])
        from mmfuse.training.cli import run_training  # torch and Lightning: seconds to import

        run_training(args)  # None: LightningCLI reads sys.argv itself
    except ConfigError as err:
        print(f"mmfuse: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
