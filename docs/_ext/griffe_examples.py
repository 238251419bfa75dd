"""Griffe extension of the API reference: Google-style ``Example:`` sections are read as ``Examples:``.

The Google style (and Sphinx's napoleon) accept both spellings, and the package writes ``Example:``. griffe parses
only the plural as an examples section; it renders the singular as prose, where a doctest such as
``tok(text)["input_ids"][-3]`` reads as a Markdown reference link and fails the strict build.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class SingularExamples(griffe.Extension):
    """Rename ``Example:`` section headers to ``Examples:`` before the docstring is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
