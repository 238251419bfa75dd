"""Run directories: find, resolve, tag and compare, on directories fabricated by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmfuse.errors import ConfigError
from mmfuse.runs import (
    RunInfo,
    compare_runs,
    find_runs,
    format_compare,
    format_runs,
    read_curves,
    read_tags,
    resolve_run,
    tag_run,
)

METRICS_HEADER = "epoch,step,train/loss,val/acc,val/loss\n"


def make_run(
    root: Path,
    name: str,
    *,
    num_layers: int = 2,
    lr: float = 0.001,
    val_acc: tuple[float, ...] = (0.5, 0.75, 0.625),
    created: str | None = None,
    commit: str | None = None,
    dirty: bool = False,
) -> Path:
    """A run directory as ``mmfuse fit`` leaves it: config.yaml, metrics.csv and (optionally) provenance.json.

    metrics.csv has one training row, then one validation row per ``val_acc`` value (as the CSV logger writes them).
    """
    run = root / name
    run.mkdir(parents=True)
    config = {"seed_everything": 0, "model": {"fusion": {"num_layers": num_layers}, "optim": {"lr": lr}}, "tags": []}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    rows = ["0,1,2.5,,"] + [f"0,{i + 2},,{acc},{1 - acc}" for i, acc in enumerate(val_acc)]
    (run / "metrics.csv").write_text(METRICS_HEADER + "\n".join(rows) + "\n")
    if created is not None:
        record = {"created": created, "git": {"commit": commit or "0" * 40, "dirty": dirty}}
        (run / "provenance.json").write_text(json.dumps(record))
    return run


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three runs whose names do not sort in creation order: v10 (oldest), v2, and a nested base run (newest)."""
    root = tmp_path / "runs"
    make_run(root, "exp/version_10", created="2024-01-01T10:00:00+00:00", commit="a" * 40)
    make_run(root, "exp/version_2", num_layers=4, val_acc=(0.8, 0.9), created="2024-01-02T10:00:00+00:00", dirty=True)
    make_run(root, "base/version_0", lr=0.01, val_acc=(0.25,), created="2024-01-03T10:00:00.5+00:00")
    (root / "exp" / "version_10" / "checkpoints").mkdir()  # not a run: no config.yaml
    return root


def test_find_runs_sorts_by_creation_and_reads_metrics_and_config(root: Path) -> None:
    runs = find_runs(root)
    assert [run.name for run in runs] == ["exp/version_10", "exp/version_2", "base/version_0"]
    first = runs[0]
    assert first.commit == "aaaaaaa" and first.dirty is False and runs[1].dirty is True
    assert first.metrics["val/acc"] == 0.625 and first.metrics["best val/acc"] == 0.75
    assert first.metrics["train/loss"] == 2.5 and first.metrics["step"] == 4  # last non-empty value per column
    assert first.config["model.fusion.num_layers"] == 2 and first.config["tags"] == []


def test_find_runs_without_provenance_uses_file_times(tmp_path: Path) -> None:
    make_run(tmp_path, "old")
    (run,) = find_runs(tmp_path)
    assert run.commit is None and run.dirty is None and run.created.endswith("+00:00")
    assert "-" in format_runs([run]).splitlines()[2]


def test_find_runs_on_a_missing_root_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere"):
        find_runs(tmp_path / "nowhere")


def test_resolve_by_path_name_and_tag(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_run(str(root / "exp" / "version_2"), root).name == "exp/version_2"
    assert resolve_run("exp/version_2", root).name == "exp/version_2"
    monkeypatch.chdir(root.parent)
    assert resolve_run("runs/exp/version_2", "runs").name == "exp/version_2"  # a path relative to the cwd
    tag_run("exp/version_2", "best", root)
    assert resolve_run("best", root).name == "exp/version_2"


def test_unknown_reference_lists_close_names(root: Path) -> None:
    with pytest.raises(ConfigError, match=r"'exp/version_3'.*did you mean.*exp/version_2"):
        resolve_run("exp/version_3", root)


def test_tags_live_in_one_file_and_show_on_runs(root: Path) -> None:
    tagged = tag_run("exp/version_10", "baseline", root)
    assert tagged.tags == ("baseline",)
    tag_run(tagged, "release/v1.0", root)
    assert read_tags(root) == {"baseline": "exp/version_10", "release/v1.0": "exp/version_10"}
    assert [run.tags for run in find_runs(root)] == [("baseline", "release/v1.0"), (), ()]
    assert json.loads((root / "tags.json").read_text()) == read_tags(root)


def test_tag_on_another_run_needs_force(root: Path) -> None:
    tag_run("exp/version_10", "best", root)
    tag_run("exp/version_10", "best", root)  # the same run again is fine
    with pytest.raises(ConfigError, match="'best' is already on run 'exp/version_10'"):
        tag_run("exp/version_2", "best", root)
    assert read_tags(root) == {"best": "exp/version_10"}
    tag_run("exp/version_2", "best", root, force=True)
    assert read_tags(root) == {"best": "exp/version_2"}


@pytest.mark.parametrize("bad", ["has space", "semi;colon", "", "ümlaut"])
def test_bad_tag_names_are_rejected(root: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="bad tag name"):
        tag_run("exp/version_10", bad, root)
    assert not (root / "tags.json").exists()


def test_tag_may_not_shadow_a_run_name(root: Path) -> None:
    with pytest.raises(ConfigError, match="shadow"):
        tag_run("exp/version_10", "exp/version_2", root)


def test_tag_pointing_at_a_removed_run(root: Path) -> None:
    (root / "tags.json").write_text(json.dumps({"gone": "exp/version_99"}))
    with pytest.raises(ConfigError, match="'gone' points at run 'exp/version_99'"):
        resolve_run("gone", root)


def test_compare_shows_only_differing_config_and_baseline_deltas(root: Path) -> None:
    runs = [resolve_run(name, root) for name in ("exp/version_10", "exp/version_2")]
    baseline = resolve_run("base/version_0", root)
    comparison = compare_runs(runs, baseline)
    assert comparison["runs"] == ["base/version_0", "exp/version_10", "exp/version_2"]
    assert set(comparison["config_diff"]) == {"model.fusion.num_layers", "model.optim.lr"}
    assert comparison["config_diff"]["model.fusion.num_layers"]["exp/version_2"] == 4
    assert comparison["metrics"]["exp/version_2"]["best val/acc"] == 0.9
    assert comparison["delta"]["exp/version_10"]["val/acc"] == pytest.approx(0.625 - 0.25)
    assert comparison["delta"]["exp/version_2"]["best val/acc"] == pytest.approx(0.9 - 0.25)
    assert "base/version_0" not in comparison["delta"]
    json.dumps(comparison)


def test_compare_without_baseline_and_missing_keys(tmp_path: Path) -> None:
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b")
    (b / "config.yaml").write_text(yaml.safe_dump({"seed_everything": 0, "extra": {"flag": True}}))
    comparison = compare_runs(find_runs(tmp_path))
    assert comparison["config_diff"]["extra.flag"] == {"a": None, "b": True}
    assert "seed_everything" not in comparison["config_diff"] and comparison["delta"] == {}
    assert a.name in comparison["metrics"]


def test_tables_are_aligned_text_and_markdown(root: Path) -> None:
    runs = find_runs(root)
    lines = format_runs(runs).splitlines()
    assert lines[0].split() == ["name", "created", "commit", "tags", "best", "val/acc", "final", "val/acc"]
    column = lines[0].index("created")
    assert all(line[column:].startswith("2024-01-0") for line in lines[2:])  # aligned under its header
    assert lines[3].startswith("exp/version_2") and "0000000*" in lines[3] and "0.9000" in lines[3]
    assert "2024-01-01 10:00:00" in lines[2]
    text = format_compare(compare_runs(runs[:2], runs[2]))
    assert "0.6250 (+0.3750)" in text and "(baseline)" in text
    md = format_compare(compare_runs(runs[:2]), "md").splitlines()
    assert md[0].startswith("| config |") and md[1].startswith("| --- |")


def test_identical_configs_say_so(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    make_run(tmp_path, "b")
    assert format_compare(compare_runs(find_runs(tmp_path))).startswith("configs are identical")


def test_run_info_is_plain_data(root: Path) -> None:
    run = find_runs(root)[0]
    assert isinstance(run, RunInfo) and run.path == root / "exp" / "version_10"


def test_read_curves_gives_each_column_its_logged_steps(root: Path) -> None:
    curves = read_curves(root / "exp" / "version_10")
    assert curves == {
        "train/loss": ([1], [2.5]),
        "val/acc": ([2, 3, 4], [0.5, 0.75, 0.625]),
        "val/loss": ([2, 3, 4], [0.5, 0.25, 0.375]),
    }


def test_read_curves_names_a_missing_file_or_a_bad_cell(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="metrics.csv'?: no such file"):
        read_curves(tmp_path)
    (tmp_path / "metrics.csv").write_text(METRICS_HEADER + "0,1,2.5,,\n0,2,,high,\n")
    with pytest.raises(ConfigError, match=r"metrics.csv:3: column 'val/acc' holds 'high'"):
        read_curves(tmp_path)
