"""Rows of cells as an aligned plain-text table or a Markdown table: the one table writer of every report and
command of mmfuse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

__all__ = ["format_table"]

_RULES = {"l": "---", "r": "---:", "c": ":---:"}


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Literal["text", "md"] = "text", align: str = ""
) -> str:
    """Rows of cells (each written with ``str``) as an aligned plain-text table or a Markdown table.

    In Markdown, a ``|`` inside a cell is escaped and a line break becomes a space, so any text fits in a cell.

    Args:
        headers: the column names.
        rows: the rows, one cell per column.
        fmt: ``text`` (columns padded with spaces, a dashed rule under the header) or ``md``.
        align: one letter per column, ``l`` (left), ``r`` (right) or ``c`` (centre); columns it does not cover
            are left-aligned. Plain text pads centred columns like left ones.

    Example:
        >>> print(format_table(["run", "acc"], [["a", "0.5"], ["bb", 1]], align="lr"))
        run  acc
        ---  ---
        a    0.5
        bb     1
        >>> print(format_table(["run", "acc"], [["a|b", "1"]], fmt="md", align="lr"))
        | run | acc |
        | --- | ---: |
        | a\\|b | 1 |
    """
    if any(a not in _RULES for a in align) or len(align) > len(headers):
        raise ValueError(f"align={align!r}: one of l, r, c per column ({len(headers)} columns)")
    kinds = align.ljust(len(headers), "l")
    table = [[str(cell) for cell in row] for row in [headers, *rows]]
    if fmt == "md":
        escaped = [[cell.replace("|", "\\|").replace("\n", " ") for cell in row] for row in table]
        lines = ["| " + " | ".join(row) + " |" for row in escaped]
        return "\n".join([lines[0], "| " + " | ".join(_RULES[k] for k in kinds) + " |", *lines[1:]])
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    padded = [[cell.rjust(w) if k == "r" else cell.ljust(w) for cell, w, k in zip(row, widths, kinds)] for row in table]
    lines = ["  ".join(row).rstrip() for row in padded]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
