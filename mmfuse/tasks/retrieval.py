"""Image-text retrieval objective: contrastive (ITC) plus image-text matching (ITM) with hard negatives.

Training (ALBEF / BLIP style, Li et al. 2021, 2022): the symmetric InfoNCE loss on the contrastive head's
similarities, with every caption of the same image in the batch a positive (:func:`~mmfuse.tasks.itc.contrastive_loss`),
plus the cross-entropy of the ITM head on the fused vectors of the B matching pairs and 2B hard negatives drawn from
those similarities (:func:`~mmfuse.tasks.itm.sample_hard_negatives`); the two losses are added with equal weight.

Evaluation ranks by the contrastive (ITC) similarity: every text of the split against every distinct image,
recall@1/5/10 in both directions (:class:`~mmfuse.metrics.RetrievalRecall`). With ``model.metrics.rerank_k`` = k > 0
it also re-ranks each query's top k candidates by the ITM head's match score of the fused pair (ALBEF / BLIP
inference) and logs those recalls as ``<name>_itm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from mmfuse.config import MetricsConfig, ModelConfig
from mmfuse.errors import ConfigError
from mmfuse.heads import MATCH, MATCHING_CLASSES, ContrastiveHead
from mmfuse.metrics.retrieval import PairScorer, RetrievalRecall, first_of_each, top_k_candidates
from mmfuse.models import ImageTextModel
from mmfuse.tasks.base import TASKS, SplitPredictions, Stage, StageMetric, StepOutput, TaskObjective, check_metric_names
from mmfuse.tasks.itc import contrastive_loss
from mmfuse.tasks.itm import matching_pairs, sample_hard_negatives
from mmfuse.types import Batch, EncoderOutput

__all__ = ["RetrievalObjective", "match_scorer"]


@TASKS.register("retrieval")
class RetrievalObjective(TaskObjective):
    """ITC + ``contrastive.itm_weight`` x ITM loss; ITM accuracy on the training pairs (``train/itm_acc``), recall@K
    on val and test (and, with ``metrics.rerank_k``, the recall@K of the ITM re-ranking).

    Args:
        cfg: the resolved model config (``task: retrieval``).
        metrics: ``model.metrics``: ``names`` (``recall``) and ``rerank_k``.
        class_names: unused (retrieval has no labels).
    """

    progress_bar_metrics = ("r_mean",)

    def __init__(
        self, cfg: ModelConfig, metrics: MetricsConfig = MetricsConfig(), class_names: Sequence[str] = ()
    ) -> None:
        check_metric_names(cfg.task, metrics, ["recall"], ["recall"])
        itm_accuracy = MetricCollection({"itm_acc": MulticlassAccuracy(len(MATCHING_CLASSES), average="micro")})
        rerank_k = metrics.rerank_k
        super().__init__(itm_accuracy, RetrievalRecall(rerank_k=rerank_k), RetrievalRecall(rerank_k=rerank_k))
        self.rerank_k = rerank_k

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
        loss = itc + model.cfg.contrastive.itm_weight * itm
        return StepOutput(loss, {"itc_loss": itc.detach(), "itm_loss": itm.detach()})

    def evaluation_step(self, model: ImageTextModel, batch: Batch, stage: Stage) -> StepOutput:
        image_ids = _image_ids(batch)
        image, text = _encode(model, batch)
        head = _contrastive(model)
        image_embeds, text_embeds = head.embed_image(image.pooled), head.embed_text(text.pooled)  # (B, E) each
        features = (image, text) if self.rerank_k else ()  # token features only when re-ranking needs them
        self.metric(stage).update(image_embeds, text_embeds, image_ids, batch.indices, *features)
        return StepOutput(contrastive_loss(head.scale() * text_embeds @ image_embeds.T, image_ids))

    def predict(self, model: ImageTextModel, batch: Batch) -> dict[str, Tensor]:
        image, text = _encode(model, batch)
        head = _contrastive(model)
        match = model.fuse(image, text).logits.float().softmax(dim=-1)[:, MATCH]  # (B,)
        return {"image_embeds": head.embed_image(image.pooled), "text_embeds": head.embed_text(text.pooled),
                "match_prob": match}  # fmt: skip

    def compute_metric(self, metric: StageMetric, model: ImageTextModel | None) -> Tensor | dict[str, Tensor]:
        if isinstance(metric, RetrievalRecall) and self.rerank_k and model is not None:
            values: dict[str, Tensor] = metric.compute(pair_scorer=match_scorer(model))
            return values
        return super().compute_metric(metric, model)

    def prediction_rows(self, predictions: SplitPredictions, top_k: int) -> list[dict[str, Any]]:
        """Per caption ``{"index", "top_images": [{"image_id", "score"}, ...], "match_prob"}`` (its ``top_k``
        images by contrastive similarity; ``match_prob``: the ITM probability of its own pair), then per distinct
        image ``{"image_id", "top_captions": [{"index", "score"}, ...]}`` (its ``top_k`` captions), over the whole
        split."""
        if predictions.image_ids is None:
            raise ConfigError("retrieval predictions need each row's image (batch.image_ids); this data has none")
        outputs, indices = predictions.outputs, predictions.indices.tolist()
        first = first_of_each(predictions.image_ids)  # (I,) a row of each distinct image
        names = predictions.image_names
        image_names = [names[r] if names is not None else str(int(predictions.image_ids[r])) for r in first.tolist()]
        image_embeds = outputs["image_embeds"][first]  # (I, E)
        t2i_scores, t2i = top_k_candidates(outputs["text_embeds"], image_embeds, top_k)  # (T, k) each
        i2t_scores, i2t = top_k_candidates(image_embeds, outputs["text_embeds"], top_k)  # (I, k) each
        rows: list[dict[str, Any]] = []
        for t, (columns, scores) in enumerate(zip(t2i.tolist(), t2i_scores.tolist())):
            top = [{"image_id": image_names[c], "score": round(s, 6)} for c, s in zip(columns, scores)]
            match_prob = round(float(outputs["match_prob"][t]), 6)
            rows.append({"index": indices[t], "top_images": top, "match_prob": match_prob})
        for i, (texts, scores) in enumerate(zip(i2t.tolist(), i2t_scores.tolist())):
            top = [{"index": indices[t], "score": round(s, 6)} for t, s in zip(texts, scores)]
            rows.append({"image_id": image_names[i], "top_captions": top})
        return rows


def match_scorer(model: ImageTextModel) -> PairScorer:
    """The ITM head as a pair scorer: log-probability of ``match`` for each fused (image, text) pair, computed in
    the fusion's parameter dtype without gradients."""
    dtype = next(model.fusion.parameters()).dtype

    def score(image: EncoderOutput, text: EncoderOutput) -> Tensor:
        with torch.no_grad():
            logits = model.fuse(_cast(image, dtype), _cast(text, dtype)).logits  # (P, 2)
        return logits.float().log_softmax(dim=-1)[:, MATCH]  # (P,)

    return score


def _cast(features: EncoderOutput, dtype: torch.dtype) -> EncoderOutput:
    return EncoderOutput(
        tokens=features.tokens.to(dtype), mask=features.mask, pooled=features.pooled.to(dtype),
        num_prefix_tokens=features.num_prefix_tokens, grid_size=features.grid_size,
    )  # fmt: skip


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
