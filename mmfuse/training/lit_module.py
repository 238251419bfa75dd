"""FusionLitModule: loss, metrics, logging and optimisation around a pure :class:`ImageTextModel`.

The loss and metrics of each ``model.task`` (classification, VQA, retrieval) come from its objective in
:mod:`mmfuse.tasks`; this module calls it, logs what it returns and owns the optimiser.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import lightning as L
import torch
from torch import Tensor
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from mmfuse.config import (
    FusionConfig,
    MetricsConfig,
    ModelConfig,
    OptimConfig,
    SpeedConfig,
    Task,
    config_from_dict,
    resolve_model_config,
)
from mmfuse.encoders import HFTextEncoderConfig, TimmVisionEncoderConfig, encoder_backbone
from mmfuse.errors import ConfigError
from mmfuse.heads import ClassificationHeadConfig, ContrastiveHeadConfig
from mmfuse.models import ImageTextModel
from mmfuse.tasks import Stage, build_objective, epoch_values
from mmfuse.training.callbacks import EMAWeights, EncoderFreezeSchedule
from mmfuse.training.checkpointing import UnsafeCheckpointError
from mmfuse.training.optim import check_optim_config, param_groups
from mmfuse.types import Batch, DataSpec

__all__ = ["FusionLitModule"]

_PROGRESS_BAR = ("acc", "r_mean")  # epoch metrics shown in the progress bar


class FusionLitModule(L.LightningModule):
    """Trains an :class:`ImageTextModel` for its ``task``: classification, VQA or image-text retrieval.

    The model's fields sit at the top of the ``model:`` section of an experiment YAML (``model.task``,
    ``model.vision``, ``model.fusion``...); values the data determines (classes, vocabulary, image size) come from
    ``data_spec``. Logged: ``train/loss`` (and the task's loss parts), the learning rate of each module
    (``lr/vision``, ``lr/text``, ``lr/fusion``, ``lr/head``), ``{val,test}/loss``, and per epoch the task's
    metrics (``model.metrics``): by default ``acc`` (accuracy; for VQA the soft VQA accuracy), or for retrieval
    ``train/itm_acc`` and ``{val,test}/t2i_r{1,5,10}``, ``i2t_r{1,5,10}`` and ``r_mean`` (plus ``..._itm`` with
    re-ranking).

    Args:
        width: common width D of encoders and fusion.
        vision: vision encoder config.
        text: text encoder config.
        fusion: fusion config; its ``name`` picks the registered fusion.
        head: head config.
        task: ``classification``, ``vqa`` or ``retrieval`` (see :class:`~mmfuse.config.ModelConfig`).
        contrastive: the contrastive head of ``task: retrieval``.
        optim: optimiser and schedule.
        speed: compile, channels-last, activation checkpointing, frozen encoders, TF32.
        metrics: the epoch metrics to log (``model.metrics.names``; default ``acc``) and retrieval's ITM re-ranking
            (``model.metrics.rerank_k``); see :class:`~mmfuse.config.MetricsConfig`.
        data_spec: facts about the data; the CLI links it from the data module.
    """

    def __init__(
        self,
        width: int = ModelConfig.width,
        vision: TimmVisionEncoderConfig = TimmVisionEncoderConfig(),
        text: HFTextEncoderConfig = HFTextEncoderConfig(),
        fusion: FusionConfig = FusionConfig(),
        head: ClassificationHeadConfig = ClassificationHeadConfig(),
        task: Task = ModelConfig.task,
        contrastive: ContrastiveHeadConfig = ContrastiveHeadConfig(),
        optim: OptimConfig = OptimConfig(),
        speed: SpeedConfig = SpeedConfig(),
        metrics: MetricsConfig = MetricsConfig(),
        data_spec: DataSpec | None = None,
    ) -> None:
        super().__init__()
        if data_spec is None:
            raise ConfigError("FusionLitModule needs data_spec (the CLI links it from the data module's `spec`)")
        parts = {"task": task, "width": width, "vision": _as_dict(vision), "text": _as_dict(text)}
        parts |= {"fusion": _as_dict(fusion), "head": _as_dict(head), "contrastive": _as_dict(contrastive)}
        # Checkpoints hold plain dicts, so loading them needs no pickled classes.
        self.save_hyperparameters(
            {**parts, "optim": _as_dict(optim), "speed": _as_dict(speed), "metrics": _as_dict(metrics),
             "data_spec": _as_dict(data_spec)}
        )  # fmt: skip
        data_spec = config_from_dict(DataSpec, _as_dict(data_spec))
        self.model_cfg = resolve_model_config(config_from_dict(ModelConfig, parts), data_spec)
        self.optim = config_from_dict(OptimConfig, _as_dict(optim))
        self.speed = config_from_dict(SpeedConfig, _as_dict(speed))
        self.model = ImageTextModel(self.model_cfg)
        apply_speed_switches(self.model, self.speed)
        check_optim_config(self.model, self.optim)  # lr_mult names, layer_decay: before any training
        self.metrics = config_from_dict(MetricsConfig, _as_dict(metrics))
        # the task's loss and one metric (collection) per stage
        self.objective = build_objective(self.model_cfg, self.metrics, data_spec.class_names)

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: Any, map_location: Any = None, strict: bool | None = None, **kwargs: Any
    ) -> FusionLitModule:
        """Lightning's loader with ``weights_only=True`` always: a checkpoint that would run code is refused."""
        if kwargs.pop("weights_only", True) is not True:
            raise ConfigError("mmfuse loads checkpoints with weights_only=True only")
        try:
            parent: Any = super()
            return parent.load_from_checkpoint(
                checkpoint_path, map_location=map_location, strict=strict, weights_only=True, **kwargs
            )
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(f"refusing to load {str(checkpoint_path)!r}: {err}") from err

    def train(self, mode: bool = True) -> FusionLitModule:
        """Frozen encoder backbones stay in eval mode (BatchNorm statistics and dropout off) while the rest trains."""
        super().train(mode)
        frozen_encoders = [(self.speed.freeze_vision, self.model.vision), (self.speed.freeze_text, self.model.text)]
        for frozen, encoder in frozen_encoders:
            if frozen and encoder is not None:
                encoder_backbone(encoder).eval()
        return self

    def setup(self, stage: str) -> None:
        torch.set_float32_matmul_precision(self.speed.float32_matmul_precision)
        if self.speed.compile and not getattr(self, "_compiled", False):
            self.model.compile(mode=self.speed.compile_mode)  # in place: parameter names stay the same
            self._compiled = True

    def forward(self, batch: Batch) -> Tensor:
        """(B, K) logits for a batch (for retrieval: the image-text matching logits of its pairs)."""
        batch = self._prepared(batch)
        return self.model(batch.images, batch.input_ids, batch.attention_mask).logits

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        step = self.objective.training_step(self.model, self._prepared(batch))
        # Logged only on the steps the logger writes (trainer.log_every_n_steps): a self.log call costs more than
        # the metric update, and the values of the other steps would never be written anyway.
        if getattr(getattr(self.trainer, "_logger_connector", None), "should_update_logs", True):
            self.log("train/loss", step.loss, prog_bar=True, batch_size=len(batch))
            for name, value in step.parts.items():
                self.log(f"train/{name}", value, batch_size=len(batch))
            self.log_dict(self._learning_rates(), batch_size=len(batch))
        return step.loss

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")  # metrics over every training batch of the epoch; reset after

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        return self.objective.predict(self.model, self._prepared(batch))

    def configure_optimizers(self) -> Any:
        """AdamW over the parameter groups of :func:`~mmfuse.training.optim.param_groups` (learning-rate multiplier
        per module, layer decay in the encoders, no weight decay on norms, biases and embeddings), warm-up then
        cosine or constant, stepped every optimizer step."""
        cfg = self.optim
        optimizer = torch.optim.AdamW(param_groups(self.model, cfg), lr=cfg.lr, betas=cfg.betas, fused=cfg.fused)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(cfg.warmup_ratio * total)
        if cfg.schedule == "cosine":
            scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)
        else:
            scheduler = get_constant_schedule_with_warmup(optimizer, warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self) -> list[L.Callback]:
        """What ``model.optim`` asks of ``fit``: the encoders' freeze schedule and an EMA of the weights (validation
        runs on the EMA, checkpoints hold it as their ``state_dict`` and the raw weights as
        ``current_model_state``)."""
        if self.trainer.state.fn != "fit":
            return []
        cfg = self.optim
        callbacks: list[L.Callback] = []
        if cfg.unfreeze_after_steps is not None or cfg.unfreeze_after_epochs is not None:
            callbacks.append(EncoderFreezeSchedule(steps=cfg.unfreeze_after_steps, epochs=cfg.unfreeze_after_epochs))
        if cfg.ema_decay is not None:
            callbacks.append(EMAWeights(decay=cfg.ema_decay))
        return callbacks

    def _learning_rates(self) -> dict[str, float]:
        """``lr/<module>`` (``lr/vision``, ``lr/fusion``...): the largest learning rate of the module's parameter
        groups at this step (with layer decay an encoder's lower layers get fixed fractions of it); an encoder's
        projection, which trains at the base rate, is ``lr/<encoder>.proj``."""
        rates: dict[str, float] = {}
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                name = str(group.get("name", "all")).split("/")[0]  # vision.layer3/no_decay, vision.proj
                key = "lr/" + (name if name.endswith(".proj") else name.split(".")[0])
                rates[key] = max(rates.get(key, 0.0), float(group["lr"]))
        return rates

    def _prepared(self, batch: Batch) -> Batch:
        if not self.speed.channels_last:
            return batch
        return dataclasses.replace(batch, images=batch.images.contiguous(memory_format=torch.channels_last))

    def _evaluate(self, batch: Batch, stage: Stage) -> None:
        step = self.objective.evaluation_step(self.model, self._prepared(batch), stage)
        self.log(f"{stage}/loss", step.loss, batch_size=len(batch), sync_dist=True)

    def _log_epoch(self, stage: Stage) -> None:
        """The stage's epoch metrics (already gathered over processes by torchmetrics)."""
        for name, value in epoch_values(self.objective, stage, self.model).items():
            self.log(f"{stage}/{name}", value, prog_bar=name in _PROGRESS_BAR, sync_dist=True)


def apply_speed_switches(model: ImageTextModel, speed: SpeedConfig) -> None:
    """Freeze encoders, turn on activation checkpointing and channels-last as configured (compile is separate:
    it happens in ``setup``, once the module is on its device)."""
    for frozen, encoder in ((speed.freeze_vision, model.vision), (speed.freeze_text, model.text)):
        if frozen and encoder is not None:  # the pretrained backbone; its projection to the common width trains
            encoder_backbone(encoder).requires_grad_(False)
            encoder_backbone(encoder).eval()  # FusionLitModule.train keeps it there
    if speed.activation_checkpointing:
        vision: Any = model.vision  # a timm backbone / transformers model inside: duck-typed switches
        text: Any = model.text
        # the encoder's own switch (a torchvision graph: one segment), else its timm backbone's (block by block)
        checkpointed = vision if hasattr(vision, "set_grad_checkpointing") else getattr(vision, "backbone", None)
        if checkpointed is not None and hasattr(checkpointed, "set_grad_checkpointing"):
            checkpointed.set_grad_checkpointing(True)
        if text is not None and hasattr(text.model, "gradient_checkpointing_enable"):
            text.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if speed.channels_last and model.vision is not None:
        model.vision.to(memory_format=torch.channels_last)


def _as_dict(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(value)
