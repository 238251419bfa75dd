"""Fine-tuning optimisation (``optim``): learning-rate multipliers per module, layer-wise decay in the
encoders, no weight decay on norms, biases and embeddings, frozen-then-trained encoders, gradient clipping, EMA."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from mmfuse.config import OptimConfig
from mmfuse.data.datamodule import ShapesDataModule
from mmfuse.encoders import TimmVisionEncoderConfig
from mmfuse.errors import ConfigError
from mmfuse.training import EMAWeights, FusionLitModule, param_groups
from tests.conftest import TINY_SPEC, TINY_TEXT, TINY_VISION, TINY_WORLD


def _data(cache_dir: Path) -> ShapesDataModule:
    return ShapesDataModule(TINY_WORLD, batch_size=8, cache_dir=str(cache_dir))  # 12 training batches


def _module(dm: ShapesDataModule, vision: str = "resnet", **optim: Any) -> FusionLitModule:
    return FusionLitModule(
        width=16, vision=TINY_VISION[vision], text=TINY_TEXT["bert"], optim=OptimConfig(**optim), data_spec=dm.spec
    )


def _fit(module: FusionLitModule, dm: ShapesDataModule, tmp_path: Path, *callbacks: L.Callback, **kw: Any) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path, num_sanity_val_steps=0, callbacks=list(callbacks),
        **({"limit_val_batches": 0} | kw),
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return trainer


class _Record(L.Callback):
    """Calls ``fn(trainer, module)`` at the start of every training batch and keeps what it returns."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.seen: list[Any] = []

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.seen.append(self.fn(trainer, module))


# (parameter, lr_mult of its module * layer_decay ** (top - layer)) with lr_mult {vision: 0.1, text: 0.5, head: 2}
# and layer_decay 0.5. ViT (timm's group_matcher): stem 0, blocks.0 1, blocks.1 and the final norm 2, projection 3.
# BERT: embeddings 0, encoder.layer.0 1, encoder.layer.1 2, projection 3. The multiplier scales the pretrained
# backbone only: an encoder's projection to the common width (new) keeps the base learning rate.
EXPECTED_SCALES = {
    "vision.backbone.cls_token": 0.1 * 0.5**3,
    "vision.backbone.patch_embed.proj.weight": 0.1 * 0.5**3,
    "vision.backbone.blocks.0.attn.qkv.weight": 0.1 * 0.5**2,
    "vision.backbone.blocks.1.mlp.fc1.weight": 0.1 * 0.5,
    "vision.backbone.norm.weight": 0.1 * 0.5,
    "vision.proj.weight": 1.0,
    "text.model.embeddings.word_embeddings.weight": 0.5 * 0.5**3,
    "text.model.embeddings.LayerNorm.weight": 0.5 * 0.5**3,
    "text.model.encoder.layer.0.attention.self.query.weight": 0.5 * 0.5**2,
    "text.model.encoder.layer.1.output.dense.weight": 0.5 * 0.5,
    "text.proj.weight": 1.0,
    "fusion.text_layers.0.attn.q.weight": 1.0,
}
NO_DECAY = {  # weight decay 0: norms, biases, embeddings, the backbone's no_weight_decay() names
    "vision.backbone.cls_token",
    "vision.backbone.pos_embed",
    "vision.backbone.norm.weight",
    "vision.backbone.blocks.0.attn.qkv.bias",
    "text.model.embeddings.word_embeddings.weight",
    "text.model.embeddings.position_embeddings.weight",
    "text.model.embeddings.LayerNorm.weight",
    "text.proj.bias",
}


def test_each_groups_learning_rate_follows_warmup_cosine_times_its_scale(cache_dir: Path, tmp_path: Path) -> None:
    dm = _data(cache_dir)
    lr, total, warmup = 0.01, 8, 2  # warmup_ratio 0.25 of 8 steps
    module = _module(dm, "vit", lr=lr, warmup_ratio=0.25, lr_mult={"vision": 0.1, "text": 0.5, "head": 2.0},
                     layer_decay=0.5, weight_decay=0.1)  # fmt: skip
    params = dict(module.model.named_parameters())
    assert set(EXPECTED_SCALES) | NO_DECAY <= set(params), "the table names parameters that do not exist"
    head_weights = [name for name in params if name.startswith("head.") and name.endswith("weight")]
    expected = EXPECTED_SCALES | dict.fromkeys(head_weights, 2.0)

    def lrs(trainer: L.Trainer, _: L.LightningModule) -> dict[str, float]:
        groups = trainer.optimizers[0].param_groups
        return {name: g["lr"] for g in groups for p in g["params"] for name in expected if params[name] is p}

    record = _Record(lrs)
    _fit(module, dm, tmp_path, record, max_steps=total)

    assert len(record.seen) == total
    for step, seen in enumerate(record.seen):
        factor = step / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert seen == pytest.approx({name: lr * scale * factor for name, scale in expected.items()}, rel=1e-9), step
    decay = {name: g["weight_decay"] for g in module.trainer.optimizers[0].param_groups for name, p in params.items()
             if any(p is q for q in g["params"])}  # fmt: skip
    assert {name for name, wd in decay.items() if wd == 0.0} >= NO_DECAY
    assert decay["vision.backbone.blocks.0.attn.qkv.weight"] == decay["fusion.text_layers.0.attn.q.weight"] == 0.1
    assert set(decay) == {n for n, p in params.items() if p.requires_grad}, "every trainable parameter is optimised"


def test_a_cnn_encoders_own_position_embedding_gets_the_base_rate_and_no_weight_decay() -> None:
    vision = dataclasses.replace(TINY_VISION["resnet"], use_pos_embed=True)
    module = FusionLitModule(width=16, vision=vision, text=TINY_TEXT["bert"], data_spec=TINY_SPEC,
                             optim=OptimConfig(lr_mult={"vision": 0.1}, weight_decay=0.1))  # fmt: skip
    named = dict(module.model.named_parameters())
    group = {
        n: g
        for g in param_groups(module.model, module.optim)
        for n, p in named.items()
        if any(p is q for q in g["params"])
    }
    assert group["vision.pos_embed"]["weight_decay"] == 0.0 and group["vision.pos_embed"]["lr_scale"] == 1.0
    assert group["vision.proj.weight"]["weight_decay"] == 0.1 and group["vision.proj.weight"]["lr_scale"] == 1.0
    assert group["vision.backbone.conv1.weight"]["lr_scale"] == 0.1


def test_layer_decay_reaches_into_feature_map_backbones() -> None:
    """A timm CNN built with ``features_only`` has no group_matcher of its own: the whole model's applies."""
    module = FusionLitModule(width=16, vision=TINY_VISION["convnext"], text=TINY_TEXT["distilbert"],
                             optim=OptimConfig(layer_decay=0.5), data_spec=TINY_SPEC)  # fmt: skip
    scale = {id(p): g["lr_scale"] for g in param_groups(module.model, module.optim) for p in g["params"]}
    named = dict(module.model.named_parameters())
    stem, block, proj = (scale[id(named[n])] for n in ("vision.backbone.stem_0.weight",
                         "vision.backbone.stages_1.blocks.1.conv_dw.weight", "vision.proj.weight"))  # fmt: skip
    assert stem < block < proj == 1.0
    first, second = (scale[id(named[f"text.model.transformer.layer.{i}.ffn.lin1.weight"])] for i in (0, 1))
    assert first == 0.5 * second == 0.25


@pytest.mark.parametrize("unit", ["steps", "epochs"])
def test_frozen_backbones_stay_bit_identical_then_train(unit: str, cache_dir: Path, tmp_path: Path) -> None:
    dm = _data(cache_dir)
    freeze = {"unfreeze_after_steps": 2} if unit == "steps" else {"unfreeze_after_epochs": 1}
    module = _module(dm, "resnet", **freeze)  # BatchNorm in the vision encoder, dropout in the text encoder
    assert module.model.vision is not None and module.model.text is not None
    encoders = module.model.vision.backbone, module.model.text.backbone
    projections = module.model.vision.proj, module.model.text.proj

    def state(trainer: L.Trainer, _: L.LightningModule) -> list[dict[str, torch.Tensor]]:
        parts = (*encoders, module.model.fusion, *projections)
        return [{k: v.clone() for k, v in m.state_dict().items()} for m in parts]

    modes: list[bool] = []  # the vision encoder's mode in each training step (validation steps left out)
    encoders[0].register_forward_pre_hook(lambda m, args: modes.append(m.training) if module.training else None)
    record = _Record(state)
    _fit(module, dm, tmp_path, record, max_epochs=2, limit_train_batches=2, limit_val_batches=1)

    before, frozen_end = record.seen[0], record.seen[2]  # at step 0 and after the two frozen steps
    for i in (0, 1):  # weights and BatchNorm statistics alike
        assert all(torch.equal(before[i][k], frozen_end[i][k]) for k in before[i]), "a frozen encoder changed"
        after = encoders[i].state_dict()
        assert any(not torch.equal(before[i][k], after[k]) for k in before[i]), "the encoder never trained"
    for i, part in ((2, "fusion"), (3, "vision projection"), (4, "text projection")):  # new layers train at once
        assert any(not torch.equal(before[i][k], frozen_end[i][k]) for k in before[i]), f"the {part} did not train"
    assert modes == [False, False, True, True], "frozen encoders run in eval mode, trained ones in training mode"
    assert all(p.requires_grad for m in encoders for p in m.parameters()), "fit ends with trainable encoders"


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_bounds_the_gradients_the_optimizer_sees(
    algorithm: str, cache_dir: Path, tmp_path: Path
) -> None:
    """Lightning's ``trainer.gradient_clip_val``: the gradients the step used (read after it, before the next
    zero_grad) have a total norm (or a largest entry) of exactly the clip value, orders below the unclipped ones."""
    dm = _data(cache_dir)
    sizes: list[float] = []

    class Grads(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            sizes.append(float(norm if algorithm == "norm" else max(g.abs().max() for g in grads)))

    clip = 1e-5
    _fit(_module(dm), dm, tmp_path, Grads(), max_steps=1, gradient_clip_val=clip, gradient_clip_algorithm=algorithm)
    assert sizes == [pytest.approx(clip, rel=1e-4)]


def test_validation_runs_on_the_ema_of_the_weights(cache_dir: Path, tmp_path: Path) -> None:
    dm = _data(cache_dir)
    decay = 0.5
    module = _module(dm, ema_decay=decay)
    weight = next(module.model.head.parameters())
    raw: list[torch.Tensor] = []
    in_validation: list[torch.Tensor] = []

    class Watch(L.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            raw.append(weight.detach().clone())

        def on_validation_end(self, *args: Any) -> None:  # after the module's on_validation_epoch_end
            in_validation.append(weight.detach().clone())

    trainer = _fit(module, dm, tmp_path, Watch(), max_steps=3, limit_val_batches=1, val_check_interval=3)
    assert any(isinstance(cb, EMAWeights) for cb in trainer.callbacks)
    ema = raw[0]  # the first update copies the weights, then ema = decay * ema + (1 - decay) * w
    for w in raw[1:]:
        ema = decay * ema + (1 - decay) * w
    assert len(in_validation) == 1
    torch.testing.assert_close(in_validation[0], ema, rtol=0, atol=1e-7)
    assert not torch.allclose(ema, raw[-1]), "EMA and raw weights should differ after 3 steps"
    torch.testing.assert_close(weight.detach(), ema, rtol=0, atol=1e-7)  # fit ends with the EMA weights in place


def test_bad_optim_input_is_one_line_naming_the_value() -> None:
    with pytest.raises(ConfigError, match=r"lr_mult: 'visoin' is not a module.*\['fusion', 'head', 'text', 'vision'\]"):
        FusionLitModule(width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"],
                        optim=OptimConfig(lr_mult={"visoin": 0.1}), data_spec=TINY_SPEC)  # fmt: skip
    torchvision = TimmVisionEncoderConfig(model_name="torchvision:resnet18")
    with pytest.raises(ConfigError, match=r"layer_decay=0.75: the vision encoder 'torchvision:resnet18'") as err:
        FusionLitModule(width=16, vision=torchvision, text=TINY_TEXT["bert"],
                        optim=OptimConfig(layer_decay=0.75), data_spec=TINY_SPEC)  # fmt: skip
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"unfreeze_after_epochs=1 and optim.unfreeze_after_steps=100 are "):
        OptimConfig(unfreeze_after_epochs=1, unfreeze_after_steps=100)
    with pytest.raises(ConfigError, match=r"layer_decay=1.5 must be in"):
        OptimConfig(layer_decay=1.5)
