"""Bad records of real data: one error type that names the record, and a report of every record that was skipped.

When checking happens:
    * **prepare time** (once per cache key, see :mod:`mmfuse.data.manifest`): every record is checked for a safe
      relative image path, a non-empty text, an existing file and, with ``verify_images`` (the default), an image
      whose header parses, whose pixel count is under the limit and whose data decodes (JPEG at 1/8 scale, PNG chunk
      CRCs, other formats fully). The findings are cached with the manifest.
    * **load time** (every ``__getitem__``): the same decoder runs on the full image, so a file that was changed,
      truncated or deleted after the manifest was prepared is caught there.

By default a bad record is an error (:class:`BadRecordError`, a :class:`~mmfuse.errors.ConfigError`) naming the split,
the record's position and id, the file and the problem. With ``skip_bad`` it is skipped and listed, never dropped
silently: ``bad_records.json`` (total, counts per reason, then one line per record) goes to the run directory, and
load-time findings are appended to ``bad_records_load.jsonl`` there by whichever process meets them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError
from mmfuse.io import read_json, write_atomic

__all__ = [
    "REASONS",
    "REPORT_FILE",
    "LOAD_REPORT_FILE",
    "BadRecord",
    "BadRecordError",
    "write_bad_record_report",
    "read_bad_record_report",
    "append_load_time_record",
]

# Reason codes, with what each means; a bad record carries exactly one (the first problem found).
REASONS: dict[str, str] = {
    "malformed_record": "the source line or entry cannot be parsed or lacks a required field",
    "absolute_path": "the image path is absolute (paths must be relative to the dataset root)",
    "path_escapes_root": "the image path leaves the dataset root (`..`)",
    "empty_text": "the text is missing or empty",
    "missing_file": "the image file does not exist",
    "too_many_pixels": "the image has more pixels than the limit (decompression-bomb guard)",
    "corrupt_image": "the image cannot be decoded (corrupt, truncated or not an image)",
}
REPORT_FILE = "bad_records.json"
LOAD_REPORT_FILE = "bad_records_load.jsonl"
_SKIP_HINT = "set data.skip_bad: true to skip such records and list them in bad_records.json"


@dataclass(frozen=True)
class BadRecord:
    """One record that cannot be used.

    Attributes:
        split: split the record belongs to (``all`` before a split by image).
        index: 0-based position of the record in its source file.
        record_id: the record's own id (annotation id, question id, ``file:line``...).
        source: file the record comes from, relative to the dataset root.
        path: the image file (resolved), or the path as written when it is unsafe.
        reason: one of :data:`REASONS`.
        detail: what exactly is wrong, naming the file and any limit.
        stage: ``prepare`` or ``load``.
    """

    split: str
    index: int
    record_id: str
    source: str
    path: str
    reason: str
    detail: str
    stage: str = "prepare"

    def describe(self) -> str:
        """One line naming the record, the file and the problem."""
        return (
            f"{self.split} record {self.index} (id {self.record_id!r}) of {self.source}: {self.reason}: {self.detail}"
        )


class BadRecordError(ConfigError):
    """A record of the data cannot be used; the message names the record, the file and the problem.

    Args:
        message: the full message (a single string, so the error survives a DataLoader worker's re-raise).
        record: the record, when one is known.
    """

    def __init__(self, message: str, record: BadRecord | None = None) -> None:
        super().__init__(message)
        self.record = record

    @classmethod
    def from_records(cls, records: list[BadRecord], report: Path | None = None) -> BadRecordError:
        """An error naming the first of ``records`` and counting the rest (listed in ``report`` if given)."""
        first = records[0]
        more = f" ({len(records) - 1} more bad records)" if len(records) > 1 else ""
        where = f"; all are listed in {report}" if report is not None else ""
        return cls(f"bad record: {first.describe()}{more}{where}; {_SKIP_HINT}", first)


def _report_text(records: list[BadRecord]) -> str:
    """JSON with the total and the counts per reason first, then one line per record."""
    counts = dict(sorted(Counter(r.reason for r in records).items()))
    lines = [json.dumps(asdict(r), sort_keys=True) for r in records]
    body = ",\n    ".join(lines)
    records_json = f"[\n    {body}\n  ]" if lines else "[]"
    return f'{{\n  "total": {len(records)},\n  "counts": {json.dumps(counts)},\n  "records": {records_json}\n}}\n'


def write_bad_record_report(directory: str | Path, records: Iterable[BadRecord]) -> Path:
    """Write ``<directory>/bad_records.json`` (atomically) and return its path.

    The file holds ``total``, ``counts`` (reason -> number) and ``records`` (one JSON object per line, each with
    ``split``, ``index``, ``record_id``, ``source``, ``path``, ``reason``, ``detail`` and ``stage``). Duplicates
    (the same record and reason met again, e.g. in a later epoch) are listed once.
    """
    unique = {(r.split, r.index, r.record_id, r.reason): r for r in records}
    path = Path(directory) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, _report_text(list(unique.values())))
    return path


def read_bad_record_report(directory: str | Path) -> list[BadRecord]:
    """Every bad record listed in ``directory``: ``bad_records.json`` plus the load-time ``bad_records_load.jsonl``."""
    directory = Path(directory)
    records: list[dict[str, Any]] = []
    if (directory / REPORT_FILE).is_file():
        records += read_json(directory / REPORT_FILE, "bad-record report")["records"]
    if (directory / LOAD_REPORT_FILE).is_file():
        lines = (directory / LOAD_REPORT_FILE).read_text().splitlines()
        records += [json.loads(line) for line in lines if line.strip()]
    return [BadRecord(**r) for r in records]


def append_load_time_record(directory: str | Path, record: BadRecord) -> None:
    """Append one line to ``<directory>/bad_records_load.jsonl``.

    A single ``O_APPEND`` write of one short line, so several DataLoader worker processes can report at once.
    """
    Path(directory).mkdir(parents=True, exist_ok=True)
    line = (json.dumps(asdict(record), sort_keys=True) + "\n").encode()
    fd = os.open(Path(directory) / LOAD_REPORT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
