"""LightningDataModule for the built-in shapes world."""

from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from datasets import DatasetDict, load_from_disk
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from mmfuse._compat import dataset_fingerprint
from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.loader import ResumableDataLoader
from mmfuse.data.shapes import ShapesWorldConfig, answer_vocabulary, prepare_shapes_world, text_vocabulary
from mmfuse.data.tokenizer import load_tokenizer, train_word_tokenizer
from mmfuse.errors import ConfigError
from mmfuse.types import DataSpec

__all__ = ["ResumableDataModule", "ShapesDataModule"]


class ResumableDataModule(L.LightningDataModule):
    """Saves the training loader's position (epoch, batches handed out) in every checkpoint and restores it.

    Lightning's own restore of loader state is skipped when the loader was built before the checkpoint was
    read (``trainer.estimated_stepping_batches`` in ``configure_optimizers`` does that), so the data module
    carries the state through its public ``state_dict`` / ``load_state_dict`` hooks. Subclasses build their
    training loader with :meth:`_resumable_loader`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._train_loader: ResumableDataLoader | None = None
        self._pending_state: dict[str, int] | None = None

    def _resumable_loader(self, dataset: Any, batch_size: int, seed: int | None, **kwargs: Any) -> ResumableDataLoader:
        """The shuffled training loader: order from (seed, epoch), sharded over the trainer's processes, its
        position tracked for checkpoints. ``seed`` None = the run's ``seed_everything`` value."""
        trainer = self.trainer
        loader = ResumableDataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            seed=seed if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0)),
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
            drop_last=True,
            **kwargs,
        )
        self._train_loader = loader
        if self._pending_state is not None:
            loader.load_state_dict(self._pending_state)
            self._pending_state = None
        return loader

    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("train_loader")
        if state is None:
            return
        if self._train_loader is not None:  # built already, not iterated yet: takes effect on its first batch
            self._train_loader.load_state_dict(state)
        else:
            self._pending_state = state


class ShapesDataModule(ResumableDataModule):
    """Generates (once, cached) and serves the shapes world.

    Args:
        world: what to generate.
        batch_size: examples per batch (per process).
        num_workers: data-loader worker processes.
        cache_dir: where generated data lives; None = ``$MMFUSE_CACHE`` or ``~/.cache/mmfuse``.
        test_split: split used by ``test``/``predict``: ``test`` or ``shift`` (needs ``world.shift``).
        tokenizer: a tokenizer directory (``save_pretrained`` layout) or Hugging Face hub id, e.g. the pretrained text
            encoder's own (the command line's default when ``model.text.pretrained`` is set); None trains a
            word-level tokenizer on the world's vocabulary.
        seed: seed of the shuffling order (every epoch's order is a function of seed and epoch, so a resumed run
            continues it exactly); None = the run's ``seed_everything`` value.
    """

    def __init__(
        self,
        world: ShapesWorldConfig = ShapesWorldConfig(),
        batch_size: int = 128,
        num_workers: int = 0,
        cache_dir: str | None = None,
        test_split: Literal["test", "shift"] = "test",
        tokenizer: str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if test_split == "shift" and not world.shift:
            raise ConfigError("data.test_split='shift' needs data.world.shift: true")
        self.world = world
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.test_split = test_split
        self.tokenizer_path = tokenizer
        self.seed = seed
        self.splits: DatasetDict | None = None

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The configured tokenizer, or a word-level one trained on every word the generator can write."""
        if self.tokenizer_path is None:
            return train_word_tokenizer(text_vocabulary(self.world))
        return load_tokenizer(self.tokenizer_path, "data.tokenizer")

    @property
    def spec(self) -> DataSpec:
        """What the model needs to know about this data (classes, vocabulary, image size)."""
        return DataSpec(
            num_classes=len(answer_vocabulary(self.world)),
            vocab_size=len(self.tokenizer),
            pad_token_id=int(self.tokenizer.pad_token_id),
            image_size=self.world.image_size,
            class_names=answer_vocabulary(self.world),
            tokenizer=self.tokenizer_path,
        )

    def prepare_data(self) -> None:
        prepare_shapes_world(self.world, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            path: Path = prepare_shapes_world(self.world, self.cache_dir)  # returns at once when cached
            self.splits = load_from_disk(str(path))

    def fingerprint(self) -> str:
        """A sha256 of what the splits hold (names, sizes and the datasets' content fingerprints), for provenance."""
        self.setup()
        assert self.splits is not None
        manifest = {name: [split.num_rows, dataset_fingerprint(split)] for name, split in sorted(self.splits.items())}
        return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()

    def train_dataloader(self) -> ResumableDataLoader:
        """Shuffled each epoch from (seed, epoch); its position is saved in checkpoints for exact resume."""
        assert self.splits is not None, "call setup() first"
        return self._resumable_loader(self.splits["train"], self.batch_size, self.seed, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_split)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_split)

    def _eval_loader(self, split: str) -> DataLoader:
        assert self.splits is not None, "call setup() first"
        # Its own generator: starting an evaluation must not draw from the global RNG that training uses.
        generator = torch.Generator().manual_seed(0)
        return DataLoader(self.splits[split], batch_size=self.batch_size, generator=generator, **self._loader_kwargs())

    def _loader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "collate_fn": ImageTextCollator(self.tokenizer),
        }
