"""LightningDataModule for the built-in shapes world."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Literal

import lightning as L
from datasets import DatasetDict, load_from_disk
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.shapes import ShapesWorldConfig, answer_vocabulary, prepare_shapes_world, text_vocabulary
from mmfuse.data.tokenizer import train_word_tokenizer
from mmfuse.errors import ConfigError
from mmfuse.types import DataSpec

__all__ = ["ShapesDataModule"]


class ShapesDataModule(L.LightningDataModule):
    """Generates (once, cached) and serves the shapes world.

    Args:
        world: what to generate.
        batch_size: examples per batch (per process).
        num_workers: data-loader worker processes.
        cache_dir: where generated data lives; None = ``$MMFUSE_CACHE`` or ``~/.cache/mmfuse``.
        test_split: split used by ``test``/``predict``: ``test`` or ``shift`` (needs ``world.shift``).
        tokenizer: a local tokenizer directory (``save_pretrained`` layout), e.g. the one next to a pretrained text
            encoder; None trains a word-level tokenizer on the world's vocabulary.
    """

    def __init__(
        self,
        world: ShapesWorldConfig = ShapesWorldConfig(),
        batch_size: int = 128,
        num_workers: int = 0,
        cache_dir: str | None = None,
        test_split: Literal["test", "shift"] = "test",
        tokenizer: str | None = None,
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
        self.splits: DatasetDict | None = None

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The configured local tokenizer, or a word-level one trained on every word the generator can write."""
        if self.tokenizer_path is None:
            return train_word_tokenizer(text_vocabulary(self.world))
        if not (Path(self.tokenizer_path) / "tokenizer_config.json").is_file():
            raise ConfigError(f"data.tokenizer={self.tokenizer_path!r}: no tokenizer_config.json in that directory")
        return AutoTokenizer.from_pretrained(self.tokenizer_path, local_files_only=True)

    @property
    def spec(self) -> DataSpec:
        """What the model needs to know about this data (classes, vocabulary, image size)."""
        return DataSpec(
            num_classes=len(answer_vocabulary(self.world)),
            vocab_size=len(self.tokenizer),
            pad_token_id=int(self.tokenizer.pad_token_id),
            image_size=self.world.image_size,
            class_names=answer_vocabulary(self.world),
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
        manifest = {name: [split.num_rows, split._fingerprint] for name, split in sorted(self.splits.items())}
        return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        assert self.splits is not None, "call setup() first"
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=ImageTextCollator(self.tokenizer),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_split, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_split, shuffle=False)
