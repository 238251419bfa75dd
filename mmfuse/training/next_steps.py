"""What to run after ``mmfuse fit``: the commands that explain, audit, probe and report the model just trained,
with the run's ``config.yaml`` and checkpoint filled in."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import lightning as L

from mmfuse.runs import CONFIG_FILE
from mmfuse.training.provenance import run_dir_of

__all__ = ["format_next_steps", "next_step_commands", "trained_checkpoint"]

log = logging.getLogger(__name__)


def next_step_commands(run_dir: str | Path, ckpt: str | Path) -> list[str]:
    """The ``mmfuse explain``, ``audit``, ``probe robustness`` and ``report`` command lines for a trained run.

    Each writes into a folder of the run directory (``explain/``, ``audit/``, ``probe/``, ``report/``); the report
    gathers the other three.

    Args:
        run_dir: the run directory, holding ``config.yaml``.
        ckpt: the checkpoint to check.

    Returns:
        One shell-quoted command line per step, in the order to run them.

    Example:
        >>> next_step_commands("run", "run/last.ckpt")[2]
        'mmfuse probe robustness --config run/config.yaml --ckpt run/last.ckpt --out run/probe'
    """
    run = Path(run_dir)
    source = f"--config {shlex.quote(str(run / CONFIG_FILE))} --ckpt {shlex.quote(str(ckpt))}"
    explain, audit, probe = (shlex.quote(str(run / name)) for name in ("explain", "audit", "probe"))
    return [
        f"mmfuse explain {source} --out {explain}",
        f"mmfuse audit {source} --out {audit}",
        f"mmfuse probe robustness {source} --out {probe}",
        f"mmfuse report {source} --out {shlex.quote(str(run / 'report'))} --from {explain} {audit} {probe}",
    ]


def trained_checkpoint(trainer: L.Trainer) -> Path | None:
    """The fit's best checkpoint (by the checkpoint callbacks' monitors), else its last, or None when none was
    saved."""
    paths = [getattr(cb, "best_model_path", "") for cb in trainer.checkpoint_callbacks]
    paths += [getattr(cb, "last_model_path", "") for cb in trainer.checkpoint_callbacks]
    return next((Path(p) for p in paths if p and Path(p).is_file()), None)


def format_next_steps(trainer: L.Trainer, curves: Path | None = None) -> str | None:
    """The block ``mmfuse fit`` ends with: where the curves are, then :func:`next_step_commands` for the trained
    checkpoint; None (with the reason logged) without a run directory, its ``config.yaml`` or a checkpoint."""
    if not getattr(getattr(trainer, "datamodule", None), "indexable", True):
        log.info("streamed data: the next-step commands (mmfuse explain, audit, probe, report) read rows by index")
        return None
    run_dir = run_dir_of(trainer) or Path(trainer.default_root_dir)
    ckpt = trained_checkpoint(trainer)
    if ckpt is None or not (run_dir / CONFIG_FILE).is_file():
        missing = "checkpoint" if ckpt is None else f"{run_dir / CONFIG_FILE}"
        log.info("no %s: the next-step commands (mmfuse explain, audit, probe, report) are not printed", missing)
        return None
    lines = [f"next steps for the run in {run_dir}" + (f" (training curves: {curves})" if curves else "") + ":"]
    return "\n".join([*lines, *(f"  {command}" for command in next_step_commands(run_dir, ckpt))])
