"""Data loaders whose position in an epoch is part of the checkpoint, so a resumed run sees the same batches.

:class:`ResumableDataLoader` implements ``state_dict`` / ``load_state_dict``, which Lightning saves with every
checkpoint and restores on ``fit(ckpt_path=...)``. Its order depends only on ``(seed, epoch)``: the sampler and
the worker seeds use their own generators, never the global RNG, so a resumed run draws exactly what an
uninterrupted one would have drawn.

With ``sample_keys=True`` the sampler hands the dataset :class:`SampleKey` s (index, epoch, seed) instead of bare
indices, so that a dataset's own randomness (augmentation, which caption of an image) can be a function of
(seed, epoch, index) alone: the epoch reaches the dataset even in persistent workers, which outlive an epoch, and
the rest of an epoch resumed mid-way draws what it would have drawn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mmfuse.errors import ConfigError

__all__ = ["ResumableDataLoader", "ResumableSampler", "SampleKey", "check_same_order", "sample_seed"]


@dataclass(frozen=True)
class SampleKey:
    """What a keyed sampler hands a dataset for one example: its index, and the epoch and seed of the run."""

    index: int
    epoch: int = 0
    seed: int = 0


def sample_seed(purpose: str, seed: int, epoch: int, item: Any) -> int:
    """A 63-bit seed from (purpose, seed, epoch, item), the same in every process and worker (unlike ``hash``).

    Example:
        >>> sample_seed("augment", 0, 1, 5) == sample_seed("augment", 0, 1, 5) != sample_seed("augment", 0, 2, 5)
        True
    """
    digest = hashlib.blake2b(f"{purpose}/{seed}/{epoch}/{item}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def check_same_order(saved: dict[str, int], ours: dict[str, int]) -> None:
    """Refuse to resume a loader whose order would differ from the checkpoint's: another batch size, number of
    processes or seed (a :class:`ConfigError` naming each change)."""
    changed = [k for k in ("batch_size", "num_replicas", "seed") if saved.get(k) != ours[k]]
    if changed:
        detail = ", ".join(f"{k} {saved.get(k)} -> {ours[k]}" for k in changed)
        raise ConfigError(
            f"cannot resume the data order exactly: the checkpoint's loader differs ({detail}); resume with the "
            "same batch size, number of processes and seed"
        )


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` (one process is a world of one) that can begin an epoch part-way through.

    ``start`` indices of this rank's shard are skipped by the next iteration only; later epochs start at 0.
    Being a ``DistributedSampler``, Lightning keeps it as it is under DDP instead of replacing it. With
    ``sample_keys`` it yields :class:`SampleKey` s instead of indices.
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        sample_keys: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0
        self.sample_keys = sample_keys

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())[self.start :]  # (seed, epoch)-determined order, this rank's shard
        self.start = 0
        if self.sample_keys:
            return iter([SampleKey(index, int(self.epoch), int(self.seed)) for index in indices])
        return iter(indices)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler` that records how many batches of the epoch it handed out.

    Args:
        dataset: a map-style dataset.
        batch_size: examples per batch (per process).
        shuffle: reshuffle every epoch (order from ``seed`` and the epoch number).
        seed: base seed of the order and of the worker seeds.
        num_replicas: number of processes sharing the data.
        rank: this process's rank.
        sample_keys: hand the dataset :class:`SampleKey` s (index, epoch, seed) instead of indices.
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
        sample_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        sampler = ResumableSampler(dataset, num_replicas, rank, shuffle, seed, sample_keys)
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
        check_same_order(state, self.state_dict())
        self.sampler.set_epoch(state["epoch"])
        self._skip = state["batches_done"] if state["batches_done"] < len(self) else 0
