"""``mmfuse fit|validate|test|predict --config experiments/X.yaml`` on LightningCLI, plus the tool commands of
:mod:`mmfuse.commands` (``mmfuse runs``, ``mmfuse export``...).

Every field of the model, data and trainer configs can be overridden on the command line
(``--trainer.precision bf16-mixed``, ``--model.fusion.num_layers 4``); ``--print_config`` shows the resolved config.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from mmfuse.commands import COMMANDS, run_command
from mmfuse.data.datamodule import ShapesDataModule
from mmfuse.errors import ConfigError
from mmfuse.training import FusionLitModule, RunSummary

__all__ = ["MMFuseCLI", "build_from_config", "main"]


class MMFuseCLI(LightningCLI):
    """LightningCLI with the data spec linked into the model, checkpointing on ``val/acc``, CSV + TensorBoard
    logs under ``trainer.default_root_dir``, and a summary table at the end of ``fit`` and ``test``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.spec", "model.data_spec", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:02d}-acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        if trainer_cfg.get("logger") in (None, True):
            root = trainer_cfg.get("default_root_dir") or "runs"
            csv = CSVLogger(root, name="")
            kwargs["logger"] = [csv, TensorBoardLogger(root, name="", version=csv.version)]
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        self._print_summary("fit")

    def after_test(self) -> None:
        self._print_summary("test")

    def _print_summary(self, stage: str) -> None:
        trainer: Any = self.trainer
        if not trainer.is_global_zero:  # rank 0 only: nothing below may call a collective
            return
        summary = next(cb for cb in trainer.callbacks if isinstance(cb, RunSummary))
        rows = [("stage", stage), ("precision", str(trainer.precision))]
        rows += summary.rows(trainer)
        ckpt = trainer.checkpoint_callback
        if stage == "fit" and isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_score is not None:
            rows += [("best val/acc", f"{float(ckpt.best_model_score):.4f}"), ("best checkpoint", ckpt.best_model_path)]
        if trainer.logger is not None and trainer.logger.log_dir:
            rows.append(("run directory", trainer.logger.log_dir))
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        rule = "-" * max(len(line) for line in lines)
        print("\n".join([rule, f"mmfuse {stage} summary", rule, *lines, rule]))


def _cli(args: list[str] | None, run: bool = True) -> MMFuseCLI:
    return MMFuseCLI(
        FusionLitModule,
        ShapesDataModule,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        trainer_defaults={"callbacks": [RunSummary()]},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def build_from_config(path: str | Path, overrides: Sequence[str] = ()) -> MMFuseCLI:
    """Parse an experiment YAML plus command-line style overrides exactly as ``mmfuse fit`` does, and build it.

    Returns the CLI object: ``.model`` (the LightningModule, whose ``.model`` is the pure ``ImageTextModel``),
    ``.datamodule``, ``.trainer`` and ``.config`` (the resolved config).

    Example (from the repository root)::

        cli = build_from_config("experiments/shapes_color.yaml", ["--trainer.devices=1", "--trainer.strategy=auto"])
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    """
    return _cli(["--config", str(path), *overrides], run=False)


def main(args: list[str] | None = None) -> None:
    """Console entry point; configuration errors end with a one-line message instead of a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv and argv[0] in COMMANDS:
            sys.exit(run_command(argv[0], argv[1:]))
        _cli(argv)
    except ConfigError as err:
        print(f"mmfuse: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
