"""Classification and VQA objectives on a tiny model: losses, metrics and the checks on what a batch carries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.errors import ConfigError
from mmfuse.models import ImageTextModel
from mmfuse.tasks import ClassificationObjective, VqaObjective, build_objective, epoch_values
from mmfuse.types import Batch
from tests.conftest import TINY_SPEC, TINY_TEXT, TINY_VISION, random_text_batch


def _model(task: str) -> ImageTextModel:
    cfg = ModelConfig(task=task, width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"])  # type: ignore[arg-type]
    return ImageTextModel(resolve_model_config(cfg, TINY_SPEC)).eval()


def _batch(**fields: torch.Tensor | None) -> Batch:
    ids, mask = random_text_batch(4, 5, TINY_SPEC.vocab_size, [5, 3, 4, 2])
    return Batch(torch.rand(4, 3, 32, 32), ids, mask, **fields)


def test_classification_leaves_rows_without_a_label_out() -> None:
    model = _model("classification")
    objective = build_objective(model.cfg)
    assert isinstance(objective, ClassificationObjective)
    batch = _batch(labels=torch.tensor([0, 3, -1, 2]))
    step = objective.evaluation_step(model, batch, "val")
    logits = model(batch.images, batch.input_ids, batch.attention_mask).logits
    torch.testing.assert_close(step.loss, F.cross_entropy(logits[[0, 1, 3]], torch.tensor([0, 3, 2])))
    expected = (logits[[0, 1, 3]].argmax(-1) == torch.tensor([0, 3, 2])).float().mean()
    torch.testing.assert_close(epoch_values(objective, "val")["acc"], expected)
    assert epoch_values(objective, "val") == {}  # reset after the epoch


def test_vqa_is_bce_on_soft_targets_and_scores_the_top_answer() -> None:
    model = _model("vqa")
    objective = build_objective(model.cfg)
    assert isinstance(objective, VqaObjective)
    targets = torch.zeros(4, TINY_SPEC.num_classes)
    targets[0, 1], targets[1, 2], targets[2, 1], targets[2, 3] = 1.0, 0.6, 0.3, 0.9
    batch = _batch(soft_targets=targets)
    step = objective.training_step(model, batch)
    logits = model(batch.images, batch.input_ids, batch.attention_mask).logits
    torch.testing.assert_close(step.loss, F.binary_cross_entropy_with_logits(logits, targets) * TINY_SPEC.num_classes)
    expected = targets.gather(1, logits.argmax(-1, keepdim=True)).mean()
    torch.testing.assert_close(epoch_values(objective, "train")["acc"], expected)


def test_vqa_without_soft_targets_says_what_data_it_needs() -> None:
    model = _model("vqa")
    with pytest.raises(ConfigError, match="format: vqa"):
        build_objective(model.cfg).training_step(model, _batch(labels=torch.zeros(4, dtype=torch.long)))
