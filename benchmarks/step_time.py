"""Time one optimizer step of an experiment's model per autocast precision, on random batches.

    python benchmarks/step_time.py --config experiments/shapes_color.yaml --threads 2

Warm-up steps are excluded, CUDA is synchronised before reading the clock, and the median of the timed steps is
reported. Results go to ``benchmarks/results/step_time_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mmfuse.config import config_from_dict, resolve_model_config
from mmfuse.data.datamodule import ShapesDataModule
from mmfuse.data.shapes import ShapesWorldConfig
from mmfuse.experiment import load_config
from mmfuse.models import ImageTextModel

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def build(config_path: Path) -> tuple[ImageTextModel, ShapesDataModule]:
    """The experiment's model (random init) and data module, from its YAML."""
    cfg = load_config(config_path)
    data = cfg.data.get("init_args", cfg.data)  # the shapes module's arguments, with or without class_path
    dm = ShapesDataModule(config_from_dict(ShapesWorldConfig, data.get("world", {})))
    return ImageTextModel(resolve_model_config(cfg.model, dm.spec)), dm


def time_steps(model: ImageTextModel, batch: tuple, dtype: torch.dtype | None, warmup: int, steps: int) -> list[float]:
    """Seconds per optimizer step (forward, backward, AdamW) for ``steps`` steps after ``warmup``."""
    device = batch[0].device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(*batch[:3]).logits
            loss = F.cross_entropy(logits.float(), batch[3])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "shapes_color.yaml")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--precisions", nargs="*", default=list(PRECISIONS))
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, dm = build(args.config)
    model.to(device).train()
    spec, b = dm.spec, args.batch_size
    batch = (
        torch.rand(b, 3, spec.image_size, spec.image_size, device=device),
        torch.randint(4, spec.vocab_size, (b, 10), device=device),
        torch.ones(b, 10, dtype=torch.bool, device=device),
        torch.randint(0, spec.num_classes, (b,), device=device),
    )
    rows = []
    for name in args.precisions:
        times = time_steps(model, batch, PRECISIONS[name], args.warmup, args.steps)
        median = statistics.median(times)
        rows.append({"precision": name, "median_step_s": median, "samples_per_s": b / median, "step_times_s": times})
        print(f"{name:>10}: {median * 1000:8.1f} ms/step  {b / median:8.1f} samples/s")
    base = rows[0]["median_step_s"]
    for row in rows:
        row["speedup_vs_first"] = base / row["median_step_s"]
    device_name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu"
    payload = {
        "config": str(args.config.relative_to(REPO)),
        "batch_size": b,
        "threads": args.threads,
        "device": device_name,
        "torch": torch.__version__,
        "results": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"step_time_{device.type}.json"
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
