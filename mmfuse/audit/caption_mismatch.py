"""Likely caption-image mismatches in image-caption data, found with a retrieval model's contrastive embeddings.

Each caption row ``t`` is paired with its own image and with ``k`` other images of its split drawn at random.
Every pair ``(t, j)`` is described by how well the caption and the image fit, relative to the whole split:

* ``t2i_logprob``: log-probability of image ``j`` among the split's images given caption ``t`` (softmax of the
  similarities at the model's logit scale);
* ``i2t_logprob``: log-probability of caption ``t`` among the split's captions given image ``j``;
* ``cosine``: the contrastive similarity itself;
* when every image has two captions or more, the agreement of ``t`` with the *other* captions of ``j``: their mean
  cosine (``caption_agreement``) and its log-probability among the split's images
  (``caption_agreement_logprob``): a caption that moved to another image does not read like its new siblings;
* optionally ``itm_logit``: the logit of the ITM head's match probability of the pair.

The real pairs are a mixture: matched pairs, and an unknown fraction ``pi`` of mismatched ones, which look like
pairs of a caption with a random image. The random pairs are therefore labelled samples of the mismatched
component, and the real pairs are unlabelled: the positive-unlabelled setting of Elkan and Noto ("Learning
classifiers from only positive and unlabeled data", KDD 2008). A logistic regression (the audit's probe,
:func:`~mmfuse.audit.label_errors.make_probe`) tells random pairs from real ones, out of fold by image, and its
scores are calibrated into ``g = P(random pair | features)`` by isotonic regression (Zadrozny and Elkan, KDD 2002),
cross-fitted over the same folds: the estimate below needs calibrated probabilities, which a linear logit is not
where the random pairs' region saturates. ``c = P(random | pair of the mismatched component)`` is estimated by the
mean of ``g`` over the random pairs, and a real pair's probability of being a mismatch is
``(1 - c) / c * g / (1 - g)``. The mean of these is the estimated mismatched fraction ``pi``; a caption is flagged when
its own probability reaches ``threshold`` (1/2: the Bayes decision). Each split is calibrated on its own pairs:
similarities on the training split of a model trained on it are higher than on held-out data.

Confident learning (``cleanlab.filter.find_label_issues``, as :mod:`mmfuse.audit.label_errors` uses it) on the
same calibrated probabilities, real pairs given "matched" and random pairs "not matched", flags about as well on
planted swaps (``benchmarks/audit_flickr8k_mismatch.py`` measures both); the rule here is kept because it gives every
caption a probability and the split an estimated mismatched share.

The similarities of every caption with every image of the split are computed in blocks of captions: time grows
as captions x images x embedding width, memory as a block x images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mmfuse.audit.features import RetrievalFeatures
from mmfuse.audit.label_errors import DetectionScore, detection_score, make_probe
from mmfuse.errors import ConfigError
from mmfuse.stats import Check, Interval, wilson_interval

__all__ = [
    "CaptionMismatches",
    "MismatchProbabilities",
    "draw_other_images",
    "pair_features",
    "mismatch_probabilities",
    "find_caption_mismatches",
]

_BLOCK = 1024  # captions whose similarities to every image are held at once


@dataclass(frozen=True)
class MismatchProbabilities:
    """The positive-unlabelled probe's view of one split.

    Attributes:
        posterior: (n,) estimated probability that each row's caption does not describe its image.
        random_pair: (n,) the probe's calibrated out-of-fold probability that the row's pair is a random one (``g``).
        random_pairs: (n, k) the same for the random pairs (of ``other_images``).
        label_frequency: ``c``, the estimated probability the probe gives a pair of the mismatched component.
        separation: out-of-fold ROC AUC of the probe, random pairs against real pairs (0.5 = no separation).
        feature_names: the pair features the probe read.
    """

    posterior: np.ndarray
    random_pair: np.ndarray
    random_pairs: np.ndarray
    label_frequency: float
    separation: float
    feature_names: tuple[str, ...]

    @property
    def prior(self) -> float:
        """The estimated mismatched fraction of the split, ``pi`` (mean posterior)."""
        return float(self.posterior.mean()) if len(self.posterior) else float("nan")


@dataclass(frozen=True)
class CaptionMismatches:
    """Likely caption-image mismatches of one split.

    Attributes:
        split: the split's name.
        n: caption rows of the split.
        num_images: distinct images of the split.
        indices: flagged rows, most likely mismatch first.
        posterior: (n,) estimated probability that each row's caption does not describe its image.
        own_rank: (n,) rank of each row's own image among the split's images by similarity (0 = the best).
        best_image: (n,) the image each caption fits best (an index into the split's distinct images).
        prior: estimated mismatched fraction (``pi``, mean posterior) with a bootstrap interval over images.
        fraction: flagged fraction with a Wilson interval.
        separation: the probe's ROC AUC, random pairs against real pairs.
        feature_names: the pair features the probe read.
        listed: per flagged row (in ``indices`` order): its image id, its text and the best-fitting image's id.
        checks: the flagged fraction against its maximum.
        ground_truth: precision and recall against known mismatches (planted swaps), when given.
    """

    split: str
    n: int
    num_images: int
    indices: list[int]
    posterior: np.ndarray
    own_rank: np.ndarray
    best_image: np.ndarray
    prior: Interval
    fraction: Interval
    separation: float
    feature_names: tuple[str, ...]
    listed: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    ground_truth: DetectionScore | None = None

    def as_dict(self, max_listed: int) -> dict[str, Any]:
        """JSON-ready fields, listing at most ``max_listed`` rows."""
        rows = [
            {"index": i, "posterior": round(float(self.posterior[i]), 4), "own_image_rank": int(self.own_rank[i]),
             **extra}
            for i, extra in zip(self.indices[:max_listed], self.listed[:max_listed])
        ]  # fmt: skip
        return {
            "split": self.split,
            "n": self.n,
            "images": self.num_images,
            "flagged": len(self.indices),
            "fraction": self.fraction.as_dict(),
            "estimated_mismatch_fraction": self.prior.as_dict(),
            "separation_auc": round(self.separation, 4),
            "features": list(self.feature_names),
            "ground_truth": None if self.ground_truth is None else self.ground_truth.as_dict(),
            "listed": rows,
        }


def draw_other_images(image_of: ArrayLike, num_images: int, k: int, seed: int = 0) -> np.ndarray:
    """``k`` images per row drawn uniformly from the split's images other than the row's own.

    Args:
        image_of: (n,) each row's image.
        num_images: I, the split's distinct images (>= 2).
        k: images per row (>= 1).
        seed: seed of the draw.

    Returns:
        (n, k) int64 image indices, none equal to the row's own.

    Example:
        >>> other = draw_other_images([0, 0, 1, 2], 3, 2)
        >>> other.shape, bool((other != [[0], [0], [1], [2]]).all())
        ((4, 2), True)
    """
    own = np.asarray(image_of, dtype=np.int64)
    if num_images < 2:
        raise ConfigError(f"caption mismatches need at least 2 images in a split, got {num_images}")
    if k < 1:
        raise ConfigError(f"caption_negatives={k}: must be >= 1")
    offset = np.random.default_rng(seed).integers(1, num_images, size=(len(own), k))  # never 0: never the own image
    drawn: np.ndarray = (own[:, None] + offset) % num_images
    return drawn


def pair_features(
    features: RetrievalFeatures, texts: np.ndarray, images: np.ndarray, match_logit: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The features of caption-image pairs, relative to the whole split (see the module docstring).

    Args:
        features: the split's embeddings.
        texts: (P,) caption rows.
        images: (P,) images paired with them.
        match_logit: (P,) logit of the ITM head's match probability of each pair; None = not used.

    Returns:
        (P, F) float64 features and their F names.
    """
    scale = features.logit_scale
    text_embeds = features.text_embeds.astype(np.float64)  # (n, E)
    image_embeds = features.image_embeds.astype(np.float64)  # (I, E)
    image_of = features.image_of
    counts = np.bincount(image_of, minlength=len(image_embeds)).astype(np.float64)  # (I,)
    use_agreement = bool(counts.min() >= 2)
    caption_sums = np.zeros_like(image_embeds)
    np.add.at(caption_sums, image_of, text_embeds)  # (I, E) sum of each image's caption embeddings
    row_lse, agreement_lse = _row_normalisers(features, caption_sums, counts, use_agreement)
    column_lse = _column_normaliser(features)  # (I,)
    cosine = np.einsum("pe,pe->p", text_embeds[texts], image_embeds[images])
    columns = {
        "t2i_logprob": scale * cosine - row_lse[texts],
        "i2t_logprob": scale * cosine - column_lse[images],
        "cosine": cosine,
    }
    if use_agreement:
        agreement = _agreement(text_embeds[texts], caption_sums[images], counts[images], image_of[texts] == images)
        columns["caption_agreement"] = agreement
        columns["caption_agreement_logprob"] = scale * agreement - agreement_lse[texts]
    if match_logit is not None:
        columns["itm_logit"] = np.asarray(match_logit, dtype=np.float64)
    return np.stack(list(columns.values()), axis=1), tuple(columns)


def _agreement(text: np.ndarray, sums: np.ndarray, counts: np.ndarray, is_own: np.ndarray) -> np.ndarray:
    """(P,) mean cosine of each caption with the captions of its paired image, itself left out of its own image's.

    Args:
        text: (P, E) unit-norm caption embeddings.
        sums: (P, E) sums of the paired images' caption embeddings.
        counts: (P,) captions of the paired images.
        is_own: (P,) whether the paired image is the caption's own.
    """
    own = is_own.astype(np.float64)
    return (np.einsum("pe,pe->p", text, sums) - own * np.einsum("pe,pe->p", text, text)) / (counts - own)


def _row_normalisers(
    features: RetrievalFeatures, caption_sums: np.ndarray, counts: np.ndarray, use_agreement: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(n,) log-sum-exp over the split's images of each caption's scaled similarity, and of its scaled agreement
    (zeros without agreement)."""
    scale, image_of = features.logit_scale, features.image_of
    image_embeds = features.image_embeds.astype(np.float64)
    n = len(image_of)
    row_lse, agreement_lse = np.zeros(n), np.zeros(n)
    for start in range(0, n, _BLOCK):
        rows = np.arange(start, min(start + _BLOCK, n))
        text = features.text_embeds[rows].astype(np.float64)  # (b, E)
        row_lse[rows] = _logsumexp(scale * text @ image_embeds.T, axis=1)  # (b, I) -> (b,)
        if use_agreement:
            sums = text @ caption_sums.T  # (b, I)
            sizes = np.broadcast_to(counts, sums.shape).copy()
            sums[np.arange(len(rows)), image_of[rows]] -= np.einsum("be,be->b", text, text)
            sizes[np.arange(len(rows)), image_of[rows]] -= 1
            agreement_lse[rows] = _logsumexp(scale * sums / sizes, axis=1)
    return row_lse, agreement_lse


def _column_normaliser(features: RetrievalFeatures) -> np.ndarray:
    """(I,) log-sum-exp over the split's captions of each image's scaled similarity."""
    image_embeds = features.image_embeds.astype(np.float64)
    total = np.full(len(image_embeds), -np.inf)
    for start in range(0, len(features), _BLOCK):
        text = features.text_embeds[start : start + _BLOCK].astype(np.float64)  # (b, E)
        total = np.logaddexp(total, _logsumexp(features.logit_scale * text @ image_embeds.T, axis=0))
    return total


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    from scipy.special import logsumexp

    result: np.ndarray = logsumexp(values, axis=axis)
    return result


def mismatch_probabilities(
    features: RetrievalFeatures, other_images: np.ndarray, folds: int = 5, seed: int = 0
) -> MismatchProbabilities:
    """Each caption's probability of not describing its image, by positive-unlabelled learning on pair features.

    Args:
        features: the split's embeddings (with ``match_prob`` the ITM head's probabilities are a feature too:
            column 0 for the rows' own images, the others for ``other_images``).
        other_images: (n, k) random other images per row (:func:`draw_other_images`).
        folds: folds of the out-of-fold probe, split by image (at most the number of images).
        seed: seed of the folds and the probe.
    """
    from sklearn.metrics import roc_auc_score

    n, num_images = len(features), len(features.image_embeds)
    if other_images.ndim != 2 or other_images.shape[0] != n:
        raise ValueError(f"other_images {other_images.shape} must be (n={n}, k)")
    if folds < 2:
        raise ConfigError(f"folds={folds}: must be >= 2")
    k = other_images.shape[1]
    texts = np.r_[np.arange(n), np.repeat(np.arange(n), k)]  # (n + n k,) real pairs, then random pairs
    images = np.r_[features.image_of, other_images.reshape(-1)]
    x, names = pair_features(features, texts, images, _match_logit(features, other_images))
    is_random = np.r_[np.zeros(n, dtype=np.int64), np.ones(n * k, dtype=np.int64)]
    image_fold = np.random.default_rng(seed).permutation(num_images) % min(folds, num_images)
    fold = image_fold[features.image_of[texts]]  # a pair goes with its caption's image
    score = np.empty(len(texts))  # out-of-fold logit of the probe
    for f in np.unique(fold):
        held_out = fold == f
        probe = make_probe(seed=seed).fit(x[~held_out], is_random[~held_out])
        score[held_out] = probe.decision_function(x[held_out])
    g = _calibrated(score, is_random, fold)
    c = float(g[n:].mean())
    odds = np.clip(g[:n], 1e-12, 1 - 1e-12)
    posterior = np.clip((1 - c) / c * odds / (1 - odds), 0.0, 1.0)
    separation = float(roc_auc_score(is_random, score))
    return MismatchProbabilities(posterior, g[:n], g[n:].reshape(n, k), c, separation, names)


def _calibrated(score: np.ndarray, is_random: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """(P,) ``P(random pair | score)``: isotonic regression of ``is_random`` on the out-of-fold scores, each fold
    predicted by the fit on the others."""
    from sklearn.isotonic import IsotonicRegression

    g = np.empty(len(score))
    for f in np.unique(fold):
        held_out = fold == f
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        g[held_out] = iso.fit(score[~held_out], is_random[~held_out]).predict(score[held_out])
    return g


def _match_logit(features: RetrievalFeatures, other_images: np.ndarray) -> np.ndarray | None:
    """(n + n k,) logits of the ITM probabilities of the real pairs, then of the random ones; None without ITM."""
    if features.match_prob is None or features.match_images is None:
        return None
    own, rest = features.match_images[:, 0], features.match_images[:, 1:]
    if not (np.array_equal(own, features.image_of) and np.array_equal(rest, other_images)):
        raise ValueError("the ITM head scored other pairs than the rows' own images and other_images")
    p = np.clip(np.r_[features.match_prob[:, 0], features.match_prob[:, 1:].reshape(-1)], 1e-6, 1 - 1e-6)
    logit: np.ndarray = np.log(p / (1 - p))
    return logit


def find_caption_mismatches(
    split: str,
    features: RetrievalFeatures,
    other_images: np.ndarray,
    image_ids: list[str] | None = None,
    texts: list[str] | None = None,
    threshold: float = 0.5,
    max_fraction: float | None = 0.02,
    is_mismatched: ArrayLike | None = None,
    folds: int = 5,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> CaptionMismatches:
    """Flag the caption rows whose estimated probability of a mismatch reaches ``threshold``.

    Args:
        split: the split's name (for the report).
        features: the split's embeddings.
        other_images: (n, k) random other images per row (:func:`draw_other_images`).
        image_ids: the split's distinct image ids, in image order (to list the flagged rows); None = indices.
        texts: the n rows' captions (to list the flagged rows); None = not listed.
        threshold: flag at or above this probability of a mismatch; in (0, 1).
        max_fraction: largest allowed flagged fraction; None = reported only.
        is_mismatched: (n,) bool ground truth (planted swaps), scored when given.
        folds: folds of the out-of-fold probe.
        level: confidence level of the intervals.
        n_boot: bootstrap resamples of the estimated mismatched fraction (resampling images).
        seed: seed of the folds, the probe and the bootstrap.
    """
    from mmfuse.stats import bootstrap_interval

    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"caption_mismatch_threshold={threshold}: must lie strictly between 0 and 1")
    found = mismatch_probabilities(features, other_images, folds, seed)
    posterior = found.posterior
    order = np.argsort(-posterior, kind="stable")
    flagged = [int(i) for i in order if posterior[i] >= threshold]
    own_rank, best = _ranks(features)
    names = image_ids if image_ids is not None else [str(i) for i in range(len(features.image_embeds))]
    listed = [
        {"image_id": names[features.image_of[i]], "best_image_id": names[best[i]],
         **({} if texts is None else {"text": texts[i]})}
        for i in flagged
    ]  # fmt: skip
    prior = bootstrap_interval(posterior, n_boot=n_boot, level=level, seed=seed, clusters=features.image_of)
    fraction = wilson_interval(len(flagged), len(posterior), level)
    check = Check(f"caption mismatch fraction ({split})", fraction, max_fraction)
    truth = None if is_mismatched is None else detection_score(flagged, is_mismatched, level)
    return CaptionMismatches(
        split, len(posterior), len(features.image_embeds), flagged, posterior, own_rank, best, prior, fraction,
        found.separation, found.feature_names, listed, [check], truth,
    )  # fmt: skip


def _ranks(features: RetrievalFeatures) -> tuple[np.ndarray, np.ndarray]:
    """(n,) rank of each caption's own image among the split's images (0 = the best), and (n,) its best image."""
    n = len(features)
    rank, best = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for start in range(0, n, _BLOCK):
        rows = np.arange(start, min(start + _BLOCK, n))
        sims = features.text_embeds[rows] @ features.image_embeds.T  # (b, I)
        own = sims[np.arange(len(rows)), features.image_of[rows]]  # (b,)
        rank[rows] = (sims > own[:, None]).sum(1)
        best[rows] = sims.argmax(1)
    return rank, best
