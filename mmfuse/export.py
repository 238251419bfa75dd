"""Export a saved model for deployment: ``torch.export`` (``model.pt2``) and ONNX (``model.onnx``), each checked
against eager PyTorch on the same inputs and timed on CPU.

Both files come from one ``torch.export`` trace with a dynamic batch dimension and, where the text encoder allows
it, a dynamic sequence length. The ONNX file is translated from that trace by the dynamo-based exporter
(``torch.onnx.export(..., dynamo=True)``, https://pytorch.org/docs/stable/onnx_export.html) and run with ONNX
Runtime's CPU provider; it needs the optional packages of ``pip install 'mmfuse[export]'``.

Example::

    report = export_model("my-model", "my-model/export")
    logits = torch.export.load("my-model/export/model.pt2").module()(images, input_ids, attention_mask)  # (B, K)
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from mmfuse.errors import ConfigError
from mmfuse.io import write_atomic, write_json
from mmfuse.tables import format_table

if TYPE_CHECKING:  # only annotations: `mmfuse export --help` reads FORMATS without timm and transformers
    from mmfuse.models import ImageTextModel

__all__ = [
    "DEFAULT_OPSET",
    "FILE_NAMES",
    "FORMATS",
    "LatencyResult",
    "LogitsModule",
    "OnnxRunner",
    "ParityError",
    "ParityResult",
    "Runner",
    "benchmark_latency",
    "check_parity",
    "dynamic_axes",
    "example_inputs",
    "export_model",
    "export_onnx",
    "export_program",
    "export_torch",
    "load_runners",
    "raise_for_parity",
    "require_onnx",
    "summary_rows",
]

logger = logging.getLogger(__name__)

FORMATS = ("torch_export", "onnx")
FILE_NAMES = {"torch_export": "model.pt2", "onnx": "model.onnx"}
REPORT_NAME = "export_report"
INPUT_NAMES = ("images", "input_ids", "attention_mask")
DEFAULT_OPSET = 20  # what the installed exporter writes natively; ONNX Runtime >= 1.17 runs it
INSTALL_HINT = "pip install 'mmfuse[export]'"
_ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
# Sizes of the trace inputs: above 1, so that torch.export does not specialise a dimension to 0 or 1.
_TRACE_BATCH, _TRACE_SEQ_LEN = 2, 8

Runner = Callable[[Tensor, Tensor, Tensor], Tensor]
"""An exported model as a function: (images (B, 3, H, W), input_ids (B, L), attention_mask (B, L) bool) -> (B, K)."""


class ParityError(RuntimeError):
    """An exported model whose logits differ from eager PyTorch by more than the tolerance."""


class LogitsModule(nn.Module):
    """The model with a plain tensor output, as export needs (not the :class:`ModelOutput` dataclass).

    Args:
        model: the model to wrap (shared, not copied).
    """

    def __init__(self, model: ImageTextModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Class scores.

        Args:
            images: (B, 3, H, W) float in [0, 1].
            input_ids: (B, L) long token ids.
            attention_mask: (B, L) bool or long, nonzero = real token.

        Returns:
            (B, K) logits.
        """
        return self.model(images, input_ids, attention_mask.bool()).logits


def example_inputs(
    model: ImageTextModel, batch_size: int, seq_len: int, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Valid random inputs sized from the model's config; rows after the first are padded at the end.

    Returns:
        images (B, 3, H, W) float in [0, 1], input_ids (B, L) long, attention_mask (B, L) bool.
    """
    cfg = model.cfg
    assert cfg.vision.img_size is not None and cfg.vocab_size is not None  # ImageTextModel checks both
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, cfg.vision.img_size, cfg.vision.img_size, generator=generator)
    lengths = torch.randint(1, seq_len + 1, (batch_size,), generator=generator)
    lengths[0] = seq_len
    attention_mask = torch.arange(seq_len)[None, :] < lengths[:, None]  # (B, L)
    input_ids = torch.randint(0, cfg.vocab_size, (batch_size, seq_len), generator=generator)
    return images, input_ids.masked_fill(~attention_mask, cfg.pad_token_id or 0), attention_mask


def export_program(model: ImageTextModel, use_dynamic_seq_len: bool = True) -> ExportedProgram:
    """``torch.export`` the model (put in eval mode) with a dynamic batch size and, when asked and the text encoder
    allows it, a dynamic sequence length (otherwise the trace length, 8, is fixed; see :func:`dynamic_axes`)."""
    batch = Dim.DYNAMIC(min=1)  # fails loudly if the model fixes the batch size
    seq = Dim.AUTO(min=1) if use_dynamic_seq_len else Dim.STATIC  # AUTO: stays fixed where the model needs it
    shapes = ({0: batch}, {0: batch, 1: seq}, {0: batch, 1: seq})
    inputs = example_inputs(model, _TRACE_BATCH, _TRACE_SEQ_LEN)
    return torch.export.export(LogitsModule(model).eval(), inputs, dynamic_shapes=shapes)


def dynamic_axes(program: ExportedProgram) -> dict[str, bool]:
    """Whether the batch and sequence dimensions of ``input_ids`` stayed symbolic in the exported program."""
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == "input_ids")
    shape = node.meta["val"].shape  # (B, L), symbolic where dynamic
    return {"batch": isinstance(shape[0], torch.SymInt), "seq_len": isinstance(shape[1], torch.SymInt)}


def export_torch(model: ImageTextModel, path: str | Path, program: ExportedProgram | None = None) -> Path:
    """Write ``program`` (by default :func:`export_program` of ``model``) with ``torch.export.save``."""
    program = program if program is not None else export_program(model)
    torch.export.save(program, str(path))
    return Path(path)


def export_onnx(
    model: ImageTextModel, path: str | Path, program: ExportedProgram | None = None, opset: int = DEFAULT_OPSET
) -> Path:
    """Translate ``program`` (by default :func:`export_program` of ``model``) to ONNX with the dynamo exporter.

    The dynamic axes are named ``batch`` and ``seq``; inputs keep the model's names and the output is ``logits``.
    Weights go to ``<path>.data`` only when the model is too large for one file.
    """
    require_onnx()
    program = program if program is not None else export_program(model)
    with _quiet_loggers("onnx_ir", "onnxscript"):  # one INFO line per folded constant otherwise
        onnx_program: Any = torch.onnx.export(
            program, dynamo=True, opset_version=opset, input_names=INPUT_NAMES, output_names=["logits"], verbose=False
        )
    ids_shape = onnx_program.model.graph.inputs[INPUT_NAMES.index("input_ids")].shape  # (B, L)
    names = {ids_shape[i]: name for i, name in enumerate(("batch", "seq")) if not isinstance(ids_shape[i], int)}
    onnx_program.rename_axes(names)
    onnx_program.save(str(path))
    return Path(path)


def require_onnx() -> dict[str, ModuleType]:
    """Import the optional ONNX packages, or fail with a :class:`ConfigError` naming the extra to install."""
    modules, missing = {}, []
    for name in _ONNX_PACKAGES:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"ONNX export needs {', '.join(missing)} (not installed): {INSTALL_HINT}")
    return modules


class OnnxRunner:
    """An ONNX file run by ONNX Runtime's CPU provider, called like the model (see :data:`Runner`).

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (None = ONNX Runtime's default, one per core).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = require_onnx()["onnxruntime"]
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}  # an input the graph ignores is dropped

    def __call__(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, 3, H, W), (B, L), (B, L) bool -> (B, K) logits."""
        values = (images.float(), input_ids.long(), attention_mask.bool())
        feeds = {name: v.numpy() for name, v in zip(INPUT_NAMES, values) if name in self.input_names}
        return torch.from_numpy(self.session.run(["logits"], feeds)[0])


def load_runners(out_dir: str | Path, formats: Sequence[str], threads: int | None = None) -> dict[str, Runner]:
    """Load the exported files of ``formats`` from ``out_dir`` (the program's ``.module()`` for torch.export)."""
    out = Path(out_dir)
    runners: dict[str, Runner] = {}
    for fmt in formats:
        if fmt == "torch_export":
            runners[fmt] = torch.export.load(str(out / FILE_NAMES[fmt])).module()
        else:
            runners[fmt] = OnnxRunner(out / FILE_NAMES[fmt], threads=threads)
    return runners


@dataclasses.dataclass(frozen=True)
class ParityResult:
    """Largest absolute logit difference between one exported format and eager PyTorch at one batch size."""

    format: str
    batch_size: int
    max_abs_diff: float
    argmax_agrees: bool
    atol: float

    @property
    def passed(self) -> bool:
        """Within tolerance (a NaN difference fails)."""
        return self.max_abs_diff <= self.atol


def check_parity(
    model: ImageTextModel,
    runners: dict[str, Runner],
    batch_sizes: Sequence[int] = (1, 32),
    seq_len: int = 16,
    atol: float = 1e-4,
    strict: bool = True,
) -> list[ParityResult]:
    """Compare each runner's logits (B, K) with eager PyTorch on the same inputs at each batch size.

    Raises:
        ParityError: when ``strict`` and a format differs by more than ``atol`` (or gives another shape).
    """
    reference = LogitsModule(model).eval()
    results = []
    for batch_size in batch_sizes:
        inputs = example_inputs(model, batch_size, seq_len, seed=batch_size)
        with torch.no_grad():
            expected = reference(*inputs)  # (B, K)
            for fmt, runner in runners.items():
                logits = runner(*inputs)
                if logits.shape != expected.shape:
                    raise ParityError(f"{fmt}: logits of shape {tuple(logits.shape)}, eager {tuple(expected.shape)}")
                diff = float((logits.float() - expected).abs().max())
                agrees = bool(torch.equal(logits.argmax(-1), expected.argmax(-1)))
                results.append(ParityResult(fmt, batch_size, diff, agrees, atol))
    if strict:
        raise_for_parity(results)
    return results


def raise_for_parity(results: Sequence[ParityResult]) -> None:
    """Raise :class:`ParityError` naming every format and batch size outside its tolerance."""
    failed = [
        f"{r.format} at batch {r.batch_size}: max abs diff {r.max_abs_diff:.3g} > atol {r.atol:g}"
        for r in results
        if not r.passed
    ]
    if failed:
        raise ParityError("exported logits differ from eager PyTorch: " + "; ".join(failed))


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """Milliseconds per call of one format at one batch size, after warm-up calls."""

    format: str
    batch_size: int
    median_ms: float
    p90_ms: float
    repeats: int


def benchmark_latency(
    model: ImageTextModel,
    runners: dict[str, Runner],
    batch_sizes: Sequence[int] = (1, 32),
    seq_len: int = 16,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> list[LatencyResult]:
    """Median and 90th-percentile wall time per call for eager PyTorch and each runner, on CPU.

    ``threads`` sets ``torch.set_num_threads`` for the measurement (restored afterwards); ONNX Runtime's threads
    are set when its session is created (:class:`OnnxRunner`).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    candidates: dict[str, Runner] = {"eager": LogitsModule(model).eval(), **runners}
    results = []
    with _num_threads(threads), torch.no_grad():
        for batch_size in batch_sizes:
            inputs = example_inputs(model, batch_size, seq_len, seed=batch_size)
            for fmt, runner in candidates.items():
                times = _time_calls(runner, inputs, repeats, warmup)  # ms
                median, p90 = statistics.median(times), _percentile(times, 0.9)
                results.append(LatencyResult(fmt, batch_size, median, p90, repeats))
    return results


def export_model(
    model_dir: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    atol: float = 1e-4,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    batch_sizes: Sequence[int] = (1, 32),
    seq_len: int = 16,
) -> dict[str, Any]:
    """Export a saved model, check parity, time it, and write ``export_report.json`` / ``.md`` into ``out_dir``.

    The report is written before a parity failure is raised, so it records the failing differences.

    Raises:
        ConfigError: no saved model at ``model_dir``, an unknown format, or ONNX packages missing.
        ParityError: a format differs from eager PyTorch by more than ``atol``.
    """
    from mmfuse.hub import from_pretrained  # the encoders: timm and transformers

    formats = _check_formats(formats)
    model = from_pretrained(model_dir).eval()
    threads = threads or torch.get_num_threads()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    program = export_program(model)
    if "torch_export" in formats:
        export_torch(model, out / FILE_NAMES["torch_export"], program)
    if "onnx" in formats:
        export_onnx(model, out / FILE_NAMES["onnx"], program)
    runners = load_runners(out, formats, threads)
    parity = check_parity(model, runners, batch_sizes, seq_len, atol, strict=False)
    latency = benchmark_latency(model, runners, batch_sizes, seq_len, repeats, warmup, threads)
    report = {
        "model_dir": str(model_dir),
        "formats": list(formats),
        "files": _file_sizes(out, formats),
        "dynamic_axes": dynamic_axes(program),
        "onnx_opset": DEFAULT_OPSET if "onnx" in formats else None,
        "inputs": {"image_size": model.cfg.vision.img_size, "seq_len": seq_len, "batch_sizes": list(batch_sizes)},
        "atol": atol,
        "parity": [dataclasses.asdict(r) | {"passed": r.passed} for r in parity],
        "latency": {"threads": threads, "warmup": warmup, "results": [dataclasses.asdict(r) for r in latency]},
        "versions": _versions(),
    }
    write_json(out / f"{REPORT_NAME}.json", report)
    write_atomic(out / f"{REPORT_NAME}.md", _markdown(report))
    logger.info("wrote %s and %s.json/.md to %s", ", ".join(FILE_NAMES[f] for f in formats), REPORT_NAME, out)
    raise_for_parity(parity)
    return report


def summary_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per (format, batch size): format, batch, max abs diff, argmax agrees, median ms, p90 ms."""
    parity = {(p["format"], p["batch_size"]): p for p in report["parity"]}
    rows: list[tuple[str, ...]] = []
    for r in report["latency"]["results"]:
        p = parity.get((r["format"], r["batch_size"]))
        diff, agrees = (f"{p['max_abs_diff']:.2e}", "yes" if p["argmax_agrees"] else "NO") if p else ("-", "-")
        rows.append((r["format"], str(r["batch_size"]), diff, agrees, f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}"))
    return rows


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"export formats {list(formats)}: choose one or more of {list(FORMATS)}")
    if "onnx" in formats:
        require_onnx()  # before any slow work
    return tuple(dict.fromkeys(formats))


@contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _time_calls(runner: Runner, inputs: tuple[Tensor, Tensor, Tensor], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        runner(*inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(*inputs)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)  # nearest rank: defined for any number of samples
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _file_sizes(out: Path, formats: Sequence[str]) -> dict[str, dict[str, int]]:
    """Bytes of each format's files (an ONNX file may keep its weights beside it in ``model.onnx.data``)."""
    return {fmt: {p.name: p.stat().st_size for p in sorted(out.glob(FILE_NAMES[fmt] + "*"))} for fmt in formats}


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in ("mmfuse", "torch", "onnx", "onnxscript", "onnxruntime", "transformers", "timm"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _markdown(report: dict[str, Any]) -> str:
    files = [[name, f"{size / 1e6:.2f} MB"] for sizes in report["files"].values() for name, size in sizes.items()]
    axes = ", ".join(f"{axis} {'dynamic' if on else 'fixed'}" for axis, on in report["dynamic_axes"].items())
    headers = ["format", "batch", "max abs diff", "argmax agrees", "median ms", "p90 ms"]
    timing = report["latency"]
    results = timing["results"]
    lines = [
        f"# Export report: {report['model_dir']}",
        "",
        f"Axes: {axes}. ONNX opset: {report['onnx_opset']}. Parity tolerance: {report['atol']:g} (max abs diff of "
        f"logits against eager PyTorch). CPU latency with threads={timing['threads']}: median and p90 of "
        f"{results[0]['repeats'] if results else 0} calls after {timing['warmup']} warm-up calls, sequence length "
        f"{report['inputs']['seq_len']}, images {report['inputs']['image_size']} px.",
        "",
        format_table(headers, summary_rows(report), "md", "lrrcrr"),
        "",
        format_table(["file", "size"], files, "md", "lr"),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v) + ".",
    ]
    return "\n".join(lines) + "\n"
