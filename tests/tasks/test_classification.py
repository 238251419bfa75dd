"""Classification and VQA objectives on a tiny model: losses, metrics and the checks on what a batch carries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmfuse.config import MetricsConfig, ModelConfig, resolve_model_config
from mmfuse.errors import ConfigError
from mmfuse.models import ImageTextModel
from mmfuse.tasks import ClassificationObjective, SplitPredictions, VqaObjective, build_objective, epoch_values
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


def test_the_metrics_named_in_the_config_are_the_ones_computed() -> None:
    model = _model("classification")
    objective = build_objective(model.cfg, MetricsConfig(names=("macro_f1", "per_class_accuracy", "ece")), "abcd")
    batch = _batch(labels=torch.tensor([0, 3, -1, 2]))
    objective.evaluation_step(model, batch, "val")
    values = epoch_values(objective, "val")
    assert set(values) == {"macro_f1", "ece", "acc_a", "acc_b", "acc_c", "acc_d"}
    probs = model(batch.images, batch.input_ids, batch.attention_mask).logits.softmax(-1)[[0, 1, 3]]
    right = probs.argmax(-1) == torch.tensor([0, 3, 2])
    torch.testing.assert_close(values["acc_d"], right[1].float())  # the one row of class 3 (d)


@pytest.mark.parametrize(
    ("task", "metrics", "message"),
    [
        ("classification", MetricsConfig(names=("accuracy", "top5")), "'top5'.*accuracy, auroc, ece, macro_f1"),
        ("vqa", MetricsConfig(names=("macro_f1",)), "'macro_f1' for model.task='vqa'; known: accuracy"),
        ("classification", MetricsConfig(names=()), "empty"),
        ("classification", MetricsConfig(rerank_k=4), "rerank_k=4.*retrieval only"),
    ],
)
def test_metric_choices_a_task_cannot_take_are_named(task: str, metrics: MetricsConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_objective(_model(task).cfg, metrics)


def test_predictions_keep_the_top_classes_and_name_them() -> None:
    model = _model("classification")
    objective = build_objective(model.cfg)
    with torch.no_grad():
        outputs = objective.predict(model, _batch())
    state = objective.prediction_state(outputs, top_k=3)
    assert state["top_classes"].shape == state["top_probs"].shape == (4, 3)
    split = SplitPredictions(state, torch.tensor([5, 6, 7, 8]), torch.tensor([1, -1, 0, 2]), class_names="abcd")
    rows = objective.prediction_rows(split, top_k=3)
    assert [r["index"] for r in rows] == [5, 6, 7, 8] and [r.get("label") for r in rows] == ["b", None, "a", "c"]
    for row, probs in zip(rows, outputs["probs"]):
        assert row["pred"] == "abcd"[int(probs.argmax())] == row["top_k"][0]["class"]
        expected = probs.sort(descending=True).values[:3].tolist()
        assert [t["prob"] for t in row["top_k"]] == pytest.approx(expected, abs=1e-6)


def test_vqa_predictions_list_the_top_answers_without_a_label() -> None:
    objective = build_objective(_model("vqa").cfg)
    probs = torch.tensor([[0.1, 0.9, 0.3, 0.2], [0.8, 0.1, 0.1, 0.7]])  # independent sigmoid scores
    state = objective.prediction_state({"probs": probs, "pred": probs.argmax(-1)}, top_k=2)
    split = SplitPredictions(state, torch.tensor([0, 1]), labels=torch.tensor([1, 0]), class_names="abcd")
    rows = objective.prediction_rows(split, top_k=2)
    assert [[t["class"] for t in r["top_k"]] for r in rows] == [["b", "c"], ["a", "d"]]
    assert all("label" not in r for r in rows)
