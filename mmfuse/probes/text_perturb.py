"""Text perturbations at five severities, on the raw text before any tokenizer sees it.

Each perturbation takes a text, a severity 1..5 and a seeded ``random.Random`` and returns the perturbed text; the
severity sets the share of words touched (``WORD_RATES``, on average; short texts are not rounded up). Words are
whitespace-separated tokens that hold a letter; punctuation tokens (``?``, ``:``) are left alone. With the same seed,
a higher severity touches a superset of the words, each edited the same way, so strength grows with severity.

- ``typos``: one keyboard typo per chosen word (swap two neighbouring letters, drop one, double one, or hit a
  neighbouring key), the kind of noise studied by Belinkov & Bisk, "Synthetic and Natural Noise Both Break Neural
  Machine Translation", ICLR 2018.
- ``case``: the chosen words written in upper case, title case or random case.
- ``word_dropout``: the chosen words removed (at least one word stays).
- ``synonyms``: the chosen words that have an entry in a synonym list (shipped: ``mmfuse/probes/wordlists/
  synonyms.json``, a JSON object word -> list of synonyms) replaced by a random synonym, case kept.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path

from mmfuse.errors import ConfigError
from mmfuse.io import read_json
from mmfuse.registry import Registry

__all__ = ["SYNONYMS_FILE", "TEXT_PERTURBATIONS", "WORD_RATES", "TextPerturbation", "load_synonyms", "perturb_text"]

TextPerturbation = Callable[[str, int, random.Random], str]
TEXT_PERTURBATIONS: Registry[TextPerturbation] = Registry("text_perturbation")
"""name -> ``(text, severity 1..5, rng) -> text``."""

WORD_RATES: dict[str, tuple[float, ...]] = {
    "typos": (0.1, 0.2, 0.3, 0.4, 0.5),
    "case": (0.1, 0.2, 0.3, 0.4, 0.5),
    "word_dropout": (0.1, 0.2, 0.3, 0.4, 0.5),
    "synonyms": (0.2, 0.4, 0.6, 0.8, 1.0),  # of the words that have a synonym
}
"""Perturbation name -> share of words it touches at severities 1..5."""

SYNONYMS_FILE = Path(__file__).with_name("wordlists") / "synonyms.json"
_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _rate(name: str, severity: int) -> float:
    if not 1 <= severity <= len(WORD_RATES[name]):
        raise ValueError(f"{name}: severity must be 1..{len(WORD_RATES[name])}, got {severity}")
    return WORD_RATES[name][severity - 1]


def _is_word(token: str) -> bool:
    return any(c.isalpha() for c in token)


def _chosen(
    words: list[str], rate: float, rng: random.Random, eligible: Callable[[str], bool] = _is_word
) -> tuple[list[int], int]:
    """The words to perturb and a seed for their edits.

    The eligible words are put in a random order and the first ``floor(rate * n + u)`` are taken (``u`` uniform in
    [0, 1), so ``rate * n`` words on average, even for short texts). Order, ``u`` and the edit seed come from ``rng``
    alone, so with the same seed a higher rate touches a superset of the words, each edited the same way.

    Returns:
        (sorted indices of the chosen words, seed of their edits: word ``i`` uses ``random.Random(seed + i)``).
    """
    candidates = [i for i, w in enumerate(words) if eligible(w)]
    order = rng.sample(candidates, len(candidates))
    count = min(len(candidates), math.floor(rate * len(candidates) + rng.random()))
    return sorted(order[:count]), rng.getrandbits(62)


def _neighbours(char: str) -> str:
    lower = char.lower()
    for r, row in enumerate(_KEYBOARD):
        if lower in row:
            c = row.index(lower)
            near = row[max(c - 1, 0) : c + 2].replace(lower, "")
            near += "".join(_KEYBOARD[r2][c] for r2 in (r - 1, r + 1) if 0 <= r2 < 3 and c < len(_KEYBOARD[r2]))
            return near.upper() if char.isupper() else near
    return ""


def _typo(word: str, rng: random.Random) -> str:
    letters = [i for i, c in enumerate(word) if c.isalpha()]
    i = rng.choice(letters)
    kinds = ["drop", "double", "key"] + (["swap"] if i + 1 < len(word) and word[i + 1].isalpha() else [])
    kind = rng.choice(kinds if len(letters) > 1 else ["double", "key"])
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    near = _neighbours(word[i]) or word[i]
    return word[:i] + rng.choice(near) + word[i + 1 :]


@TEXT_PERTURBATIONS.register("typos")
def typos(text: str, severity: int, rng: random.Random) -> str:
    """One keyboard typo in each chosen word."""
    words = text.split()
    chosen, edit_seed = _chosen(words, _rate("typos", severity), rng)
    for i in chosen:
        words[i] = _typo(words[i], random.Random(edit_seed + i))
    return " ".join(words)


@TEXT_PERTURBATIONS.register("case")
def case(text: str, severity: int, rng: random.Random) -> str:
    """Chosen words in upper, title or random case."""
    words = text.split()
    chosen, edit_seed = _chosen(words, _rate("case", severity), rng)
    for i in chosen:
        word_rng = random.Random(edit_seed + i)
        style = word_rng.choice(("upper", "title", "random"))
        word = words[i]
        if style == "upper":
            words[i] = word.upper()
        elif style == "title":
            words[i] = word[:1].upper() + word[1:]
        else:
            words[i] = "".join(c.upper() if word_rng.random() < 0.5 else c.lower() for c in word)
    return " ".join(words)


@TEXT_PERTURBATIONS.register("word_dropout")
def word_dropout(text: str, severity: int, rng: random.Random) -> str:
    """Chosen words removed; at least one word stays."""
    words = text.split()
    chosen, _ = _chosen(words, _rate("word_dropout", severity), rng)
    dropped = set(chosen)
    if dropped and len(dropped) >= sum(_is_word(w) for w in words):  # keep one word
        dropped.discard(max(dropped))
    return " ".join(w for i, w in enumerate(words) if i not in dropped)


@TEXT_PERTURBATIONS.register("synonyms")
def synonyms(text: str, severity: int, rng: random.Random) -> str:
    """Chosen words that have a synonym in the shipped list replaced by one of them."""
    table = load_synonyms()
    words = text.split()
    chosen, edit_seed = _chosen(words, _rate("synonyms", severity), rng, eligible=lambda w: w.lower() in table)
    for i in chosen:
        word = words[i]
        choice = random.Random(edit_seed + i).choice(table[word.lower()])
        words[i] = choice.upper() if word.isupper() and len(word) > 1 else (
            choice[:1].upper() + choice[1:] if word[:1].isupper() else choice
        )  # fmt: skip
    return " ".join(words)


@lru_cache(maxsize=8)
def load_synonyms(path: str | Path = SYNONYMS_FILE) -> Mapping[str, tuple[str, ...]]:
    """A synonym list: a JSON object mapping a lower-case word to a non-empty list of synonyms.

    Raises:
        ConfigError: naming the file and the line (bad JSON) or the entry at fault.
    """
    where = f"synonym file {str(path)!r}"
    raw = read_json(path, "synonym file", "a JSON object mapping words to lists of synonyms")
    table = {}
    for word, options in raw.items():
        if not isinstance(options, list) or not options or not all(isinstance(o, str) and o.strip() for o in options):
            raise ConfigError(f"{where}: key {word!r}: expected a non-empty list of non-empty strings")
        table[word.lower()] = tuple(options)
    return table


def perturb_text(name: str, text: str, severity: int, seed: str | int) -> str:
    """Apply the registered perturbation ``name`` with ``random.Random(seed)`` (same seed, same output).

    Example:
        >>> perturb_text("word_dropout", "what colour is the circle ?", 5, seed=0) == perturb_text(
        ...     "word_dropout", "what colour is the circle ?", 5, seed=0)
        True
    """
    return TEXT_PERTURBATIONS.get(name)(text, severity, random.Random(seed))
