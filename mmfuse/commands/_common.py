"""What the model-reading commands (``explain``, ``audit``, ``baselines``, ``probe``, ``report``) share: checking
paths and flags, and building the experiment from its config on one CPU process."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError

__all__ = [
    "CLI_OVERRIDES",
    "existing_path",
    "check_device",
    "add_config_overrides",
    "config_overrides",
    "pick_split",
    "build_cli",
    "load_pretrained",
]

CLI_OVERRIDES = ["--trainer.devices=1", "--trainer.strategy=auto", "--trainer.accelerator=cpu"]
_OVERRIDES_HELP = (
    "config overrides: any field of the experiment, as in `mmfuse fit` (--section.key value), e.g. "
    "--data.cache_dir /tmp/x --model.fusion.num_layers 1 --trainer.max_epochs 1"
)


def existing_path(path: str, flag: str, directory: bool = False) -> Path:
    """``path`` as a :class:`Path`; :class:`ConfigError` naming ``flag`` when it is not an existing file (or
    ``directory``)."""
    p = Path(path)
    if not (p.is_dir() if directory else p.is_file()):
        raise ConfigError(f"{flag} {path!r}: no such {'directory' if directory else 'file'}")
    return p


def check_device(device: str) -> None:
    """:class:`ConfigError` unless ``device`` is ``cpu``, ``cuda`` or ``cuda:N`` and usable here."""
    import torch

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device {device!r}: use cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device!r}: no CUDA device is available here; use --device cpu")


def add_config_overrides(parser: argparse.ArgumentParser) -> None:
    """Let the command take config overrides as the training commands do, ``--section.key value``
    (``--data.cache_dir /x``, ``--model.fusion.num_layers 1``): ``mmfuse <command>`` gathers them into
    ``args.overrides`` (:func:`config_overrides`) and :func:`build_cli` applies them.

    ``--set KEY=VALUE``, their old form, stops with a message that spells the new one: a silently different
    spelling would leave old scripts running on the unchanged config.
    """
    parser.set_defaults(overrides=[])
    parser.add_argument("--set", action=_RemovedSet, metavar="KEY=VALUE", help=argparse.SUPPRESS)
    parser.epilog = _OVERRIDES_HELP


class _RemovedSet(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        key, _, value = str(values).partition("=")
        raise ConfigError(f"--set is gone; give config overrides as in `mmfuse fit`: --{key} {value or 'VALUE'}")


def config_overrides(unknown: Sequence[str]) -> list[str]:
    """The arguments a command's parser did not know, checked to be config overrides (``--section.key value`` or
    ``--section.key=value``); :class:`ConfigError` for anything else."""
    expects_value, previous = False, ""
    for arg in unknown:
        is_flag = arg.startswith("--") and "." in arg.partition("=")[0]
        if expects_value and is_flag:
            raise ConfigError(f"{previous} needs a value (e.g. {previous} 1)")
        if not is_flag and not expects_value:
            raise ConfigError(f"unrecognized argument {arg!r}; config overrides take the form --section.key value")
        expects_value, previous = is_flag and "=" not in arg, arg
    if expects_value:
        raise ConfigError(f"{unknown[-1]} needs a value (e.g. {unknown[-1]} 1)")
    return list(unknown)


def pick_split(splits: Any, name: str, flag: str = "--split") -> Any:
    """The split ``name`` of ``splits``; :class:`ConfigError` listing the splits there are."""
    if name not in splits:
        raise ConfigError(f"{flag} {name!r}: the data has splits {sorted(splits)}")
    return splits[name]


def build_cli(config: Path, overrides: Sequence[str], fit_root: Path | None = None) -> Any:
    """The experiment of ``config`` (:func:`mmfuse.load_config` with ``overrides``, ``--section.key value``) built
    as ``mmfuse fit`` builds it, single-process on the CPU (training, if any, under ``fit_root``); a parse error
    becomes a one-line :class:`ConfigError` naming the file."""
    from mmfuse.experiment import load_config
    from mmfuse.training.cli import build_from_config

    settings = [*CLI_OVERRIDES, *([f"--trainer.default_root_dir={fit_root}"] if fit_root is not None else [])]
    cfg = load_config(config, [*overrides, *settings])  # a run's saved config.yaml loses its fit-only keys here
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            cli = build_from_config(cfg)
    except SystemExit as err:  # the config parser printed its usage and an `error:` message
        raise ConfigError(f"{config}: {_parser_error(stderr.getvalue())}") from err
    if not getattr(cli.datamodule, "indexable", True):
        raise ConfigError(
            f"{config}: its data is streamed ({type(cli.datamodule).__name__}); the tools read data row by row: give "
            "them the same rows as ImageTextDataModule files (e.g. an imagefolder with a metadata.jsonl) in --config"
        )
    return cli


def _parser_error(printed: str) -> str:
    """The parser's ``error:`` message (which may span lines) on one line."""
    text = printed[printed.rfind("error:") + len("error:") :] if "error:" in printed else printed
    return " ".join(text.split())[:800]


def load_pretrained(model_dir: Path, datamodule: Any) -> tuple[Any, Any]:
    """The model and tokenizer of a ``save_pretrained`` directory; :class:`ConfigError` when it was trained on other
    classes or another image size than ``datamodule`` gives."""
    from mmfuse.hub import from_pretrained, load_tokenizer, read_config

    _, spec = read_config(model_dir)
    data = datamodule.spec
    if spec is not None and (tuple(spec.class_names), spec.image_size) != (tuple(data.class_names), data.image_size):
        raise ConfigError(
            f"--model {str(model_dir)!r} was trained on classes {list(spec.class_names)} at {spec.image_size} px but "
            f"the data has {list(data.class_names)} at {data.image_size} px; pass the --config it was trained with"
        )
    return from_pretrained(model_dir), load_tokenizer(model_dir)
