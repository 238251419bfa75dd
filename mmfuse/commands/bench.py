"""``mmfuse bench amp``: time a training step per precision x batch size x model size, check loss parity with
``32-true`` and (``--overhead``) Lightning's per-step cost against plain PyTorch and Accelerate loops; write
``amp.json``, ``amp.md`` and plots (see :mod:`mmfuse.bench`).

Examples::

    mmfuse bench amp --size tiny --batch-size 8 32 --device cpu --parity-steps 8 --overhead --out runs/bench/amp_cpu
    mmfuse bench amp --size base --batch-size 32 64 128 --compile --compile-precision bf16-mixed --device cuda
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmfuse.bench import PRECISIONS, SIZE_NAMES, AmpSweepConfig
from mmfuse.errors import ConfigError

__all__ = ["add_amp_arguments", "add_arguments", "config_from_args", "run", "run_amp"]

DEFAULT_OUT = "runs/bench/amp_{device}"
QUICK_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``amp`` benchmark (the only one so far) as an action of ``mmfuse bench``."""
    actions = parser.add_subparsers(dest="benchmark", required=True, metavar="{amp}")
    add_amp_arguments(actions.add_parser("amp", help="mixed-precision training speed, memory, MFU and loss parity"))


def add_amp_arguments(parser: argparse.ArgumentParser, default_out: str = DEFAULT_OUT) -> None:
    """Arguments of ``mmfuse bench amp``; defaults come from :class:`AmpSweepConfig`, and names are checked when
    the run starts (a bad one is a :class:`ConfigError`)."""
    d = AmpSweepConfig()
    add = parser.add_argument
    add("--size", nargs="+", default=list(d.sizes), dest="sizes", help=f"model sizes: {', '.join(SIZE_NAMES)}")
    add("--precision", nargs="+", default=list(d.precisions), dest="precisions", help=", ".join(PRECISIONS))
    add("--batch-size", nargs="+", type=int, default=list(d.batch_sizes), dest="batch_sizes")
    add("--compile", action="store_true", help="also time torch.compile'd steps (see --compile-precision)")
    add("--compile-precision", nargs="+", default=None, help="precisions compiled with --compile (default: all)")
    add("--compile-batch-size", nargs="+", type=int, default=None, help="batch sizes compiled (default: all)")
    add("--steps", type=int, default=d.steps, help="timed steps per repeat (at most, with --cell-seconds)")
    add("--warmup", type=int, default=d.warmup, help="untimed steps per cell (compilation happens here)")
    add("--repeats", type=int, default=d.repeats, help="timed repeats per cell (median, p10, p90 over these)")
    add("--cell-seconds", type=float, default=d.cell_seconds, help="aim for about this much timed work per cell")
    add("--parity-steps", type=int, default=d.parity_steps, help="loss-parity steps per precision (0 = off)")
    add("--parity-batch-size", type=int, default=d.parity_batch_size, help="default: the smallest batch size")
    add(
        "--overhead",
        action="store_true",
        help="compare the Lightning training step with a plain loop and (when installed) an Accelerate loop",
    )
    add("--overhead-size", default="small", help="model size of --overhead (default: small)")
    add("--overhead-precision", default=d.overhead_precision, help="32-true or bf16-mixed")
    add("--overhead-steps", type=int, default=d.overhead_steps, help="steps per fit of --overhead (3 warm-up)")
    add("--overhead-rounds", type=int, default=d.overhead_rounds, help="fits per Lightning variant")
    add("--overhead-batch-size", type=int, default=d.overhead_batch_size)
    add("--time-budget", type=float, default=d.time_budget_s, help="seconds after which no new cell starts")
    add("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add("--threads", type=int, default=d.threads, help="CPU threads for torch (1 gives the steadiest CPU numbers)")
    add("--seed", type=int, default=d.seed)
    add("--experiment", default=d.experiment, help="experiment YAML of the small size (default: shapes_color)")
    add("--no-plots", action="store_true", help="write amp.json and amp.md only")
    add(
        "--quick",
        action="store_true",
        help="which precision trains fastest at each --size here (32-true, bf16-mixed, bf16-true and on CUDA "
        "16-mixed; batch 32, 1 warm-up, 3 repeats of 3 steps, no parity check or plots): seconds for tiny and "
        "small on 2 CPU cores, about 15 minutes for base there",
    )
    add("--out", default=default_out, help=f"results directory (default: {default_out})")


def config_from_args(args: argparse.Namespace) -> AmpSweepConfig:
    """The sweep the arguments describe; unknown sizes, precisions or devices raise :class:`ConfigError`."""
    import torch  # here, not at the top: `mmfuse bench --help` stays free of torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        quick = {"batch_sizes": [32], "warmup": 1, "steps": 3, "repeats": 3, "parity_steps": 0, "no_plots": True}
        quick["precisions"] = [*QUICK_PRECISIONS, *(["16-mixed"] if device == "cuda" else [])]
        args = argparse.Namespace(**{**vars(args), **quick, "compile": False, "overhead": False})
    compile_precisions = (args.compile_precision or args.precisions) if args.compile else []
    if args.compile_precision and not args.compile:
        raise ConfigError("--compile-precision needs --compile")
    return AmpSweepConfig(
        sizes=tuple(args.sizes),
        precisions=tuple(args.precisions),
        batch_sizes=tuple(args.batch_sizes),
        compile_precisions=tuple(compile_precisions),
        compile_batch_sizes=None if args.compile_batch_size is None else tuple(args.compile_batch_size),
        device=device,
        warmup=args.warmup,
        steps=args.steps,
        repeats=args.repeats,
        cell_seconds=args.cell_seconds,
        parity_steps=args.parity_steps,
        parity_batch_size=args.parity_batch_size,
        overhead_size=args.overhead_size if args.overhead else None,
        overhead_batch_size=args.overhead_batch_size,
        overhead_precision=args.overhead_precision,
        overhead_steps=args.overhead_steps,
        overhead_rounds=args.overhead_rounds,
        time_budget_s=args.time_budget,
        seed=args.seed,
        threads=args.threads,
        experiment=args.experiment,
    )


def run_amp(args: argparse.Namespace) -> int:
    """Run the AMP benchmark and print its tables."""
    from mmfuse.bench import run_amp_benchmark  # builds models: timm and transformers

    cfg = config_from_args(args)
    out = Path(args.out.format(device=cfg.device))
    results = run_amp_benchmark(cfg, out, plots=not (args.no_plots or args.quick))
    print((out / "amp.md").read_text())
    print(f"results: {out}/amp.json ({len(results['cells'])} cells)")
    if args.quick:
        print(fastest_precisions(results))
    return 0


def fastest_precisions(results: dict[str, Any]) -> str:
    """One line per model size: the precision with the shortest median step on this machine, and each other
    precision's speed relative to ``32-true``; headed by the processor and its bf16/fp16 instruction sets."""
    env = results["environment"]
    flags = ", ".join(env.get("cpu_flags") or []) or "not read (no /proc/cpuinfo)"
    lines = [f"fastest precision on {env['device_name']} ({env['threads']} threads; units: {flags}):"]
    for size in dict.fromkeys(cell["size"] for cell in results["cells"]):
        cells = [c for c in results["cells"] if c["size"] == size and c["status"] == "ok" and not c["compile"]]
        if not cells:
            lines.append(f"  {size}: no precision ran")
            continue
        best = min(cells, key=lambda c: c["step_s_median"])
        others = ", ".join(f"{c['precision']} {c['speedup_vs_32_true']:.2f}x" for c in cells if c is not best)
        lines.append(f"  {size}: {best['precision']} ({best['speedup_vs_32_true']:.2f}x of 32-true; {others})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen benchmark."""
    return run_amp(args)
