"""``mmfuse report``: one Markdown + HTML page about a checkpoint and every check that was run on it.

Examples::

    mmfuse report --ckpt runs/shapes_color/version_0/checkpoints/X.ckpt --config experiments/shapes_color.yaml \\
        --out runs/report --from runs/audit runs/probe runs/explain
    mmfuse report --ckpt ... --config ... --out runs/report --run counterfactual,robustness

The report holds the checkpoint (size, sha256, epoch, step, architecture), the config, the run's provenance
(``provenance.json`` next to the checkpoint's run directory) and one section per check found by file name in the
``--from`` directories and their direct subdirectories: ``audit.md``, ``baselines.md``, ``counterfactual.md``,
``robustness.md``, ``faithfulness.md``. A check not found is listed as "not run". ``--run`` runs the named checks
first (into ``<out>/checks/<name>``) with their default settings.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

from mmfuse.commands._common import add_config_overrides, build_cli, existing_path
from mmfuse.errors import ConfigError
from mmfuse.io import read_json
from mmfuse.progress import stage, track

__all__ = ["add_arguments", "run", "RUNNABLE"]

RUNNABLE = ("audit", "baselines", "counterfactual", "robustness")
"""Checks that ``--run`` can start itself."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmfuse report``."""
    add = parser.add_argument
    add("--ckpt", required=True, help="checkpoint written by `mmfuse fit`")
    add("--config", required=True, help="experiment YAML (or the run's config.yaml) the checkpoint was trained with")
    add("--out", required=True, help="output directory: report.md, report.html, assets/")
    add("--from", dest="sources", nargs="+", default=[], metavar="DIR",
        help="directories with audit.md, baselines.md, counterfactual.md, robustness.md, faithfulness.md")  # fmt: skip
    add("--run", default="", metavar="NAMES", help=f"comma-separated checks to run first: {','.join(RUNNABLE)}")
    add_config_overrides(parser)  # passed to the --run checks too


def run(args: argparse.Namespace) -> int:
    """Gather the sections, write the report, print where it is."""
    from mmfuse.probes.report import find_sections, write_model_report
    from mmfuse.training import check_checkpoint_matches

    ckpt = existing_path(args.ckpt, "--ckpt")
    config = existing_path(args.config, "--config")
    to_run = _runs(args.run)
    missing = [d for d in args.sources if not Path(d).is_dir()]
    if missing:
        raise ConfigError(f"--from {missing[0]!r}: no such directory")
    out = Path(args.out)
    if out.is_file():
        raise ConfigError(f"--out {args.out!r} is a file; give a directory")
    with stage("config"):
        cli = build_cli(config, args.overrides)
        check_checkpoint_matches(ckpt, dict(cli.model.hparams))
    checks = track(to_run, "checks", unit="checks", detail=str)
    ran = [_run_check(name, ckpt, config, out / "checks" / name, args.overrides) for name in checks]
    sections = find_sections([*ran, *args.sources])
    provenance, provenance_path = _provenance(ckpt)
    with stage("checkpoint"):
        facts = _checkpoint_facts(ckpt)
    md_path, html_path = write_model_report(
        out, checkpoint=facts, config_text=config.read_text(), config_path=str(config), provenance=provenance,
        provenance_path=provenance_path, sections=sections,
    )  # fmt: skip
    for section in sections:
        print(f"{section.spec.title:<30} {'included: ' + str(section.source) if section.source else 'not run'}")
    print(f"model report: {md_path}, {html_path}")
    return 0


def _runs(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNNABLE]
    if unknown:
        raise ConfigError(f"--run {unknown}: choose from {','.join(RUNNABLE)}")
    return list(dict.fromkeys(names))


def _run_check(name: str, ckpt: Path, config: Path, out: Path, overrides: list[str]) -> Path:
    """Run one check into ``out`` through its own command; returns ``out``."""
    import importlib

    from mmfuse.commands import COMMANDS, run_command

    command = "probe" if name in ("counterfactual", "robustness") else name
    try:
        importlib.import_module(COMMANDS[command][0])
    except ImportError as err:
        raise ConfigError(f"--run {name}: the `mmfuse {command}` command is not available here ({err})") from err
    argv = [name] if command == "probe" else []
    argv += ["--config", str(config), "--ckpt", str(ckpt), "--out", str(out), *overrides]
    print(f"running mmfuse {command} {' '.join(argv)}")
    run_command(command, argv)  # a failing verdict (exit 1) is a result to report, not an error
    return out


def _checkpoint_facts(ckpt: Path) -> dict[str, Any]:
    """What the report says about the checkpoint: file, training progress, architecture and classes."""
    from mmfuse.training import safe_load

    payload = safe_load(ckpt)
    hparams = payload.get("hyper_parameters") or {}
    sha = hashlib.sha256()
    with ckpt.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    spec = hparams.get("data_spec") or {}
    vision, text, fusion = (hparams.get(k) or {} for k in ("vision", "text", "fusion"))
    return {
        "path": str(ckpt.resolve()),
        "size": f"{ckpt.stat().st_size / 1e6:.1f} MB",
        "sha256": sha.hexdigest(),
        "epoch": payload.get("epoch"),
        "global step": payload.get("global_step"),
        "width": hparams.get("width"),
        "vision encoder": _get(vision, "model_name"),
        "text encoder": _get(text, "model_type") or _get(text, "model_name"),
        "fusion": _get(fusion, "name"),
        "classes": list(_get(spec, "class_names") or []) or None,
        "image size": _get(spec, "image_size"),
    }


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _provenance(ckpt: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The run's provenance.json (the run directory holds ``checkpoints/<ckpt>``), or None."""
    from mmfuse.provenance import PROVENANCE_FILE

    run_dir = ckpt.resolve().parent.parent if ckpt.resolve().parent.name == "checkpoints" else ckpt.resolve().parent
    path = run_dir / PROVENANCE_FILE
    if not path.is_file():
        return None, str(run_dir)
    return read_json(path, "provenance record"), str(path)
