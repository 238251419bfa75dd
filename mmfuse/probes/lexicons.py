"""Editable lists of protected-attribute terms and whole-word, case-preserving swaps between their values.

A lexicon file is JSON: a mapping from attribute name to ``{"description": ..., "values": {value: [term, ...]}}``.
The term lists of one attribute are aligned by position (term ``i`` of one value is the counterpart of term ``i`` of
every other value), so every list of an attribute has the same length; a term may repeat within its own list (the
first position wins when it is swapped away), but may not appear under two values of one attribute. Terms are
matched case-insensitively as whole words (a term may hold several words, e.g. ``"united states"``) on the raw text,
before any tokenizer sees it::

    {"gender": {"description": "gendered words",
                "values": {"female": ["she", "her", "her"], "male": ["he", "him", "his"]}}}

The package ships ``gender``, ``first_names``, ``religion`` and ``nationality`` (``mmfuse/probes/lexicons/*.json``).
User files given to :func:`load_lexicons` add attributes, or extend one of the same name: their lists are appended
position by position (so add the same number of terms to every value) and new values may be added.

Reference: Garg et al., "Counterfactual Fairness in Text Classification through Robustness", AIES 2019.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError
from mmfuse.io import kind_of, read_json

__all__ = ["AttributeLexicon", "BUILTIN_LEXICON_DIR", "builtin_lexicon_files", "load_lexicons", "parse_lexicon"]

BUILTIN_LEXICON_DIR = Path(__file__).with_name("lexicons")
_ALLOWED_KEYS = {"description", "values"}
_TERM = re.compile(r"^\w(?:[\w' -]*\w)?$")  # starts and ends with a word character, so word boundaries apply


@dataclass(frozen=True)
class AttributeLexicon:
    """The terms of one protected attribute, grouped by value and aligned by position.

    Attributes:
        name: attribute name, e.g. ``gender``.
        values: value name -> its terms (lower case, single spaces), every list of the same length.
        description: free text shown in reports.
        sources: the files the lists came from.
    """

    name: str
    values: Mapping[str, tuple[str, ...]]
    description: str = ""
    sources: tuple[str, ...] = ()
    _patterns: dict[str, re.Pattern[str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for value, terms in self.values.items():
            alternatives = sorted(set(terms), key=len, reverse=True)  # longest first: "united states" before "united"
            body = "|".join(r"\s+".join(re.escape(w) for w in t.split()) for t in alternatives)
            self._patterns[value] = re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)

    def values_in(self, text: str) -> list[str]:
        """The values whose terms occur in ``text`` (whole words, any case), in lexicon order."""
        return [value for value, pattern in self._patterns.items() if pattern.search(text)]

    def swap(self, text: str, source: str, target: str) -> str:
        """``text`` with every term of value ``source`` replaced by its counterpart of value ``target``.

        The replacement keeps the case of the word it replaces (``She`` -> ``He``, ``SHE`` -> ``HE``); terms of other
        values are left alone.

        Example:
            >>> lex = AttributeLexicon("gender", {"female": ("she", "her"), "male": ("he", "him")})
            >>> lex.swap("She said: ask her, not Sheila.", "female", "male")
            'He said: ask him, not Sheila.'
        """
        if source not in self.values or target not in self.values:
            raise KeyError(f"attribute {self.name!r} has values {list(self.values)}; got {source!r} -> {target!r}")
        counterpart: dict[str, str] = {}
        for term, other in zip(self.values[source], self.values[target]):
            counterpart.setdefault(term, other)  # a repeated term: its first position wins
        return self._patterns[source].sub(lambda m: _match_case(m.group(0), counterpart[_normalise(m.group(0))]), text)


def _normalise(term: str) -> str:
    return " ".join(term.lower().split())


def _match_case(source: str, target: str) -> str:
    """``target`` written in the case pattern of ``source`` (upper, title per word, capitalised, lower)."""
    words = source.split()
    if source.isupper() and len(source) > 1:
        return target.upper()
    if len(words) > 1 and all(w[:1].isupper() for w in words):
        return " ".join(w[:1].upper() + w[1:] for w in target.split())
    return target[:1].upper() + target[1:] if source[:1].isupper() else target


def builtin_lexicon_files() -> list[Path]:
    """The lexicon files shipped with mmfuse, sorted by name."""
    return sorted(BUILTIN_LEXICON_DIR.glob("*.json"))


def load_lexicons(paths: Iterable[str | Path] = (), *, include_builtin: bool = True) -> dict[str, AttributeLexicon]:
    """Read, validate and merge lexicon files.

    Args:
        paths: user lexicon files; an attribute they share with an earlier file extends it (lists appended by position).
        include_builtin: start from the lists shipped with mmfuse.

    Returns:
        Attribute name -> its lexicon, in the order first seen.

    Raises:
        ConfigError: a missing, unreadable or malformed file, naming the file and the key (or line) at fault.
    """
    files = [*(builtin_lexicon_files() if include_builtin else []), *(Path(p) for p in paths)]
    if not files:
        raise ConfigError("no lexicon files: give at least one file, or keep the built-in lists")
    merged: dict[str, dict[str, Any]] = {}
    for path in files:
        for name, parsed in parse_lexicon(path).items():
            entry = merged.setdefault(name, {"values": {}, "description": "", "sources": []})
            for value, terms in parsed.values.items():
                entry["values"].setdefault(value, []).extend(terms)
            entry["description"] = entry["description"] or parsed.description
            entry["sources"].append(str(path))
    out = {}
    for name, entry in merged.items():
        _check_aligned(name, entry["values"], entry["sources"])
        _check_disjoint(name, entry["values"], entry["sources"])
        values = {value: tuple(terms) for value, terms in entry["values"].items()}
        out[name] = AttributeLexicon(name, values, entry["description"], tuple(entry["sources"]))
    return out


def parse_lexicon(path: str | Path) -> dict[str, AttributeLexicon]:
    """Parse and validate one lexicon file (see the module docstring for the format).

    Raises:
        ConfigError: naming the file and the line (bad JSON) or the key path (bad content).
    """
    path = Path(path)
    where, expected = f"lexicon file {str(path)!r}", "a JSON object mapping attribute names to their lists"
    raw = read_json(path, "lexicon file", expected)
    if not raw:
        raise ConfigError(f"{where}: expected {expected}, got an empty object")
    out = {}
    for name, spec in raw.items():
        values, description = _parse_attribute(where, name, spec)
        _check_aligned(name, values, [str(path)])
        _check_disjoint(name, values, [str(path)])
        out[name] = AttributeLexicon(name, {v: tuple(t) for v, t in values.items()}, description, (str(path),))
    return out


def _parse_attribute(where: str, name: str, spec: Any) -> tuple[dict[str, list[str]], str]:
    key = f"{where}: key {name!r}"
    if not name.strip():
        raise ConfigError(f"{where}: an attribute name is empty")
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{key}: expected an object with 'values' (and optionally 'description'), got {kind_of(spec)}"
        )
    unknown = sorted(set(spec) - _ALLOWED_KEYS)
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {unknown}; allowed: {sorted(_ALLOWED_KEYS)}")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{key} -> 'description': expected a string, got {kind_of(description)}")
    values = spec.get("values")
    if not isinstance(values, dict) or len(values) < 2:
        raise ConfigError(f"{key} -> 'values': expected an object of at least two values (value -> list of terms)")
    parsed: dict[str, list[str]] = {}
    for value, terms in values.items():
        if not isinstance(terms, list) or not terms:
            raise ConfigError(
                f"{key} -> 'values' -> {value!r}: expected a non-empty list of terms, got {kind_of(terms)}"
            )
        parsed[value] = [_parse_term(f"{key} -> 'values' -> {value!r}[{i}]", t) for i, t in enumerate(terms)]
    return parsed, description


def _parse_term(key: str, term: Any) -> str:
    if not isinstance(term, str):
        raise ConfigError(f"{key}: expected a string, got {kind_of(term)}")
    normalised = _normalise(term)
    if not _TERM.match(normalised):
        raise ConfigError(
            f"{key}: {term!r} is not a term (letters, digits, spaces, hyphens or apostrophes, starting and ending "
            "with a letter or digit)"
        )
    return normalised


def _check_aligned(name: str, values: Mapping[str, Sequence[str]], sources: Sequence[str]) -> None:
    lengths = {value: len(terms) for value, terms in values.items()}
    if len(set(lengths.values())) > 1:
        raise ConfigError(
            f"lexicon {', '.join(map(repr, sources))}: attribute {name!r} has term lists of different lengths "
            f"{lengths}; the lists are aligned by position, so give every value the same number of terms"
        )


def _check_disjoint(name: str, values: Mapping[str, Sequence[str]], sources: Sequence[str]) -> None:
    owner: dict[str, str] = {}
    for value, terms in values.items():
        for term in terms:
            if owner.setdefault(term, value) != value:
                raise ConfigError(
                    f"lexicon {', '.join(map(repr, sources))}: attribute {name!r}: term {term!r} is listed under both "
                    f"{owner[term]!r} and {value!r}; a term may belong to one value only"
                )
