"""The results directory of the AMP benchmark: ``amp.json`` (environment, settings, every cell, parity, Lightning
overhead), ``amp.md`` (tables) and one ``amp_<size>.png`` per size (speedup, MFU and peak memory by batch size).

:func:`load_results` reads a directory back (for notebooks); :func:`render_report` rebuilds ``amp.md`` and the
plots from ``amp.json`` alone, e.g. on a machine that has matplotlib when the benchmark machine had none.

Example::

    results = load_results("benchmarks/results/amp_cpu")
    [(c["precision"], c["batch_size"], c["speedup_vs_32_true"]) for c in results["cells"] if c["status"] == "ok"]
"""

from __future__ import annotations

import logging
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mmfuse import io
from mmfuse.errors import ConfigError
from mmfuse.provenance import git_state, hardware_info, package_versions
from mmfuse.tables import format_table

__all__ = [
    "JSON_NAME",
    "MD_NAME",
    "collect_environment",
    "format_markdown",
    "load_results",
    "render_report",
    "write_json",
    "write_plots",
]

logger = logging.getLogger(__name__)
JSON_NAME = "amp.json"
MD_NAME = "amp.md"
_VERSIONS = ("python", "torch", "timm", "transformers", "lightning", "torchmetrics", "numpy", "mmfuse")


def collect_environment(device: torch.device) -> dict[str, Any]:
    """Device, CUDA/cuDNN, library versions, git commit and dirty flag, CPU model and threads."""
    hardware = hardware_info()
    git = git_state(Path(__file__).resolve().parent)
    cuda = device.type == "cuda"
    versions = package_versions()
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else hardware["processor"],
        "device_capability": "{}.{}".format(*torch.cuda.get_device_capability(device)) if cuda else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "versions": {name: versions.get(name) for name in _VERSIONS},
        "git_commit": git.get("commit"),
        "git_dirty": git.get("dirty"),
        "git_error": git.get("error"),
        "cpu_model": hardware["processor"],
        "cpu_count": hardware["cpu_count"],
        "cpu_flags": hardware["cpu_flags"],  # which precisions have hardware units: AVX512-BF16, AMX-BF16, AVX512-FP16
        "threads": torch.get_num_threads(),
        "platform": hardware["platform"],
    }


def write_json(directory: Path, results: dict[str, Any]) -> Path:
    """Write ``results`` to ``directory/amp.json`` atomically (inf/NaN become the strings ``"inf"``/``"nan"``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / JSON_NAME
    io.write_json(path, _json_safe(results), allow_nan=False)
    return path


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def load_results(directory: str | Path) -> dict[str, Any]:
    """The parsed ``amp.json`` of a results directory: ``environment``, ``settings``, ``sizes``, ``cells`` (one dict
    per cell, fields of :class:`~mmfuse.bench.amp.CellResult`), ``parity``, ``overhead`` and ``finished``."""
    path = Path(directory) / JSON_NAME
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: not an AMP benchmark results directory")
    return io.read_json(path, "AMP benchmark results")


def render_report(directory: str | Path, plots: bool = True) -> list[Path]:
    """Rewrite ``amp.md`` (and, with matplotlib installed, the plots) from ``amp.json``; returns the files written."""
    directory = Path(directory)
    results = load_results(directory)
    md_path = directory / MD_NAME
    io.write_atomic(md_path, format_markdown(results))
    written = [md_path]
    if plots:
        try:
            written += write_plots(results, directory)
        except ImportError as err:
            logger.warning("%s; plots skipped (pip install matplotlib, then render_report(%r))", err, str(directory))
    return written


def _fmt(value: Any, spec: str, scale: float = 1.0, empty: str = "") -> str:
    if value is None or isinstance(value, str):
        return empty if value is None else value
    return format(value * scale if scale != 1.0 else value, spec)


def _cell_row(cell: dict[str, Any]) -> list[str]:
    spread = f"{_fmt(cell['step_s_p10'], '.1f', 1e3)}–{_fmt(cell['step_s_p90'], '.1f', 1e3)}"
    scaler = ""
    if cell["scaler_final_scale"] is not None:
        scaler = f"{cell['scaler_skipped_steps']} / {cell['scaler_final_scale']:g}"
    ok = cell["status"] == "ok"
    return [
        cell["precision"] + (" +compile" if cell["compile"] else ""),
        str(cell["batch_size"]),
        cell["status"] if ok else f"{cell['status']}: {cell['reason']}",
        _fmt(cell["step_s_median"], ".1f", 1e3) + (f" ({spread})" if ok else ""),
        _fmt(cell["samples_per_s"], ".1f"),
        _fmt(cell["speedup_vs_32_true"], ".2f") + ("x" if cell["speedup_vs_32_true"] else ""),
        _fmt(cell["achieved_tflops"], ".3f"),
        _fmt(cell["mfu"], ".1f", 100) + ("%" if cell["mfu"] is not None else ""),
        _fmt(cell["peak_memory_bytes"], ".0f", 2**-20),
        _fmt(cell["warmup_s"], ".1f"),
        _fmt(cell["nonfinite_losses"], "d"),
        scaler,
    ]


def _size_section(name: str, size: dict[str, Any], cells: list[dict[str, Any]]) -> list[str]:
    header = ["precision", "B", "status", "ms/step (p10–p90)", "samples/s", "speedup", "TFLOP/s", "MFU"]
    header += ["peak MiB", "warm-up s", "non-finite", "scaler skipped / scale"]
    lines = [f"## {name}: {size.get('description', '')}", ""]
    gflop = _fmt(size.get("step_gflop_per_sample"), ".3f", empty="?")
    lines += [f"{size['params'] / 1e6:.2f} M parameters; {gflop} GFLOP per sample per training step (fwd + bwd)."]
    kinds = sorted({c["memory_kind"] for c in cells if c["memory_kind"]})
    peaks = sorted({c["peak_source"] for c in cells if c["peak_source"]})
    lines += [f"Peak memory: {', '.join(kinds) or 'n/a'}. MFU peaks: {', '.join(peaks) or 'n/a'}."]
    if any(p.startswith("measured:") for p in peaks):
        lines[-1] += " A measured peak is the rate of one square matmul in that dtype, not the hardware's: MFU above"
        lines[-1] += " 100% means the model's kernels ran faster than that matmul."
    lines += [""]
    ordered = sorted(cells, key=lambda c: (c["compile"], c["batch_size"]))
    return [*lines, format_table(header, [_cell_row(c) for c in ordered], "md"), ""]


def _parity_section(parity: list[dict[str, Any]]) -> list[str]:
    if not parity:
        return []
    header = ["size", "precision", "B", "steps", "final loss", "32-true final", "final gap", "max step gap"]
    rows = []
    for item in parity:
        final = item["losses"][-1] if item["losses"] else None
        ref = item["reference_losses"][-1] if item["reference_losses"] else None
        gaps = [_fmt(item["final_loss_gap"], ".4f", empty=str(item["reason"])), _fmt(item["max_step_gap"], ".4f")]
        rows.append([item["size"], item["precision"], str(item["batch_size"]), str(item["steps"])])
        rows[-1] += [_fmt(final, ".4f"), _fmt(ref, ".4f"), *gaps]
    intro = "Same initial weights, same batches (cycled, so the loss falls as the labels are memorised)."
    return ["## Loss parity with 32-true", "", intro, "", format_table(header, rows, "md"), ""]


def _overhead_section(overhead: dict[str, Any] | None) -> list[str]:
    if not overhead:
        return []
    if overhead.get("status") == "skipped":
        return ["## Lightning overhead", "", f"Skipped: {overhead.get('reason')}", ""]
    steps, extra = overhead["step_s"], overhead.get("extra_s", {})
    rows = []
    loops = [("lightning", overhead["ratio"], "plain (lightning)")]
    loops += [("lightning_bare", overhead.get("ratio_bare"), "plain (lightning_bare)")]
    loops += [("accelerate", overhead.get("ratio_accelerate"), "plain")]
    for name, ratio, plain in loops:
        if steps.get(name) is None:
            continue
        row = [name, _fmt(steps.get(name), ".2f", 1e3), _fmt(steps.get(plain), ".2f", 1e3)]
        spread = (overhead.get("ratio_p10_p90") or {}).get(name)
        spread_text = "" if spread is None else f"{spread[0]:.3f}–{spread[1]:.3f}"
        rows.append([*row, _fmt(extra.get(name), ".2f", 1e3), _fmt(ratio, ".3f"), spread_text])
    verdict = "meets" if overhead["meets_target"] else "misses"
    bare = overhead.get("ratio_bare")
    text = (
        f"`{overhead['size']}` at B={overhead['batch_size']}, {overhead['precision']} on {overhead['device']}: "
        f"lightning / plain = **{overhead['ratio']:.3f}** ({verdict} the target {overhead['target']})"
        + ("" if bare is None else f"; lightning without per-step logging and metrics / plain = {bare:.3f}")
        + f". One MulticlassAccuracy update alone: {overhead['metric_update_s'] * 1e3:.2f} ms. "
        f"{overhead['rounds']} fits per Lightning variant of {overhead['steps_per_block']} steps "
        f"({overhead['warmup_steps']} warm-up), each Lightning step followed by a step of each peer loop; clock: "
        f"{overhead.get('clock', 'wall')}."
    )
    firsts = overhead.get("first_step_wall_s") or {}
    if firsts:
        text += " Time to the first step (wall): " + ", ".join(f"{k} {v:.2f} s" for k, v in firsts.items()) + "."
    for name, reason in (overhead.get("skipped") or {}).items():
        text += f" {name} not run: {reason}."
    header = ["loop", "median ms/step", "paired plain ms/step", "median extra ms/step", "ratio to plain", "p10–p90"]
    return ["## Lightning overhead", "", text, "", format_table(header, rows, "md"), ""]


def format_markdown(results: dict[str, Any]) -> str:
    """``amp.md``: environment, one table per size, parity and overhead."""
    env, settings = results["environment"], results["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    commit = (env.get("git_commit") or "unknown")[:10] + (" (dirty)" if env.get("git_dirty") else "")
    lines = ["# Mixed-precision training benchmark", ""]
    device = f"- device: {env['device_name']} ({env['device_type']})"
    if env["device_type"] == "cuda":
        device += f", capability {env['device_capability']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}"
    lines += [device]
    lines += [f"- {versions}", f"- git {commit}; {env['cpu_model']}, {env['threads']} threads; {env['created']}"]
    lines += [f"- warm-up {settings['warmup']}, steps {settings['steps']} x repeats {settings['repeats']}"]
    lines[-1] += f", cell seconds {settings['cell_seconds']}; finished: {results.get('finished')}"
    lines += ["- speedup: eager 32-true of the same size and B over the cell (32-true = no TF32 anywhere)", ""]
    cells = results["cells"]
    for name, size in results["sizes"].items():
        lines += _size_section(name, size, [c for c in cells if c["size"] == name])
    lines += _parity_section(results.get("parity") or [])
    lines += _overhead_section(results.get("overhead"))
    return "\n".join(lines)


def write_plots(results: dict[str, Any], directory: Path) -> list[Path]:
    """One PNG per size: speedup over 32-true, MFU and peak memory against batch size, a line per precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name in results["sizes"]:
        cells = [c for c in results["cells"] if c["size"] == name and c["status"] == "ok"]
        if not cells:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        panels = [("speedup_vs_32_true", "speedup vs 32-true", 1.0), ("mfu", "MFU (%)", 100.0)]
        panels += [("peak_memory_bytes", f"peak memory (MiB, {cells[0]['memory_kind']})", 2**-20)]
        for ax, (key, label, scale) in zip(axes, panels):
            _plot_panel(ax, cells, key, scale)
            ax.set(xlabel="batch size", ylabel=label, xscale="log", xticks=sorted({c["batch_size"] for c in cells}))
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{name} on {results['environment']['device_name']}")
        fig.tight_layout()
        path = directory / f"amp_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _plot_panel(ax: Any, cells: list[dict[str, Any]], key: str, scale: float) -> None:
    lines: dict[str, list[tuple[int, float]]] = {}
    for cell in cells:
        if cell[key] is not None:
            label = cell["precision"] + (" +compile" if cell["compile"] else "")
            lines.setdefault(label, []).append((cell["batch_size"], cell[key] * scale))
    for label, points in lines.items():
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", linestyle="--" if "compile" in label else "-", label=label)
