"""LightningCLI for ``mmfuse fit|validate|test|predict --config experiments/X.yaml`` (dispatched by
:mod:`mmfuse.cli`, which imports this module only for those commands), and :func:`build_from_config`, the same
parsing from Python.

Every field of the model, optimiser, speed, data and trainer configs can be overridden on the command line
(``--trainer.precision bf16-mixed``, ``--model.fusion.num_layers 4``, ``--optim.lr 1e-3``); ``--print_config`` shows the
resolved config. The model's fields sit in ``model:``; the optimiser's and the speed switches in the top-level
``optim:`` and ``speed:`` sections, which LightningCLI links into the module. An experiment file may name one base file
(``base: base/shapes.yaml``) whose values it changes (:mod:`mmfuse.experiment`).

The ``data:`` section picks its data module by class name: without ``class_path`` it configures the built-in shapes
world (:class:`~mmfuse.data.datamodule.ShapesDataModule`, the default); ``class_path: ImageTextDataModule`` with
``init_args:`` reads image-text data on disk (:class:`~mmfuse.data.files.ImageTextDataModule`);
``class_path: StreamingDataModule`` streams WebDataset shards, Parquet, ``save_to_disk`` and Hub datasets, mixed by
weight (:class:`~mmfuse.data.stream_module.StreamingDataModule`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ActionConfigFile, Namespace
from jsonargparse import Path as ConfigPath
from lightning.pytorch import __version__ as lightning_version
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

from mmfuse._compat import CheckpointConfigHook, quiet_library_output
from mmfuse._weights import TORCHVISION_PREFIX
from mmfuse.audit.baselines import write_ladder
from mmfuse.config import MODEL_KEYS, ExperimentConfig, OptimConfig, SpeedConfig
from mmfuse.data.datamodule import ResumableDataModule, ShapesDataModule
from mmfuse.data.files import ImageTextDataModule
from mmfuse.data.stream_module import StreamingDataModule
from mmfuse.data.tokenizer import TOKENIZER_FILES, has_tokenizer
from mmfuse.data.transforms import PreprocessConfig
from mmfuse.encoders import timm_vision, torchvision_vision
from mmfuse.encoders.timm_vision import TimmVisionEncoderConfig
from mmfuse.errors import ConfigError
from mmfuse.experiment import read_experiment
from mmfuse.training import (
    AtomicCheckpointIO,
    FusionLitModule,
    GradScalerMonitor,
    LastCheckpoint,
    NonFiniteLossGuard,
    PredictionWriter,
    Provenance,
    RngState,
    RunSummary,
    check_checkpoint_matches,
    check_output_dir,
    safe_load,
)
from mmfuse.training.ladder import BaselinesConfig, fit_ladder, not_warranted_message
from mmfuse.training.loggers import ResumableCSVLogger, TrackersConfig, build_trackers
from mmfuse.training.next_steps import trained_checkpoint
from mmfuse.training.provenance import run_dir_of

__all__ = [
    "DATA_MODULES",
    "ExperimentConfigFile",
    "MMFuseCLI",
    "MMFuseArgumentParser",
    "build_from_config",
    "run_training",
]

# The data modules a ``data:`` section can name by ``class_path`` (the first is the default, used without one).
DATA_MODULES: tuple[type[ResumableDataModule], ...] = (ShapesDataModule, ImageTextDataModule, StreamingDataModule)
_DEFAULT_DATA = f"{DATA_MODULES[0].__module__}.{DATA_MODULES[0].__name__}"


class MMFuseArgumentParser(LightningArgumentParser):
    """LightningArgumentParser whose default ``data`` holds only the default class, not its arguments.

    jsonargparse keeps a default subclass's init arguments when a config switches to another class, wherever the
    names match (jsonargparse issue #460): ``class_path: ImageTextDataModule`` would inherit the shapes module's
    ``batch_size: 128`` and ``test_split: test`` instead of its own defaults. Without init arguments in the default,
    the class a config names gets its own defaults, and a ``data:`` section without ``class_path`` still configures
    the default class.
    """

    def get_defaults(self, skip_validation: bool = False, **kwargs: Any) -> Namespace:
        defaults = super().get_defaults(skip_validation, **kwargs)
        data = defaults.get("data")
        if isinstance(data, Namespace) and data.get("class_path") == _DEFAULT_DATA and "init_args" in data:
            del data["init_args"]
        return defaults


class ExperimentConfigFile(ActionConfigFile):
    """``--config``: jsonargparse's config file action that also reads an experiment's ``base:`` file.

    A file is parsed as :func:`~mmfuse.experiment.read_experiment` reads it, as :func:`mmfuse.load_config` does: its
    values merged over its base file's, and a run config of the former layout (``optim`` / ``speed`` under
    ``model:``) with those sections moved to the top level. A YAML string is parsed as jsonargparse parses it.
    """

    @staticmethod
    def apply_config(parser: Any, cfg: Namespace, dest: str, value: Any) -> None:
        path = Path(str(value))
        try:
            is_file = "\n" not in str(value) and path.is_file()
        except OSError:  # a YAML string too long for a file name
            is_file = False
        if not is_file:
            ActionConfigFile.apply_config(parser, cfg, dest, value)
            return
        values, _ = read_experiment(path)
        ActionConfigFile.apply_config(parser, cfg, dest, yaml.safe_dump(values, sort_keys=False))
        cfg[dest][-1] = ConfigPath(str(path), mode="fr")  # the experiment file, not the merged text


class MMFuseCLI(CheckpointConfigHook, LightningCLI):
    """LightningCLI with the data module chosen by ``data.class_path`` (default: the shapes world), the data spec
    linked into the model, checkpointing on ``val/acc`` (set ``checkpoint.monitor`` for other metrics), CSV +
    TensorBoard logs under ``trainer.default_root_dir`` (plus the W&B / MLflow trackers of ``trackers:``), a summary
    table at the end of ``fit`` and ``test``, the baseline ladder at the end of ``fit`` (``baselines:``; see
    :mod:`~mmfuse.training.ladder`), and ``predictions.jsonl`` from ``predict --ckpt_path X`` (its
    ``predictions.top_k``; see :class:`~mmfuse.training.PredictionWriter`)."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """LightningCLI's parser, with :class:`ExperimentConfigFile` as its ``--config``."""
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning_version}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument(
            "-c", "--config", action=ExperimentConfigFile, help="experiment YAML; a `base:` file it names is read first"
        )
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(OptimConfig, "optim")
        parser.add_class_arguments(SpeedConfig, "speed")
        parser.link_arguments("optim", "model.optim", apply_on="parse")
        parser.link_arguments("speed", "model.speed", apply_on="parse")
        parser.set_defaults({"data": {"class_path": _DEFAULT_DATA}})
        parser.link_arguments("data.spec", "model.data_spec", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_class_arguments(TrackersConfig, "trackers")
        parser.add_class_arguments(BaselinesConfig, "baselines")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": False,  # last.ckpt is last_checkpoint's job
                "checkpoint.filename": "epoch{epoch:02d}-acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse ``args`` (a list of command-line arguments, or a dict / Namespace of values), or ``sys.argv[1:]``
        when None.

        ``args`` is only given on purpose: by :func:`build_from_config` and ``mmfuse.cli.main([...])`` inside another
        process's command line (a tool command, pytest, a notebook kernel), whose own ``sys.argv`` is not meant for
        LightningCLI; the console entry passes None. LightningCLI's warning about getting both does not apply.
        """
        self.config = parser.parse_object(args) if isinstance(args, (dict, Namespace)) else parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        """The data's tokenizer defaults to the pretrained text encoder's own (see :func:`_default_tokenizer`), its
        evaluation resize + crop to the vision encoder's (see :func:`_default_preprocess`)."""
        config = self.config.get(str(self.subcommand), self.config)
        _default_tokenizer(config)
        _default_preprocess(config)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer_cfg = self._config_value("trainer", default={})
        root = trainer_cfg.get("default_root_dir") or "runs"
        version = self._resume_version(root)
        if trainer_cfg.get("logger") in (None, True):
            ckpt_path = self._config_value("ckpt_path", default=None) if version is not None else None
            resume_step = int(safe_load(ckpt_path).get("global_step", 0)) if ckpt_path else None
            csv = ResumableCSVLogger(root, name="", version=version, resume_step=resume_step)
            trackers = build_trackers(self._trackers(), root, csv.log_dir)  # beside the CSV log, never instead
            kwargs["logger"] = [csv, TensorBoardLogger(root, name="", version=csv.version), *trackers]
        elif self._trackers() != TrackersConfig():
            raise ConfigError(
                f"trackers: {self._trackers()} log beside the run's own loggers, but trainer.logger="
                f"{trainer_cfg.get('logger')!r} replaces those; remove trainer.logger or the trackers"
            )
        _check_hardware(trainer_cfg)
        plugins = list(trainer_cfg.get("plugins") or [])
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def check_ckpt_path(self) -> None:
        """Check the checkpoint against the configured model instead of silently replacing the model config with
        the checkpoint's (LightningCLI's default, which would drop the user's explicit model arguments)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if subcommand == "predict" and ckpt_path is None:
            raise ConfigError("mmfuse predict needs --ckpt_path <checkpoint> (got none): the weights to predict with")
        if ckpt_path is None or ckpt_path in ("last", "best", "hpc", "registry"):
            return
        model = self.config[subcommand]["model"]
        configured = model.as_dict() if hasattr(model, "as_dict") else dict(model)
        check_checkpoint_matches(ckpt_path, configured, keys=MODEL_KEYS)  # data_spec: at before_fit

    def _config_value(self, key: str, default: Any = None) -> Any:
        """A value of the instantiated config, inside the subcommand's section when there is one."""
        return self.config_init.get(str(self.subcommand), self.config_init).get(key, default)

    def _resume_version(self, root: str) -> int | None:
        """The run directory to continue in when resuming: ``--ckpt_path last`` picks the newest run under the
        root with a ``last.ckpt``; an explicit checkpoint inside ``<root>/version_N/`` continues version N.

        Under SLURM a ``fit`` without ``--ckpt_path`` (or with ``--ckpt_path hpc``) resumes from the newest
        ``<root>/hpc_ckpt_N.ckpt``, which Lightning saves on the requeue signal (``SLURMEnvironment``'s
        ``auto_requeue``) and would resume from by itself, but in a new run directory: here it continues the run
        that its checkpoints went to."""
        ckpt_path = self._config_value("ckpt_path", default=None) if self.subcommand == "fit" else None
        if self.subcommand == "fit" and (ckpt_path == "hpc" or (ckpt_path is None and SLURMEnvironment.detect())):
            ckpt_path = _hpc_checkpoint(root, required=ckpt_path == "hpc")
            self.config_init[self.subcommand]["ckpt_path"] = ckpt_path
        if ckpt_path is None:
            return None
        if ckpt_path == "last":
            found = sorted(Path(root).glob("version_*/checkpoints/last.ckpt"), key=_version_number)
            if not found:
                logging.getLogger(__name__).warning("--ckpt_path last: no last.ckpt under %s; starting fresh", root)
                self.config_init[self.subcommand]["ckpt_path"] = None
                return None
            ckpt_path = str(found[-1])
            self.config_init[self.subcommand]["ckpt_path"] = ckpt_path
        run_dir = _hpc_run_dir(ckpt_path) or Path(ckpt_path).resolve().parent.parent
        if run_dir.parent == Path(root).resolve() and run_dir.name.startswith("version_"):
            return _version_number(run_dir / "checkpoints" / Path(ckpt_path).name)
        return None

    def before_fit(self) -> None:
        """Checks that would otherwise fail late: a checkpoint of another architecture, an unwritable run dir."""
        ckpt_path = self._config_value("ckpt_path", default=None)
        model: Any = self.model
        if ckpt_path is not None:
            check_checkpoint_matches(ckpt_path, dict(model.hparams))
        trainer: Any = self.trainer
        # Global rank 0 only: the other processes write no checkpoints, and before the process group is up their run
        # directory is not yet rank 0's (each picks the next free version_N), so probing it would leave a stray one.
        if trainer.is_global_zero and trainer.log_dir is not None:
            weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            keep = max(int(getattr(trainer.checkpoint_callback, "save_top_k", 1)), 0) + 1  # best k + last
            check_output_dir(Path(trainer.log_dir) / "checkpoints", checkpoint_bytes=3 * weights, copies=keep)

    def after_fit(self) -> None:
        trained = self._save_model()
        self._print_summary("fit")
        self._print_baselines(trained)

    def _save_model(self) -> tuple[FusionLitModule, Path] | None:
        """Write the best (else the last) checkpoint's model to ``<run directory>/model`` with ``save_pretrained``:
        safetensors weights, config and tokenizer, loadable with ``ImageTextModel.from_pretrained`` and no Lightning.

        With an EMA of the weights (``optim.ema_decay``, or any Lightning ``WeightAveraging`` callback) a
        checkpoint's ``state_dict`` is the average (the raw weights are its ``current_model_state``), so the model
        saved here is the average (``tests/training/test_ema.py``).

        Returns the checkpoint's module (on the CPU) and the checkpoint, or None when nothing was saved."""
        trainer: Any = self.trainer
        if not trainer.is_global_zero or trainer.logger is None or not trainer.logger.log_dir:
            return None
        ckpt = trained_checkpoint(trainer)
        if ckpt is None:
            return None
        module = FusionLitModule.load_from_checkpoint(ckpt, map_location="cpu")
        datamodule: Any = self.datamodule
        out = module.model.save_pretrained(
            Path(trainer.logger.log_dir) / "model", tokenizer=datamodule.tokenizer, data_spec=datamodule.spec
        )
        logging.getLogger(__name__).info("model from %s saved to %s", ckpt, out)
        return module, ckpt

    def _print_baselines(self, trained: tuple[FusionLitModule, Path] | None) -> None:
        """The baseline ladder of ``baselines:`` (:mod:`~mmfuse.training.ladder`) on the validation split, printed
        and written as ``baselines.json`` / ``baselines.md`` into the run directory, with a warning when the model
        is not shown to beat it.

        Global rank 0 only, after ``trainer.fit`` has returned in every process: the other processes wait on no
        collective (they may have exited), and the ladder reads ``trained``, the checkpoint's module that ``model/``
        holds (else the weights in memory at the end of ``fit``), so neither DDP's wrapper nor sharding is in the way.
        Nothing it does reaches a checkpoint or the RNG state a resumed run continues from. A ladder the data
        cannot give (a :class:`ConfigError`, e.g. unreadable records) is logged as a warning, not raised: the
        trained run is complete by then."""
        trainer: Any = self.trainer
        cfg = self._baselines()
        run_dir = run_dir_of(trainer)
        if not trainer.is_global_zero or not cfg.enabled or run_dir is None or trainer.interrupted:
            return
        module: Any = trained[0] if trained is not None else self.model
        origin = f"checkpoint {trained[1]}" if trained is not None else "the weights at the end of fit"
        log = logging.getLogger(__name__)
        try:
            ladder = fit_ladder(module, self.datamodule, trainer.callback_metrics, cfg, trainer.strategy.root_device)
        except ConfigError as err:
            log.warning("baseline ladder skipped: %s", err)
            return
        if ladder is None:
            return
        paths = write_ladder(ladder, run_dir, {"model": origin, **dataclasses.asdict(cfg)})
        print(ladder.to_text())
        print("baseline ladder written: " + ", ".join(str(p) for p in paths))
        message = not_warranted_message(ladder, cfg.min_gain)
        if message is not None:
            log.warning("%s (%s)", message, paths[-1])

    def after_test(self) -> None:
        self._print_summary("test")

    def before_predict(self) -> None:
        """The checkpoint must fit the data too (classes, vocabulary); predictions stay in the writer, not also in
        the trainer's returned list (``--return_predictions`` still asks for that)."""
        ckpt_path = self._config_value("ckpt_path", default=None)
        if ckpt_path is not None and Path(str(ckpt_path)).is_file():
            model: Any = self.model
            check_checkpoint_matches(ckpt_path, dict(model.hparams))
        if self._config_value("return_predictions", default=None) is None:
            self.config_init[str(self.subcommand)]["return_predictions"] = False

    def after_predict(self) -> None:
        trainer: Any = self.trainer
        writer = next((cb for cb in trainer.callbacks if isinstance(cb, PredictionWriter)), None)
        if trainer.is_global_zero and writer is not None and writer.path is not None:
            print(f"mmfuse predict: predictions written to {writer.path}")

    def _trackers(self) -> TrackersConfig:
        trackers = self._config_value("trackers", default=None)
        return trackers if isinstance(trackers, TrackersConfig) else TrackersConfig(**dict(trackers or {}))

    def _baselines(self) -> BaselinesConfig:
        baselines = self._config_value("baselines", default=None)
        return baselines if isinstance(baselines, BaselinesConfig) else BaselinesConfig(**dict(baselines or {}))

    def _print_summary(self, stage: str) -> None:
        trainer: Any = self.trainer
        if not trainer.is_global_zero:  # rank 0 only: nothing below may call a collective
            return
        summary = next(cb for cb in trainer.callbacks if isinstance(cb, RunSummary))
        rows = [("stage", stage), ("precision", str(trainer.precision))]
        rows += summary.rows(trainer)
        ckpt = trainer.checkpoint_callback
        if stage == "fit" and isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_score is not None:
            rows += [(f"best {ckpt.monitor}", f"{float(ckpt.best_model_score):.4f}")]
            rows += [("best checkpoint", ckpt.best_model_path)]
        if trainer.logger is not None and trainer.logger.log_dir:
            rows.append(("run directory", trainer.logger.log_dir))
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        rule = "-" * max(len(line) for line in lines)
        print("\n".join([rule, f"mmfuse {stage} summary", rule, *lines, rule]))
        if stage == "fit" and summary.next_steps_text:
            print(summary.next_steps_text)


def _unset_data_field(config: Namespace, field: str) -> Namespace | None:
    """The data module's ``init_args`` when it takes ``field`` and the config leaves it unset (None), else None."""
    data = config.get("data")
    init_args = data.get("init_args") if isinstance(data, Namespace) else None
    if not isinstance(init_args, Namespace) or field not in init_args or init_args[field] is not None:
        return None
    return init_args


def _default_tokenizer(config: Namespace) -> None:
    """Set ``data.tokenizer`` to ``model.text.pretrained`` (a directory or a hub id) when the data module takes a
    tokenizer and none is given: a pretrained text encoder reads its own tokenizer's ids. The resolved value is what
    the run's saved config shows."""
    pretrained = config.get("model.text.pretrained")
    init_args = _unset_data_field(config, "tokenizer")
    if pretrained is None or init_args is None:
        return
    if not has_tokenizer(pretrained, "model.text.pretrained"):
        raise ConfigError(
            f"model.text.pretrained={pretrained!r} comes without a tokenizer (no {' or '.join(TOKENIZER_FILES)}); "
            "give one with data.tokenizer: <dir or hub id>"
        )
    init_args.tokenizer = pretrained


def _default_preprocess(config: Namespace) -> None:
    """Set ``data.preprocess`` (interpolation, crop_pct, crop_mode, mean, std) from ``model.vision``'s data config
    when the data module takes one and none is given, resolved without building the model. The resolved value is
    what the run's saved config shows."""
    vision = config.get("model.vision")
    init_args = _unset_data_field(config, "preprocess")
    if vision is None or init_args is None:
        return
    cfg = TimmVisionEncoderConfig(**(vision.as_dict() if isinstance(vision, Namespace) else dict(vision)))
    family = torchvision_vision if cfg.model_name.startswith(TORCHVISION_PREFIX) else timm_vision
    preprocess = PreprocessConfig.from_data_config(family.vision_data_config(cfg, int(init_args.image_size)))
    init_args.preprocess = Namespace(**dataclasses.asdict(preprocess))


def _check_hardware(trainer_cfg: dict[str, Any]) -> None:
    """Settings that need a CUDA GPU, refused on a CPU with a message (Lightning would quietly run fp16 as bf16,
    or fail deep inside with a traceback)."""
    accelerator = str(trainer_cfg.get("accelerator") or "auto")
    if not (accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())):
        return
    precision, strategy = str(trainer_cfg.get("precision")), trainer_cfg.get("strategy") or "auto"
    if precision in ("16-mixed", "16"):
        raise ConfigError(
            f"trainer.precision={precision!r} needs a CUDA GPU (fp16 autocast with gradient scaling); on a CPU use "
            "'bf16-mixed' or '32-true'"
        )
    # a name (`fsdp`) or the strategy object of a `class_path:` (FSDP2: experiments/launch/gpu_fsdp2.yaml)
    name = strategy if isinstance(strategy, str) else type(strategy).__name__
    if isinstance(strategy, (FSDPStrategy, ModelParallelStrategy)) or name.startswith("fsdp"):
        raise ConfigError(f"trainer.strategy={name!r} needs CUDA GPUs; on a CPU use 'ddp' (gloo) or 'auto'")


def _hpc_checkpoint(root: str, required: bool) -> str | None:
    """The newest ``hpc_ckpt_N.ckpt`` directly under ``root`` (where Lightning saves them), or None; with
    ``required`` (``--ckpt_path hpc``) a missing one is an error."""
    found = [p for p in Path(root).glob("hpc_ckpt_*.ckpt") if p.stem.removeprefix("hpc_ckpt_").isdigit()]
    if not found:
        if required:
            raise ConfigError(f"--ckpt_path hpc: no hpc_ckpt_N.ckpt in trainer.default_root_dir={root!r}")
        return None
    return str(max(found, key=lambda p: int(p.stem.removeprefix("hpc_ckpt_"))))


def _hpc_run_dir(ckpt_path: str) -> Path | None:
    """The run directory of an ``hpc_ckpt_N.ckpt`` (saved beside the runs, not in one): the one its checkpoint
    callbacks wrote to; None for other checkpoints, or when they name no single run."""
    if not Path(ckpt_path).name.startswith("hpc_ckpt_"):
        return None
    callbacks = safe_load(ckpt_path).get("callbacks") or {}
    dirs = {Path(s["dirpath"]).resolve().parent for s in callbacks.values() if isinstance(s, dict) and s.get("dirpath")}
    return dirs.pop() if len(dirs) == 1 else None


def _version_number(path: Path) -> int:
    """N of the ``version_N`` directory that holds ``checkpoints/<file>``."""
    name = path.parent.parent.name
    return int(name.removeprefix("version_")) if name.removeprefix("version_").isdigit() else -1


def _cli(args: list[str] | None, run: bool = True) -> MMFuseCLI:
    quiet_library_output()
    return MMFuseCLI(
        FusionLitModule,
        ResumableDataModule,
        subclass_mode_data=True,
        parser_class=MMFuseArgumentParser,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        trainer_defaults={
            "callbacks": [RunSummary(), Provenance(), RngState(), NonFiniteLossGuard(), GradScalerMonitor()]
        },
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def build_from_config(config: str | Path | ExperimentConfig, overrides: Sequence[str] = ()) -> MMFuseCLI:
    """Parse an experiment YAML plus command-line style overrides exactly as ``mmfuse fit`` does, and build it.

    Args:
        config: an experiment YAML, or an experiment :func:`mmfuse.load_config` read (which LightningCLI parses
            again, checking the data and trainer sections too).
        overrides: ``--section.key value`` arguments, applied last.

    Returns the CLI object: ``.model`` (the LightningModule, whose ``.model`` is the pure ``ImageTextModel``),
    ``.datamodule``, ``.trainer`` and ``.config`` (the resolved config).

    Example (from the repository root)::

        cli = build_from_config("experiments/shapes_color.yaml", ["--trainer.devices=1", "--trainer.strategy=auto"])
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    """
    if isinstance(config, ExperimentConfig):
        return _cli(["--config", yaml.safe_dump(config.to_dict(), sort_keys=False), *overrides], run=False)
    return _cli(["--config", str(config), *overrides], run=False)


def run_training(args: list[str] | None = None) -> MMFuseCLI:
    """Run ``fit|validate|test|predict`` (the first of ``args``) with its options, as ``mmfuse`` does.

    Args:
        args: the command line after ``mmfuse``; None = ``sys.argv[1:]``, read by LightningCLI itself.

    Returns:
        The CLI object after the command ran.
    """
    return _cli(args)
