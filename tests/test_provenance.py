"""Provenance records: git state in a throwaway repository, atomic writes, resumed runs, and the callback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mmfuse.provenance import PACKAGES, collect_provenance, write_provenance
from mmfuse.training.provenance import Provenance


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with one committed file (``a.txt``) and an ignored ``runs/``, isolated from user config."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.name", "Test")
    _git(repo, "config", "user.email", "test@example.com")
    (repo / "a.txt").write_text("one\n")
    (repo / ".gitignore").write_text("runs/\n")
    _git(repo, "add", "a.txt", ".gitignore")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


def test_clean_tree_records_commit_branch_and_tags(repo: Path) -> None:
    _git(repo, "tag", "v1")
    (repo / "runs").mkdir()
    (repo / "runs" / "ignored.txt").write_text("ignored files do not make the tree dirty")
    info = collect_provenance(repo_dir=repo / "runs", seed=3, data_fingerprint="abc", argv=["mmfuse", "fit"])
    git = info["git"]
    assert git["commit"] == _git(repo, "rev-parse", "HEAD")
    assert git["branch"] == "main" and git["tags"] == ["v1"]
    assert git["dirty"] is False and git["untracked"] == []
    assert (info["seed"], info["data_fingerprint"], info["argv"]) == (3, "abc", ["mmfuse", "fit"])
    json.dumps(info)  # JSON-able as a whole


def test_packages_and_hardware_are_recorded(repo: Path) -> None:
    info = collect_provenance(repo_dir=repo)
    assert set(info["packages"]) == {"python", *PACKAGES}
    assert info["packages"]["torch"] and info["packages"]["mmfuse"]
    hardware = info["hardware"]
    assert hardware["cpu_count"] >= 1 and hardware["torch_num_threads"] >= 1 and hardware["platform"]
    assert info["created"].endswith("+00:00")


def test_modified_tracked_file_is_dirty_and_diffed(repo: Path, tmp_path: Path) -> None:
    (repo / "a.txt").write_text("one\ntwo changed\n")
    (repo / "blob.bin").write_bytes(bytes(range(256)))
    _git(repo, "add", "blob.bin")  # a staged binary file travels in the diff as a binary patch
    info = collect_provenance(repo_dir=repo)
    assert info["git"]["dirty"] is True
    write_provenance(tmp_path / "run", info)
    diff = (tmp_path / "run" / "git.diff").read_text()
    assert "+two changed" in diff and "GIT binary patch" in diff
    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["git"]["diff_file"] == "git.diff"
    assert "diff_file" not in info["git"]  # the caller's record is left as it was


def test_untracked_file_is_dirty_and_listed(repo: Path, tmp_path: Path) -> None:
    (repo / "notes.md").write_text("scratch")
    info = collect_provenance(repo_dir=repo)
    assert info["git"]["dirty"] is True and info["git"]["untracked"] == ["notes.md"]
    write_provenance(tmp_path / "run", info)
    assert "#   notes.md" in (tmp_path / "run" / "git.diff").read_text()


def test_clean_tree_writes_no_diff(repo: Path, tmp_path: Path) -> None:
    path = write_provenance(tmp_path / "run", collect_provenance(repo_dir=repo))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["provenance.json"]  # no temp files left either
    (tmp_path / "plain.txt").write_text("")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)


def test_non_git_directory_records_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    (tmp_path / "plain").mkdir()
    git = collect_provenance(repo_dir=tmp_path / "plain")["git"]
    assert set(git) == {"error"} and "not a git repository" in git["error"]


def test_missing_git_records_an_error(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    git = collect_provenance(repo_dir=repo)["git"]
    assert set(git) == {"error"} and "git unavailable" in git["error"]


def test_resumed_write_keeps_the_original_and_appends(repo: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_provenance(run, collect_provenance(repo_dir=repo, seed=1))
    (repo / "a.txt").write_text("resumed with a change\n")
    write_provenance(run, collect_provenance(repo_dir=repo, seed=2))
    write_provenance(run, collect_provenance(repo_dir=repo, seed=3))
    record = json.loads((run / "provenance.json").read_text())
    assert record["seed"] == 1 and record["git"]["dirty"] is False
    assert [r["seed"] for r in record["resumed"]] == [2, 3]
    assert [r["git"]["diff_file"] for r in record["resumed"]] == ["git.resumed-1.diff", "git.resumed-2.diff"]
    assert not (run / "git.diff").exists() and "+resumed with a change" in (run / "git.resumed-2.diff").read_text()


NO_MODULE: Any = None  # the callback never touches the LightningModule


def _trainer(log_dir: Path | None, rank_zero: bool = True, datamodule: Any = None) -> Any:
    loggers = [] if log_dir is None else [SimpleNamespace(log_dir=str(log_dir), save_dir=str(log_dir))]
    return SimpleNamespace(is_global_zero=rank_zero, loggers=loggers, datamodule=datamodule)


def test_callback_writes_once_per_run_dir_with_seed_and_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    callback = Provenance()
    trainer = _trainer(tmp_path / "version_0", datamodule=SimpleNamespace(fingerprint=lambda: "f" * 64))
    callback.setup(trainer, NO_MODULE, "fit")
    callback.setup(trainer, NO_MODULE, "test")
    record = json.loads((tmp_path / "version_0" / "provenance.json").read_text())
    assert (record["seed"], record["data_fingerprint"]) == (7, "f" * 64)
    assert "resumed" not in record


def test_callback_skips_other_ranks_and_runs_without_a_log_dir(tmp_path: Path) -> None:
    callback = Provenance()
    callback.setup(_trainer(tmp_path / "rank1", rank_zero=False), NO_MODULE, "fit")
    callback.setup(_trainer(None), NO_MODULE, "fit")
    assert list(tmp_path.iterdir()) == []
