"""VQA v2 answers: the official normalisation, an answer vocabulary, soft targets and the soft accuracy metric.

Reference: Goyal et al., "Making the V in VQA Matter" (CVPR 2017), and the official evaluation code
(``vqaEval.py`` of the VQA API): an answer is right in proportion to how many of the 10 human answers agree,
``min(#humans that said it / 3, 1)``, averaged over the 10 ways of leaving one human out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from mmfuse.data._vqa_tables import ARTICLES, CONTRACTIONS, NUMBER_WORDS, PUNCTUATION

__all__ = [
    "UNKNOWN_ANSWER",
    "normalize_answer",
    "build_answer_vocabulary",
    "soft_targets",
    "soft_target_tensor",
    "vqa_accuracy",
]

UNKNOWN_ANSWER = "<unk>"  # class 0 of every answer vocabulary
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the official pattern (drops a '.' not followed by a digit)
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _strip_punctuation(text: str) -> str:
    """The official ``processPunctuation``: drop a mark next to a space (or anywhere once a digit,digit appears),
    else replace it by a space; then drop periods that are not decimal points."""
    out = text
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out)


def normalize_answer(answer: str) -> str:
    """The official VQA answer normalisation: whitespace, punctuation, lower case, number words to digits, articles
    dropped, apostrophe-less contractions restored.

    Example:
        >>> normalize_answer("Two dogs!")
        '2 dogs'
        >>> normalize_answer("The Red one.")
        'red 1'
        >>> normalize_answer("dont know")
        "don't know"
    """
    text = _strip_punctuation(answer.replace("\n", " ").replace("\t", " ").strip())
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def build_answer_vocabulary(answer_lists: Iterable[Sequence[str]], size: int) -> tuple[str, ...]:
    """``<unk>`` followed by the ``size`` most frequent normalised answers (ties: alphabetical).

    Args:
        answer_lists: per question, the human answers (10 in VQA v2) of the *training* split only.
        size: K, the number of answers kept; every other answer maps to index 0 (``<unk>``).

    Example:
        >>> build_answer_vocabulary([["yes"] * 6 + ["no"] * 4, ["two", "2", "3"]], size=3)  # "two" counts as "2"
        ('<unk>', 'yes', 'no', '2')
    """
    counts: Counter[str] = Counter()
    for answers in answer_lists:
        counts.update(normalize_answer(a) for a in answers)
    counts.pop(UNKNOWN_ANSWER, None)
    counts.pop("", None)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:size]
    return (UNKNOWN_ANSWER, *(answer for answer, _ in ranked))


def soft_targets(answers: Sequence[str], answer_index: dict[str, int]) -> tuple[list[int], list[float]]:
    """Class indices and scores of one question's answers: each score is the VQA accuracy that predicting the answer
    earns (:func:`vqa_accuracy`; with 10 annotators 0.3, 0.6, 0.9 and 1.0 for 1, 2, 3 and 4+ of them).

    These serve as the soft targets of a BCE loss (as in MMF and the bottom-up VQA models) and give the soft VQA
    accuracy of a prediction directly: ``score[predicted class]``. Answers outside the vocabulary are left out:
    predicting ``<unk>`` can never score, so it gets no target mass (such a question may end up with no target).

    Example:
        >>> soft_targets(["yes"] * 8 + ["no", "maybe"], {"<unk>": 0, "yes": 1, "no": 2})
        ([1, 2], [1.0, 0.3])
    """
    counts = Counter(normalize_answer(a) for a in answers)
    known = sorted((answer_index[a], n) for a, n in counts.items() if a in answer_index and a != UNKNOWN_ANSWER)
    return [index for index, _ in known], [_accuracy_of_count(n, len(answers)) for _, n in known]


def soft_target_tensor(indices: Sequence[Sequence[int]], scores: Sequence[Sequence[float]], num_classes: int) -> Tensor:
    """Dense soft targets of a batch (for a BCE loss, and the VQA accuracy of any prediction).

    Returns:
        (B, K) float32, ``scores`` placed at ``indices`` and 0 elsewhere.
    """
    targets = torch.zeros(len(indices), num_classes)
    for row, (idx, val) in enumerate(zip(indices, scores)):
        targets[row, list(idx)] = torch.tensor(list(val), dtype=torch.float32)
    return targets


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The official soft VQA accuracy of one prediction: for each of the human answers, leave it out and score
    ``min(#other humans that gave the prediction / 3, 1)``; return the mean.

    Both sides are normalised with :func:`normalize_answer`. (The official code skips normalisation when all
    humans gave the same string; normalising always only forgives formatting, never changes a match.)

    Example:
        >>> vqa_accuracy("two", ["2"] * 10)
        1.0
        >>> round(vqa_accuracy("yes", ["yes"] * 2 + ["no"] * 8), 4)
        0.6
        >>> vqa_accuracy("cat", ["dog"] * 10)
        0.0
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    predicted = normalize_answer(prediction)
    return _accuracy_of_count(sum(normalize_answer(a) == predicted for a in answers), len(answers))


def _accuracy_of_count(matches: int, total: int) -> float:
    """Mean over the ``total`` leave-one-out subsets of ``min(#matches in the subset / 3, 1)``: the subsets that
    leave out a non-matching annotator keep all ``matches``, the others keep one fewer."""
    kept_all = (total - matches) * min(matches / 3.0, 1.0)
    kept_one_fewer = matches * min((matches - 1) / 3.0, 1.0)
    return round((kept_all + kept_one_fewer) / total, 6)  # 0.3, not 0.30000000000000004
