"""Checkpoints a run can trust: atomic writes, loading that runs no code, RNG state for exact resume, and the
checks that stop a run before any work when a checkpoint or an output directory cannot work.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, get_type_hints

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mmfuse.config import MODEL_KEYS, ModelConfig
from mmfuse.errors import ConfigError
from mmfuse.io import atomic_path

__all__ = [
    "AtomicCheckpointIO",
    "LastCheckpoint",
    "RngState",
    "UnsafeCheckpointError",
    "check_checkpoint_matches",
    "check_output_dir",
    "safe_load",
]

# Hyperparameters that fix the architecture: a checkpoint that differs in any of them cannot be resumed. They are the
# model's fields (the `model:` section's fields of ModelConfig) and the data spec.
ARCHITECTURE_KEYS = (*MODEL_KEYS, "data_spec")


def _training_only(cls: type, prefix: str) -> frozenset[str]:
    """The dotted names of the fields under ``cls`` marked ``metadata={"training_only": True}`` (a loss weight, say):
    they shape no weight, so a checkpoint trained with another value (or before the field existed) still fits."""
    hints = get_type_hints(cls)
    names: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.metadata.get("training_only"):
            names.add(f"{prefix}.{f.name}")
        elif dataclasses.is_dataclass(hints[f.name]):
            names |= _training_only(hints[f.name], f"{prefix}.{f.name}")
    return frozenset(names)


_TRAINING_ONLY = _training_only(ModelConfig, "model")


class UnsafeCheckpointError(ConfigError):
    """A checkpoint holds objects that loading would have to execute (anything beyond tensors and containers)."""


def safe_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings and containers only, never code.

    Raises:
        ConfigError: the file is missing or is not a checkpoint.
        UnsafeCheckpointError: the file asks to build other objects (e.g. a crafted ``__reduce__``).
    """
    if not Path(path).is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpointError(
            f"refusing to load {str(path)!r}: it holds objects that loading would execute, not only tensors and "
            f"plain values ({first_line})"
        ) from err
    except RuntimeError as err:
        raise ConfigError(f"{str(path)!r} is not a readable checkpoint: {err}") from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside the target and renames it into place; loads safely.

    A process killed while saving leaves the previous checkpoint of that name whole (a rename is atomic on
    POSIX file systems); the leftover temporary file is named ``.<name>.*.tmp``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote file systems: Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            torch.save(checkpoint, fh)
        _fsync_dir(target.parent)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return safe_load(path, map_location=map_location if map_location is not None else "cpu")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RngState(L.Callback):
    """Saves the Python, NumPy, torch (and CUDA) RNG states of every process in each checkpoint, and restores
    them when training resumes, so that dropout and any other random draw continue as if never interrupted.

    The states are stored as tensors and plain values, which ``weights_only`` loading accepts.
    """

    def __init__(self) -> None:
        self._to_restore: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        state = _capture_rng()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, state)  # every rank builds the checkpoint; rank 0 writes it
            return {"ranks": gathered}
        return {"ranks": [state]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = list(state_dict["ranks"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Restored here, after set-up and the sanity check, right before the first resumed step draws.
        if self._to_restore is None:
            return
        if len(self._to_restore) != trainer.world_size:
            raise ConfigError(
                f"the checkpoint holds RNG states of {len(self._to_restore)} processes but this run has "
                f"{trainer.world_size}; resume with the same number of processes"
            )
        _restore_rng(self._to_restore[trainer.global_rank])
        self._to_restore = None


def _capture_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos)},
        "numpy_gauss": (int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_checkpoint_matches(
    ckpt_path: str | Path, hparams: dict[str, Any], keys: tuple[str, ...] = ARCHITECTURE_KEYS
) -> None:
    """Fail before any work when the checkpoint was written by a model with another architecture.

    Compares the architecture hyperparameters (``keys``: the model's fields and the data spec) key by key and names
    every difference with both values.
    """
    saved = safe_load(ckpt_path).get("hyper_parameters")
    if saved is None:
        raise ConfigError(f"checkpoint {str(ckpt_path)!r} has no hyper_parameters: it was not written by mmfuse fit")
    diffs: list[str] = []
    defaults = dataclasses.asdict(ModelConfig())
    for key in keys:
        # a checkpoint written before a model field existed has (and loads with) the field's default
        saved_value = saved[key] if key in saved else defaults.get(key)
        diffs += _diff(f"model.{key}", saved_value, hparams.get(key))
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise ConfigError(
            f"checkpoint {str(ckpt_path)!r} does not match the configured model ({shown}); use the config the "
            "checkpoint was trained with (its run directory holds config.yaml)"
        )


def _diff(prefix: str, saved: Any, current: Any) -> list[str]:
    if prefix in _TRAINING_ONLY:
        return []
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(saved) | set(current)):
            out += _diff(f"{prefix}.{key}", saved.get(key), current.get(key))
        return out
    if isinstance(saved, list | tuple) and isinstance(current, list | tuple):
        saved, current = list(saved), list(current)
    return [] if saved == current else [f"{prefix}: checkpoint {saved!r}, config {current!r}"]


def check_output_dir(directory: str | Path, checkpoint_bytes: int, copies: int) -> None:
    """Fail before training when checkpoints cannot be written to ``directory``.

    Creates the directory, writes and removes a probe file, and checks that the free space holds ``copies``
    checkpoints of ``checkpoint_bytes`` each, plus one being written.
    """
    path = Path(directory)
    if "://" in str(directory):  # remote storage: nothing cheap to probe
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"cannot write checkpoints to {str(path)!r}: {err.strerror or err}") from err
    needed = checkpoint_bytes * (copies + 1)
    free = shutil.disk_usage(path).free
    if free < needed:
        raise ConfigError(
            f"not enough disk space in {str(path)!r} for checkpoints: about {needed / 2**20:.1f} MiB needed "
            f"({copies + 1} x {checkpoint_bytes / 2**20:.1f} MiB), {free / 2**20:.1f} MiB free"
        )


class LastCheckpoint(ModelCheckpoint):
    """Keeps ``last.ckpt`` current for resuming (``mmfuse fit --ckpt_path last``).

    Args:
        every_n_train_steps: also save every this many optimizer steps, mid-epoch; None saves at each validation
            (twice an epoch with ``val_check_interval: 0.5``) and at epoch ends.
        dirpath: where to save; None = ``<run directory>/checkpoints``.
    """

    def __init__(self, every_n_train_steps: int | None = None, dirpath: str | None = None) -> None:
        super().__init__(
            dirpath=dirpath, monitor=None, save_top_k=0, save_last=True, every_n_train_steps=every_n_train_steps
        )
