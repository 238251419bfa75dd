"""``mmfuse.load_config``: an experiment YAML with its base file and ``--section.key value`` overrides, read as
``mmfuse fit`` reads it, without Lightning; bad keys end with one line naming the key and the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmfuse import load_config
from mmfuse.cli import main
from mmfuse.errors import ConfigError
from mmfuse.experiment import SECTIONS, read_experiment
from mmfuse.training.cli import build_from_config
from tests.conftest import REPO, TINY_CLI_ARGS

MAIN = REPO / "experiments" / "shapes_color.yaml"
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _printed(capsys: pytest.CaptureFixture, *args: str) -> dict:
    """``mmfuse fit <args> --print_config``, read back."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_load_config_reads_the_base_file_and_applies_overrides() -> None:
    overrides = ["--model.fusion.num_layers", "1", "--optim.lr=3e-4", "--speed.channels_last", "true",
                 "--data.cache_dir", "/tmp/x", "--trainer.devices=1", "--model.metrics.rerank_k", "2"]  # fmt: skip
    cfg = load_config(MAIN, overrides)
    assert cfg.model.fusion.num_layers == 1 and cfg.model.fusion.num_heads == 4  # the override, the base's value
    assert cfg.model.width == 128 and cfg.model.vision.model_kwargs["channels"] == [32, 32, 64, 128]  # the base's
    assert cfg.optim.lr == 3e-4 and cfg.speed.channels_last is True and cfg.metrics.rerank_k == 2
    assert cfg.data == {"batch_size": 32, "world": {"task": "color"}, "cache_dir": "/tmp/x"}
    assert cfg.trainer["devices"] == 1 and cfg.trainer["default_root_dir"] == "runs/shapes_color"
    assert cfg.extra == {"seed_everything": 0} and cfg.path == str(MAIN)


def test_data_overrides_name_the_module_argument_with_or_without_init_args() -> None:
    flickr = REPO / "experiments" / "flickr8k_finetune.yaml"
    data = load_config(flickr, ["--data.image_size", "32", "--data.init_args.batch_size=4"]).data
    assert data["class_path"] == "ImageTextDataModule" and data["init_args"]["image_size"] == 32
    assert data["init_args"]["batch_size"] == 4 and data["init_args"]["source"]["split_sizes"]["train"] == 800
    assert load_config(MAIN, ["--data.init_args.batch_size=4"]).data["batch_size"] == 4  # no class_path here


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--model.fusion.nam", "1"], "override --model.fusion.nam 1: unrecognized arguments"),
        (["--model.width", "wide"], 'override --model.width wide: Parser key "model.width": Expected a'),
        (["--optm.lr", "0.1"], "override --optm.lr: no section 'optm'"),
        (["--model.optim.lr", "0.1"], "override --model.optim.lr: optim is a top-level section now: --optim.lr"),
        (["--optim.ema_decay", "2"], "optim.ema_decay=2.0 must be in (0, 1)"),
    ],
)
def test_a_bad_override_is_one_line_naming_the_key_and_the_file(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(MAIN, overrides)
    assert str(err.value).startswith(f"{MAIN}: ") and message in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_an_override_without_a_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^override --model.width: no value \(e.g. --model.width 1"):
        load_config(MAIN, ["--model.width"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  fusion:\n    nam: concat\n", "Group 'model' does not accept option 'fusion.nam'"),
        ("model:\n  width: wide\n", 'Parser key "model.width": Expected a'),
        ("optm:\n  lr: 0.1\n", "unknown section 'optm'"),
        ("model:\n  optim:\n    lr: 0.1\noptim:\n  lr: 0.2\n", "model.optim and optim: both given"),
        ("- a list\n", "not a YAML mapping"),
    ],
)
def test_a_bad_key_in_the_file_is_one_line_naming_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_the_former_layout_of_a_run_config_is_read_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """Run configs written when optim and speed sat under model: still load, in load_config and in mmfuse fit."""
    path = _write(tmp_path / "old.yaml", "model:\n  speed:\n    compile: true\n  optim:\n    lr: 0.25\n")
    cfg = load_config(path)
    assert cfg.speed.compile is True and cfg.optim.lr == 0.25
    assert "model.speed is read as the top-level section speed:" in caplog.text and str(path) in caplog.text
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert exit_info.value.code == 0 and printed["speed"]["compile"] is True and printed["optim"]["lr"] == 0.25
    assert "optim" not in printed["model"] and "speed" not in printed["model"]


def test_an_experiment_shows_only_what_it_changes_over_its_base(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write(tmp_path / "base" / "family.yaml", (
        "trainer:\n  max_epochs: 3\n  log_every_n_steps: 50\n"
        "model:\n  width: 64\n  vision:\n    model_kwargs: {channels: [8, 16, 32, 64], stem_width: 8}\n"
        "  fusion:\n    num_layers: 3\n"
        "optim:\n  lr: 0.01\n  lr_mult: {vision: 0.1}\n"
        "data:\n  world:\n    task: exists\n    num_colors: 4\n  batch_size: 16\n"
    ))  # fmt: skip
    experiment = _write(tmp_path / "experiment.yaml", (
        "base: base/family.yaml\n"
        "trainer:\n  max_epochs: 1\n"
        "model:\n  vision:\n    model_kwargs: {channels: [4, 8, 16, 32]}\n  fusion:\n    name: concat\n"
        "data:\n  world:\n    task: color\n"
    ))  # fmt: skip
    values, base = read_experiment(experiment)
    assert base == tmp_path / "base" / "family.yaml"
    assert values["trainer"] == {"max_epochs": 1, "log_every_n_steps": 50}
    assert values["model"]["vision"]["model_kwargs"] == {"channels": [4, 8, 16, 32], "stem_width": 8}
    assert values["model"]["fusion"] == {"num_layers": 3, "name": "concat"}
    assert values["data"] == {"world": {"task": "color", "num_colors": 4}, "batch_size": 16}
    cfg = load_config(experiment)
    assert (cfg.model.width, cfg.model.fusion.name, cfg.optim.lr_mult) == (64, "concat", {"vision": 0.1})
    printed = _printed(capsys, "--config", str(experiment))  # mmfuse fit reads the base the same way
    assert printed["model"]["width"] == 64 and printed["model"]["fusion"]["num_layers"] == 3
    assert printed["model"]["vision"]["model_kwargs"] == {"channels": [4, 8, 16, 32], "stem_width": 8}
    assert printed["optim"]["lr"] == 0.01 and printed["trainer"]["max_epochs"] == 1
    assert printed["data"]["init_args"]["world"]["num_colors"] == 4 and printed["data"]["init_args"]["batch_size"] == 16


@pytest.mark.parametrize(
    ("base_text", "message"),
    [
        (None, "base: 'base.yaml': no such file"),
        ("base: other.yaml\n", "a base file names no base of its own (base: 'other.yaml')"),
    ],
)
def test_a_base_that_cannot_work_is_named(tmp_path: Path, base_text: str | None, message: str) -> None:
    if base_text is not None:
        _write(tmp_path / "base.yaml", base_text)
    experiment = _write(tmp_path / "experiment.yaml", "base: base.yaml\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(experiment)


def test_a_runs_saved_config_loses_the_fit_commands_keys(tmp_path: Path) -> None:
    saved = _write(tmp_path / "config.yaml", "ckpt_path: last\nweights_only: null\nmodel:\n  width: 32\n")
    cfg = load_config(saved)
    assert cfg.model.width == 32 and "ckpt_path" not in cfg.to_dict()


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.stem)
def test_load_config_reads_every_experiment_as_mmfuse_fit_does(experiment: Path, capsys: pytest.CaptureFixture) -> None:
    printed = _printed(capsys, "--config", str(experiment))
    assert set(printed) <= set(SECTIONS)  # every section mmfuse fit has, load_config knows
    read = load_config(experiment).to_dict()
    for section in ("model", "optim", "speed"):
        assert read[section] == {k: v for k, v in printed[section].items() if k != "data_spec"}, section
    for section in ("trainer", "checkpoint"):  # kept as written: every value written is the one fit resolved
        _assert_within(read.get(section, {}), printed[section])
    _assert_within(read["data"].get("init_args", read["data"]), printed["data"]["init_args"])


def _assert_within(written: dict, resolved: dict) -> None:
    for key, value in written.items():
        if isinstance(value, dict) and isinstance(resolved.get(key), dict):
            _assert_within(value, resolved[key])
        else:
            assert resolved.get(key) == value, key


def test_the_baselines_section_is_kept_and_reaches_the_fit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    experiment = _write(
        tmp_path / "x.yaml", f"base: {MAIN.parent / 'base' / 'shapes.yaml'}\nbaselines:\n  enabled: false\n"
    )
    cfg = load_config(experiment, ["--baselines.max_train=500"])
    assert cfg.extra["baselines"] == {"enabled": False, "max_train": 500}
    assert cfg.to_dict()["baselines"] == {"enabled": False, "max_train": 500}
    printed = _printed(capsys, "--config", str(experiment), "--baselines.max_train=500")
    assert printed["baselines"] == {"enabled": False, "max_train": 500, "max_val": 5000, "min_gain": 0.0}
    assert _printed(capsys, "--config", str(MAIN))["baselines"]["enabled"] is True  # on by default


def test_optim_and_speed_reach_the_module_from_their_own_sections(tmp_path: Path, cache_dir: Path) -> None:
    args = [*TINY_CLI_ARGS, f"--data.cache_dir={cache_dir}", f"--trainer.default_root_dir={tmp_path}"]
    cli = build_from_config(MAIN, [*args, "--optim.lr", "0.02", "--speed.freeze_text=true"])
    assert cli.model.optim.lr == 0.02 and cli.model.speed.freeze_text is True
    assert cli.model.hparams["optim"]["lr"] == 0.02  # checkpoints keep them beside the model's fields
    from_python = build_from_config(load_config(MAIN, [*args, "--optim.lr", "0.02"]))
    assert from_python.model.optim.lr == 0.02 and from_python.model.model_cfg == cli.model.model_cfg


def test_importing_load_config_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from mmfuse import load_config\n"
        "heavy = ('lightning', 'transformers', 'timm', 'torch')\n"
        "print(*[m for m in heavy if m in sys.modules])\n"
        f"load_config({str(MAIN)!r}, ['--optim.lr', '0.1'])\n"
        "print('lightning' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["", "False"]  # nothing heavy on import; no Lightning when reading either
