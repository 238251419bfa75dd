"""``predictions.jsonl``: what ``mmfuse predict`` writes, one JSON object per example, merged over DDP processes.

Each batch's predictions are reduced by the task's objective (:meth:`~mmfuse.tasks.TaskObjective.prediction_state`,
e.g. the top-k classes) and kept per process; at the end of the split they are gathered on rank 0, the rows a
distributed sampler repeats to even out the shards are dropped (by row index), and the objective turns the split
into rows (:meth:`~mmfuse.tasks.TaskObjective.prediction_rows`): for classification and VQA the top-k classes with
their probabilities, for retrieval the top-k images of each caption and the top-k captions of each image over the
whole split. Rows that stand for an example carry its ``index`` in the split and, where the data has them, its
``record_id`` and ``image_id``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from mmfuse.errors import ConfigError
from mmfuse.io import write_atomic
from mmfuse.metrics import first_of_each
from mmfuse.tasks import SplitPredictions, TaskObjective
from mmfuse.types import Batch

__all__ = ["PREDICTIONS_FILE", "PredictionWriter"]

PREDICTIONS_FILE = "predictions.jsonl"
_ID_COLUMNS = ("record_id", "image_id")  # the data's own ids, where its rows have them (files on disk)
_INDEX, _LABEL, _IMAGE = "_index", "_label", "_image_id"  # what the writer adds to the objective's state

log = logging.getLogger(__name__)


class PredictionWriter(BasePredictionWriter):
    """Writes ``<run directory>/predictions.jsonl`` at the end of ``predict`` (the run directory of the predict run
    itself: ``trainer.log_dir``, e.g. ``<trainer.default_root_dir>/version_N``, next to its ``config.yaml``).

    Args:
        top_k: classes (classification, VQA) or candidates (retrieval) listed per row, best first.
    """

    def __init__(self, top_k: int = 5) -> None:
        if top_k < 1:
            raise ConfigError(f"predictions.top_k={top_k} must be at least 1")
        super().__init__(write_interval="batch_and_epoch")
        self.top_k = top_k
        self.path: Path | None = None  # set once written
        self._parts: list[dict[str, Tensor]] = []

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._parts = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Batch,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Keep what the objective needs of this batch, with each row's index, label and image id, on the CPU."""
        state = _objective(pl_module).prediction_state(prediction, self.top_k)
        part = {name: value.detach().cpu() for name, value in state.items()}
        if batch.indices is not None:
            part[_INDEX] = batch.indices.cpu()
        elif batch_indices is not None and len(batch_indices) == len(batch):
            part[_INDEX] = torch.as_tensor(list(batch_indices), dtype=torch.long)  # the sampler's dataset indices
        else:
            raise ConfigError("mmfuse predict needs each row's index in its split (Batch.indices); this data has none")
        if batch.labels is not None:
            part[_LABEL] = batch.labels.cpu()
        if batch.image_ids is not None:
            part[_IMAGE] = batch.image_ids.cpu()
        self._parts.append(part)

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any], batch_indices: Any
    ) -> None:
        """Gather every process's rows on rank 0, drop repeats, and write the file there."""
        parts = _gather_on_rank_zero(self._parts)
        self._parts = []
        run_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every rank asks
        if not trainer.is_global_zero or not parts:
            return
        indices, merged = _merge(parts)
        dataset_ids = _dataset_ids(trainer, indices.tolist())
        split = SplitPredictions(
            outputs={name: value for name, value in merged.items() if not name.startswith("_")},
            indices=indices,
            labels=merged.get(_LABEL),
            image_ids=merged.get(_IMAGE),
            image_names=dataset_ids.get("image_id"),
            class_names=tuple(_hparam(pl_module, "data_spec").get("class_names", ())),
        )
        rows = _objective(pl_module).prediction_rows(split, self.top_k)
        position = {index: i for i, index in enumerate(indices.tolist())}
        for row in rows:
            if "index" in row:  # a row that stands for an example: add the data's own ids
                row |= {column: values[position[row["index"]]] for column, values in dataset_ids.items()}
        self.path = Path(run_dir) / PREDICTIONS_FILE
        write_atomic(self.path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        log.info("%d prediction rows (%d examples) written to %s", len(rows), len(indices), self.path)


def _objective(pl_module: L.LightningModule) -> TaskObjective:
    objective = getattr(pl_module, "objective", None)
    if not isinstance(objective, TaskObjective):
        raise TypeError(f"PredictionWriter needs a module with a task objective (FusionLitModule), got {pl_module}")
    return objective


def _hparam(pl_module: L.LightningModule, name: str) -> dict[str, Any]:
    value = pl_module.hparams.get(name) or {}
    return dict(value)


def _merge(parts: list[dict[str, Tensor]]) -> tuple[Tensor, dict[str, Tensor]]:
    """The parts of every batch and process as one split: (S,) distinct row indices in order, and each kept value
    (S, ...) of the first row with that index (a sampler that pads its shards repeats rows)."""
    merged = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    all_indices = merged.pop(_INDEX)
    keep = first_of_each(all_indices)  # (S,) positions of the first row of each index, sorted by index
    return all_indices[keep], {name: value[keep] for name, value in merged.items()}


def _gather_on_rank_zero(parts: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Every process's parts, in rank order, on rank 0 (other ranks get theirs back); one process: ``parts``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return parts
    gathered: list[Any] = [None] * dist.get_world_size() if dist.get_rank() == 0 else []
    dist.gather_object(parts, gathered if dist.get_rank() == 0 else None, dst=0)
    if dist.get_rank() != 0:
        return parts
    return [part for rank_parts in gathered for part in rank_parts]


def _dataset_ids(trainer: L.Trainer, indices: list[int]) -> dict[str, list[str]]:
    """The data's own ids (``record_id``, ``image_id``) of the given rows, where the predicted split's dataset has
    them (the manifest of data on disk); ``{}`` otherwise (the shapes world)."""
    loaders = trainer.predict_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    manifest = getattr(getattr(loader, "dataset", None), "manifest", None)
    columns = [c for c in _ID_COLUMNS if c in getattr(manifest, "column_names", ())]
    if manifest is None or not columns:
        return {}
    rows = manifest.select_columns(columns).select(indices)
    return {column: [str(value) for value in rows[column]] for column in columns}
