"""Thresholds and settings of the dataset audit: one typed home for their defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields

from mmfuse.errors import ConfigError
from mmfuse.stats import check_level

__all__ = ["AuditConfig"]

_FRACTIONS = (
    "max_duplicate_image_fraction",
    "max_duplicate_text_fraction",
    "max_duplicate_example_fraction",
    "max_leaked_image_fraction",
    "max_leaked_example_fraction",
    "max_leaked_text_fraction",
    "max_label_error_fraction",
    "max_mismatch_fraction",
)


@dataclass(frozen=True)
class AuditConfig:
    """What the audit measures and the limits it grades against (None = reported, not graded).

    Attributes:
        min_relative_share: a class is under-represented below ``min_relative_share / K`` of a split; in (0, 1].
        max_imbalance_ratio: largest / smallest class count allowed in a split; >= 1.
        hash_size: side of the perceptual (DCT) hash; ``hash_size ** 2`` bits, a multiple of 8.
        near_duplicate_distance: Hamming distance (bits) at or below which two images are near duplicates.
        max_duplicate_image_fraction: redundant near-duplicate images allowed within a split.
        max_duplicate_text_fraction: redundant duplicate texts allowed within a split (templated questions and
            several captions per image repeat by design, hence reported only by default).
        max_duplicate_example_fraction: redundant examples (near-duplicate image, same text) allowed within a split.
        max_leaked_image_fraction: evaluation examples whose image (exact or near) is in training.
        max_leaked_example_fraction: evaluation examples whose image and text are in training.
        max_leaked_text_fraction: evaluation examples whose text is in training.
        folds: folds of the out-of-fold probes (>= 2).
        label_error_features: the frozen features the label-error probe reads: ``fused``, ``logits``, ``image``,
            ``text`` or ``image+text``.
        max_label_error_fraction: flagged likely label errors allowed in a split.
        mismatch_z: flag pairs whose matching score's robust z-score is below ``-mismatch_z``; > 0.
        mismatch_negatives: shuffled pairs the matching probe learns from (one extra forward pass over them).
        max_mismatch_fraction: flagged likely mismatches allowed in a split (image-text or caption-image).
        caption_negatives: random other images paired with each caption: the random pairs of the caption-image
            mismatch probe of a retrieval model (:mod:`mmfuse.audit.caption_mismatch`); >= 1.
        caption_mismatch_threshold: flag a caption whose estimated probability of not describing its image is at
            least this (1/2: the Bayes decision); in (0, 1).
        caption_itm: also read the ITM head's match probability of every caption's pairs (one fusion pass per
            pair; the split's image tokens are kept in memory meanwhile).
        level: confidence level of every interval.
        n_boot: bootstrap resamples.
        seed: seed of folds, probes, shuffles and resampling.
        max_listed: examples (or groups) listed per finding in the JSON report.
    """

    min_relative_share: float = 0.5
    max_imbalance_ratio: float | None = 3.0
    hash_size: int = 16
    near_duplicate_distance: int = 20
    max_duplicate_image_fraction: float | None = 0.01
    max_duplicate_text_fraction: float | None = None
    max_duplicate_example_fraction: float | None = 0.01
    max_leaked_image_fraction: float | None = 0.01
    max_leaked_example_fraction: float | None = 0.0
    max_leaked_text_fraction: float | None = None
    folds: int = 5
    label_error_features: str = "fused"
    max_label_error_fraction: float | None = 0.05
    mismatch_z: float = 3.0
    mismatch_negatives: int = 2000
    max_mismatch_fraction: float | None = 0.02
    caption_negatives: int = 3
    caption_mismatch_threshold: float = 0.5
    caption_itm: bool = False
    level: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    max_listed: int = 50

    def __post_init__(self) -> None:
        for name in _FRACTIONS:
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"audit {name}={value}: a fraction must lie in [0, 1]")
        if not 0.0 < self.min_relative_share <= 1.0:
            raise ConfigError(f"audit min_relative_share={self.min_relative_share}: must lie in (0, 1] (of 1 / K)")
        if self.max_imbalance_ratio is not None and self.max_imbalance_ratio < 1.0:
            raise ConfigError(f"audit max_imbalance_ratio={self.max_imbalance_ratio}: must be >= 1")
        if self.hash_size < 8 or self.hash_size % 8:
            raise ConfigError(f"audit hash_size={self.hash_size}: use a multiple of 8 (16 -> 256-bit hashes)")
        if not 0 <= self.near_duplicate_distance < self.hash_size**2:
            raise ConfigError(
                f"audit near_duplicate_distance={self.near_duplicate_distance}: must lie in 0..{self.hash_size**2 - 1} "
                f"(bits of the {self.hash_size**2}-bit hash)"
            )
        if self.label_error_features not in ("fused", "logits", "image", "text", "image+text"):
            raise ConfigError(
                f"audit label_error_features={self.label_error_features!r}: use fused, logits, image, text or "
                "image+text"
            )
        positive = {"folds": 2, "mismatch_negatives": 2, "caption_negatives": 1, "n_boot": 1, "max_listed": 0}
        for name, least in positive.items():
            if getattr(self, name) < least:
                raise ConfigError(f"audit {name}={getattr(self, name)}: must be >= {least}")
        if not 0.0 < self.caption_mismatch_threshold < 1.0:
            raise ConfigError(
                f"audit caption_mismatch_threshold={self.caption_mismatch_threshold}: must lie strictly between 0 and 1"
            )
        if self.mismatch_z <= 0:
            raise ConfigError(f"audit mismatch_z={self.mismatch_z}: must be > 0")
        check_level(self.level, "audit level")

    @classmethod
    def field_names(cls) -> list[str]:
        """The names of the settings, in declaration order."""
        return [f.name for f in fields(cls)]
