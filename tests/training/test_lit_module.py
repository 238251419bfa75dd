from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from mmfuse.config import SpeedConfig
from mmfuse.data.datamodule import ShapesDataModule
from mmfuse.data.files import ImageTextDataModule
from mmfuse.data.formats import FileSourceConfig
from mmfuse.training import FusionLitModule
from mmfuse.types import Batch
from tests.conftest import TINY_SPEC, TINY_TEXT, TINY_VISION, TINY_WORLD, random_text_batch
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


def test_gradients_keep_their_parameters_strides_whatever_the_image_layout() -> None:
    """DDP copies each gradient into a bucket laid out like its parameter ("Grad strides do not match bucket view
    strides" otherwise). NHWC-strided images would give the ResNet's 1x1 downsample convolution an NHWC-strided
    (C_out, C_in, 1, 1) weight gradient; the module lays the images out as its weights are."""
    module = FusionLitModule(width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"], data_spec=TINY_SPEC)
    images = torch.rand(2, 32, 32, 3).permute(0, 3, 1, 2)  # (B, 3, H, W), NHWC in memory
    input_ids, mask = random_text_batch(2, 5, TINY_SPEC.vocab_size, [5, 3])
    batch = Batch(images=images, input_ids=input_ids, attention_mask=mask, labels=torch.tensor([0, 1]))
    F.cross_entropy(module(batch), torch.tensor([0, 1])).backward()
    assert module.model.vision is not None
    one_by_one = [p for name, p in module.model.vision.named_parameters() if "downsample" in name and p.dim() == 4]
    assert one_by_one and all(p.shape[2:] == (1, 1) for p in one_by_one)
    mismatched = [n for n, p in module.named_parameters() if p.grad is not None and p.grad.stride() != p.stride()]
    assert mismatched == []


def test_frozen_backbones_fit_without_lightnings_eval_mode_warning(cache_dir: Path, tmp_path: Path) -> None:
    dm = ShapesDataModule(TINY_WORLD, batch_size=8, cache_dir=str(cache_dir))
    module = FusionLitModule(
        width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"], speed=SpeedConfig(freeze_vision=True),
        data_spec=dm.spec,
    )  # fmt: skip
    trainer = L.Trainer(
        max_steps=1, limit_val_batches=0, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=dm)
    assert not module.model.vision.backbone.training  # type: ignore[union-attr]
    assert [str(w.message) for w in seen if "eval mode" in str(w.message)] == []
