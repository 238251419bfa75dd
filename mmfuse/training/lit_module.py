"""FusionLitModule: logging and optimisation around a pure :class:`ImageTextModel` and its task's objective.

The loss, metrics and predictions of each ``model.task`` (classification, VQA, retrieval) come from its objective in
:mod:`mmfuse.tasks` (the contract: :mod:`mmfuse.tasks.base`); this module calls it, logs what it returns and owns the
optimiser.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from mmfuse._compat import quiet_eval_mode_warning, should_update_logs
from mmfuse.config import (
    MODEL_KEYS,
    MetricsConfig,
    ModelConfig,
    OptimConfig,
    SpeedConfig,
    config_from_dict,
    resolve_model_config,
    with_model_fields,
)
from mmfuse.encoders import encoder_backbone
from mmfuse.errors import ConfigError
from mmfuse.models import ImageTextModel
from mmfuse.tasks import Stage, build_objective, epoch_values
from mmfuse.training.callbacks import EMAWeights, EncoderFreezeSchedule
from mmfuse.training.checkpointing import UnsafeCheckpointError
from mmfuse.training.optim import check_optim_config, param_groups, warmup_schedule
from mmfuse.types import Batch, DataSpec

__all__ = ["FusionLitModule"]


class FusionLitModule(L.LightningModule):
    """Trains an :class:`ImageTextModel` for its ``task``: classification, VQA or image-text retrieval.

    The model's fields sit at the top of the ``model:`` section of an experiment YAML (``model.task``,
    ``model.vision``, ``model.fusion``...); values the data determines (classes, vocabulary, image size) come from
    ``data_spec``. Logged: ``train/loss`` (and the task's loss parts), the learning rate of each module
    (``lr/vision``, ``lr/text``, ``lr/fusion``, ``lr/head``), ``{val,test}/loss``, and per epoch the metrics of the
    task's objective (``model.metrics``; see the objectives in :mod:`mmfuse.tasks`) as ``<stage>/<name>``.

    Args:
        metrics: the epoch metrics to log (``model.metrics.names``; default ``acc``) and retrieval's ITM re-ranking
            (``model.metrics.rerank_k``); see :class:`~mmfuse.config.MetricsConfig`.
        optim: optimiser and schedule (the YAML's top-level ``optim:``); None = the defaults.
        speed: compile, channels-last, activation checkpointing, frozen encoders, TF32 (the YAML's top-level
            ``speed:``); None = the defaults.
        data_spec: facts about the data; the CLI links it from the data module.
        **model: the fields of :class:`~mmfuse.config.ModelConfig` that the ``model:`` section sets
            (:data:`~mmfuse.config.MODEL_KEYS`); the signature names them (:func:`~mmfuse.config.with_model_fields`).
    """

    # optim and speed are `X | None` rather than dataclass-typed: LightningCLI links the YAML's top-level `optim:` and
    # `speed:` into them, and jsonargparse links a section into one value, not into a nested group of fields.
    @with_model_fields
    def __init__(
        self,
        *,
        metrics: MetricsConfig = MetricsConfig(),
        optim: OptimConfig | None = None,
        speed: SpeedConfig | None = None,
        data_spec: DataSpec | None = None,
        **model: Any,
    ) -> None:
        super().__init__()
        if data_spec is None:
            raise ConfigError("FusionLitModule needs data_spec (the CLI links it from the data module's `spec`)")
        unknown = sorted(set(model) - set(MODEL_KEYS))
        if unknown:
            raise ConfigError(f"FusionLitModule: unknown model fields {unknown}; the fields: {list(MODEL_KEYS)}")
        defaults = ModelConfig()
        parts = {key: _plain(model.get(key, getattr(defaults, key))) for key in MODEL_KEYS}
        optim_cfg, speed_cfg = optim or OptimConfig(), speed or SpeedConfig()
        # Checkpoints hold plain dicts, so loading them needs no pickled classes. Lightning looks up the arguments of
        # the __init__ that saves them in its frame by the signature's names, which here include the model fields that
        # only **model holds: it gets the caller's frame instead.
        frame = inspect.currentframe()
        self.save_hyperparameters(
            {**parts, "optim": _plain(optim_cfg), "speed": _plain(speed_cfg), "metrics": _plain(metrics),
             "data_spec": _plain(data_spec)},
            frame=frame.f_back if frame is not None else None,
        )  # fmt: skip
        data_spec = config_from_dict(DataSpec, _plain(data_spec))
        self.model_cfg = resolve_model_config(config_from_dict(ModelConfig, parts), data_spec)
        self.optim = config_from_dict(OptimConfig, _plain(optim_cfg))
        self.speed = config_from_dict(SpeedConfig, _plain(speed_cfg))
        self.model = ImageTextModel(self.model_cfg)
        apply_speed_switches(self.model, self.speed)
        check_optim_config(self.model, self.optim)  # lr_mult names, layer_decay: before any training
        self.metrics = config_from_dict(MetricsConfig, _plain(metrics))
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
        for backbone in self._frozen_backbones():
            backbone.eval()
        return self

    def setup(self, stage: str) -> None:
        torch.set_float32_matmul_precision(self.speed.float32_matmul_precision)
        if stage == "fit" and self._frozen_backbones():
            # frozen backbones are in eval mode on purpose (see train()); Lightning would warn about them
            quiet_eval_mode_warning(sum(len(list(backbone.modules())) for backbone in self._frozen_backbones()))
        if self.speed.compile and not getattr(self, "_compiled", False):
            self.model.compile(mode=self.speed.compile_mode)  # in place: parameter names stay the same
            self._compiled = True

    def configure_model(self) -> None:
        """Shard the model with FSDP2 under Lightning's ``ModelParallelStrategy`` (which sets ``self.device_mesh``;
        ``experiments/launch/gpu_fsdp2.yaml``): ``fully_shard`` on each encoder, each fusion layer, then the whole
        model (the head and what else is left), over the mesh's data-parallel devices. Each unit's parameters are
        gathered for its forward and backward only; gradients and optimizer state stay sharded.

        Without a device mesh (every other strategy) it does nothing, and a model already sharded is left as it is
        (Lightning calls this hook again for each ``fit`` / ``validate`` / ``test`` / ``predict``).
        """
        if self.device_mesh is None:
            return
        from torch.distributed.fsdp import FSDPModule, fully_shard  # imported here: slow, and only needed here

        if isinstance(self.model, FSDPModule):
            return
        mesh = self.device_mesh
        if "data_parallel" in (mesh.mesh_dim_names or ()):  # ModelParallelStrategy's 2-D (data, tensor) mesh
            mesh = mesh["data_parallel"]
        fusion = self.model.fusion
        layers = [layer for child in fusion.children() if isinstance(child, nn.ModuleList) for layer in child]
        for unit in (self.model.vision, self.model.text, *layers):
            if unit is not None:
                fully_shard(unit, mesh=mesh)
        fully_shard(self.model, mesh=mesh)

    def forward(self, batch: Batch) -> Tensor:
        """(B, K) logits for a batch (for retrieval: the image-text matching logits of its pairs)."""
        batch = self._prepared(batch)
        return self.model(batch.images, batch.input_ids, batch.attention_mask).logits

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        step = self.objective.training_step(self.model, self._prepared(batch))
        # Logged only on the steps the logger writes (trainer.log_every_n_steps): a self.log call costs more than
        # the metric update, and the values of the other steps would never be written anyway.
        if should_update_logs(self.trainer):
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
        scheduler = warmup_schedule(optimizer, cfg, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self) -> list[L.Callback]:
        """What ``optim`` asks of ``fit``: the encoders' freeze schedule and an EMA of the weights (validation
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

    def _frozen_backbones(self) -> list[nn.Module]:
        """The encoder backbones frozen for the whole run (``speed.freeze_vision`` / ``speed.freeze_text``)."""
        frozen = [(self.speed.freeze_vision, self.model.vision), (self.speed.freeze_text, self.model.text)]
        return [encoder_backbone(encoder) for is_frozen, encoder in frozen if is_frozen and encoder is not None]

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
        """The batch with its images in the memory format of the vision encoder's weights (``speed.channels_last``).

        Images in the other format make the convolutions produce gradients in that format too: a 1x1 convolution's
        (C_out, C_in, 1, 1) weight gradient then has NHWC strides that DDP's buckets do not match ("Grad strides do
        not match bucket view strides"). ``contiguous`` is free when the images already are in the format.
        """
        fmt = torch.channels_last if self.speed.channels_last else torch.contiguous_format
        return dataclasses.replace(batch, images=batch.images.contiguous(memory_format=fmt))

    def _evaluate(self, batch: Batch, stage: Stage) -> None:
        step = self.objective.evaluation_step(self.model, self._prepared(batch), stage)
        self.log(f"{stage}/loss", step.loss, batch_size=len(batch), sync_dist=True)

    def _log_epoch(self, stage: Stage) -> None:
        """The stage's epoch metrics (already gathered over processes by torchmetrics)."""
        for name, value in epoch_values(self.objective, stage, self.model).items():
            self.log(f"{stage}/{name}", value, prog_bar=name in self.objective.progress_bar_metrics, sync_dist=True)


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
        # transformers 5 renamed gradient_checkpointing_enable (the old name warns until it goes in v6)
        if text is not None and hasattr(text.model, "activation_checkpointing_enable"):
            text.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif text is not None and hasattr(text.model, "gradient_checkpointing_enable"):
            text.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if speed.channels_last and model.vision is not None:
        model.vision.to(memory_format=torch.channels_last)


def _plain(value: Any) -> Any:
    """A config value as a checkpoint holds it: dataclasses (and mappings) as dicts, other values as they are."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(value) if isinstance(value, dict) else value
