"""Text perturbations: seeded, on raw words only, touching more words at each higher severity."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from mmfuse.errors import ConfigError
from mmfuse.probes.text_perturb import TEXT_PERTURBATIONS, WORD_RATES, load_synonyms, perturb_text

TEXTS = [
    "anna asks : what colour is the circle ?",
    "which colour does the square have ?",
    "a man in a red shirt is walking his dog on the beach near the water",
    "the triangle is what colour ?",
]
NAMES = TEXT_PERTURBATIONS.names()


def _changed_words(original: str, perturbed: str) -> set[int]:
    a, b = original.split(), perturbed.split()
    return {i for i, (x, y) in enumerate(zip(a, b)) if x != y} if len(a) == len(b) else set()


def test_every_perturbation_is_registered_with_five_severities() -> None:
    assert set(NAMES) == {"typos", "case", "word_dropout", "synonyms"}
    assert all(len(WORD_RATES[n]) == 5 and list(WORD_RATES[n]) == sorted(WORD_RATES[n]) for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_and_deterministic(name: str) -> None:
    for text in TEXTS:
        for severity in range(1, 6):
            assert perturb_text(name, text, severity, seed=7) == perturb_text(name, text, severity, seed=7)
    outputs = {perturb_text(name, TEXTS[2], 5, seed=s) for s in range(6)}
    assert len(outputs) > 1


@pytest.mark.parametrize("name", ["typos", "case", "synonyms"])
def test_higher_severity_touches_a_superset_of_the_words(name: str) -> None:
    for seed in range(20):
        for text in TEXTS:
            changed = [_changed_words(text, perturb_text(name, text, s, seed)) for s in range(1, 6)]
            assert all(a <= b for a, b in zip(changed, changed[1:])), (text, changed)
            for s in range(1, 5):  # a word touched at a lower severity is edited the same way at a higher one
                low, high = perturb_text(name, text, s, seed).split(), perturb_text(name, text, s + 1, seed).split()
                assert all(low[i] == high[i] for i in changed[s - 1])


def test_word_dropout_removes_more_words_and_keeps_one() -> None:
    for seed in range(20):
        lengths = [len(perturb_text("word_dropout", TEXTS[2], s, seed).split()) for s in range(1, 6)]
        assert all(a >= b for a, b in zip(lengths, lengths[1:])) and lengths[-1] >= 1
    assert all(perturb_text("word_dropout", "circle ?", 5, seed=s) == "circle ?" for s in range(10))


@pytest.mark.parametrize("name", ["typos", "case", "word_dropout"])
def test_share_of_words_touched_matches_the_rate(name: str) -> None:
    text = TEXTS[2]  # 16 words
    for severity, rate in enumerate(WORD_RATES[name], start=1):
        if name == "word_dropout":
            touched = [16 - len(perturb_text(name, text, severity, s).split()) for s in range(200)]
        else:
            touched = [len(_changed_words(text, perturb_text(name, text, severity, s))) for s in range(200)]
        # a typo or a case change can leave a word as it was ("ll" swapped, "A" upper-cased): at most the rate
        assert 0.6 * rate * 16 <= np.mean(touched) <= rate * 16 + 0.2, (severity, np.mean(touched))


def test_punctuation_and_non_words_are_left_alone() -> None:
    for name in NAMES:
        for seed in range(10):
            out = perturb_text(name, "anna asks : what colour is the circle ?", 5, seed)
            assert out.endswith("?") and ":" in out


def test_synonyms_come_from_the_list_and_keep_case() -> None:
    table = load_synonyms()
    assert table["colour"] == ("color", "hue", "shade")
    out = perturb_text("synonyms", "What Colour is the CIRCLE ?", 5, seed=0).split()
    assert out[1] in {"Color", "Hue", "Shade"} and out[4] in {"ROUND", "DISC", "DISK"} and out[0] == "Which"
    assert perturb_text("synonyms", "zzz qqq", 5, seed=0) == "zzz qqq"  # nothing eligible: unchanged


def test_case_and_typo_styles() -> None:
    rng_text = perturb_text("case", "abcdef ghijkl", 5, seed=1)
    assert rng_text.lower() == "abcdef ghijkl" and rng_text != "abcdef ghijkl"
    typos = [perturb_text("typos", "keyboard layout", 5, seed=s) for s in range(10)]
    assert any(t != "keyboard layout" for t in typos)
    assert all(sum(abs(len(a) - len(b)) for a, b in zip(t.split(), ["keyboard", "layout"])) <= 1 for t in typos)
    with pytest.raises(ValueError, match="severity must be 1..5"):
        TEXT_PERTURBATIONS.get("typos")("x", 0, random.Random(0))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"colour": ["color"],\n "shape" ["form"]}', "is not valid JSON: line 2 column"),
        ('["colour"]', "expected a JSON object mapping words"),
        ('{"colour": []}', "key 'colour': expected a non-empty list"),
        ('{"colour": ["color", 3]}', "key 'colour': expected a non-empty list of non-empty strings"),
    ],
)
def test_malformed_synonym_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "syn.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_synonyms(path)
    assert message in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ConfigError, match="no such file"):
        load_synonyms(tmp_path / "missing.json")
    assert json.loads('{"a": ["b"]}')  # the format is plain JSON
