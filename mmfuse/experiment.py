"""Experiment YAMLs read as ``mmfuse fit`` reads them, for Python and the tool commands: :func:`load_config`.

An experiment file may start from one base file, ``base: base/shapes.yaml`` (relative to the file), so that each
experiment shows only what it changes: the base's values come first and the file's own replace them, mappings merged
key by key (lists and other values are replaced whole). A base file names no base of its own. ``mmfuse fit --config``
reads the base the same way (:func:`read_experiment` serves both).

Overrides take the training commands' form, ``--section.key value`` or ``--section.key=value``
(``--model.fusion.num_layers 1``, ``--optim.lr 3e-4``, ``--data.cache_dir /tmp/x``).

Importing this module imports neither Lightning nor torch; :func:`load_config` imports the config dataclasses, which sit
beside their encoders (torch, timm and transformers), but not Lightning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmfuse.errors import ConfigError

if TYPE_CHECKING:
    from mmfuse.config import ExperimentConfig

__all__ = ["BASE_KEY", "SECTIONS", "load_config", "merge_values", "read_experiment", "split_overrides"]

BASE_KEY = "base"
# Top-level sections parsed into typed configs here (ModelConfig and MetricsConfig, OptimConfig, SpeedConfig).
_TYPED = ("model", "optim", "speed")
# Sections that only Lightning's classes can check (Trainer, data modules, callbacks): kept as written, checked when
# the experiment is built (mmfuse.training.cli.build_from_config).
_PASSED_ON = (
    "seed_everything",
    "trainer",
    "data",
    "checkpoint",
    "last_checkpoint",
    "predictions",
    "trackers",
    "baselines",
)
# Keys of the training commands (a run's saved config.yaml holds fit's), not of the experiment: dropped.
_RUN_ONLY = ("ckpt_path", "weights_only", "verbose", "return_predictions")
SECTIONS = (*_TYPED, *_PASSED_ON, *_RUN_ONLY)
"""The top-level keys of an experiment YAML (besides ``base``)."""
# Sections that sat under `model:` before they got their own top-level homes.
_MOVED = ("optim", "speed")
logger = logging.getLogger(__name__)


def read_experiment(path: str | Path) -> tuple[dict[str, Any], Path | None]:
    """The values of an experiment YAML with its base file's merged in (:func:`merge_values`), and the base file.

    Values are read as LightningCLI reads them (jsonargparse's YAML loader: ``1e-3`` is a number).

    Raises:
        ConfigError: the file or its base is missing, is not a YAML mapping, names a base of its own, or holds
            both ``model.optim`` and a top-level ``optim`` (or ``speed``). Other keys are the parser's to check; the
            former layout, ``optim`` / ``speed`` under ``model:``, is read as top-level sections with a warning.
    """
    path = Path(path)
    values = _read_yaml(path)
    base = values.pop(BASE_KEY, None)
    if base is None:
        return values, None
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: {base!r} must be the path of a YAML file (relative to {path.parent})")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: {base!r}: no such file ({base_path})")
    base_values = _read_yaml(base_path)
    if BASE_KEY in base_values:
        raise ConfigError(f"{base_path}: a base file names no base of its own (base: {base_values[BASE_KEY]!r})")
    return merge_values(base_values, values), base_path


def merge_values(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings merged key by key, any other value of ``top`` replacing ``base``'s.

    Example:
        >>> merge_values({"model": {"width": 128, "fusion": {"num_layers": 2}}}, {"model": {"fusion": {"name": "x"}}})
        {'model': {'width': 128, 'fusion': {'num_layers': 2, 'name': 'x'}}}
    """
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        merged[key] = merge_values(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def split_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """``--section.key value`` / ``--section.key=value`` arguments as (dotted key, value text) pairs.

    Example:
        >>> split_overrides(["--model.fusion.num_layers", "1", "--optim.lr=3e-4"])
        [('model.fusion.num_layers', '1'), ('optim.lr', '3e-4')]
    """
    pairs: list[tuple[str, str]] = []
    rest = list(args)
    while rest:
        flag = rest.pop(0)
        key, has_value, value = flag[2:].partition("=")
        if not flag.startswith("--") or not key:
            raise ConfigError(f"override {flag!r}: expected --section.key value (e.g. --model.fusion.num_layers 1)")
        if not has_value:
            if not rest or rest[0].startswith("--"):
                raise ConfigError(f"override {flag}: no value (e.g. {flag} 1, or {flag}=1)")
            value = rest.pop(0)
        pairs.append((key, value))
    return pairs


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read an experiment YAML (its base file merged in) and overrides into typed configs, as ``mmfuse fit`` would.

    ``model``, ``optim`` and ``speed`` are parsed and type-checked here (jsonargparse, as LightningCLI does); ``data``,
    ``trainer`` and the callbacks' sections are kept as written and checked by Lightning's classes when the experiment
    is built (:func:`mmfuse.training.cli.build_from_config`).

    Args:
        path: an experiment YAML, or a run's saved ``config.yaml`` (its ``ckpt_path`` and ``weights_only``, the
            ``fit`` command's, are dropped).
        overrides: the training commands' arguments, ``--section.key value`` or ``--section.key=value``
            (``["--model.fusion.num_layers", "1", "--data.cache_dir=/tmp/x"]``).

    Returns:
        The experiment's :class:`~mmfuse.config.ExperimentConfig`.

    Raises:
        ConfigError: one line naming the file and the key: an unknown key or section, a value of the wrong type,
            a malformed override.

    Example:
        >>> from pathlib import Path
        >>> main = Path(__file__).resolve().parents[1] / "experiments" / "shapes_color.yaml"
        >>> cfg = load_config(main, ["--model.fusion.num_layers", "1", "--optim.lr=3e-4"])
        >>> cfg.model.fusion.num_layers, cfg.optim.lr, cfg.data["world"]["task"]
        (1, 0.0003, 'color')
    """
    from mmfuse.config import ExperimentConfig

    path = Path(path)
    values, _ = read_experiment(path)
    unknown = [key for key in values if key not in SECTIONS]
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r}; the sections: {', '.join(SECTIONS)}")
    pairs = split_overrides(overrides)
    typed_args: list[str] = []
    for key, value in pairs:
        section = key.split(".", 1)[0]
        _check_key(section, key, path)
        if section in _TYPED:
            typed_args += [f"--{key}", value]
        else:
            _set_value(values, key, value, path)
    model, metrics, optim, speed = _typed_sections(values, typed_args, path)
    passed_on = {key: values[key] for key in _PASSED_ON if key in values}
    data, trainer = passed_on.pop("data", {}), passed_on.pop("trainer", {})
    return ExperimentConfig(model, metrics, optim, speed, data, trainer, passed_on, str(path))


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml
    from jsonargparse import get_loader

    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        values = get_loader("yaml")(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:  # the message says where (line, column)
        raise ConfigError(f"{path}: not readable as YAML: {' '.join(str(err).split())}") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: not a YAML mapping of sections (model:, data:, trainer: ...)")
    model = values.get("model")
    if not isinstance(model, dict):
        return values  # the parser says what is wrong with a model: that is not a mapping
    for key in [key for key in _MOVED if key in model]:
        # the layout of run configs written before optim and speed left model: (a run's config.yaml stays readable)
        if key in values:
            raise ConfigError(f"{path}: model.{key} and {key}: both given; {key} is a top-level section, keep that one")
        values[key] = model.pop(key)
        logger.warning("%s: model.%s is read as the top-level section %s: (its place now)", path, key, key)
    return values


def _check_key(section: str, key: str, path: Path) -> None:
    if section not in SECTIONS or section in _RUN_ONLY:
        raise ConfigError(f"{path}: override --{key}: no section {section!r}; the sections: {', '.join(SECTIONS)}")
    moved = next((m for m in _MOVED if key.startswith(f"model.{m}.") or key == f"model.{m}"), None)
    if moved is not None:
        raise ConfigError(
            f"{path}: override --{key}: {moved} is a top-level section now: --{key.removeprefix('model.')}"
        )


def _set_value(values: dict[str, Any], key: str, text: str, path: Path) -> None:
    """Set a dotted ``key`` of an untyped section to ``text`` read as the command line's YAML (``true``, ``1``,
    ``{a: 1}``). ``data.X`` and ``data.init_args.X`` both name an argument of the data module, whether the section
    gives ``class_path`` + ``init_args`` or the default data module's arguments (as jsonargparse accepts)."""
    import yaml
    from jsonargparse import get_loader

    try:
        value = get_loader("yaml")(text)
    except yaml.YAMLError:  # not YAML (`a: b: c`): the text itself, as jsonargparse takes it
        value = text
    section, *keys = key.split(".")
    if not keys:
        values[section] = value
        return
    node = values.setdefault(section, {})
    if section == "data":
        keys = _data_keys(node, keys)
    for name in keys[:-1]:
        if node.get(name) is None:
            node[name] = {}
        node = node[name]
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: override --{key}: {name} holds {node!r}, not a mapping of keys")
    node[keys[-1]] = value


def _data_keys(data: dict[str, Any], keys: list[str]) -> list[str]:
    with_class = "class_path" in data or "init_args" in data
    if keys[0] == "init_args":
        return keys if with_class else keys[1:]
    if keys[0] in ("class_path", "dict_kwargs") or not with_class:
        return keys
    return ["init_args", *keys]


def _typed_sections(values: dict[str, Any], typed_args: list[str], path: Path) -> tuple[Any, Any, Any, Any]:
    """``model`` (with ``model.metrics``), ``optim`` and ``speed`` parsed and type-checked by jsonargparse, as
    LightningCLI parses them, then built into their dataclasses."""
    import dataclasses
    from argparse import ArgumentError

    from jsonargparse import ArgumentParser

    from mmfuse.config import MODEL_KEYS, MetricsConfig, ModelConfig, OptimConfig, SpeedConfig, config_from_dict

    parser = ArgumentParser(exit_on_error=False, default_env=False, allow_abbrev=False)  # a typo is an error
    from_data = {f.name for f in dataclasses.fields(ModelConfig)} - set(MODEL_KEYS)  # the data fills these in
    parser.add_class_arguments(ModelConfig, "model", skip=from_data)
    parser.add_class_arguments(MetricsConfig, "model.metrics")
    parser.add_class_arguments(OptimConfig, "optim")
    parser.add_class_arguments(SpeedConfig, "speed")
    try:
        parsed = parser.parse_object({key: values[key] for key in _TYPED if key in values})
    except ArgumentError as err:
        raise ConfigError(f"{path}: {_one_line(err)}") from err
    for flag, value in zip(typed_args[::2], typed_args[1::2], strict=True):
        try:
            parsed = parser.parse_args([flag, value], namespace=parsed)
        except ArgumentError as err:
            raise ConfigError(f"{path}: override {flag} {value}: {_one_line(err)}") from err
    tree = parsed.as_dict()
    model = dict(tree["model"])
    metrics = model.pop("metrics")
    try:
        return (
            config_from_dict(ModelConfig, model),
            config_from_dict(MetricsConfig, metrics),
            config_from_dict(OptimConfig, tree["optim"]),
            config_from_dict(SpeedConfig, tree["speed"]),
        )
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
