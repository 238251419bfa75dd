"""The command line: short fits, every experiment YAML, and clear messages for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmfuse.cli import build_from_config, main
from mmfuse.models import ImageTextModel
from mmfuse.training import FusionLitModule
from tests.conftest import REPO, TINY_CLI_ARGS

MAIN = str(REPO / "experiments" / "shapes_color.yaml")
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))


def _args(tmp_path: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [
        "--config", MAIN, *TINY_CLI_ARGS, f"--trainer.default_root_dir={tmp_path}", f"--data.cache_dir={cache_dir}",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_short_fit_logs_checkpoints_and_summarises(
    precision: str, tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    main(["fit", *_args(tmp_path, cache_dir, f"--trainer.precision={precision}")])
    out = capsys.readouterr().out
    assert "mmfuse fit summary" in out and precision in out
    run = tmp_path / "version_0"
    assert (run / "metrics.csv").is_file() and list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    model = ImageTextModel.from_pretrained(run / "model")  # the shareable copy, no Lightning needed
    assert {p.name for p in (run / "model").iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert model.cfg.fusion.name == "cross_attention"
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["precision"] == precision


def test_test_subcommand_prints_summary(tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture) -> None:
    main(["test", *_args(tmp_path, cache_dir)])
    assert "mmfuse test summary" in capsys.readouterr().out


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_parses_and_builds(experiment: Path, tmp_path: Path, cache_dir: Path) -> None:
    overrides = [*TINY_CLI_ARGS, f"--data.cache_dir={cache_dir}", f"--trainer.default_root_dir={tmp_path}"]
    cli = build_from_config(experiment, overrides)
    assert isinstance(cli.model, FusionLitModule)
    assert cli.model.model_cfg.head.num_classes == cli.datamodule.spec.num_classes


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--model.fusion.num_layerz=2", "num_layerz"),
        ("--data.batch_size=many", "many"),
        ("--model.vision.model_name=resnet_18", "resnet_18"),
        ("--model.vision.pretrained=/no/such/weights.safetensors", "/no/such/weights.safetensors"),
        ("--model.head.num_classes=7", "num_classes=7"),
        ("--model.text.model_type=bertt", "bertt"),
        ("--model.fusion.name=cross_atention", "cross_atention"),
        ("--trainer.precision=16-mixed", "'16-mixed' needs a CUDA GPU"),
        ("--trainer.strategy=fsdp", "'fsdp' needs CUDA GPUs"),
    ],
)
def test_bad_input_ends_with_a_message_naming_the_value(
    override: str, message: str, tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *_args(tmp_path, cache_dir, override)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("overlay", sorted((REPO / "experiments" / "launch").glob("*.yaml")), ids=lambda p: p.stem)
def test_launch_overlays_stack_on_an_experiment(overlay: Path, tmp_path: Path, cache_dir: Path) -> None:
    # The overlay's own trainer values are checked; the machine-specific ones are set back to this CPU to build.
    expected = yaml.safe_load(overlay.read_text())
    here = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto"]
    args = ["--config", str(overlay), *TINY_CLI_ARGS, *here, f"--data.cache_dir={cache_dir}",
            f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    cli = build_from_config(MAIN, args)
    assert cli.config.trainer.precision == expected["trainer"]["precision"]
    for key, value in expected["model"]["speed"].items():
        assert getattr(cli.model.speed, key) == value
