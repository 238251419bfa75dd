"""Counterfactual invariance: change only a protected attribute of each example and measure how the prediction moves.

Text: every term of one value of an attribute (``she``, ``anna``, ``muslim``...) is swapped for its counterpart of
another value in the raw text (see :mod:`mmfuse.probes.lexicons`), once for every other value. Image: a counterfactual
edit function changes the attribute in the image (see :mod:`mmfuse.probes.image_edits`). For each attribute and each
pair of values the report gives the flip rate (the predicted class changes) and the mean |Δp| (how far the probability
of the originally predicted class moves), with percentile-bootstrap intervals that resample whole examples, and a
verdict against a tolerance on the flip rate (and optionally on mean |Δp|).

Reference: Garg et al., "Counterfactual Fairness in Text Classification through Robustness", AIES 2019;
Kusner et al., "Counterfactual Fairness", NeurIPS 2017.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmfuse.errors import ConfigError
from mmfuse.probes.data import ProbeData, predict_probs
from mmfuse.probes.image_edits import ImageCounterfactual, check_edited_image, edit_name
from mmfuse.probes.invariance import AttributeResult, CounterfactualReport, InvarianceResult
from mmfuse.probes.lexicons import AttributeLexicon, load_lexicons
from mmfuse.progress import stage, track
from mmfuse.stats import Check, bootstrap_interval

__all__ = ["assert_invariant", "counterfactual_report", "text_counterfactuals"]

Lists = Mapping[str, AttributeLexicon] | Iterable[str | Path] | None


def text_counterfactuals(texts: Sequence[str], lexicon: AttributeLexicon) -> list[tuple[int, str, str, str]]:
    """Every counterfactual of ``texts`` for one attribute.

    Returns:
        ``(example index, value before, value after, counterfactual text)`` for each text and each value present in
        it, towards every other value of the attribute.

    Example:
        >>> lex = AttributeLexicon("gender", {"female": ("she",), "male": ("he",)})
        >>> text_counterfactuals(["she asks", "what colour ?"], lex)
        [(0, 'female', 'male', 'he asks')]
    """
    out = []
    for i, text in enumerate(texts):
        for source in lexicon.values_in(text):
            for target in lexicon.values:
                if target != source:
                    swapped = lexicon.swap(text, source, target)
                    if swapped != text:
                        out.append((i, source, target, swapped))
    return out


def counterfactual_report(
    model: nn.Module,
    data: ProbeData,
    lists: Lists = None,
    *,
    attributes: Sequence[str] | None = None,
    image_edits: Sequence[ImageCounterfactual] = (),
    tolerance: float = 0.02,
    dp_tolerance: float | None = None,
    batch_size: int = 64,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_shown: int = 5,
) -> CounterfactualReport:
    """Probe ``model`` for invariance to protected attributes of ``data``.

    Args:
        model: called as ``model(images, input_ids, attention_mask)``; logits (B, K) or an object with ``.logits``.
        data: the examples (raw texts and images) and the data's collate function.
        lists: attribute lexicons (name -> :class:`AttributeLexicon`), or lexicon files that extend the built-in
            lists; None = the built-in lists.
        attributes: names of the text attributes to probe; None = every attribute of ``lists`` (those no text
            mentions are reported as absent), ``()`` = none (image edits only).
        image_edits: counterfactual image edits to probe.
        tolerance: largest flip rate that passes.
        dp_tolerance: largest mean |Δp| that passes; None = not checked.
        batch_size: examples per forward.
        n_boot: bootstrap resamples.
        level: confidence level of the intervals.
        seed: seed of the bootstrap.
        n_shown: examples with the largest change kept per attribute, for the report.

    Raises:
        ConfigError: an unknown attribute, an attribute asked for by name that no text mentions, data in which
            no probed attribute occurs at all, or an image edit that changes the image's size or dtype.
    """
    _check_settings(tolerance, dp_tolerance, batch_size, n_boot, level)
    lexicons = _select(_lexicons(lists), attributes)
    settings = {"n_boot": n_boot, "level": level, "seed": seed, "tolerance": tolerance, "dp_tolerance": dp_tolerance}
    with stage("original predictions", unit="examples") as current:
        probs = predict_probs(model, data.batches(batch_size))  # (N, K)
        current.advance(len(probs))
    texts = [str(r["text"]) for r in data.records]
    results = []
    for lexicon in track(lexicons.values(), "text attributes", unit="attributes", detail=lambda lex: lex.name):
        items = text_counterfactuals(texts, lexicon)
        if not items:
            if attributes is not None:
                raise ConfigError(
                    f"attribute {lexicon.name!r}: none of the {len(texts)} texts contains any of its terms "
                    f"(values {list(lexicon.values)}); the data lacks this attribute"
                )
            results.append(AttributeResult(lexicon.name, "text", None, (), (), lexicon.description))
            continue
        indices = [i for i, *_ in items]
        batches = data.batches(batch_size, indices=indices, texts=[t for *_, t in items])
        shown = [(texts[i], t) for i, _, _, t in items]
        pairs = [(a, b) for _, a, b, _ in items]
        results.append(
            _result(lexicon.name, "text", lexicon.description, probs, predict_probs(model, batches), indices, pairs,
                    shown, data.class_names, settings, n_shown)
        )  # fmt: skip
    for counterfactual in track(image_edits, "image edits", unit="edits", detail=lambda edit: edit.name):
        results.append(_image_result(model, data, counterfactual, probs, batch_size, settings, n_shown))
    if all(r.overall is None for r in results):
        names = [r.attribute for r in results] or list(lexicons)
        raise ConfigError(
            f"none of the {len(texts)} examples has a probed attribute ({', '.join(names) or 'none chosen'}): no text "
            "contains a listed term, so there is nothing to swap (a 0 % flip rate would mean nothing)"
        )
    return CounterfactualReport(tuple(results), len(texts), tolerance, dp_tolerance, level)


def assert_invariant(
    model: nn.Module, data: ProbeData, lists: Lists = None, tolerance: float = 0.02, **kwargs: Any
) -> CounterfactualReport:
    """Pytest-friendly check: the report when every probed attribute passes, else an ``AssertionError`` holding it.

    Takes the arguments of :func:`counterfactual_report`.
    """
    report = counterfactual_report(model, data, lists, tolerance=tolerance, **kwargs)
    if not report.passed:
        raise AssertionError("model is not invariant to protected attributes:\n" + report.to_markdown())
    return report


def _lexicons(lists: Lists) -> dict[str, AttributeLexicon]:
    if lists is None:
        return load_lexicons()
    if isinstance(lists, Mapping):
        return dict(lists)
    return load_lexicons(list(lists))


def _select(lexicons: dict[str, AttributeLexicon], attributes: Sequence[str] | None) -> dict[str, AttributeLexicon]:
    if attributes is None:
        return lexicons
    unknown = [a for a in attributes if a not in lexicons]
    if unknown:
        raise ConfigError(f"unknown attribute(s) {unknown}; the lists define {list(lexicons)}")
    return {a: lexicons[a] for a in dict.fromkeys(attributes)}


def _check_settings(tolerance: float, dp_tolerance: float | None, batch_size: int, n_boot: int, level: float) -> None:
    if not 0.0 <= tolerance <= 1.0 or (dp_tolerance is not None and not 0.0 <= dp_tolerance <= 1.0):
        raise ConfigError(f"tolerance ({tolerance}) and dp_tolerance ({dp_tolerance}) must be in [0, 1]")
    if batch_size < 1 or n_boot < 1 or not 0.0 < level < 1.0:
        raise ConfigError(f"batch_size ({batch_size}) and n_boot ({n_boot}) must be >= 1, level ({level}) in (0, 1)")


def _image_result(
    model: nn.Module,
    data: ProbeData,
    counterfactual: ImageCounterfactual,
    probs: Tensor,
    batch_size: int,
    settings: dict[str, Any],
    n_shown: int,
) -> AttributeResult:
    """Probe one image edit on every record that has the attribute."""
    chosen = [(i, p) for i, r in enumerate(data.records) if (p := counterfactual.pair_of(r)) is not None]
    if not chosen:
        raise ConfigError(
            f"image edit {counterfactual.name!r} ({edit_name(counterfactual.edit)}): none of the {len(data)} records "
            "has the attribute it edits"
        )
    indices = [i for i, _ in chosen]
    unchanged = 0

    def edit(image: Tensor, i: int) -> Tensor:
        nonlocal unchanged
        edited = check_edited_image(counterfactual.edit, image, counterfactual.edit(image.clone(), data.records[i]))
        unchanged += int(torch.equal(edited, image))
        return edited

    after = predict_probs(model, data.batches(batch_size, indices=indices, image_edit=edit))
    if unchanged == len(indices):
        raise ConfigError(
            f"image edit {counterfactual.name!r} ({edit_name(counterfactual.edit)}) changed none of the "
            f"{len(indices)} images: the data lacks the attribute it edits"
        )
    shown = [(str(data.records[i]["text"]), "(image edited)") for i in indices]
    return _result(counterfactual.name, "image", counterfactual.description, probs, after, indices,
                   [p for _, p in chosen], shown, data.class_names, settings, n_shown)  # fmt: skip


def _result(
    attribute: str,
    kind: str,
    description: str,
    before: Tensor,
    after: Tensor,
    indices: Sequence[int],
    pairs: Sequence[tuple[str, str]],
    shown: Sequence[tuple[str, str]],
    class_names: tuple[str, ...] | None,
    settings: dict[str, Any],
    n_shown: int,
) -> AttributeResult:
    """Flip rate and mean |Δp| of one attribute, overall and per (value before, value after) pair.

    Args:
        before: (N, K) probabilities on the original examples.
        after: (M, K) probabilities on the counterfactuals.
        indices: (M,) the example each counterfactual comes from.
        pairs: (M,) its (value before, value after).
        shown: (M,) its (original text, counterfactual text) for the examples table.
    """
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    predicted = before.argmax(dim=1)[idx]  # (M,) the original prediction of each counterfactual's example
    flips = (after.argmax(dim=1) != predicted).numpy()
    delta = (after.gather(1, predicted[:, None]) - before[idx].gather(1, predicted[:, None])).squeeze(1).numpy()
    labels = [f"{a} -> {b}" for a, b in pairs]
    overall = _estimate(attribute, flips, np.abs(delta), idx.numpy(), settings)
    per_pair = tuple(
        _estimate(label, flips[mask], np.abs(delta[mask]), idx.numpy()[mask], settings)
        for label in dict.fromkeys(labels)
        for mask in [np.array([lab == label for lab in labels])]
    )
    order = np.argsort(-np.abs(delta), kind="stable")[:n_shown]
    name = (lambda k: class_names[k]) if class_names else str  # noqa: E731
    examples = tuple(
        {
            "index": int(idx[m]),
            "pair": labels[m],
            "original": shown[m][0],
            "counterfactual": shown[m][1],
            "prediction": name(int(predicted[m])),
            "counterfactual_prediction": name(int(after[m].argmax())),
            "p_before": float(before[idx[m], predicted[m]]),
            "p_after": float(after[m, predicted[m]]),
        }
        for m in order
    )
    return AttributeResult(attribute, kind, overall, per_pair, examples, description)


def _estimate(
    label: str, flips: np.ndarray, abs_delta: np.ndarray, clusters: np.ndarray, settings: dict[str, Any]
) -> InvarianceResult:
    boot = {k: settings[k] for k in ("n_boot", "level", "seed")}
    flip_rate = bootstrap_interval(flips, clusters=clusters, **boot)
    mean_abs_dp = bootstrap_interval(abs_delta, clusters=clusters, **boot)
    checks = [
        Check("flip rate", flip_rate, settings["tolerance"]),
        Check("mean |Δp|", mean_abs_dp, settings["dp_tolerance"]),
    ]
    passed = all(check.passed is not False for check in checks)  # a tolerance of None is not checked
    return InvarianceResult(label, len(np.unique(clusters)), len(flips), flip_rate, mean_abs_dp, passed)
