"""Run directories as data: find, resolve, tag and compare the ``version_N/`` folders that training writes.

A run directory is any directory holding ``config.yaml`` (saved by LightningCLI) or ``provenance.json`` (saved by
:mod:`mmfuse.provenance`); ``metrics.csv`` (the CSV logger) supplies its metrics. User tags, like git tags, are
unique names for runs, kept in one file: ``<root>/tags.json`` (tag -> run name relative to the root).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from mmfuse.errors import ConfigError
from mmfuse.io import read_json, read_yaml, write_json
from mmfuse.provenance import PROVENANCE_FILE
from mmfuse.registry import close_matches
from mmfuse.tables import format_table

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "TAGS_FILE",
    "RunInfo",
    "compare_runs",
    "find_runs",
    "format_compare",
    "format_runs",
    "format_table",
    "format_value",
    "read_curves",
    "read_run",
    "read_tags",
    "resolve_run",
    "tag_run",
]

TAGS_FILE = "tags.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
BEST_METRIC = "val/acc"  # higher is better; reported as "best val/acc"
_TAG_PATTERN = re.compile(r"[A-Za-z0-9._/-]+")

Metric = float | str


@dataclass(frozen=True)
class RunInfo:
    """What one run directory says about itself.

    Attributes:
        path: the run directory.
        name: ``path`` relative to the root it was found under (the path itself when outside it).
        created: UTC ISO time from ``provenance.json``, else the modification time of the directory's files.
        commit: short git commit of the code, None without provenance or git.
        dirty: whether the working tree had uncommitted changes, None when unknown.
        tags: user tags of this run (from ``<root>/tags.json``), sorted.
        metrics: column of ``metrics.csv`` -> its last non-empty value (float where it parses), plus
            ``"best val/acc"`` (the maximum) when that column exists.
        config: ``config.yaml`` flattened to dotted keys (``model.fusion.num_layers``); lists stay whole.
    """

    path: Path
    name: str
    created: str
    commit: str | None = None
    dirty: bool | None = None
    tags: tuple[str, ...] = ()
    metrics: dict[str, Metric] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def _is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / PROVENANCE_FILE).is_file()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1]}`` -> ``{"a.b": 1, "c": [1]}``; an empty mapping stays as a value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _read_config(path: Path) -> dict[str, Any]:
    return _flatten(read_yaml(path, "run config")) if path.is_file() else {}


def _parse(value: str) -> Metric:
    try:
        return float(value)
    except ValueError:
        return value


def _read_metrics(path: Path) -> dict[str, Metric]:
    """Last non-empty value of each column of ``metrics.csv``, plus the best ``val/acc``."""
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    metrics: dict[str, Metric] = {}
    for row in rows:
        metrics.update({column: _parse(value) for column, value in row.items() if column and value})
    scores = [value for row in rows if isinstance(value := _parse(row.get(BEST_METRIC) or ""), float)]
    if scores:
        metrics[f"best {BEST_METRIC}"] = max(scores)
    return metrics


def read_curves(run_dir: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """Every metric column of a run's ``metrics.csv`` as a curve over the optimizer step.

    Args:
        run_dir: the run directory (holding ``metrics.csv``).

    Returns:
        Column (``train/loss``, ``val/acc``, ``lr/head``...) -> (steps, values) of its non-empty cells, in file
        order; ``epoch`` and ``step`` are not metrics and rows without a step are not on the curve.

    Raises:
        ConfigError: there is no ``metrics.csv``, or a cell is not a number (naming the file, line and column).
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise ConfigError(f"{str(path)!r}: no such file; the run logged no metrics (or not with the CSV logger)")
    curves: dict[str, tuple[list[int], list[float]]] = {}
    with path.open(newline="", encoding="utf-8") as file:
        for line, row in enumerate(csv.DictReader(file), start=2):
            step = _number(row.get("step") or "", path, line, "step")
            if step is None:
                continue
            for column, cell in row.items():
                value = _number(cell or "", path, line, column) if column not in ("epoch", "step", None) else None
                if value is not None:
                    steps, values = curves.setdefault(column, ([], []))
                    steps.append(int(step))
                    values.append(value)
    return curves


def _number(cell: str, path: Path, line: int, column: str | None) -> float | None:
    """A cell of ``metrics.csv`` as a float; None when empty."""
    if cell == "":
        return None
    try:
        return float(cell)
    except ValueError as err:
        raise ConfigError(f"{path}:{line}: column {column!r} holds {cell!r}, not a number") from err


def _read_provenance(path: Path) -> dict[str, Any]:
    return read_json(path, "provenance record") if path.is_file() else {}


def _mtime_iso(path: Path) -> str:
    """Creation time for runs without provenance: the oldest modification time of the run's marker files."""
    times = [p.stat().st_mtime for p in (path / CONFIG_FILE, path / PROVENANCE_FILE) if p.is_file()]
    stamp = min(times) if times else path.stat().st_mtime
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat()


def _is_under(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _run_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (``.`` for the root itself), or ``path`` as given when outside it."""
    return path.resolve().relative_to(root.resolve()).as_posix() if _is_under(path, root) else str(path)


def read_tags(root: str | Path) -> dict[str, str]:
    """``<root>/tags.json`` as tag -> run name; empty when the file does not exist."""
    path = Path(root) / TAGS_FILE
    if not path.is_file():
        return {}
    tags = read_json(path, "tag file", "a JSON object of tag -> run name")
    return {str(tag): str(name) for tag, name in tags.items()}


def read_run(path: str | Path, root: str | Path, tags: dict[str, str] | None = None) -> RunInfo:
    """Read one run directory; ``tags`` (tag -> run name) defaults to ``<root>/tags.json``."""
    path, root = Path(path), Path(root)
    if not _is_run_dir(path):
        raise ConfigError(f"{path} is not a run directory (no {CONFIG_FILE} or {PROVENANCE_FILE})")
    name = _run_name(path, root)
    tags = read_tags(root) if tags is None else tags
    record = _read_provenance(path / PROVENANCE_FILE)
    git = record.get("git") or {}
    commit = git.get("commit")
    return RunInfo(
        path=path,
        name=name,
        created=str(record.get("created") or _mtime_iso(path)),
        commit=commit[:7] if isinstance(commit, str) else None,
        dirty=git.get("dirty") if isinstance(git.get("dirty"), bool) else None,
        tags=tuple(sorted(tag for tag, run in tags.items() if run == name)),
        metrics=_read_metrics(path / METRICS_FILE),
        config=_read_config(path / CONFIG_FILE),
    )


def _created_key(run: RunInfo) -> tuple[datetime, str]:
    created = datetime.fromisoformat(run.created)
    return (created if created.tzinfo else created.replace(tzinfo=timezone.utc), run.name)


def find_runs(root: str | Path) -> list[RunInfo]:
    """Every run directory under ``root`` (``root`` itself included), oldest first.

    Raises:
        ConfigError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"run root {str(root)!r} is not a directory")
    tags = read_tags(root)
    runs = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if _is_run_dir(Path(dirpath)):
            runs.append(read_run(dirpath, root, tags))
    return sorted(runs, key=_created_key)


def resolve_run(ref: str | Path, root: str | Path) -> RunInfo:
    """The run that ``ref`` names: a run directory path, a run name relative to ``root``, or a tag in
    ``<root>/tags.json`` (tried in that order).

    Raises:
        ConfigError: nothing matches; the message names ``ref`` and the close run names and tags.
    """
    root = Path(root)
    for candidate in (Path(ref), root / ref):
        if candidate.is_dir() and _is_run_dir(candidate):
            return read_run(candidate, root)
    tags = read_tags(root)
    if str(ref) in tags:
        target = root / tags[str(ref)]
        if not _is_run_dir(target):
            raise ConfigError(f"tag {str(ref)!r} points at run {tags[str(ref)]!r}, which no longer exists in {root}")
        return read_run(target, root, tags)
    known = [run.name for run in find_runs(root)] + sorted(tags) if root.is_dir() else []
    hint = close_matches(str(ref), known)
    did_you_mean = f"; did you mean {hint}?" if hint else f"; known: {known[:10]}" if known else ""
    raise ConfigError(f"no run or tag {str(ref)!r} under {str(root)!r}{did_you_mean}")


def tag_run(run: RunInfo | str | Path, tag: str, root: str | Path, force: bool = False) -> RunInfo:
    """Give ``run`` (a :class:`RunInfo` or a reference for :func:`resolve_run`) the unique name ``tag``.

    Tags match ``[A-Za-z0-9._/-]+``, are unique across ``root`` and may not equal a run name. Re-tagging the same
    run is a no-op; moving a tag from another run needs ``force``.

    Returns:
        The run, re-read with its new tag.

    Raises:
        ConfigError: bad tag name, a tag that shadows a run name, the run is outside ``root``, or the tag is on
            another run and ``force`` is false.
    """
    root = Path(root)
    if not _TAG_PATTERN.fullmatch(tag):
        raise ConfigError(f"bad tag name {tag!r}: use letters, digits and . _ / - only")
    info = run if isinstance(run, RunInfo) else resolve_run(run, root)
    if not _is_under(info.path, root):
        raise ConfigError(f"run {str(info.path)!r} is not under the run root {str(root)!r}")
    if _is_run_dir(root / tag) and _run_name(root / tag, root) != info.name:
        raise ConfigError(f"tag {tag!r} would shadow the run of that name in {str(root)!r}")
    tags = read_tags(root)
    current = tags.get(tag)
    if current is not None and current != info.name and not force:
        raise ConfigError(f"tag {tag!r} is already on run {current!r}; use --force to move it to {info.name!r}")
    tags[tag] = info.name
    write_json(root / TAGS_FILE, dict(sorted(tags.items())))
    return read_run(info.path, root, tags)


def _delta(value: Metric | None, base: Metric | None) -> float | None:
    if isinstance(value, float) and isinstance(base, float) and math.isfinite(value) and math.isfinite(base):
        return value - base
    return None


def compare_runs(runs: Sequence[RunInfo], baseline: RunInfo | None = None) -> dict[str, Any]:
    """Side-by-side view of runs (a baseline not among ``runs`` is put first).

    Returns:
        ``runs`` (names, in order), ``baseline`` (name or None), ``config_diff`` (dotted key -> run name -> value,
        only keys whose values differ; a missing key counts as None), ``metrics`` (run name -> metric -> value) and
        ``delta`` (run name -> metric -> value minus the baseline's, numeric metrics of the non-baseline runs only;
        empty without a baseline).
    """
    ordered = list(runs) if baseline is None or baseline.name in {r.name for r in runs} else [baseline, *runs]
    unique = list({run.name: run for run in ordered}.values())
    keys = sorted({key for run in unique for key in run.config})
    config_diff = {
        key: {run.name: run.config.get(key) for run in unique}
        for key in keys
        if len({json.dumps(run.config.get(key), sort_keys=True, default=str) for run in unique}) > 1
    }
    delta: dict[str, dict[str, float]] = {}
    if baseline is not None:
        for run in unique:
            if run.name != baseline.name:
                pairs = {m: _delta(v, baseline.metrics.get(m)) for m, v in run.metrics.items()}
                delta[run.name] = {m: d for m, d in pairs.items() if d is not None}
    return {
        "runs": [run.name for run in unique],
        "baseline": None if baseline is None else baseline.name,
        "config_diff": config_diff,
        "metrics": {run.name: dict(run.metrics) for run in unique},
        "delta": delta,
    }


def format_value(value: Any) -> str:
    """A table cell: ``-`` for None, integral floats without decimals, other floats with four.

    Example:
        >>> [format_value(v) for v in (None, 3.0, 0.93751, 2.5e-05, "bf16-mixed", [1, 2])]
        ['-', '3', '0.9375', '2.5e-05', 'bf16-mixed', '[1, 2]']
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e6 else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def format_runs(runs: Sequence[RunInfo], fmt: Literal["text", "md"] = "text") -> str:
    """The ``mmfuse runs list`` table: name, created, commit (``*`` = dirty tree), tags, best and final val/acc."""
    headers = ["name", "created", "commit", "tags", f"best {BEST_METRIC}", f"final {BEST_METRIC}"]
    rows = [
        [
            run.name,
            run.created[:19].replace("T", " "),
            (run.commit or "-") + ("*" if run.dirty else ""),
            ",".join(run.tags) or "-",
            format_value(run.metrics.get(f"best {BEST_METRIC}")),
            format_value(run.metrics.get(BEST_METRIC)),
        ]
        for run in runs
    ]
    return format_table(headers, rows, fmt)


def format_compare(comparison: dict[str, Any], fmt: Literal["text", "md"] = "text") -> str:
    """The result of :func:`compare_runs` as two tables: differing config keys, then metrics (with the change
    against the baseline in parentheses)."""
    names: list[str] = comparison["runs"]
    base = comparison["baseline"]
    headers = [name + (" (baseline)" if name == base else "") for name in names]
    diff_rows = [[key, *(format_value(values[n]) for n in names)] for key, values in comparison["config_diff"].items()]
    metric_names = sorted({m for metrics in comparison["metrics"].values() for m in metrics})
    metric_rows = []
    for metric in metric_names:
        cells = [metric]
        for name in names:
            cell = format_value(comparison["metrics"][name].get(metric))
            change = comparison["delta"].get(name, {}).get(metric)
            sign = "+" if change is not None and change >= 0 else "-"
            cells.append(cell if change is None else f"{cell} ({sign}{format_value(abs(change))})")
        metric_rows.append(cells)
    config = format_table(["config", *headers], diff_rows, fmt) if diff_rows else "configs are identical"
    metrics = format_table(["metric", *headers], metric_rows, fmt) if metric_rows else "no metrics"
    return f"{config}\n\n{metrics}"
