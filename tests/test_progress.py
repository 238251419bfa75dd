"""Progress by stage: silent without :func:`reporting`, one log line per stage off a terminal (item lines only for
slow items), live bars when a terminal is forced."""

from __future__ import annotations

import io
import logging
import re

import pytest

from mmfuse.progress import reporting, stage, track

LOGGER = "mmfuse.progress"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


def _duplicates(splits: tuple[str, ...] = ("train", "val", "test")) -> None:
    with stage("duplicates", total=len(splits), unit="splits") as current:
        for split in splits:
            current.advance(detail=split)


def _lines(logs: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in logs.records if r.name == LOGGER]


def test_silent_without_reporting(logs: pytest.LogCaptureFixture) -> None:
    _duplicates()
    assert list(track(range(3), "hashes")) == [0, 1, 2]
    assert _lines(logs) == []


def test_off_a_terminal_one_line_per_stage_with_counts(logs: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()  # not a terminal
    with reporting("audit", stream=stream) as reporter:
        _duplicates()
        assert [s.upper() for s in track(["train", "val"], "class balance", unit="splits")] == ["TRAIN", "VAL"]
        with stage("data") as current:
            current.advance(160)
        with stage("model"):
            pass
    assert not reporter.is_terminal and stream.getvalue() == ""
    lines = _lines(logs)
    assert len(lines) == 4, lines
    assert re.fullmatch(r"audit: duplicates 3/3 splits done in \d+\.\d s", lines[0])
    assert re.fullmatch(r"audit: class balance 2/2 splits done in \d+\.\d s", lines[1])
    assert re.fullmatch(r"audit: data 160 done in \d+\.\d s", lines[2])
    assert re.fullmatch(r"audit: model done in \d+\.\d s", lines[3])


def test_item_lines_for_slow_items_only(logs: pytest.LogCaptureFixture) -> None:
    with reporting("bench", stream=io.StringIO(), log_every=0.0):  # every item counts as slow
        _duplicates()
    lines = _lines(logs)
    assert len(lines) == 3, lines  # items 1 and 2, then the end line (the last item's line is the end line)
    assert re.fullmatch(r"bench: duplicates 1/3 splits \(train\), \d+\.\d s, ETA \d+\.\d s", lines[0])
    assert lines[1].startswith("bench: duplicates 2/3 splits (val), ")
    assert lines[2].startswith("bench: duplicates 3/3 splits done in ")


def test_a_failed_stage_logs_no_end_line(logs: pytest.LogCaptureFixture) -> None:
    with reporting("audit", stream=io.StringIO()), pytest.raises(RuntimeError, match="boom"):
        with stage("duplicates", total=3):
            raise RuntimeError("boom")
    assert _lines(logs) == []


def test_empty_stages_and_nesting(logs: pytest.LogCaptureFixture) -> None:
    with reporting("report", stream=io.StringIO()):
        assert list(track([], "checks")) == []  # nothing to do: nothing reported
        with stage("checks", total=1, unit="checks") as outer:
            with reporting("audit"):
                _duplicates(("train",))
            outer.advance(detail="audit")
    lines = _lines(logs)
    assert [line.split(" done in ")[0] for line in lines] == [
        "audit: duplicates 1/1 splits",
        "report: checks 1/1 checks",
    ]


def test_forced_terminal_draws_bars(logs: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    with reporting("explain", stream=stream, force_terminal=True) as reporter:
        _duplicates()
        with stage("faithfulness", total=8, unit="maps") as outer:
            for _ in track(iter(range(5)), "randomization gradcam", unit="stages"):  # no length: no total
                outer.advance(detail="gradcam")
            outer.advance(3)
        logging.getLogger("mmfuse.test").warning("a record while bars are drawn")
        with pytest.raises(ValueError, match="boom"), stage("gallery", total=4):
            raise ValueError("boom")
        assert list(track([], "checks")) == []  # nothing to do: no bar
    drawn = stream.getvalue()
    assert reporter.is_terminal and _lines(logs) == [] and "checks" not in drawn
    assert "explain: duplicates" in drawn and "3/3" in drawn and "splits" in drawn
    assert "explain: faithfulness" in drawn and "8/8" in drawn and "explain: randomization gradcam" in drawn


def test_bad_log_every_is_refused() -> None:
    with pytest.raises(ValueError, match="log_every=-1"), reporting("audit", log_every=-1):
        pass
