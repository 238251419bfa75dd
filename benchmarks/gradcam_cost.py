"""Cost of Grad-CAM for a batch against one plain forward + backward of the same model and batch.

    python benchmarks/gradcam_cost.py --config experiments/shapes_color.yaml --batch-size 32 --threads 2

Times, on the experiment's model (random init: the cost does not depend on the weights) and one random batch,
(a) a plain training-style step without the optimizer: forward, cross-entropy, backward to every parameter;
(b) ``GradCAM(model)(batch)``: one forward with a hook and one ``autograd.grad`` to the target layer;
(c) ``explain(model, batch, methods=("gradcam",))``, which adds a no-grad forward to fix the predicted class.
The three calls take turns, warm-up rounds are excluded, CUDA is synchronised before reading the clock, and the
median over the repeats is reported. Acceptance: (b) / (a) <= 1.5. Results go to
``benchmarks/results/gradcam_cost.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mmfuse.attribution import GradCAM, explain
from mmfuse.config import config_from_dict, resolve_model_config
from mmfuse.data.datamodule import ShapesDataModule
from mmfuse.data.shapes import ShapesWorldConfig
from mmfuse.experiment import load_config
from mmfuse.models import ImageTextModel
from mmfuse.provenance import collect_provenance
from mmfuse.tables import format_table
from mmfuse.types import Batch

REPO = Path(__file__).resolve().parents[1]
ACCEPTANCE = 1.5


def build(config_path: Path) -> tuple[ImageTextModel, ShapesDataModule]:
    """The experiment's model (random init) and data module, from its YAML."""
    cfg = load_config(config_path)
    data = cfg.data.get("init_args", cfg.data)  # the shapes module's arguments, with or without class_path
    dm = ShapesDataModule(config_from_dict(ShapesWorldConfig, data.get("world", {})))
    return ImageTextModel(resolve_model_config(cfg.model, dm.spec)), dm


def time_calls(
    calls: dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each function for ``repeats`` rounds after ``warmup`` rounds; the calls take turns within
    a round, so a change in machine load hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + repeats):
        for name, fn in calls.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": 1000 * statistics.median(ordered),
        "p10_ms": 1000 * ordered[int(0.1 * (len(ordered) - 1))],
        "p90_ms": 1000 * ordered[int(0.9 * (len(ordered) - 1))],
    }


def random_batch(dm: ShapesDataModule, batch_size: int, length: int, device: torch.device) -> Batch:
    """Random images, token ids and labels of the data's sizes (full-length texts)."""
    spec = dm.spec
    return Batch(
        torch.rand(batch_size, 3, spec.image_size, spec.image_size, device=device),
        torch.randint(4, spec.vocab_size, (batch_size, length), device=device),
        torch.ones(batch_size, length, dtype=torch.bool, device=device),
        torch.randint(0, spec.num_classes, (batch_size,), device=device),
    )


def measure(model: ImageTextModel, batch: Batch, warmup: int, repeats: int) -> tuple[dict[str, Any], str]:
    """Timings of the three calls, and Grad-CAM's target layer."""
    device = batch.images.device
    labels = batch.labels
    assert labels is not None

    def plain() -> None:
        logits = model(batch.images, batch.input_ids, batch.attention_mask).logits
        F.cross_entropy(logits, labels).backward()
        model.zero_grad(set_to_none=True)

    cam = GradCAM(model)
    calls: dict[str, Callable[[], Any]] = {
        "forward_backward": plain,
        "gradcam": lambda: cam(batch),
        "explain_gradcam": lambda: explain(model, batch, methods=("gradcam",)),
    }
    times = time_calls(calls, device, warmup, repeats)
    return {name: summary(t) for name, t in times.items()}, cam.target_layer


def write(record: dict[str, Any], results: Path) -> str:
    """``gradcam_cost.json`` and ``.md``; returns the Markdown."""
    results.mkdir(parents=True, exist_ok=True)
    path = results / "gradcam_cost.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    ratios = record["ratio_to_forward_backward"]
    lines = [
        f"# Grad-CAM cost: {record['experiment']}, batch {record['batch_size']}, {record['device']} "
        f"({record['threads']} threads)",
        "",
        f"Median of {record['repeats']} calls after {record['warmup']} warm-up calls; target layer "
        f"`{record['target_layer']}`.",
        "",
        format_table(
            ["call", "median ms", "p10 ms", "p90 ms", "x forward+backward"],
            [
                [name, *(f"{r[key]:.2f}" for key in ("median_ms", "p10_ms", "p90_ms")), f"{ratios[name]:.2f}"]
                for name, r in record["timings"].items()
            ],
            "md",
        ),
    ]
    verdict = "passes" if ratios["gradcam"] <= ACCEPTANCE else "fails"
    lines += ["", f"Acceptance (Grad-CAM <= {ACCEPTANCE}x a plain forward+backward): {verdict}."]
    markdown = "\n".join(lines) + "\n"
    path.with_suffix(".md").write_text(markdown)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "shapes_color.yaml")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--text-length", type=int, default=9)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model, dm = build(args.config)
    model.to(device).eval()
    batch = random_batch(dm, args.batch_size, args.text_length, device)
    timings, layer = measure(model, batch, args.warmup, args.repeats)
    ratios = {name: r["median_ms"] / timings["forward_backward"]["median_ms"] for name, r in timings.items()}
    record = {
        "experiment": args.config.stem,
        "batch_size": args.batch_size,
        "text_length": args.text_length,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": args.threads,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "target_layer": layer,
        "timings": timings,
        "ratio_to_forward_backward": ratios,
        "acceptance": {f"gradcam / forward_backward <= {ACCEPTANCE}": ratios["gradcam"] <= ACCEPTANCE},
        "config": load_config(args.config).to_dict(),  # resolved: base file merged, every default spelled out
        "provenance": collect_provenance(repo_dir=REPO, seed=args.seed),
    }
    print(write(record, args.results))


if __name__ == "__main__":
    main()
