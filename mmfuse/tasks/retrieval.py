"""Image-text retrieval objective: contrastive (ITC) plus image-text matching (ITM) with hard negatives.

Training (ALBEF / BLIP style, Li et al. 2021, 2022): the symmetric InfoNCE loss on the contrastive head's
similarities, with every caption of the same image in the batch a positive (:func:`~mmfuse.heads.contrastive_loss`),
plus the cross-entropy of the ITM head on the fused vectors of the B matching pairs and 2B hard negatives drawn from
those similarities (:func:`~mmfuse.heads.sample_hard_negatives`); the two losses are added with equal weight.

Evaluation ranks by the contrastive (ITC) similarity alone: every text of the split against every distinct image,
recall@1/5/10 in both directions (:class:`~mmfuse.metrics.RetrievalRecall`). The ITM head is not used to re-rank.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from mmfuse.config import ModelConfig
from mmfuse.errors import ConfigError
from mmfuse.heads import (
    MATCH,
    MATCHING_CLASSES,
    ContrastiveHead,
    contrastive_loss,
    matching_pairs,
    sample_hard_negatives,
)
from mmfuse.metrics import RetrievalRecall
from mmfuse.models import ImageTextModel
from mmfuse.tasks.base import TASKS, Stage, StepOutput, TaskObjective
from mmfuse.types import Batch, EncoderOutput

__all__ = ["RetrievalObjective"]


@TASKS.register("retrieval")
class RetrievalObjective(TaskObjective):
    """ITC + ITM loss; ITM accuracy on the training pairs (``train/itm_acc``), recall@K on val and test.

    Args:
        cfg: the resolved model config (``task: retrieval``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        itm_accuracy = MetricCollection({"itm_acc": MulticlassAccuracy(len(MATCHING_CLASSES), average="micro")})
        super().__init__(itm_accuracy, RetrievalRecall(), RetrievalRecall())

    def training_step(self, model: ImageTextModel, batch: Batch) -> StepOutput:
        image_ids = _image_ids(batch)
        image, text = _encode(model, batch)
        logits = _contrastive(model)(image.pooled, text.pooled)  # (B texts, B images)
        itc = contrastive_loss(logits, image_ids)
        negative_images, negative_texts = sample_hard_negatives(logits, image_ids)
        pairs = matching_pairs(image, text, negative_images, negative_texts)
        itm_logits = model.fuse(pairs.image, pairs.text).logits  # (P, 2)
        itm = F.cross_entropy(itm_logits, pairs.labels)
        self.train_metric.update(itm_logits.detach(), pairs.labels)
        return StepOutput(itc + itm, {"itc_loss": itc.detach(), "itm_loss": itm.detach()})

    def evaluation_step(self, model: ImageTextModel, batch: Batch, stage: Stage) -> StepOutput:
        image_ids = _image_ids(batch)
        image, text = _encode(model, batch)
        head = _contrastive(model)
        image_embeds, text_embeds = head.embed_image(image.pooled), head.embed_text(text.pooled)  # (B, E) each
        self.metric(stage).update(image_embeds, text_embeds, image_ids, batch.indices)
        return StepOutput(contrastive_loss(head.scale() * text_embeds @ image_embeds.T, image_ids))

    def predict(self, model: ImageTextModel, batch: Batch) -> dict[str, Tensor]:
        image, text = _encode(model, batch)
        head = _contrastive(model)
        match = model.fuse(image, text).logits.float().softmax(dim=-1)[:, MATCH]  # (B,)
        return {"image_embeds": head.embed_image(image.pooled), "text_embeds": head.embed_text(text.pooled),
                "match_prob": match}  # fmt: skip


def _encode(model: ImageTextModel, batch: Batch) -> tuple[EncoderOutput, EncoderOutput]:
    assert model.vision is not None and model.text is not None, "a retrieval model has both encoders"
    return model.vision(batch.images), model.text(batch.input_ids, batch.attention_mask)


def _contrastive(model: ImageTextModel) -> ContrastiveHead:
    if model.contrastive is None:
        raise ConfigError(f"the retrieval objective needs a model built with task: retrieval (got {model.cfg.task!r})")
    return model.contrastive


def _image_ids(batch: Batch) -> Tensor:
    if batch.image_ids is None:
        raise ConfigError(
            "model.task='retrieval' needs to know which rows show the same image (batch.image_ids), which data on "
            "disk has (data.class_path: ImageTextDataModule) and the shapes world has not"
        )
    return batch.image_ids
