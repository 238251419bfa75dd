"""The public explain() API."""

from __future__ import annotations

import pytest
import torch

import mmfuse.attribution as attribution
from mmfuse.attribution import EXPLAINERS, ClassLogit, LabelClass, explain
from tests.attribution.conftest import make_batch, make_model

# Switching to the explicit attention paths is announced with a UserWarning (checked in test_relevance.py).
pytestmark = pytest.mark.filterwarnings("ignore:.*switched back:UserWarning")


def test_registered_methods() -> None:
    expected = {"gradcam", "hirescam", "fusion_relevance", "raw_attention", "rollout"}
    expected |= {"grad_x_input", "integrated_gradients"}
    assert set(EXPLAINERS.names()) == expected
    assert all(hasattr(attribution, name) for name in attribution.__all__)


def test_explain_defaults_and_unknown_methods() -> None:
    model, batch = make_model("resnet", "bert"), make_batch()
    result = explain(model, batch)
    assert set(result) == set(attribution.DEFAULT_METHODS)
    with pytest.raises(KeyError, match="gradcam"):
        explain(model, batch, methods=["gradcam_pp"])
    with pytest.raises(ValueError, match="integrated_gradients"):
        explain(model, batch, methods=["gradcam"], method_kwargs={"integrated_gradients": {"n_steps": 4}})


def test_label_and_class_targets_explain_the_same_class() -> None:
    model, batch = make_model("resnet", "bert"), make_batch()
    assert batch.labels is not None
    by_label = explain(model, batch, methods=["grad_x_input"], target=LabelClass())["grad_x_input"].text
    by_index = explain(model, batch, methods=["grad_x_input"], target=ClassLogit(batch.labels))["grad_x_input"].text
    assert by_label is not None and by_index is not None
    torch.testing.assert_close(by_label, by_index)
