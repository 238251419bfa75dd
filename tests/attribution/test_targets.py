"""Targets on ModelOutput and on plain logits; fixing input-dependent targets."""

from __future__ import annotations

import pytest
import torch

from mmfuse.attribution import ClassLogit, LabelClass, PredictedClass, ScalarOf, logits_of
from mmfuse.models import ModelOutput
from mmfuse.types import Batch, FusionOutput

LOGITS = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, -1.0]])


def _output() -> ModelOutput:
    return ModelOutput(logits=LOGITS, fusion=FusionOutput(fused=torch.zeros(2, 4)), image=None, text=None)


def _batch(labels: torch.Tensor | None) -> Batch:
    return Batch(
        torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool), labels
    )


@pytest.mark.parametrize("output", [LOGITS, _output()])
def test_targets_read_logits_or_model_output(output: object) -> None:
    assert ClassLogit(2)(output).tolist() == [1.0, -1.0]
    assert ClassLogit(torch.tensor([0, 1]))(output).tolist() == [0.0, 0.0]
    assert PredictedClass()(output).tolist() == [2.0, 3.0]
    assert LabelClass()(output, _batch(torch.tensor([2, 2]))).tolist() == [1.0, -1.0]
    assert ScalarOf(lambda out: logits_of(out).sum(dim=1))(output).tolist() == [3.0, 2.0]


def test_fixing_resolves_the_class_once() -> None:
    fixed = PredictedClass().fixed(LOGITS)
    assert isinstance(fixed, ClassLogit)
    shifted = LOGITS + torch.tensor([[0.0, 0.0, 5.0], [0.0, 5.0, 0.0]])
    assert fixed(shifted).tolist() == [2.0, 3.0]  # still classes 1 and 0
    assert fixed(torch.cat([LOGITS, LOGITS])).tolist() == [2.0, 3.0, 2.0, 3.0]  # repeated batch: indices repeat
    assert isinstance(LabelClass().fixed(LOGITS, _batch(torch.tensor([0, 1]))), ClassLogit)


def test_misuse_is_named() -> None:
    with pytest.raises(ValueError, match="labels"):
        LabelClass()(LOGITS, _batch(None))
    with pytest.raises(ValueError, match=r"\(B,\)"):
        ScalarOf(lambda out: logits_of(out))(LOGITS)
    with pytest.raises(ValueError, match="3 class indices"):
        ClassLogit(torch.tensor([0, 1, 2]))(LOGITS)
    with pytest.raises(TypeError, match="logits"):
        PredictedClass()(torch.zeros(2))
