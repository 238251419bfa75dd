"""Reading and writing mmfuse's own files: a JSON object or YAML mapping read with a one-line error, and atomic
writes of files and directories (a temporary sibling renamed into place, so no reader sees half a result)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError

__all__ = ["read_json", "read_yaml", "kind_of", "write_atomic", "write_json", "atomic_path", "atomic_dir"]


def read_json(path: str | Path, what: str = "file", content: str = "a JSON object") -> dict[str, Any]:
    """The JSON object stored in ``path``.

    Args:
        path: the file.
        what: what the file is, for the message (``lexicon file``).
        content: what it must hold, for the message (``a JSON object mapping words to lists of synonyms``).

    Raises:
        ConfigError: one line naming the file and what was wrong: missing, not UTF-8, not valid JSON (with line
            and column), or not a JSON object.
    """
    where = f"{what} {str(path)!r}"
    text = _read_text(Path(path), where)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where} is not valid JSON: line {err.lineno} column {err.colno}: {err.msg}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected {content}, got {kind_of(data)}")
    return data


def read_yaml(path: str | Path, what: str = "file", content: str = "a YAML mapping") -> dict[str, Any]:
    """The YAML mapping stored in ``path`` (an empty file reads as an empty mapping).

    Args:
        path: the file.
        what: what the file is, for the message (``experiment config``).
        content: what it must hold, for the message.

    Raises:
        ConfigError: one line naming the file and what was wrong: missing, not UTF-8, not valid YAML (with line
            and column), or not a mapping.
    """
    import yaml

    where = f"{what} {str(path)!r}"
    text = _read_text(Path(path), where)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where} is not valid YAML: {at}{' '.join(str(problem).split())}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected {content}, got {kind_of(data)}")
    return data


def _read_text(path: Path, where: str) -> str:
    if not path.is_file():
        raise ConfigError(f"{where}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where} is not UTF-8 text ({err.reason} at byte {err.start})") from err


def kind_of(obj: Any) -> str:
    """A parsed JSON / YAML value's kind in words, for messages: ``an object``, ``a list``, ``a string``, ``null``."""
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(type(obj), type(obj).__name__)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends without error, removed
    otherwise. For writers that take a path (``safetensors``, ``torch.save``).

    The name is fresh (``.<name>.<pid>.<random>.tmp``) and the file is not created first, so the result gets the
    usual umask permissions.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        yield tmp
        with open(tmp, "rb") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary sibling renamed over it; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "xb") as file:
        file.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def write_json(path: str | Path, obj: Any, **dumps: Any) -> Path:
    """Write ``obj`` as indented JSON (and a final newline) atomically; ``dumps`` go to :func:`json.dumps`."""
    return write_atomic(path, json.dumps(obj, **{"indent": 2, **dumps}) + "\n")


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """A temporary directory beside ``target`` to fill; renamed to ``target`` when the block ends without error,
    removed otherwise.

    When ``target`` appeared meanwhile (another process finished first), it is kept and the temporary copy is
    removed: both hold the same result.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        yield tmp
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
