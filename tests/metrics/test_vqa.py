"""The soft VQA accuracy of the top answer, from the soft targets."""

from __future__ import annotations

import pytest
import torch

from mmfuse.data.vqa import soft_target_tensor, soft_targets, vqa_accuracy
from mmfuse.metrics import VqaAccuracy


def test_accuracy_is_the_official_score_of_the_top_answer() -> None:
    vocab = {"<unk>": 0, "yes": 1, "no": 2, "2": 3}
    questions = [["yes"] * 10, ["yes"] * 2 + ["no"] * 8, ["two"] * 3 + ["3"] * 7, ["maybe"] * 10]
    predicted = ["yes", "yes", "2", "no"]
    targets = [soft_targets(answers, vocab) for answers in questions]
    dense = soft_target_tensor([t[0] for t in targets], [t[1] for t in targets], num_classes=4)  # (4, 4)
    logits = torch.full((4, 4), -5.0)
    logits[torch.arange(4), torch.tensor([vocab[p] for p in predicted])] = 5.0
    metric = VqaAccuracy()
    metric.update(logits[:2], dense[:2])
    metric.update(logits[2:], dense[2:])
    expected = sum(vqa_accuracy(p, a) for p, a in zip(predicted, questions)) / 4
    assert float(metric.compute()) == pytest.approx(expected) == pytest.approx((1.0 + 0.6 + 0.9 + 0.0) / 4)
