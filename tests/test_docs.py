"""The README and the docs: the README's Python example runs, every figure matches its result file, the site builds
with ``mkdocs build --strict`` (broken links, anchors and API references fail), and facts that went stale before
(the notebook count, paths of one machine) stay true."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import script

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def _docs_figures() -> ModuleType:
    return script("docs_figures")


def test_readme_opens_with_the_make_commands_and_stays_short() -> None:
    text = README.read_text()
    first_block = re.search(r"^```\w*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block[1].splitlines()]
    assert commands == ["make train", "make test"]
    targets = re.findall(r"^([a-z-]+):", (REPO / "Makefile").read_text(), flags=re.MULTILINE)
    assert {"train", "test"} <= set(targets)
    assert len(text.splitlines()) <= 200, "the README is the front door; move details to docs/"


def test_readme_python_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first Python block of the README runs offline, and prints what its last comment says it prints."""
    code = _python_blocks(README.read_text())[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out.strip().splitlines()
    promised = [line.removeprefix("# ") for line in code.strip().splitlines() if line.startswith("# ")]
    assert printed and promised and printed[-1] == promised[-1]


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_python_blocks_compile(page: Path) -> None:
    for block in _python_blocks(page.read_text()):
        compile(block, str(page), "exec")


def test_readme_links_point_at_files() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "the README links into docs/"
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_figures_match_their_result_files() -> None:
    """Each generated table and each marked inline figure equals what its file under benchmarks/results/ gives."""
    problems = _docs_figures().check()
    assert not problems, "stale figures (run `python scripts/docs_figures.py`):\n" + "\n".join(problems)


def test_the_figure_check_catches_stale_and_retired_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = _docs_figures()
    results, snippets = tmp_path / "benchmarks" / "results", tmp_path / "docs" / "snippets"
    results.mkdir(parents=True)
    snippets.mkdir(parents=True)
    (results / "x.json").write_text('{"runs": [{"name": "a", "acc": 0.9512}], "old": 1}')
    page = tmp_path / "page.md"
    monkeypatch.setattr(figures, "REPO", tmp_path)
    monkeypatch.setattr(figures, "RESULTS", results)
    monkeypatch.setattr(figures, "SNIPPETS", snippets)
    monkeypatch.setattr(figures, "TABLES", {})
    monkeypatch.setattr(figures, "NEEDS_RERUN", {"x.json": "old model"})
    monkeypatch.setattr(figures, "doc_files", lambda: [page])
    marker = "<!-- fig x.json runs/name=a/acc .3f -->{}<!-- /fig -->"
    page.write_text("accuracy " + marker.format("0.951"))
    assert any("NEEDS_RERUN" in problem for problem in figures.check())
    monkeypatch.setattr(figures, "NEEDS_RERUN", {})
    assert figures.check() == []
    page.write_text("accuracy " + marker.format("0.950"))
    assert any("reads '0.950'" in problem for problem in figures.check())
    assert figures.write() == [] and marker.format("0.951") in page.read_text()


def test_no_paths_of_one_machine() -> None:
    for page in [README, *PAGES]:
        text = page.read_text()
        for prefix in ("/work/", "/home/", "/Users/"):
            assert prefix not in text, f"{page.relative_to(REPO)} cites a path of one machine ({prefix}...)"


def test_notebooks_page_names_every_notebook() -> None:
    notebooks = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    page = (DOCS / "notebooks.md").read_text()
    named = sorted(set(re.findall(r"`(\w+\.ipynb)`", page)))
    assert named == notebooks
    counted = re.search(r"^(\w+) notebooks under `notebooks/`", page, flags=re.MULTILINE)
    assert counted is not None and NUMBER_WORDS.get(counted[1].lower()) == len(notebooks)


def test_docs_build_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link, anchor, snippet or API reference, or a page missing from the nav,
    fails the build."""
    missing = [name for name in ("mkdocs", "material", "mkdocstrings_handlers.python") if not _importable(name)]
    if missing:
        pytest.fail(f"docs tools missing ({missing}): pip install -e '.[docs]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "fusion" / "index.html").exists()


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
