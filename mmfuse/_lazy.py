"""Public names of a package imported on first use (PEP 562 module ``__getattr__``), so that importing one light
submodule (``mmfuse.cli``, ``mmfuse.audit.config``) does not import the heavy rest of the package with it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package`` for its public names.

    Args:
        package: the package's ``__name__``.
        exports: module -> the public names it defines (as the package's ``from module import ...`` lines would).

    Returns:
        ``(__getattr__, __dir__)``: the first imports a name's module on first access and keeps the name in the
        package, so later lookups are plain; the second lists the names before they are imported.

    Example:
        >>> getattr_, dir_ = lazy_exports("mmfuse", {"mmfuse.errors": ("ConfigError",)})
        >>> getattr_("ConfigError").__name__, "ConfigError" in dir_()
        ('ConfigError', True)
    """
    home = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home})

    return __getattr__, __dir__
