"""Precision safety: fp16 overflow is skipped by the scaler and counted, a NaN loss stops the run; and the speed
switches do what they say. (fp16 and FSDP on a CPU are refused with a message: tests/test_cli.py.)"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mmfuse.config import SpeedConfig
from mmfuse.training import FusionLitModule, GradScalerMonitor, NonFiniteLossError, NonFiniteLossGuard
from tests.conftest import REPO, TINY_SPEC, TINY_TEXT, TINY_VISION

MAIN = str(REPO / "experiments" / "shapes_color.yaml")


class _Tiny(L.LightningModule):
    """A linear classifier; at step ``bad_grad_step`` its gradient is made infinite, at ``nan_loss_step`` its loss."""

    def __init__(self, bad_grad_step: int = -1, nan_loss_step: int = -1) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)
        self.bad_grad_step, self.nan_loss_step = bad_grad_step, nan_loss_step
        self.weights: dict[int, torch.Tensor] = {}
        self.layer.weight.register_hook(self._grad_hook)

    def _grad_hook(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf") if self.global_step == self.bad_grad_step else grad

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.weights[self.global_step] = self.layer.weight.detach().clone()
        loss = nn.functional.cross_entropy(self.layer(batch[0]), batch[1])
        return loss * float("nan") if self.global_step == self.nan_loss_step else loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(module: L.LightningModule, callbacks: list[L.Callback], steps: int, fp16: bool = False) -> L.Trainer:
    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,))), batch_size=8)
    plugins = [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))] if fp16 else []
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, callbacks=callbacks, plugins=plugins, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, data)
    return trainer


def test_fp16_overflow_is_skipped_by_the_scaler_and_counted() -> None:
    module, monitor = _Tiny(bad_grad_step=2), GradScalerMonitor()
    trainer = _fit(module, [monitor], steps=5, fp16=True)
    scaler = trainer.precision_plugin.scaler  # type: ignore[attr-defined]
    assert torch.equal(module.weights[2], module.weights[3]), "the overflowed step must not reach the weights"
    assert not torch.equal(module.weights[1], module.weights[2])  # the steps around it do train
    assert not torch.equal(module.weights[3], module.weights[4])
    assert torch.isfinite(module.layer.weight).all()
    assert monitor.skipped is not None and int(monitor.skipped) == 1
    assert scaler.get_scale() == 2.0**16 * 0.5  # backed off once from the initial scale
    assert "scale" in trainer.precision_plugin.state_dict()  # saved in every checkpoint


def test_no_overflow_counts_nothing() -> None:
    monitor = GradScalerMonitor()
    _fit(_Tiny(), [monitor], steps=3, fp16=True)
    assert monitor.skipped is not None and int(monitor.skipped) == 0


@pytest.mark.parametrize("every", [1, 4])
def test_a_nan_loss_stops_training_naming_the_step(every: int) -> None:
    module = _Tiny(nan_loss_step=5)
    with pytest.raises(NonFiniteLossError, match=r"optimizer step 5 \(epoch 0, batch 5\)"):
        _fit(module, [NonFiniteLossGuard(check_every_n_steps=every)], steps=20)
    assert max(module.weights) == {1: 5, 4: 7}[every]  # checks run after steps 3 and 7 with a window of 4
    if every == 1:
        assert torch.isfinite(module.layer.weight).all(), "checked every step: the NaN update is never applied"


def _module(**speed: object) -> FusionLitModule:
    return FusionLitModule(width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"],
                           speed=SpeedConfig(**speed), data_spec=TINY_SPEC)  # type: ignore[arg-type]  # fmt: skip


def _train_step(module: FusionLitModule) -> None:
    from mmfuse.types import Batch

    ids = torch.randint(4, TINY_SPEC.vocab_size, (2, 5))
    batch = Batch(images=torch.rand(2, 3, 32, 32), input_ids=ids, attention_mask=torch.ones(2, 5, dtype=torch.bool),
                  labels=torch.tensor([0, 1]))  # fmt: skip
    nn.functional.cross_entropy(module(batch), batch.labels).backward()


def test_frozen_backbones_get_no_gradients_and_stay_in_eval_mode_while_projections_train() -> None:
    module = _module(freeze_vision=True, freeze_text=True).train()
    assert module.model.vision is not None and module.model.text is not None
    vision, text = module.model.vision, module.model.text
    assert not vision.backbone.training and not text.backbone.training and module.model.fusion.training
    _train_step(module)
    assert all(p.grad is None for p in vision.backbone.parameters())
    assert all(p.grad is None for p in text.backbone.parameters())
    # the projections to the common width start from random weights: they train with the fusion
    assert vision.proj.weight.grad is not None and text.proj.weight.grad is not None
    assert all(p.grad is not None for p in module.model.fusion.parameters())


def test_activation_checkpointing_and_channels_last_are_switched_on() -> None:
    module = _module(activation_checkpointing=True, channels_last=True)
    vision, text = module.model.vision, module.model.text
    assert vision is not None and text is not None
    # transformers 5 renamed is_gradient_checkpointing (the old name warns)
    assert getattr(text.model, "is_activation_checkpointing", None) or text.model.is_gradient_checkpointing
    conv = next(m for m in vision.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    _train_step(module)
    assert all(p.grad is not None for p in module.model.parameters() if p.requires_grad)


def test_fused_adamw_is_configured() -> None:
    module = _module()
    module.optim = type(module.optim)(fused=True)
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()  # type: ignore[assignment]
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True
