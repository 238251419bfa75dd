"""Audit thresholds: every value out of range is refused with a message that names it."""

from __future__ import annotations

import pytest

from mmfuse.audit.config import AuditConfig
from mmfuse.errors import ConfigError


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_label_error_fraction", 1.5, "max_label_error_fraction=1.5: a fraction must lie in [0, 1]"),
        ("max_leaked_image_fraction", -0.1, "max_leaked_image_fraction=-0.1"),
        ("min_relative_share", 0.0, "min_relative_share=0.0"),
        ("max_imbalance_ratio", 0.9, "max_imbalance_ratio=0.9: must be >= 1"),
        ("hash_size", 12, "hash_size=12"),
        ("near_duplicate_distance", 256, "near_duplicate_distance=256: must lie in 0..255"),
        ("label_error_features", "pixels", "label_error_features='pixels'"),
        ("folds", 1, "folds=1: must be >= 2"),
        ("mismatch_negatives", 0, "mismatch_negatives=0"),
        ("mismatch_z", -1.0, "mismatch_z=-1.0: must be > 0"),
        ("level", 1.0, "audit level=1.0"),
        ("n_boot", 0, "n_boot=0"),
    ],
)
def test_out_of_range_values_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        AuditConfig(**{field: value})  # type: ignore[arg-type]


def test_defaults_are_valid_and_none_means_reported_only() -> None:
    cfg = AuditConfig(max_label_error_fraction=None, max_imbalance_ratio=None)
    assert cfg.max_label_error_fraction is None and "folds" in AuditConfig.field_names()
