"""Data loaders whose position in an epoch is part of the checkpoint, so a resumed run sees the same batches.

:class:`ResumableDataLoader` implements ``state_dict`` / ``load_state_dict``, which Lightning saves with every
checkpoint and restores on ``fit(ckpt_path=...)``. Its order depends only on ``(seed, epoch)``: the sampler and
the worker seeds use their own generators, never the global RNG, so a resumed run draws exactly what an
uninterrupted one would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mmfuse.errors import ConfigError

__all__ = ["ResumableDataLoader", "ResumableSampler"]


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` (one process is a world of one) that can begin an epoch part-way through.

    ``start`` indices of this rank's shard are skipped by the next iteration only; later epochs start at 0.
    Being a ``DistributedSampler``, Lightning keeps it as it is under DDP instead of replacing it.
    """

    def __init__(self, dataset: Any, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())  # (seed, epoch)-determined order, this rank's shard
        start, self.start = self.start, 0
        return iter(indices[start:])


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler` that records how many batches of the epoch it handed out.

    Args:
        dataset: a map-style dataset.
        batch_size: examples per batch (per process).
        shuffle: reshuffle every epoch (order from ``seed`` and the epoch number).
        seed: base seed of the order and of the worker seeds.
        num_replicas: number of processes sharing the data.
        rank: this process's rank.
        **kwargs: other ``DataLoader`` arguments (``num_workers``, ``collate_fn``, ``drop_last``...).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        **kwargs: Any,
    ) -> None:
        sampler = ResumableSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, generator=torch.Generator(), **kwargs)
        self.sampler: ResumableSampler
        self.batches_done = 0  # batches of the current epoch handed out so far
        self._skip = 0  # batches the next iteration starts after (set by load_state_dict)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        assert self.generator is not None
        self.generator.manual_seed(self.sampler.seed * 100_003 + self.sampler.epoch)  # worker base seeds
        self.batches_done, self._skip = self._skip, 0
        self.sampler.start = self.batches_done * int(self.batch_size or 1)
        for batch in super().__iter__():
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Position in the epoch: epoch, batches handed out, and the settings that must match on resume."""
        return {
            "epoch": int(self.sampler.epoch),
            "batches_done": int(self.batches_done),
            "batch_size": int(self.batch_size or 1),
            "num_replicas": int(self.sampler.num_replicas),
            "seed": int(self.sampler.seed),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after the recorded batch on the next iteration; a finished epoch starts the next one fresh."""
        ours = self.state_dict()
        changed = [k for k in ("batch_size", "num_replicas", "seed") if state.get(k) != ours[k]]
        if changed:
            detail = ", ".join(f"{k} {state.get(k)} -> {ours[k]}" for k in changed)
            raise ConfigError(
                f"cannot resume the data order exactly: the checkpoint's loader differs ({detail}); resume with the "
                "same batch size, number of processes and seed"
            )
        self.sampler.set_epoch(state["epoch"])
        self._skip = state["batches_done"] if state["batches_done"] < len(self) else 0
