"""``mmfuse --help``, the tool commands' ``--help`` and ``mmfuse runs list|compare`` start without the heavy
libraries: each runs as its own process, which reports at exit which of them it imported."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import pytest

from mmfuse.commands import COMMANDS
from tests.conftest import REPO
from tests.test_runs import make_run

# Top-level modules too slow to import for a help text or a table of runs (seconds each on a small CPU).
HEAVY = ("lightning", "pytorch_lightning", "transformers", "timm", "torchvision", "torch")
_MARKER = "mmfuse-startup-imported:"


def entry_code() -> str:
    """``python -c`` code that does what the ``mmfuse`` console script does (its entry point from the installed
    metadata), and prints to stderr at exit the modules of :data:`HEAVY` it imported."""
    (entry,) = metadata.entry_points(group="console_scripts", name="mmfuse")
    return (
        "import atexit, sys\n"
        f"atexit.register(lambda: print({_MARKER!r}, *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr))\n"
        "sys.argv[0] = 'mmfuse'\n"
        f"from {entry.module} import {entry.attr}\n"
        f"sys.exit({entry.attr}())\n"
    )


def make_runs(root: Path) -> list[str]:
    """Two run directories under ``root`` for ``mmfuse runs compare``; returns their names."""
    make_run(root, "version_0", created="2024-01-01T00:00:00+00:00", commit="a" * 40)
    make_run(root, "version_1", num_layers=4, val_acc=(0.9,), created="2024-01-02T00:00:00+00:00")
    return ["version_0", "version_1"]


def startup_commands(root: Path, tools: Sequence[str]) -> dict[str, list[str]]:
    """Command name -> ``mmfuse`` arguments: the overview, ``runs list`` and ``runs compare`` on the runs of
    :func:`make_runs` under ``root``, and ``<tool> --help`` for each of ``tools``."""
    return {
        "mmfuse --help": ["--help"],
        "mmfuse runs list": ["runs", "list", "--root", str(root)],
        "mmfuse runs compare": ["runs", "compare", *make_runs(root), "--root", str(root)],
        **{f"mmfuse {tool} --help": [tool, "--help"] for tool in tools},
    }


def imported_heavy(stderr: str) -> list[str]:
    """The :data:`HEAVY` modules a process of :func:`entry_code` reported."""
    lines = [line for line in stderr.splitlines() if line.startswith(_MARKER)]
    assert lines, f"no import report in the output:\n{stderr}"
    return lines[-1].removeprefix(_MARKER).split()


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    return startup_commands(tmp_path_factory.mktemp("runs"), list(COMMANDS))


@pytest.mark.parametrize("name", ["mmfuse --help", "mmfuse runs list", "mmfuse runs compare"])
def test_overview_and_runs_start_without_heavy_imports(name: str, commands: dict[str, list[str]]) -> None:
    _check_start(commands[name])


@pytest.mark.parametrize("tool", sorted(COMMANDS))
def test_tool_help_starts_without_heavy_imports(tool: str, commands: dict[str, list[str]]) -> None:
    _check_start(commands[f"mmfuse {tool} --help"])


@pytest.mark.parametrize("sub", ["amp"])
def test_bench_subcommand_help_starts_without_heavy_imports(sub: str) -> None:
    _check_start(["bench", sub, "--help"])


def _check_start(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", entry_code(), *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip()
    imported = imported_heavy(result.stderr)
    assert imported == [], f"mmfuse {' '.join(args)} imported {imported}"
