"""Robustness report: a model that reads only one modality loses nothing when the other one is perturbed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmfuse.errors import ConfigError
from mmfuse.probes.data import ProbeData
from mmfuse.probes.robustness import bootstrap_relative_drop, example_seed, robustness_report
from tests.probes.conftest import RedModel, TokenModel, make_data, token_ids

FAST = {"severities": [1, 3, 5], "n_boot": 100}


@pytest.fixture
def striped() -> ProbeData:
    """Red or blue images whose label is their colour; questions start with she (label 0) or he (label 1)."""
    texts = [f"{('she', 'he')[i % 2]} asks : what colour is the circle ?" for i in range(24)]
    return make_data(texts, size=24)


def test_image_model_is_untouched_by_text_perturbations_and_hurt_by_image_ones(striped: ProbeData) -> None:
    report = robustness_report(RedModel(), striped, image_corruptions=["contrast"], joint="pairs", **FAST)
    assert report.clean.estimate == 1.0
    for condition in report.conditions:
        if condition.kind == "text":
            assert condition.accuracy.estimate == 1.0 and condition.relative_drop.estimate == 0.0
    contrast = [c.accuracy.estimate for c in report.curves("image")["contrast"]]
    assert contrast[-1] <= contrast[0]
    joint = report.curves("joint")
    assert set(joint) == {f"contrast+{t}" for t in ("case", "synonyms", "typos", "word_dropout")}
    assert joint["contrast+typos"][-1].accuracy.estimate == report.curves("image")["contrast"][-1].accuracy.estimate


def test_text_model_is_untouched_by_image_corruptions_and_hurt_by_word_dropout(striped: ProbeData) -> None:
    model = TokenModel(token_ids(striped, ["she"]))
    report = robustness_report(model, striped, text_perturbations=["word_dropout", "case"], joint="mixed", **FAST)
    assert report.clean.estimate == 1.0
    for condition in report.conditions:
        if condition.kind == "image":
            assert condition.accuracy.estimate == 1.0 and condition.relative_drop.estimate == 0.0
    dropout = report.curves("text")["word_dropout"]
    assert (
        dropout[-1].relative_drop.estimate > 0.0
        and dropout[-1].relative_drop.estimate >= dropout[0].relative_drop.estimate
    )
    assert list(report.curves("joint")) == ["mixed"] and len(report.curves("joint")["mixed"]) == 3


def test_shifted_split_and_written_files(striped: ProbeData, tmp_path: Path) -> None:
    blue_for_red = make_data(["she asks ?"] * 10, colors=[(40, 80, 255)] * 10, size=24)  # label 1 everywhere
    for row in blue_for_red.records:
        row["label"] = 0  # a shifted world: the colour now means the other class
    report = robustness_report(
        RedModel(), striped, image_corruptions=["jpeg"], text_perturbations=["typos"], joint="none", shift=blue_for_red,
        split="val", **FAST,
    )  # fmt: skip
    shift = report.curves("shift")["shift"][0]
    assert shift.accuracy.estimate == 0.0 and shift.relative_drop.estimate == 1.0 and shift.accuracy.n == 10
    paths = report.write(tmp_path)
    assert [p.name for p in paths] == ["robustness.json", "robustness.md", "robustness.png"]
    data = json.loads(paths[0].read_text())
    assert data["clean_accuracy"]["value"] == 1.0 and data["split"] == "val" and len(data["conditions"]) == 7
    markdown = paths[1].read_text()
    assert "![accuracy against severity](robustness.png)" in markdown and "## Shifted split" in markdown
    assert "| jpeg |" in markdown and "| typos |" in markdown and "Image and text together" not in markdown
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    no_plot = report.write(tmp_path / "np", plot=False)
    assert len(no_plot) == 2 and "robustness.png" not in no_plot[1].read_text()


def test_results_do_not_depend_on_the_batch_size(striped: ProbeData) -> None:
    model = TokenModel(token_ids(striped, ["she"]))
    a = robustness_report(model, striped, image_corruptions=[], batch_size=5, **FAST)
    b = robustness_report(model, striped, image_corruptions=[], batch_size=64, **FAST)
    assert a.to_dict() == b.to_dict()
    assert example_seed(0, "text", "typos", 3) == example_seed(0, "text", "typos", 3) != example_seed(1, "text")


def test_bad_settings(striped: ProbeData) -> None:
    with pytest.raises(ConfigError, match=r"unknown image corruption\(s\) \['fog'\]"):
        robustness_report(RedModel(), striped, image_corruptions=["fog"])
    with pytest.raises(ConfigError, match=r"unknown text perturbation\(s\) \['leet'\]"):
        robustness_report(RedModel(), striped, text_perturbations=["leet"])
    with pytest.raises(ConfigError, match="severities"):
        robustness_report(RedModel(), striped, severities=[0, 6])
    with pytest.raises(ConfigError, match="nothing to run"):
        robustness_report(RedModel(), striped, image_corruptions=[], text_perturbations=[])
    unlabelled = ProbeData([{k: v for k, v in r.items() if k != "label"} for r in striped.records], striped.collate)
    with pytest.raises(ConfigError, match="no 'label'"):
        robustness_report(RedModel(), unlabelled, **FAST)


def test_relative_drop_interval_covers_the_true_drop() -> None:
    """Paired: a perturbation that breaks 20 % of the correct answers has a true relative drop of 0.2."""
    rng = np.random.default_rng(2)
    n, covered_drop, covered_acc = 300, [], []
    for k in range(200):
        clean = rng.random(n) < 0.9
        perturbed = clean & (rng.random(n) < 0.8)
        accuracy, drop = bootstrap_relative_drop(clean, perturbed, paired=True, n_boot=400, seed=k)
        covered_drop.append(drop.low <= 0.2 <= drop.high)  # type: ignore[operator]
        covered_acc.append(accuracy.low <= 0.72 <= accuracy.high)  # type: ignore[operator]
    assert 0.91 <= np.mean(covered_drop) <= 0.99 and 0.91 <= np.mean(covered_acc) <= 0.99


def test_unpaired_drop_and_edge_cases() -> None:
    accuracy, drop = bootstrap_relative_drop(np.ones(50), np.r_[np.ones(25), np.zeros(25)], paired=False)
    assert accuracy.estimate == 0.5 and drop.estimate == 0.5 and drop.low < 0.5 < drop.high  # type: ignore[operator]
    _, undefined = bootstrap_relative_drop(np.zeros(10), np.zeros(10), paired=True)
    assert undefined.estimate is None
    with pytest.raises(ValueError, match="equal shape"):
        bootstrap_relative_drop(np.ones(3), np.ones(4), paired=True)
