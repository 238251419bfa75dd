"""Every use of another library's private attributes, and the library output that mmfuse silences, in one place.

Each function names the private attribute it reads or writes; ``tests/test_compat.py`` checks each one against the
installed versions (those within the upper bounds of ``pyproject.toml``), so a release that moves one fails there
first. Nothing here imports Lightning, transformers or datasets: their objects come in as arguments, so the pure
modules that call in here still import without Lightning.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointConfigHook",
    "attn_implementation",
    "cpu_flash_attention_ops",
    "dataset_fingerprint",
    "grad_scaler_scale",
    "quiet_eval_mode_warning",
    "quiet_library_output",
    "quiet_shared_run_dir",
    "registered_hooks",
    "set_attn_implementation",
    "should_update_logs",
    "supports_sdpa",
]

# --- Lightning -----------------------------------------------------------------------------------------------------


def should_update_logs(trainer: Any) -> bool:
    """Whether the trainer's loggers write the current training step (every ``trainer.log_every_n_steps``).

    Lightning's private ``trainer._logger_connector.should_update_logs``; True (log every step) where it is missing.
    """
    return bool(getattr(getattr(trainer, "_logger_connector", None), "should_update_logs", True))


class CheckpointConfigHook:
    """Mixin for a ``LightningCLI`` subclass: runs :meth:`check_ckpt_path` in place of LightningCLI's private
    ``_parse_ckpt_path``, which ``LightningCLI.__init__`` calls right after ``parse_arguments`` and which by default
    replaces the parsed model config with the hyperparameters saved in ``--ckpt_path``."""

    def _parse_ckpt_path(self) -> None:
        self.check_ckpt_path()

    def check_ckpt_path(self) -> None:
        """Check the parsed config's ``ckpt_path`` (defined by the subclass)."""
        raise NotImplementedError


# --- transformers --------------------------------------------------------------------------------------------------


def attn_implementation(config: Any) -> str | None:
    """A transformers config's attention implementation (``"eager"``, ``"sdpa"``...): its private
    ``_attn_implementation`` (there is no public getter)."""
    value = config._attn_implementation
    return None if value is None else str(value)


def set_attn_implementation(config: Any, implementation: str) -> None:
    """Set a transformers config's attention implementation before a model is built from it (private
    ``_attn_implementation``; a built model has the public ``set_attn_implementation``)."""
    config._attn_implementation = implementation


def supports_sdpa(model_cls: Any) -> bool:
    """Whether a transformers model class has an SDPA attention (its private ``_supports_sdpa``; True if unknown)."""
    return bool(getattr(model_cls, "_supports_sdpa", True))


# --- torch, datasets -----------------------------------------------------------------------------------------------


def registered_hooks(module: nn.Module) -> int:
    """How many forward, forward-pre, backward and backward-pre hooks are registered on ``module`` itself (not its
    children): the lengths of its private ``_forward_hooks``, ``_forward_pre_hooks``, ``_backward_hooks`` and
    ``_backward_pre_hooks`` (torch has no public count)."""
    total = len(module._forward_hooks) + len(module._forward_pre_hooks) + len(module._backward_hooks)
    return total + len(getattr(module, "_backward_pre_hooks", {}))


def grad_scaler_scale(scaler: Any) -> Tensor | None:
    """A ``GradScaler``'s current scale as the device tensor it keeps (private ``_scale``; ``get_scale()`` would
    synchronise the host every step); None before its first step."""
    scale = getattr(scaler, "_scale", None)
    return scale if isinstance(scale, Tensor) else None


def cpu_flash_attention_ops() -> tuple[Any, Any]:
    """The fused CPU kernel of ``F.scaled_dot_product_attention`` and its backward: the private ATen operators
    ``_scaled_dot_product_flash_attention_for_cpu`` (``_backward``), which ``FlopCounterMode`` has no formula for."""
    aten = torch.ops.aten
    return aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_flash_attention_for_cpu_backward


def dataset_fingerprint(dataset: Any) -> str:
    """A Hugging Face ``datasets.Dataset``'s content fingerprint (its private ``_fingerprint``)."""
    return str(dataset._fingerprint)


# --- Library output that cannot be fixed from mmfuse ---------------------------------------------------------------


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip:")


_DROP_LIGHTNING_TIPS = _DropLightningTips()


def quiet_library_output() -> None:
    """Silence what libraries print during a run that mmfuse cannot fix at its cause; each entry says why. Adding
    them again is a no-op (filters are not duplicated)."""
    # Lightning advertises its cloud services on every fit ("💡 Tip: ... litlogger", "... litmodels") unless one of
    # them is in use; no setting turns the tips off.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DROP_LIGHTNING_TIPS)
    # Lightning's CombinedLoader flattens the dataloaders with torch's LeafSpec, deprecated in recent torch: a
    # FutureWarning from inside Lightning on every fit, addressed to Lightning, not to its users.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )


def quiet_eval_mode_warning(num_modules: int) -> None:
    """Silence Lightning's "Found N module(s) in eval mode at the start of training" for exactly ``num_modules``: the
    modules of backbones frozen on purpose (``speed.freeze_vision`` / ``freeze_text``), which stay in eval mode so
    that their BatchNorm statistics and dropout stay fixed. Any other module left in eval mode changes N and is still
    reported."""
    warnings.filterwarnings(
        "ignore",
        message=rf"Found {num_modules} module\(s\) in eval mode at the start of training",
        category=UserWarning,
    )


@contextmanager
def quiet_shared_run_dir() -> Iterator[None]:
    """Inside: no warning from Lightning's CSV logger that its directory "exists and is not empty". An mmfuse run
    directory is shared on purpose (``config.yaml``, ``provenance.json`` and ``checkpoints/`` come before the first
    metrics), and the only file the logger replaces is a previous ``metrics.csv``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        yield
