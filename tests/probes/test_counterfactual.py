"""Counterfactual invariance against hand-built models with a known dependence on a protected attribute."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from mmfuse.errors import ConfigError
from mmfuse.probes import (
    AttributeLexicon,
    ImageCounterfactual,
    ProbeData,
    assert_invariant,
    counterfactual_report,
    text_counterfactuals,
)
from tests.probes.conftest import RedModel, TokenModel, make_data, texts_with_names, token_ids


def test_model_that_reads_the_name_flips_every_time(data: ProbeData) -> None:
    model = TokenModel(token_ids(data, ["she", "anna", "maria"]))  # class 0 for "female" words
    report = counterfactual_report(model, data, n_boot=200)
    gender, names = report["gender"], report["first_names"]
    assert gender.overall is not None and names.overall is not None
    assert gender.overall.flip_rate.estimate == 1.0 and names.overall.flip_rate.estimate == 1.0
    assert gender.overall.n_examples == 20 and names.overall.n_examples == 40  # she/he; anna, james, maria, omar
    assert gender.overall.mean_abs_delta_p.estimate > 0.9 and not report.passed and gender.passed is False
    assert {p.label for p in names.pairs} == {"female -> male", "male -> female"}
    assert report["religion"].overall is None and report["religion"].passed is None  # absent, no verdict
    example = gender.examples[0]
    assert {example["original"].split()[0], example["counterfactual"].split()[0]} == {"she", "he"}
    assert example["prediction"] != example["counterfactual_prediction"]


def test_model_that_reads_one_value_flips_only_that_pair(data: ProbeData) -> None:
    model = TokenModel(token_ids(data, ["anna"]))  # anna <-> james flips; maria <-> omar does not
    names = counterfactual_report(model, data, attributes=["first_names"], n_boot=200)["first_names"]
    assert names.overall is not None and names.overall.flip_rate.estimate == pytest.approx(0.5)
    pairs = {p.label: p for p in names.pairs}
    assert pairs["female -> male"].flip_rate.estimate == 0.5 and pairs["male -> female"].flip_rate.estimate == 0.5
    assert names.overall.flip_rate.low < 0.5 < names.overall.flip_rate.high


def test_model_that_ignores_the_text_passes_with_zero_change(data: ProbeData) -> None:
    report = assert_invariant(RedModel(), data, tolerance=0.0, dp_tolerance=0.0)
    for result in report.attributes:
        if result.overall is not None:
            assert result.overall.flip_rate.estimate == 0.0 and result.overall.mean_abs_delta_p.estimate == 0.0
    assert report.passed and "none of 20" in report.to_markdown()


def test_token_model_that_reads_an_unlisted_word_is_no_false_alarm(data: ProbeData) -> None:
    model = TokenModel(token_ids(data, ["circle"]))  # depends on the text, not on a protected term
    report = assert_invariant(model, data)
    assert all(r.overall is None or r.overall.flip_rate.estimate == 0.0 for r in report.attributes)


def test_assert_invariant_raises_with_the_report(data: ProbeData) -> None:
    model = TokenModel(token_ids(data, ["she"]))
    with pytest.raises(AssertionError) as err:
        assert_invariant(model, data, tolerance=0.3)
    assert "not invariant" in str(err.value) and "| gender | text |" in str(err.value)


def test_custom_lists_and_tolerance() -> None:
    data = make_data([f"the {w} asks ?" for w in ("cat", "dog", "cat", "bird")])
    pets = {"pets": AttributeLexicon("pets", {"cat": ("cat",), "dog": ("dog",)})}
    model = TokenModel(token_ids(data, ["cat"]))  # "cat" is unknown to the tokenizer: [UNK], as is "dog"
    report = counterfactual_report(model, data, pets, n_boot=100)
    assert report["pets"].overall is not None and report["pets"].overall.n_counterfactuals == 3
    assert text_counterfactuals(["a cat", "a bird"], pets["pets"]) == [(0, "cat", "dog", "a dog")]


def test_data_without_the_attribute_is_an_error_not_a_zero_rate() -> None:
    data = make_data(["what colour is the circle ?"] * 8)
    with pytest.raises(ConfigError, match="none of the 8 examples has a probed attribute"):
        counterfactual_report(RedModel(), data)
    with pytest.raises(ConfigError, match="attribute 'religion': none of the 8 texts contains any of its terms"):
        counterfactual_report(RedModel(), data, attributes=["religion"])
    with pytest.raises(ConfigError, match=r"unknown attribute\(s\) \['colour'\]"):
        counterfactual_report(RedModel(), data, attributes=["colour"])


def _recolour(image: Tensor, record: dict) -> Tensor:
    """Counterfactual: a red image becomes blue and a blue one red (channels 0 and 2 swapped)."""
    return image[[2, 1, 0]]


def _colour_pair(record: dict) -> tuple[str, str]:
    return ("red", "blue") if record["label"] == 0 else ("blue", "red")


def test_image_edit_flips_an_image_model_and_not_a_text_model(data: ProbeData) -> None:
    edit = ImageCounterfactual("colour", _recolour, pair=_colour_pair)
    image_report = counterfactual_report(RedModel(), data, attributes=(), image_edits=[edit], n_boot=100)
    colour = image_report["colour"]
    assert colour.kind == "image" and colour.overall is not None and colour.overall.flip_rate.estimate == 1.0
    assert {p.label for p in colour.pairs} == {"red -> blue", "blue -> red"}
    text_model = TokenModel(token_ids(data, ["she"]))
    text_report = counterfactual_report(text_model, data, attributes=(), image_edits=[edit], n_boot=100)
    assert text_report.passed and text_report["colour"].overall.flip_rate.estimate == 0.0  # type: ignore[union-attr]


def crop(image: Tensor, record: dict) -> Tensor:
    return image[:, :-1, :]


def to_double(image: Tensor, record: dict) -> Tensor:
    return image.double()


def to_bytes_range(image: Tensor, record: dict) -> Tensor:
    return image * 255


def to_numpy(image: Tensor, record: dict) -> Any:
    return image.numpy()


def unchanged(image: Tensor, record: dict) -> Tensor:
    return image


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (crop, "crop changed the image from shape (3, 16, 16) torch.float32 to (3, 15, 16) torch.float32; a"),
        (to_double, "to_double changed the image from shape (3, 16, 16) torch.float32 to (3, 16, 16) torch.float64"),
        (to_bytes_range, "to_bytes_range returned values outside [0, 1] (min 25, max 230)"),
        (to_numpy, "to_numpy returned ndarray, expected a torch.Tensor"),
        (unchanged, "unchanged) changed none of the 60 images: the data lacks the attribute"),
    ],
)
def test_bad_image_edit_names_the_function_and_the_shapes(
    data: ProbeData, edit: Callable[[Tensor, dict], Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        counterfactual_report(RedModel(), data, attributes=(), image_edits=[ImageCounterfactual("x", edit)])
    assert message in str(err.value) and "tests.probes.test_counterfactual." in str(err.value)


def test_image_edit_for_records_without_the_attribute() -> None:
    data = make_data(texts_with_names(4))
    edit = ImageCounterfactual("x", _recolour, pair=lambda record: None)
    with pytest.raises(ConfigError, match="none of the 4 records has the attribute"):
        counterfactual_report(RedModel(), data, attributes=(), image_edits=[edit])


def test_settings_are_checked_and_the_model_mode_is_kept(data: ProbeData) -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        counterfactual_report(RedModel(), data, tolerance=1.5)
    with pytest.raises(ConfigError, match="batch_size"):
        counterfactual_report(RedModel(), data, batch_size=0)
    model = RedModel().train()
    counterfactual_report(model, data, batch_size=7, n_boot=50)
    assert model.training
    assert torch.equal(next(data.batches(4)).images, next(data.batches(4)).images)
