"""Robustness outside the lab: accuracy under image corruptions, text perturbations and both at once, at five
severities, and on a shifted split; each with its relative drop from the clean accuracy and bootstrap intervals.

Every perturbation is seeded per (seed, kind, name, example), so a result does not depend on the batch size or on
which other conditions run, and one example sees the same noise pattern (or the same words touched, a superset at
each higher severity) at every severity: accuracy curves move with the strength, not with a new random draw. Text
perturbations edit the raw text before the data's collate function tokenizes it; image corruptions edit the
collated (3, H, W) float images.

Reference: Hendrycks & Dietterich, ICLR 2019 (ImageNet-C: corruptions x 5 severities, relative drop of accuracy).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from torch import Tensor, nn

from mmfuse.errors import ConfigError
from mmfuse.io import write_atomic, write_json
from mmfuse.probes.corruptions import IMAGE_CORRUPTIONS, corrupt_image
from mmfuse.probes.data import ImageEditFn, ProbeData, TextEditFn, predict_probs
from mmfuse.probes.text_perturb import TEXT_PERTURBATIONS, perturb_text
from mmfuse.progress import stage, track
from mmfuse.stats import Interval, bootstrap_interval

__all__ = [
    "Condition",
    "PlannedCondition",
    "RobustnessReport",
    "bootstrap_relative_drop",
    "condition_label",
    "example_seed",
    "plan_conditions",
    "robustness_report",
]

Joint = Literal["mixed", "pairs", "none"]
SEVERITY_LEVELS = (1, 2, 3, 4, 5)
PlannedCondition = tuple[str, str, int, TextEditFn | None, ImageEditFn | None]
"""``(kind, name, severity, text edit, image edit)`` of one condition; an edit takes the example's index."""


@dataclass(frozen=True)
class Condition:
    """Accuracy under one perturbation at one severity.

    Attributes:
        kind: ``image``, ``text``, ``joint`` (both at the same severity) or ``shift`` (a shifted split).
        name: the corruption / perturbation (``noise+typos`` for a joint pair, ``mixed`` for a random pair per
            example, the split name for ``shift``).
        severity: 1..5 (0 for a shifted split).
        accuracy: accuracy under the perturbation.
        relative_drop: ``1 - accuracy / clean accuracy``.
    """

    kind: str
    name: str
    severity: int
    accuracy: Interval
    relative_drop: Interval

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "severity": self.severity,
            "accuracy": self.accuracy.as_dict("value", "low", "high", brief=True),
            "relative_drop": self.relative_drop.as_dict("value", "low", "high", brief=True),
        }


@dataclass(frozen=True)
class RobustnessReport:
    """Accuracy of a model under perturbations, against its clean accuracy.

    Attributes:
        clean: accuracy on the unperturbed examples.
        conditions: one entry per (kind, name, severity).
        split: the split probed.
        level: confidence level of the intervals.
        seed: seed of the perturbations and of the bootstrap.
    """

    clean: Interval
    conditions: tuple[Condition, ...]
    split: str
    level: float
    seed: int

    def curves(self, kind: str) -> dict[str, list[Condition]]:
        """name -> its conditions by severity, for one kind."""
        out: dict[str, list[Condition]] = {}
        for c in self.conditions:
            if c.kind == kind:
                out.setdefault(c.name, []).append(c)
        return {name: sorted(cs, key=lambda c: c.severity) for name, cs in out.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "n_examples": self.clean.n,
            "level": self.level,
            "seed": self.seed,
            "clean_accuracy": self.clean.as_dict("value", "low", "high", brief=True),
            "conditions": [c.to_dict() for c in self.conditions],
        }

    def write(self, out_dir: str | Path, plot: bool = True) -> list[Path]:
        """Write ``robustness.json``, ``robustness.md`` and (``plot``) ``robustness.png``; returns the paths."""
        from mmfuse.probes.robustness_format import robustness_markdown

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "robustness.json", out / "robustness.md"]
        write_json(paths[0], self.to_dict())
        image = None
        if plot:
            from mmfuse.probes.plots import save_robustness_curves

            image = save_robustness_curves(self, out / "robustness.png")
            paths.append(image)
        write_atomic(paths[1], robustness_markdown(self, image.name if image else None))
        return paths


def example_seed(*parts: Any) -> int:
    """A stable 63-bit seed from its parts (the same across runs and machines, unlike ``hash``)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def robustness_report(
    model: nn.Module,
    data: ProbeData,
    *,
    image_corruptions: Sequence[str] | None = None,
    text_perturbations: Sequence[str] | None = None,
    joint: Joint = "mixed",
    shift: ProbeData | None = None,
    split: str = "test",
    severities: Sequence[int] = SEVERITY_LEVELS,
    batch_size: int = 64,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> RobustnessReport:
    """Accuracy of ``model`` on ``data`` under every perturbation and severity, and on a shifted split.

    Args:
        model: called as ``model(images, input_ids, attention_mask)``; logits (B, K) or an object with ``.logits``.
        data: labelled examples and the data's collate function.
        image_corruptions: names in :data:`~mmfuse.probes.corruptions.IMAGE_CORRUPTIONS`; None = all.
        text_perturbations: names in :data:`~mmfuse.probes.text_perturb.TEXT_PERTURBATIONS`; None = all.
        joint: ``mixed`` = each example gets one random image corruption and one random text perturbation at the
            same severity (one curve), ``pairs`` = every (image, text) pair (a curve each), ``none`` = skip.
        shift: labelled examples of a shifted split, compared against the clean accuracy on ``data``.
        split: name of the split ``data`` comes from (for the report).
        severities: which of 1..5 to run.
        batch_size: examples per forward.
        n_boot: bootstrap resamples.
        level: confidence level.
        seed: seed of every perturbation and of the bootstrap.
    """
    plan = plan_conditions(image_corruptions, text_perturbations, joint, severities, seed)
    labels = data.labels.numpy()
    boot: dict[str, Any] = {"n_boot": n_boot, "level": level, "seed": seed}

    def correct(text_edit: TextEditFn | None = None, image_edit: ImageEditFn | None = None) -> np.ndarray:
        batches = data.batches(batch_size, text_edit=text_edit, image_edit=image_edit)
        return (predict_probs(model, batches).argmax(dim=1).numpy() == labels).astype(np.float64)

    with stage("clean accuracy", unit="examples") as current:
        clean = correct()
        current.advance(len(clean))
    conditions = []
    for kind, name, severity, text_edit, image_edit in track(
        plan, "conditions", unit="conditions", detail=condition_label
    ):
        accuracy, drop = bootstrap_relative_drop(clean, correct(text_edit, image_edit), paired=True, **boot)
        conditions.append(Condition(kind, name, severity, accuracy, drop))
    if shift is not None:
        with stage("shifted split", unit="examples") as current:
            probs = predict_probs(model, shift.batches(batch_size))
            shifted = (probs.argmax(1).numpy() == shift.labels.numpy()) * 1.0
            current.advance(len(shifted))
        accuracy, drop = bootstrap_relative_drop(clean, shifted, paired=False, **boot)
        conditions.append(Condition("shift", "shift", 0, accuracy, drop))
    return RobustnessReport(bootstrap_interval(clean, **boot), tuple(conditions), split, level, seed)


def bootstrap_relative_drop(
    reference: ArrayLike,
    perturbed: ArrayLike,
    *,
    paired: bool,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[Interval, Interval]:
    """Accuracy under a perturbation and its relative drop ``1 - acc_perturbed / acc_reference``, with
    percentile-bootstrap intervals (:func:`mmfuse.stats.bootstrap_interval`).

    Args:
        reference: (n,) 0/1 correctness on the reference (clean) data.
        perturbed: (m,) 0/1 correctness on the perturbed data.
        paired: the two arrays hold the same examples (then m == n and examples are resampled together), else the
            two samples are resampled independently (e.g. a shifted split against the test split).
        n_boot: bootstrap resamples.
        level: confidence level.
        seed: seed of the resampling.

    Returns:
        (accuracy on ``perturbed``, relative drop); the drop is undefined (None) when the reference accuracy is 0,
        and resamples whose reference accuracy is 0 are left out of its interval.
    """
    accuracy = bootstrap_interval(perturbed, None, n_boot, level, seed)
    drop = bootstrap_interval(perturbed, _relative_drop, n_boot, level, seed, other=reference, paired=paired)
    return accuracy, drop


def _relative_drop(perturbed: np.ndarray, reference: np.ndarray) -> float:
    clean = float(reference.mean())
    return 1.0 - float(perturbed.mean()) / clean if clean > 0 else math.nan


def condition_label(condition: PlannedCondition) -> str:
    """``image gaussian_noise @3``: a planned condition, for the progress bar."""
    kind, name, severity, _, _ = condition
    return f"{kind} {name} @{severity}"


def _names(chosen: Sequence[str] | None, known: list[str], kind: str) -> list[str]:
    if chosen is None:
        return known
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise ConfigError(f"unknown {kind}(s) {unknown}; known: {known}")
    return list(dict.fromkeys(chosen))


def _image_edit(name: str, severity: int, seed: int) -> ImageEditFn:
    def edit(image: Tensor, i: int) -> Tensor:
        return corrupt_image(name, image[None], severity, example_seed(seed, "image", name, i))[0]

    return edit


def _text_edit(name: str, severity: int, seed: int) -> TextEditFn:
    def edit(text: str, i: int) -> str:
        return perturb_text(name, text, severity, example_seed(seed, "text", name, i))

    return edit


def _mixed(images: list[str], texts: list[str], severity: int, seed: int) -> tuple[TextEditFn, ImageEditFn]:
    """One random image corruption and one random text perturbation per example (the same ones at every
    severity), both at ``severity``."""

    def pick(i: int) -> tuple[str, str]:
        rng = random.Random(example_seed(seed, "mixed", i))
        return rng.choice(images), rng.choice(texts)

    def text_edit(text: str, i: int) -> str:
        return _text_edit(pick(i)[1], severity, seed)(text, i)

    def image_edit(image: Tensor, i: int) -> Tensor:
        return _image_edit(pick(i)[0], severity, seed)(image, i)

    return text_edit, image_edit


def plan_conditions(
    image_corruptions: Sequence[str] | None,
    text_perturbations: Sequence[str] | None,
    joint: Joint,
    severities: Sequence[int],
    seed: int,
) -> list[PlannedCondition]:
    """Every condition a robustness probe runs, its perturbations seeded per (seed, kind, name, example index).

    Args: as :func:`robustness_report`.

    Raises:
        ConfigError: an unknown name, joint mode or severity, or nothing to run.
    """
    images = _names(image_corruptions, IMAGE_CORRUPTIONS.names(), "image corruption")
    texts = _names(text_perturbations, TEXT_PERTURBATIONS.names(), "text perturbation")
    if joint not in ("mixed", "pairs", "none"):
        raise ConfigError(f"joint={joint!r}: use mixed, pairs or none")
    if not severities or any(s not in SEVERITY_LEVELS for s in severities):
        raise ConfigError(f"severities {list(severities)}: choose from {list(SEVERITY_LEVELS)}")
    plan: list[PlannedCondition] = []
    plan += [("image", c, s, None, _image_edit(c, s, seed)) for c in images for s in severities]
    plan += [("text", t, s, _text_edit(t, s, seed), None) for t in texts for s in severities]
    if images and texts and joint == "mixed":
        plan += [("joint", "mixed", s, *_mixed(images, texts, s, seed)) for s in severities]
    if images and texts and joint == "pairs":
        plan += [
            ("joint", f"{c}+{t}", s, _text_edit(t, s, seed), _image_edit(c, s, seed))
            for c in images
            for t in texts
            for s in severities
        ]
    if not plan:
        raise ConfigError("nothing to run: no image corruption and no text perturbation chosen")
    return plan
