"""The packages whose public names are imported on first use (``mmfuse._lazy``) resolve every name they list."""

from __future__ import annotations

import importlib
from typing import Any

import pytest


@pytest.mark.parametrize("package", ["mmfuse", "mmfuse.audit", "mmfuse.bench"])
def test_every_public_name_resolves_and_is_listed(package: str) -> None:
    module: Any = importlib.import_module(package)
    home = {name: source for source, names in module._EXPORTS.items() for name in names}
    assert set(home) == set(module.__all__)
    for name, source in home.items():
        assert getattr(module, name) is getattr(importlib.import_module(source), name)
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018
