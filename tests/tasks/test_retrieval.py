"""The retrieval objective: ITC + ITM losses reach every part of the model; evaluation ranks the whole split."""

from __future__ import annotations

import pytest
import torch

from mmfuse.config import MetricsConfig, ModelConfig, resolve_model_config
from mmfuse.errors import ConfigError
from mmfuse.heads import ContrastiveHeadConfig
from mmfuse.metrics import RetrievalRecall
from mmfuse.models import ImageTextModel
from mmfuse.tasks import RetrievalObjective, SplitPredictions, build_objective, epoch_values, match_scorer
from mmfuse.types import Batch, EncoderOutput
from tests.conftest import TINY_SPEC, TINY_TEXT, TINY_VISION, random_text_batch


def _model(**contrastive: float) -> ImageTextModel:
    cfg = ModelConfig(task="retrieval", width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"],
                      contrastive=ContrastiveHeadConfig(**contrastive))  # fmt: skip
    return ImageTextModel(resolve_model_config(cfg, TINY_SPEC))


def _tensor(values: list[int] | None) -> torch.Tensor | None:
    return None if values is None else torch.tensor(values)


def _batch(image_ids: list[int] | None, indices: list[int] | None = None) -> Batch:
    ids, mask = random_text_batch(4, 5, TINY_SPEC.vocab_size, [5, 3, 4, 2])
    return Batch(torch.rand(4, 3, 32, 32), ids, mask, image_ids=_tensor(image_ids), indices=_tensor(indices))


def test_training_loss_reaches_encoders_fusion_matching_and_contrastive_heads() -> None:
    model = _model()
    objective = build_objective(model.cfg)
    assert isinstance(objective, RetrievalObjective)
    step = objective.training_step(model, _batch([3, 3, 8, 1]))  # rows 0 and 1: two captions of one image
    assert torch.isfinite(step.loss) and set(step.parts) == {"itc_loss", "itm_loss"}
    torch.testing.assert_close(step.loss, step.parts["itc_loss"] + step.parts["itm_loss"])
    step.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert model.contrastive is not None and model.contrastive.logit_scale.grad is not None
    assert 0.0 <= float(epoch_values(objective, "train")["itm_acc"]) <= 1.0


def test_itm_weight_scales_the_matching_loss_in_the_total() -> None:
    model = _model(itm_weight=0.25)
    step = build_objective(model.cfg).training_step(model, _batch([3, 3, 8, 1]))
    torch.testing.assert_close(step.loss, step.parts["itc_loss"] + 0.25 * step.parts["itm_loss"])
    with pytest.raises(ConfigError, match=r"model.contrastive.itm_weight=-1.0: must be >= 0"):
        ContrastiveHeadConfig(itm_weight=-1.0)


def test_evaluation_ranks_every_text_against_every_image_of_the_split() -> None:
    model = _model().eval()
    objective = build_objective(model.cfg)
    with torch.no_grad():
        objective.evaluation_step(model, _batch([0, 0, 1, 2], [0, 1, 2, 3]), "test")
        objective.evaluation_step(model, _batch([2, 3, 3, 4], [4, 5, 6, 7]), "test")
    values = epoch_values(objective, "test")
    assert set(values) == {f"{d}_r{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)} | {"r_mean"}
    assert float(values["t2i_r5"]) == 1.0  # 5 distinct images: every text finds its own in the top 5
    assert float(values["t2i_r1"]) <= float(values["t2i_r5"]) <= float(values["t2i_r10"])


def test_data_without_image_ids_is_refused_with_the_reason() -> None:
    model = _model()
    with pytest.raises(ConfigError, match="image_ids"):
        build_objective(model.cfg).training_step(model, _batch(None))


def test_predict_gives_embeddings_and_match_probabilities() -> None:
    model = _model().eval()
    with torch.no_grad():
        out = build_objective(model.cfg).predict(model, _batch([0, 1, 2, 3]))
    assert out["image_embeds"].shape == out["text_embeds"].shape == (4, model.cfg.contrastive.embed_dim)
    assert out["match_prob"].shape == (4,) and bool(((out["match_prob"] >= 0) & (out["match_prob"] <= 1)).all())


def _evaluated(model: ImageTextModel, metrics: MetricsConfig) -> RetrievalObjective:
    objective = build_objective(model.cfg, metrics)
    assert isinstance(objective, RetrievalObjective)
    with torch.no_grad():
        objective.evaluation_step(model, _batch([0, 0, 1, 2], [0, 1, 2, 3]), "val")
        objective.evaluation_step(model, _batch([2, 3, 3, 4], [4, 5, 6, 7]), "val")
    return objective


def test_reranking_scores_the_top_pairs_with_the_models_matching_head() -> None:
    model = _model().eval()
    metric = _evaluated(model, MetricsConfig(rerank_k=2)).metric("val")
    assert isinstance(metric, RetrievalRecall)
    calls: list[int] = []
    scorer = match_scorer(model)

    def counting(image: EncoderOutput, text: EncoderOutput) -> torch.Tensor:
        calls.append(image.tokens.shape[0])
        return scorer(image, text)

    with torch.no_grad():
        values = metric.compute(pair_scorer=counting)
    assert sum(calls) == 8 * 2 + 5 * 2  # each of 8 texts' top 2 images, each of 5 images' top 2 texts
    assert {"t2i_r1_itm", "i2t_r10_itm", "r_mean_itm"} <= set(values)
    torch.manual_seed(0)
    objective = _evaluated(_model().eval(), MetricsConfig(rerank_k=2))  # the same model again (same seed)
    through_objective = epoch_values(objective, "val", model)  # the objective passes the model's matching head
    assert {k: float(v) for k, v in through_objective.items()} == {k: float(v) for k, v in values.items()}
    assert epoch_values(objective, "val", model) == {}  # reset after the epoch


def test_the_match_scorer_is_the_log_probability_of_a_match() -> None:
    model = _model().eval()
    batch = _batch([0, 1, 2, 3])
    with torch.no_grad():
        image, text = model.vision(batch.images), model.text(batch.input_ids, batch.attention_mask)
        expected = model.fuse(image, text).logits.log_softmax(-1)[:, 1]
        torch.testing.assert_close(match_scorer(model)(image, text), expected)


def test_retrieval_predictions_list_the_top_images_of_each_caption_and_the_top_captions_of_each_image() -> None:
    objective = build_objective(_model().cfg)
    # 2 images on the axes; captions 10 and 11 show image 7 (axis 0), caption 12 image 9 (axis 1) but points at 7.
    outputs = {"image_embeds": torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]),
               "text_embeds": torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2]]),
               "match_prob": torch.tensor([0.9, 0.8, 0.1])}  # fmt: skip
    split = SplitPredictions(outputs, torch.tensor([10, 11, 12]), image_ids=torch.tensor([7, 7, 9]),
                             image_names=["a.jpg", "a.jpg", "b.jpg"])  # fmt: skip
    rows = objective.prediction_rows(split, top_k=2)
    captions = {r["index"]: [t["image_id"] for t in r["top_images"]] for r in rows if "top_images" in r}
    images = {r["image_id"]: [t["index"] for t in r["top_captions"]] for r in rows if "top_captions" in r}
    assert captions == {10: ["a.jpg", "b.jpg"], 11: ["a.jpg", "b.jpg"], 12: ["a.jpg", "b.jpg"]}
    assert images == {"a.jpg": [10, 12], "b.jpg": [11, 12]}
