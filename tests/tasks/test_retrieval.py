"""The retrieval objective: ITC + ITM losses reach every part of the model; evaluation ranks the whole split."""

from __future__ import annotations

import pytest
import torch

from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.errors import ConfigError
from mmfuse.models import ImageTextModel
from mmfuse.tasks import RetrievalObjective, build_objective, epoch_values
from mmfuse.types import Batch
from tests.conftest import TINY_SPEC, TINY_TEXT, TINY_VISION, random_text_batch


def _model() -> ImageTextModel:
    cfg = ModelConfig(task="retrieval", width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"])
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
