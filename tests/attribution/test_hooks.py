"""Hooks: dotted paths with helpful errors, always removed, nothing kept alive; the explain mode is undone."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from mmfuse.attribution import EXPLAINERS, capture_output, explain, explain_mode, hook_count, resolve_module
from mmfuse.errors import ConfigError
from tests.attribution.conftest import make_batch, make_model

# Switching to the explicit attention paths is announced with a UserWarning (checked in test_relevance.py).
pytestmark = pytest.mark.filterwarnings("ignore:.*switched back:UserWarning")


def test_bad_path_lists_valid_paths_near_it() -> None:
    model = make_model("vit")
    with pytest.raises(ConfigError) as err:
        resolve_module(model, "vision.backbone.blocks.1.norm")
    assert "vision.backbone.blocks.1.norm1" in str(err.value)
    assert resolve_module(model, "vision.backbone.blocks.1.norm1") is model.vision.backbone.blocks[1].norm1  # type: ignore[union-attr]


def test_no_handles_or_activations_survive_a_call() -> None:
    model, batch = make_model("vit", "distilbert"), make_batch()
    before = hook_count(model)
    kept: list[weakref.ref[torch.Tensor]] = []
    with capture_output(model, "vision.backbone.blocks.0.norm1") as capture:
        model(batch.images, batch.input_ids, batch.attention_mask)
        assert capture.output is not None
        kept.append(weakref.ref(capture.output))
    assert capture.output is None and hook_count(model) == before
    few_steps = {"integrated_gradients": {"n_steps": 4}}
    explain(model, batch, methods=EXPLAINERS.names(), method_kwargs=few_steps)
    # transformers installs its own output-capturing hooks once, on a model's first output_attentions call
    assert hook_count(model) - hook_count(model.text.model) == before  # type: ignore[union-attr]
    settled = hook_count(model)
    explain(model, batch, methods=EXPLAINERS.names(), method_kwargs=few_steps)
    assert hook_count(model) == settled, "repeated calls add no hooks"
    gc.collect()
    assert kept[0]() is None, "the captured activation is freed once the context closes"


def test_explain_mode_is_undone() -> None:
    model = make_model("resnet")
    model.vision.eval()  # type: ignore[union-attr]  # a frozen encoder: eval, no gradients
    model.vision.requires_grad_(False)  # type: ignore[union-attr]
    with explain_mode(model):
        assert not model.training and all(p.requires_grad for p in model.parameters())
    assert model.training and not model.vision.training  # type: ignore[union-attr]
    assert not any(p.requires_grad for p in model.vision.parameters())  # type: ignore[union-attr]
    assert all(p.requires_grad for p in model.text.parameters())  # type: ignore[union-attr]
    result = explain(model, make_batch(), methods=["gradcam"])  # still explains through the frozen encoder
    assert result["gradcam"].image_grid is not None and result["gradcam"].image_grid.sum() > 0
    assert all(p.grad is None for p in model.parameters()), "explaining leaves no .grad behind"
