"""The baseline ladder that ends ``mmfuse fit`` (the top-level ``baselines:`` section of an experiment YAML).

Classification and VQA: the cheap rungs of :mod:`mmfuse.audit.baselines` on the validation split: the majority
class, linear probes on the trained model's frozen pooled text features, pooled image features and both
concatenated (fit on at most ``max_train`` training examples), then the model itself, and the model's gain over the
best of them as a paired bootstrap interval. VQA is scored by exact match with the label (the most common human
answer), not by the soft VQA accuracy that ``val/acc`` logs.

Retrieval: the contrastive ranking against the image-text matching head's re-ranking of each query's top
``model.metrics.rerank_k`` candidates (ALBEF / BLIP), from the recalls the fit's last validation logged
(``val/t2i_r5`` against ``val/t2i_r5_itm``).

A warning is logged when the model is not shown to beat its baselines: the lower end of the gain's interval at or
below ``min_gain`` (for retrieval, which logs averages only, the gain in mean recall itself).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from mmfuse.audit.baselines import BaselineLadder, baseline_ladder
from mmfuse.audit.features import extract_features
from mmfuse.audit.source import SplitData, split_data
from mmfuse.errors import ConfigError
from mmfuse.tables import format_table

__all__ = ["BaselinesConfig", "RerankLadder", "RecallRow", "fit_ladder", "classification_ladder", "rerank_ladder"]

log = logging.getLogger(__name__)

_RECALLS = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "r_mean")  # in the table's order
_GRADED_RECALL = "r_mean"  # the mean of every recall: no single K decides


@dataclass(frozen=True)
class BaselinesConfig:
    """The baseline ladder at the end of ``mmfuse fit`` (written as ``baselines.json`` / ``baselines.md`` into the
    run directory on global rank 0, after training).

    Attributes:
        enabled: build the ladder.
        max_train: training examples the probes are fit on at most (drawn at random, seeded); the cost of the
            ladder grows with it.
        max_val: validation examples every rung is scored on at most (drawn at random, seeded); None = all.
        min_gain: the model's accuracy gain over the best simpler rung (retrieval: the ITM re-ranking's gain in mean
            recall over the contrastive ranking) that the lower end of its interval must exceed; at or below it a
            warning is logged.
    """

    enabled: bool = True
    max_train: int = 2000
    max_val: int | None = 5000
    min_gain: float = 0.0

    def __post_init__(self) -> None:
        if self.max_train < 2:
            raise ConfigError(f"baselines.max_train={self.max_train} must be at least 2 (a probe needs examples)")
        if self.max_val is not None and self.max_val < 1:
            raise ConfigError(f"baselines.max_val={self.max_val} must be at least 1 (or null: every example)")
        if not -1.0 <= self.min_gain <= 1.0:
            raise ConfigError(f"baselines.min_gain={self.min_gain} is not an accuracy difference in [-1, 1]")


@dataclass(frozen=True)
class RecallRow:
    """One ranking of the retrieval ladder.

    Attributes:
        name: the ranking, e.g. ``contrastive (ITC)``.
        method: how it ranks.
        recall: recall name (``t2i_r5``...) -> value on the validation split.
    """

    name: str
    method: str
    recall: dict[str, float]


@dataclass(frozen=True)
class RerankLadder:
    """Retrieval's ladder: the contrastive ranking, then the ITM re-ranking of its top ``rerank_k`` candidates.

    Attributes:
        split: the evaluation split.
        rerank_k: candidates re-ranked per query; 0 = re-ranking off (the ladder has one row).
        rows: the rankings, contrastive first.
        min_gain: the gain in mean recall the re-ranking must exceed.
    """

    split: str
    rerank_k: int
    rows: list[RecallRow]
    min_gain: float = 0.0

    @property
    def gain(self) -> dict[str, float]:
        """Re-ranked minus contrastive recall, per recall both rows have; empty with one row."""
        if len(self.rows) < 2:
            return {}
        first, last = self.rows[0].recall, self.rows[-1].recall
        return {name: last[name] - first[name] for name in first if name in last}

    @property
    def is_warranted(self) -> bool | None:
        """Whether the re-ranking beats the contrastive ranking by more than ``min_gain`` in mean recall; None
        when there is nothing to compare."""
        gain = self.gain.get(_GRADED_RECALL)
        return None if gain is None else gain > self.min_gain

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "task": "retrieval",
            "rerank_k": self.rerank_k,
            "rows": [{"name": r.name, "method": r.method, "recall": r.recall} for r in self.rows],
            "gain_of_reranking": self.gain,
            "graded_on": _GRADED_RECALL,
            "min_gain": self.min_gain,
            "warranted": self.is_warranted,
        }

    def to_markdown(self) -> str:
        """The ladder as a Markdown table with the gain underneath."""
        names = self._names()
        lines = [
            f"# Baseline ladder ({self.split} split, retrieval)",
            "",
            f"Recall@K of the fit's last validation on the {self.split} split (averages over the queries, so without "
            "intervals).",
            "",
            format_table(["ranking", *names, "method"], [self._cells(r, names) + [r.method] for r in self.rows], "md"),
            "",
            self._verdict(),
        ]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        """The ladder as a plain-text table with the gain underneath (what ``mmfuse fit`` prints)."""
        names = self._names()
        rows = [self._cells(r, names) for r in self.rows]
        table = format_table(["ranking", *names], rows, "text", "l" + "r" * len(names))
        return "\n".join([f"baseline ladder ({self.split} split, retrieval recall@K)", table, self._verdict()])

    def _names(self) -> list[str]:
        return [name for name in _RECALLS if name in self.rows[0].recall]

    @staticmethod
    def _cells(row: RecallRow, names: list[str]) -> list[str]:
        return [row.name, *(f"{row.recall[n]:.3f}" if n in row.recall else "—" for n in names)]

    def _verdict(self) -> str:
        gain = self.gain.get(_GRADED_RECALL)
        if gain is None:
            return "ITM re-ranking is off (model.metrics.rerank_k: 0); set rerank_k > 0 to compare it."
        status = "pass" if self.is_warranted else "fail"
        return f"re-ranking minus contrastive, {_GRADED_RECALL}: {gain:+.3f}; minimum gain {self.min_gain}: {status}"


def fit_ladder(
    module: Any, datamodule: Any, metrics: Mapping[str, Any], cfg: BaselinesConfig, device: str | torch.device
) -> BaselineLadder | RerankLadder | None:
    """The ladder of a fitted :class:`~mmfuse.training.FusionLitModule` on the validation split, or None (with the
    reason logged) when the data has no validation split. Retrieval reads ``metrics`` (the trainer's
    ``callback_metrics``); the other tasks run ``module.model`` over the data module's splits on ``device``.

    Calls no collective: meant for global rank 0 after ``fit``.
    """
    if module.model_cfg.task == "retrieval":
        split = getattr(datamodule, "val_split", None) or "val"
        return rerank_ladder(metrics, int(module.metrics.rerank_k), cfg.min_gain, split)
    name = f"model ({module.model_cfg.fusion.name})"
    batch_size = int(getattr(datamodule, "batch_size", 128))
    return classification_ladder(module.model, datamodule, cfg, name, device, batch_size)


def classification_ladder(
    model: nn.Module,
    datamodule: Any,
    cfg: BaselinesConfig,
    model_name: str,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
) -> BaselineLadder | None:
    """The cheap rungs and the model on (at most ``cfg.max_val`` examples of) the validation split, the probes fit
    on at most ``cfg.max_train`` training examples; None when the data has no validation split.

    The global torch RNG is left as it was (the data loaders here would draw from it).
    """
    val_name = _val_split(datamodule)
    if val_name is None:
        log.info("baseline ladder skipped: the data has no validation split")
        return None
    start = time.perf_counter()
    train = _sampled_split(datamodule, "train", cfg.max_train)
    val = _sampled_split(datamodule, val_name, cfg.max_val)
    read = {"tokenizer": datamodule.tokenizer, "batch_size": batch_size, "device": str(device)}
    with torch.random.fork_rng(devices=[]):
        train_features = extract_features(model, train.rows, **read)
        val_features = extract_features(model, val.rows, **read)
    ladder = baseline_ladder(
        train_features, train.labels, val_features, val.labels, model_name, val_name, min_gain=cfg.min_gain
    )
    log.info("baseline ladder: %d training, %d validation examples, %.1f s", len(train), len(val),
             time.perf_counter() - start)  # fmt: skip
    return ladder


def rerank_ladder(
    metrics: Mapping[str, Any], rerank_k: int, min_gain: float = 0.0, split: str = "val"
) -> RerankLadder | None:
    """Retrieval's ladder from the logged ``val/<recall>`` and ``val/<recall>_itm`` values (of the validation
    split ``split``); None (logged) when the fit logged no validation recall."""
    contrastive = _recalls(metrics, "val/", "")
    if not contrastive:
        log.info("baseline ladder skipped: the fit logged no validation recall (val/t2i_r5, ...)")
        return None
    rows = [RecallRow("contrastive (ITC)", "cosine similarity of the contrastive embeddings", contrastive)]
    reranked = _recalls(metrics, "val/", "_itm") if rerank_k > 0 else {}
    if reranked:
        method = f"the image-text matching head orders each query's top {rerank_k} contrastive candidates"
        rows.append(RecallRow(f"ITM re-ranking (top {rerank_k})", method, reranked))
    return RerankLadder(split, rerank_k if reranked else 0, rows, min_gain)


def not_warranted_message(ladder: BaselineLadder | RerankLadder, min_gain: float) -> str | None:
    """What the warning says when the model is not shown to beat its baselines; None when it is."""
    if isinstance(ladder, RerankLadder):
        if ladder.is_warranted is not False:
            return None
        gain = ladder.gain[_GRADED_RECALL]
        return (
            f"ITM re-ranking does not beat the contrastive ranking on the {ladder.split} split: {_GRADED_RECALL} "
            f"{gain:+.3f} (minimum gain {min_gain})"
        )
    low = ladder.gain.low
    if low is not None and low > min_gain:
        return None
    return (
        f"the model does not beat its best simpler rung ({ladder.best_baseline}) on the {ladder.split} split: gain "
        f"{ladder.gain.format()}, lower bound at or below the minimum gain {min_gain}; fusion is not shown to help"
    )


def _recalls(metrics: Mapping[str, Any], prefix: str, suffix: str) -> dict[str, float]:
    found = {name: metrics.get(f"{prefix}{name}{suffix}") for name in _RECALLS}
    return {name: float(value) for name, value in found.items() if value is not None}


def _val_split(datamodule: Any) -> str | None:
    """The split the data module validates on (its ``val_split``, else ``val``), if the data has it."""
    name = getattr(datamodule, "val_split", None) or "val"
    return name if name in _split_mapping(datamodule) else None


def _split_mapping(datamodule: Any) -> Mapping[str, Any]:
    mapping = getattr(datamodule, "splits", None)
    if mapping is None:
        mapping = getattr(datamodule, "datasets", None)
    return mapping if mapping is not None else {}


def _sampled_split(datamodule: Any, name: str, limit: int | None, seed: int = 0) -> SplitData:
    """At most ``limit`` examples of split ``name`` (drawn at random with ``seed``, kept in record order)."""
    rows = _split_mapping(datamodule)[name]
    if limit is not None and len(rows) > limit:
        chosen = np.sort(np.random.default_rng(seed).choice(len(rows), size=limit, replace=False))
        # a datasets.Dataset keeps its column access (split_data reads whole columns); other rows get a view
        rows = rows.select(chosen) if hasattr(rows, "column_names") else Subset(rows, chosen.tolist())
    return split_data(name, rows)
