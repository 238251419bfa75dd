"""Every notebook under ``notebooks/``: committed without outputs, opening with what it shows and how long it takes,
importing only the public API of mmfuse, and running top to bottom in a fresh kernel (CPU, offline).

New notebooks are picked up by the glob; nothing here names one.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # a cell that hangs fails the test instead of the whole run
DURATION = re.compile(r"\b\d+(\.\d+)?\s*(s|seconds?|min|minutes?)\b")
STRIP_HINT = "run `make strip-notebooks` (nbstripout) before committing"


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_notebooks_are_found() -> None:
    assert NOTEBOOKS, f"no notebooks under {REPO / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    notebook = _read(path)
    nbformat.validate(notebook)
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs or execution counts; {STRIP_HINT}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_opens_with_what_it_shows_and_how_long_it_takes(path: Path) -> None:
    first = _read(path).cells[0]
    lines = [line for line in first.source.splitlines() if line.strip()]
    assert first.cell_type == "markdown" and len(lines) == 2, (
        f"{path.name}: the first cell must be markdown of two lines (what it shows; how long it takes), got "
        f"{first.cell_type} with {len(lines)} lines"
    )
    assert DURATION.search(lines[1]), f"{path.name}: the second line names no duration: {lines[1]!r}"


def _mmfuse_names(tree: ast.AST) -> list[tuple[str, str | None]]:
    """(module, name) of every ``from mmfuse... import name`` and (module, None) of every ``import mmfuse...``,
    plus ("mmfuse", attr) for every ``mmfuse.attr`` attribute read."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mmfuse":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "mmfuse"]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "mmfuse":
            found.append(("mmfuse", node.attr))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_uses_only_the_public_api(path: Path) -> None:
    """Every mmfuse name a notebook imports is in its module's ``__all__``; no private module is imported."""
    private = []
    for cell in _code_cells(_read(path)):
        tree = ast.parse(TransformerManager().transform_cell(cell.source))  # magics -> get_ipython() calls
        for module_name, name in _mmfuse_names(tree):
            if any(part.startswith("_") for part in module_name.split(".")):
                private.append(f"{module_name} (private module)")
                continue
            module = importlib.import_module(module_name)
            public = getattr(module, "__all__", None)
            if public is None:
                private.append(f"{module_name} (no __all__)")
            elif name is not None and name not in public and not (name.startswith("__") and name.endswith("__")):
                private.append(f"{module_name}.{name}")
    assert not private, f"{path.name} uses names outside the public API: {private}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Execute every cell in a fresh kernel started in the notebook's folder; a failing cell fails the test with
    its traceback. Nothing may be left in the notebooks' folder (outputs belong in temporary directories)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the kernel inherits this process's environment
    for name in ("MMFUSE_CHECKPOINT", "MMFUSE_BENCH_RESULTS"):  # the defaults are what is tested
        monkeypatch.delenv(name, raising=False)
    before = {p.name for p in path.parent.iterdir()}
    notebook = _read(path)
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    errors = [o for cell in _code_cells(notebook) for o in cell.outputs if o.output_type == "error"]
    assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
    left = sorted({p.name for p in path.parent.iterdir()} - before - {".ipynb_checkpoints"})
    assert not left, f"{path.name} wrote {left} into {path.parent}"
