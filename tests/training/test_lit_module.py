from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from mmfuse.data.datamodule import ShapesDataModule
from mmfuse.training import FusionLitModule
from tests.conftest import TINY_TEXT, TINY_VISION, TINY_WORLD


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
