from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from mmfuse.data.datamodule import ShapesDataModule
from mmfuse.data.files import ImageTextDataModule
from mmfuse.data.formats import FileSourceConfig
from mmfuse.training import FusionLitModule
from tests.conftest import TINY_TEXT, TINY_VISION, TINY_WORLD
from tests.data._make import captions_dataset
from tests.data.test_files import memes
from tests.data.test_vqa import vqa_layout


def test_fast_dev_run_then_reload_gives_identical_logits(cache_dir: Path, tmp_path: Path) -> None:
    dm = ShapesDataModule(TINY_WORLD, batch_size=8, cache_dir=str(cache_dir))
    module = FusionLitModule(width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"], data_spec=dm.spec)
    trainer = L.Trainer(
        max_steps=3,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer.fit(module, datamodule=dm)
    assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items()), "training changed nothing"
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    reloaded = FusionLitModule.load_from_checkpoint(ckpt, weights_only=True).eval()
    module.eval()
    batch = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(module(batch), reloaded(batch), rtol=0, atol=0)
    assert reloaded.model_cfg == module.model_cfg


def _files_module(task: str, tmp_path: Path) -> ImageTextDataModule:
    """Tiny data on disk for each task: Hateful-Memes JSONL, VQA v2, and a captions CSV (3 captions per image)."""
    if task == "classification":
        source = FileSourceConfig(format="jsonl", root=str(memes(tmp_path / "memes", [])))
        val_split = None
    elif task == "vqa":
        source = FileSourceConfig(format="vqa", root=str(vqa_layout(tmp_path / "vqa")), answer_vocab_size=3)
        val_split = None
    else:
        root = captions_dataset(tmp_path / "captions", num_images=8, captions_per_image=3)
        source = FileSourceConfig(format="captions_csv", root=str(root), split_sizes={"train": 5, "test": 3})
        val_split = "test"
    cache_dir = str(tmp_path / "cache")
    return ImageTextDataModule(source, image_size=32, batch_size=3, cache_dir=cache_dir, val_split=val_split)


VAL_METRICS = {"classification": "val/acc", "vqa": "val/acc", "retrieval": "val/t2i_r5"}


@pytest.mark.parametrize("task", ["classification", "vqa", "retrieval"])
def test_each_task_trains_on_files_then_reloads(task: str, tmp_path: Path) -> None:
    dm = _files_module(task, tmp_path)
    module = FusionLitModule(
        width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"], task=task, data_spec=dm.spec
    )  # type: ignore[arg-type]
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, log_every_n_steps=1, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )  # fmt: skip
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer.fit(module, datamodule=dm)
    assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items()), "training changed nothing"
    assert VAL_METRICS[task] in trainer.callback_metrics and "train/loss" in trainer.callback_metrics
    assert 0.0 <= float(trainer.callback_metrics[VAL_METRICS[task]]) <= 1.0
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    reloaded = FusionLitModule.load_from_checkpoint(tmp_path / "model.ckpt").eval()
    assert reloaded.model_cfg == module.model_cfg and reloaded.model_cfg.task == task
    batch = next(iter(dm.test_dataloader()))
    torch.testing.assert_close(module.eval()(batch), reloaded(batch), rtol=0, atol=0)
