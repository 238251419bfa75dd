"""Class balance: planted imbalance is flagged, balanced labels are not."""

from __future__ import annotations

import numpy as np
import pytest

from mmfuse.audit.balance import class_balance
from mmfuse.errors import ConfigError

NAMES = ("red", "green", "blue", "yellow")


def test_planted_imbalance_is_flagged_with_intervals() -> None:
    labels = np.repeat([0, 1, 2, 3], [400, 380, 410, 40])  # yellow at a third of a uniform share
    balance = class_balance(labels, NAMES, min_relative_share=0.5, max_imbalance_ratio=3.0, split="train")
    assert balance.counts == [400, 380, 410, 40] and balance.under_represented == ["yellow"]
    smallest, ratio = balance.checks
    assert smallest.name == "smallest class share (train, yellow)" and smallest.status == "fail"
    assert ratio.interval.estimate == pytest.approx(410 / 40) and ratio.status == "fail"
    low, high = balance.shares[3].low, balance.shares[3].high
    assert low is not None and high is not None and low < 40 / 1230 < high < 0.125


def test_balanced_labels_raise_no_flag() -> None:
    labels = np.random.default_rng(0).integers(0, 4, size=2000)
    balance = class_balance(labels, NAMES)
    assert balance.under_represented == [] and [c.status for c in balance.checks] == ["pass", "pass"]
    assert sum(s.estimate for s in balance.shares) == pytest.approx(1.0)  # type: ignore[misc]


def test_an_empty_class_gives_an_infinite_ratio_and_is_flagged() -> None:
    balance = class_balance([0, 1, 1, 2, 0, 2], NAMES)
    assert balance.under_represented == ["yellow"] and balance.imbalance_ratio.estimate == float("inf")
    assert balance.as_dict()["imbalance_ratio"]["estimate"] is None  # JSON has no infinity


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_relative_share": 0.0}, "min_relative_share=0.0"),
        ({"min_relative_share": 1.5}, "min_relative_share=1.5"),
        ({"max_imbalance_ratio": 0.5}, "max_imbalance_ratio=0.5"),
    ],
)
def test_thresholds_out_of_range_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        class_balance([0, 1], NAMES, **kwargs)


def test_labels_outside_the_classes_are_refused() -> None:
    with pytest.raises(ConfigError, match="labels must lie in 0..3"):
        class_balance([0, 4], NAMES)
