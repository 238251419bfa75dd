"""The private library attributes mmfuse relies on (all in mmfuse/_compat.py) on the installed versions, the library
output it silences (each silence still needed, and still working), and the installed versions against the bounds
that pyproject.toml declares. A failure here after an upgrade names what moved."""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from importlib import metadata
from pathlib import Path

import lightning as L
import pytest
import tomllib
import torch
from datasets import Dataset
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from packaging.requirements import Requirement
from torch import nn
from transformers import BertConfig, BertModel, PreTrainedModel

from mmfuse import _compat
from tests.conftest import REPO


def _dependencies() -> list[Requirement]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return [Requirement(line) for line in tomllib.load(fh)["project"]["dependencies"]]


@pytest.mark.parametrize("requirement", _dependencies(), ids=lambda r: r.name)
def test_installed_version_is_within_the_declared_bounds(requirement: Requirement) -> None:
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), (
        f"{requirement} has no upper bound"
    )
    installed = metadata.version(requirement.name)
    assert requirement.specifier.contains(installed, prereleases=True), f"{requirement.name} {installed}: {requirement}"


# --- Lightning -----------------------------------------------------------------------------------------------------


def test_lightning_says_whether_a_step_is_logged() -> None:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    connector = type(trainer._logger_connector)
    assert isinstance(inspect.getattr_static(connector, "should_update_logs"), property)
    assert _compat.should_update_logs(trainer) is trainer._logger_connector.should_update_logs


def test_lightning_cli_checks_the_checkpoint_through_its_private_hook() -> None:
    from mmfuse.training.cli import MMFuseCLI

    assert list(inspect.signature(LightningCLI._parse_ckpt_path).parameters) == ["self"]
    init = inspect.getsource(LightningCLI.__init__)
    assert "self.parse_arguments(" in init and "self._parse_ckpt_path()" in init
    assert init.index("self._parse_ckpt_path()") > init.index("self.parse_arguments(")
    assert MMFuseCLI._parse_ckpt_path is _compat.CheckpointConfigHook._parse_ckpt_path


# --- transformers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_a_transformers_config_carries_its_attention_implementation(implementation: str) -> None:
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    _compat.set_attn_implementation(config, implementation)
    model = BertModel(config)
    assert _compat.attn_implementation(model.config) == implementation


def test_transformers_models_say_whether_they_have_sdpa() -> None:
    assert isinstance(inspect.getattr_static(PreTrainedModel, "_supports_sdpa"), bool)
    assert _compat.supports_sdpa(BertModel) is BertModel._supports_sdpa is True


# --- torch, datasets -----------------------------------------------------------------------------------------------


def test_hooks_are_counted_on_the_module_itself() -> None:
    module = nn.Linear(2, 2)
    handles = [
        module.register_forward_hook(lambda m, args, out: None),
        module.register_forward_pre_hook(lambda m, args: None),
        module.register_full_backward_hook(lambda m, grad_in, grad_out: None),
        module.register_full_backward_pre_hook(lambda m, grad_out: None),
    ]
    assert _compat.registered_hooks(module) == 4
    for handle in handles:
        handle.remove()
    assert _compat.registered_hooks(module) == 0


def test_the_grad_scaler_keeps_its_scale_as_a_tensor() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    assert _compat.grad_scaler_scale(scaler) is None  # created lazily, by the first scale()
    scaler.scale(torch.ones(()))
    scale = _compat.grad_scaler_scale(scaler)
    assert isinstance(scale, torch.Tensor) and float(scale) == scaler.get_scale() == 8.0


def test_the_cpu_flash_attention_operators_exist() -> None:
    forward, backward = _compat.cpu_flash_attention_ops()
    assert hasattr(forward, "default") and hasattr(backward, "default")


def test_a_dataset_has_a_content_fingerprint() -> None:
    a, b = Dataset.from_dict({"x": [1, 2]}), Dataset.from_dict({"x": [1, 3]})
    assert isinstance(_compat.dataset_fingerprint(a), str)
    assert _compat.dataset_fingerprint(a) != _compat.dataset_fingerprint(b)


# --- Silenced output: still printed by the libraries, and silenced ---------------------------------------------------


def test_lightnings_tips_are_dropped_and_its_other_lines_kept() -> None:
    from lightning.pytorch.trainer.connectors.logger_connector import logger_connector

    assert "💡 Tip:" in inspect.getsource(logger_connector), "Lightning no longer advertises: drop the filter"
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    log.addHandler(handler)
    try:
        _compat.quiet_library_output()
        rank_zero_info("💡 Tip: try a cloud service")
        rank_zero_info("GPU available: False")
    finally:
        log.removeHandler(handler)
    assert seen == ["GPU available: False"]


def test_lightnings_pytree_deprecation_is_silenced() -> None:
    from lightning.pytorch.utilities._pytree import _tree_flatten

    def leaf_spec_warnings() -> list[str]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if quiet:
                _compat.quiet_library_output()  # inside catch_warnings: the filter goes with it
            _tree_flatten(1)
        return [str(w.message) for w in seen if "LeafSpec" in str(w.message)]

    quiet = False
    assert leaf_spec_warnings(), "Lightning no longer builds a deprecated LeafSpec: drop the filter"
    quiet = True
    assert leaf_spec_warnings() == []


def test_only_the_frozen_modules_eval_mode_warning_is_silenced() -> None:
    from lightning.pytorch.loops import fit_loop
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    message = "Found {} module(s) in eval mode at the start of training. This may lead to unexpected behavior."
    assert "module(s) in eval mode at the start of training" in inspect.getsource(fit_loop)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _compat.quiet_eval_mode_warning(3)
        warnings.warn(message.format(3), PossibleUserWarning, stacklevel=1)
        warnings.warn(message.format(4), PossibleUserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == [message.format(4)]


def test_the_shared_run_directory_warning_is_silenced(tmp_path: Path) -> None:
    def csv_warnings(quiet: bool) -> list[str]:
        logger = CSVLogger(str(tmp_path), name="", version=int(quiet))
        Path(logger.log_dir).mkdir(parents=True)
        (Path(logger.log_dir) / "provenance.json").write_text("{}")  # written before the first metrics
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with _compat.quiet_shared_run_dir() if quiet else contextlib.nullcontext():
                logger.experiment  # noqa: B018 - opening the writer is what warns
        return [str(w.message) for w in seen if "exists and is not empty" in str(w.message)]

    assert csv_warnings(quiet=False), "Lightning's CSV logger no longer warns: drop quiet_shared_run_dir"
    assert csv_warnings(quiet=True) == []
