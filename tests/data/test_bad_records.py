"""The bad-record error and report: one line per record, counts per reason, load-time lines merged once."""

from __future__ import annotations

import json
from pathlib import Path

from mmfuse.data.bad_records import (
    LOAD_REPORT_FILE,
    REPORT_FILE,
    BadRecord,
    BadRecordError,
    append_load_time_record,
    read_bad_record_report,
    write_bad_record_report,
)
from mmfuse.errors import ConfigError

RECORDS = [
    BadRecord("train", 3, "17", "train.jsonl", "/data/img/17.png", "missing_file", "/data/img/17.png: no such file"),
    BadRecord("train", 5, "19", "train.jsonl", "/data/img/19.png", "empty_text", "the text is empty"),
    BadRecord("val", 0, "23", "dev.jsonl", "/data/img/23.png", "missing_file", "/data/img/23.png: no such file"),
]


def test_report_has_counts_and_one_line_per_record(tmp_path: Path) -> None:
    path = write_bad_record_report(tmp_path, RECORDS)
    report = json.loads(path.read_text())
    assert report["total"] == 3 and report["counts"] == {"empty_text": 1, "missing_file": 2}
    record_lines = [line for line in path.read_text().splitlines() if '"reason"' in line]
    assert len(record_lines) == 3 and '"record_id": "19"' in record_lines[1]
    assert read_bad_record_report(tmp_path) == RECORDS


def test_load_time_lines_are_appended_and_merged_once(tmp_path: Path) -> None:
    write_bad_record_report(tmp_path, RECORDS[:1])
    late = BadRecord("train", 7, "21", "train.jsonl", "/d/21.png", "corrupt_image", "does not decode", stage="load")
    append_load_time_record(tmp_path, late)
    append_load_time_record(tmp_path, late)  # met again in a later epoch
    assert len((tmp_path / LOAD_REPORT_FILE).read_text().splitlines()) == 2
    write_bad_record_report(tmp_path, read_bad_record_report(tmp_path))
    report = json.loads((tmp_path / REPORT_FILE).read_text())
    assert report["total"] == 2 and report["counts"] == {"corrupt_image": 1, "missing_file": 1}


def test_error_names_the_first_record_and_counts_the_rest(tmp_path: Path) -> None:
    err = BadRecordError.from_records(RECORDS, tmp_path / REPORT_FILE)
    assert isinstance(err, ConfigError) and err.record == RECORDS[0]
    message = str(err)
    assert "train record 3 (id '17') of train.jsonl: missing_file: /data/img/17.png" in message
    assert "(2 more bad records)" in message and str(tmp_path / REPORT_FILE) in message and "skip_bad" in message
