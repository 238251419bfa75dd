"""``mmfuse fit`` ends with the commands that explain, audit, probe and report the run, with its paths filled in."""

from __future__ import annotations

import argparse
import importlib
import shlex
from pathlib import Path

from mmfuse.commands import COMMANDS
from mmfuse.training.next_steps import next_step_commands
from tests.training.conftest import TinyFit


def _parse(command: str) -> tuple[str, argparse.Namespace]:
    """A printed ``mmfuse <tool> ...`` line parsed by that tool's own parser (a wrong option name fails here)."""
    words = shlex.split(command)
    assert words[0] == "mmfuse" and words[1] in COMMANDS
    parser = argparse.ArgumentParser(prog=f"mmfuse {words[1]}")
    importlib.import_module(COMMANDS[words[1]][0]).add_arguments(parser)
    return words[1], parser.parse_args(words[2:])


def test_fit_prints_next_steps_with_the_runs_config_and_checkpoint(tiny_fit: TinyFit) -> None:
    lines = tiny_fit.out.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("next steps for the run in ")]
    assert lines.index("mmfuse fit summary") < start, "the next steps come last, after the summary table"
    assert lines[start] == f"next steps for the run in {tiny_fit.run} (training curves: {tiny_fit.run / 'curves.png'}):"
    commands = [line.strip() for line in lines[start + 1 : start + 5]]
    parsed = dict(_parse(command) for command in commands)
    assert list(parsed) == ["explain", "audit", "probe", "report"] and parsed["probe"].probe == "robustness"
    best = [p for p in (tiny_fit.run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    for tool, args in parsed.items():
        assert Path(args.config) == tiny_fit.run / "config.yaml" and Path(args.config).is_file()
        assert [Path(args.ckpt)] == best  # the best checkpoint, which exists
        assert Path(args.out) == tiny_fit.run / {"probe": "probe"}.get(tool, tool)
    assert parsed["report"].sources == [parsed[tool].out for tool in ("explain", "audit", "probe")]


def test_validate_prints_no_next_steps(tiny_fit: TinyFit) -> None:
    assert "next steps" not in tiny_fit.validate_out and "mmfuse explain" not in tiny_fit.validate_out


def test_paths_with_spaces_are_quoted() -> None:
    explain, *_, report = next_step_commands("my runs/version_0", "my runs/version_0/checkpoints/last.ckpt")
    assert shlex.split(explain)[2:6] == ["--config", "my runs/version_0/config.yaml", "--ckpt",
                                         "my runs/version_0/checkpoints/last.ckpt"]  # fmt: skip
    assert shlex.split(report)[-3:] == [f"my runs/version_0/{name}" for name in ("explain", "audit", "probe")]
