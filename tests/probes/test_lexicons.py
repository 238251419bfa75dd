"""Lexicon files: the shipped lists load, swaps are whole-word and case-preserving, bad files fail with the place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmfuse.errors import ConfigError
from mmfuse.probes.lexicons import AttributeLexicon, builtin_lexicon_files, load_lexicons, parse_lexicon

GENDER = AttributeLexicon(
    "gender", {"female": ("she", "her", "her", "woman"), "male": ("he", "him", "his", "man")}, "test"
)


def test_builtin_lists_load_and_cover_the_shapes_world_names() -> None:
    from mmfuse.data.shapes import PROTECTED_GROUPS

    lexicons = load_lexicons()
    assert {p.stem for p in builtin_lexicon_files()} == {"gender", "first_names", "religion", "nationality"}
    assert set(lexicons) == {"gender", "first_names", "religion", "nationality"}
    for group, value in zip(PROTECTED_GROUPS, ("female", "male")):
        for who in group:
            assert any(value in lex.values_in(f"{who} asks : what ?") for lex in lexicons.values()), who
    assert lexicons["gender"].swap("She asked her mother", "female", "male") == "He asked him father"


@pytest.mark.parametrize(
    ("text", "source", "target", "expected"),
    [
        ("she asks : what colour ?", "female", "male", "he asks : what colour ?"),
        ("She said SHE would", "female", "male", "He said HE would"),
        ("Sheila and her sister", "female", "male", "Sheila and him sister"),  # whole words only; first position
        ("the woman's hat, the woman.", "female", "male", "the man's hat, the man."),
        ("he told him", "male", "female", "she told her"),
        ("his", "male", "female", "her"),
        ("no term here", "female", "male", "no term here"),
    ],
)
def test_swap_is_whole_word_and_case_preserving(text: str, source: str, target: str, expected: str) -> None:
    assert GENDER.swap(text, source, target) == expected


def test_multi_word_terms_and_title_case() -> None:
    lex = load_lexicons()["nationality"]
    assert lex.values_in("Flights to the United   States") == ["american"]
    assert lex.swap("Flights to the United States", "american", "french") == "Flights to the France"
    assert lex.swap("an American film", "american", "british") == "an British film"
    assert lex.values_in("unitedstates") == []


def test_user_file_extends_an_attribute_and_adds_one(tmp_path: Path) -> None:
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({
        "gender": {"values": {"female": ["nun"], "male": ["monk"]}},
        "hair": {"description": "hair colour", "values": {"blond": ["blond"], "dark": ["brunette"]}},
    }))  # fmt: skip
    lexicons = load_lexicons([extra])
    assert lexicons["gender"].swap("the nun and she", "female", "male") == "the monk and he"
    assert lexicons["hair"].values_in("a brunette") == ["dark"]
    assert str(extra) in lexicons["gender"].sources
    only = load_lexicons([extra], include_builtin=False)
    assert set(only) == {"gender", "hair"} and only["gender"].values_in("she") == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"gender": {"values": {"female": ["she"], "male": ["he"]}', "is not valid JSON: line 1 column"),
        ("[1, 2]", "expected a JSON object mapping attribute names"),
        ('{"gender": ["she", "he"]}', "key 'gender': expected an object with 'values'"),
        ('{"gender": {"values": {"female": ["she"]}}}', "key 'gender' -> 'values': expected an object of at least two"),
        ('{"gender": {"valus": {}}}', "key 'gender': unknown key(s) ['valus']"),
        ('{"gender": {"values": {"female": [], "male": ["he"]}}}', "'values' -> 'female': expected a non-empty list"),
        ('{"gender": {"values": {"female": ["she", 3], "male": ["he", "him"]}}}', "'female'[1]: expected a string"),
        ('{"gender": {"values": {"female": ["she", "!"], "male": ["he", "him"]}}}', "'female'[1]: '!' is not a term"),
        ('{"g": {"values": {"female": ["she", "her"], "male": ["he"]}}}', "term lists of different lengths"),
        ('{"g": {"values": {"female": ["she"], "male": ["she"]}}}', "term 'she' is listed under both 'female' and"),
        ('{"g": {"description": 5, "values": {"a": ["x"], "b": ["y"]}}}', "'description': expected a string"),
    ],
)
def test_malformed_file_names_the_file_and_the_place(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        parse_lexicon(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_multiline_json_error_gives_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "gender": {\n    "values": {"female": ["she"] "male": ["he"]}\n  }\n}\n')
    with pytest.raises(ConfigError, match="line 3 column"):
        load_lexicons([path])


def test_extension_that_breaks_alignment_names_both_files(tmp_path: Path) -> None:
    path = tmp_path / "extra.json"
    path.write_text('{"gender": {"values": {"female": ["nun"], "male": ["monk", "friar"]}}}')
    with pytest.raises(ConfigError, match="different lengths"):
        load_lexicons([path], include_builtin=False)
    ok = tmp_path / "ok.json"
    ok.write_text('{"gender": {"values": {"female": ["nun", "abbess"], "other": ["x", "y"]}}}')
    with pytest.raises(ConfigError, match=r"different lengths.*'female': 38"):
        load_lexicons([ok])
    with pytest.raises(ConfigError, match="no such file"):
        load_lexicons([tmp_path / "missing.json"])
