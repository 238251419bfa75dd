from __future__ import annotations

import torch

from mmfuse.data.datamodule import ShapesDataModule
from mmfuse.types import Batch
from tests.conftest import TINY_WORLD


def test_spec_and_typed_batches(cache_dir) -> None:
    dm = ShapesDataModule(TINY_WORLD, batch_size=8, cache_dir=str(cache_dir))
    spec = dm.spec
    assert spec.num_classes == 6 and spec.image_size == 48 and spec.class_names == TINY_WORLD.colors
    assert spec.vocab_size == len(dm.tokenizer)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, Batch) and len(batch) == 8
    assert batch.images.shape == (8, 3, 48, 48) and batch.images.dtype == torch.float32
    assert 0.0 <= batch.images.min() and batch.images.max() <= 1.0
    assert batch.attention_mask.dtype == torch.bool and batch.input_ids.shape == batch.attention_mask.shape
    assert (batch.input_ids[~batch.attention_mask] == spec.pad_token_id).all()
    assert int((batch.input_ids == dm.tokenizer.unk_token_id).sum()) == 0, "every generated word is in the vocabulary"


def test_local_tokenizer_directory_is_used(cache_dir, tmp_path) -> None:
    trained = ShapesDataModule(TINY_WORLD).tokenizer
    trained.save_pretrained(tmp_path)
    dm = ShapesDataModule(TINY_WORLD, cache_dir=str(cache_dir), tokenizer=str(tmp_path))
    assert dm.tokenizer.get_vocab() == trained.get_vocab() and dm.spec.vocab_size == len(trained)


def test_missing_tokenizer_directory_is_named(tmp_path) -> None:
    import pytest

    from mmfuse.errors import ConfigError

    with pytest.raises(ConfigError, match="data.tokenizer"):
        _ = ShapesDataModule(TINY_WORLD, tokenizer=str(tmp_path / "nope")).tokenizer
