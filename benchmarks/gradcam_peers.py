"""Grad-CAM cost of mmfuse against pytorch-grad-cam and torchcam, on one timm classifier and one batch, in one run.

    python benchmarks/gradcam_peers.py --model resnet18 --batch-size 32 --image-size 224 --threads 2

The model is a timm classifier with random weights (:func:`mmfuse.attribution.load_classifier`: the cost does not
depend on the weights), in eval mode; the batch is B uniform random images, normalised with the model's mean and
std. Every library explains the same layer (mmfuse's :func:`~mmfuse.attribution.default_target_layer`, the last
stage) for the same classes (each image's predicted class, found once beforehand and passed to all three). Calls:

- ``forward_backward``: forward, cross-entropy on those classes, backward to every parameter (the unit of the ratios);
- ``forward``: one forward without autograd, for scale;
- ``mmfuse``: ``GradCAM(model, layer)(images, ClassLogit(classes)).image``;
- ``pytorch_grad_cam``: ``pytorch_grad_cam.GradCAM(model, [layer])(images, [ClassifierOutputTarget(k), ...])``;
- ``torchcam``: ``torchcam.methods.GradCAM(model, layer)``, a forward, then the extractor on the classes and scores;
  its (B, Gh, Gw) map is upsampled bilinearly to (B, H, W), which the other two return.

Each library's object is built and its hooks removed inside its own timed call, so that no library's hooks run
during another's forward; parameter gradients left by pytorch-grad-cam's ``backward`` are cleared in its call. The
calls take turns within each round (a change in machine load hits all of them alike), warm-up rounds are not
counted, and the median over rounds is reported on two clocks: wall time, and the CPU time of this process (which
time spent waiting for other processes does not inflate); the load average is recorded before and after. mmfuse
against each peer is the median over rounds of mmfuse_i / peer_i (wall; back to back in round i), a tie within
:data:`TIE`. The maps of the last round are compared with mmfuse's: per-example Pearson correlation and largest
absolute difference, both on (B, H, W) maps in [0, 1]. A peer that does not import is recorded with the reason.
Results go to ``benchmarks/results/gradcam_peers.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfuse.attribution import ClassLogit, GradCAM, default_target_layer, load_classifier
from mmfuse.provenance import collect_provenance
from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
PEERS = {"pytorch_grad_cam": "grad-cam", "torchcam": "torchcam"}  # module -> distribution
Call = Callable[[], Tensor | None]
TIE = 0.02  # paired ratios within 2 % of 1 are a tie: repeated runs of this script differ by about that much


def peer_modules() -> tuple[dict[str, Any], dict[str, str]]:
    """The peer libraries that import here, and why each other one does not."""
    found: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for module in PEERS:
        try:
            found[module] = importlib.import_module(module)
            importlib.import_module(f"{module}.methods" if module == "torchcam" else f"{module}.utils.model_targets")
        except Exception as err:  # an ImportError, or any error a peer raises on import with this torch
            missing[module] = f"{type(err).__name__}: {err}"
    return found, missing


def make_calls(model: nn.Module, layer: str, images: Tensor, classes: Tensor, peers: dict[str, Any]) -> dict[str, Call]:
    """The timed calls; each explanation returns its (B, H, W) map."""
    size = (images.shape[-2], images.shape[-1])

    def forward_backward() -> None:
        F.cross_entropy(model(images), classes).backward()
        model.zero_grad(set_to_none=True)

    def forward() -> None:
        with torch.no_grad():
            model(images)

    def mmfuse() -> Tensor:
        image = GradCAM(model, layer)(images, ClassLogit(classes)).image
        assert image is not None
        return image

    calls: dict[str, Call] = {"forward_backward": forward_backward, "forward": forward, "mmfuse": mmfuse}
    if "pytorch_grad_cam" in peers:
        pgc = peers["pytorch_grad_cam"]
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        def pytorch_grad_cam() -> Tensor:
            cam = pgc.GradCAM(model, [model.get_submodule(layer)])
            try:
                maps = cam(images, [ClassifierOutputTarget(int(k)) for k in classes])  # (B, H, W) numpy
            finally:
                cam.activations_and_grads.release()
            model.zero_grad(set_to_none=True)  # its loss.backward() filled every parameter's .grad
            return torch.from_numpy(maps)

        calls["pytorch_grad_cam"] = pytorch_grad_cam
    if "torchcam" in peers:
        from torchcam.methods import GradCAM as TorchcamGradCAM

        def torchcam() -> Tensor:
            with TorchcamGradCAM(model, layer) as extractor:
                (grid,) = extractor(classes.tolist(), model(images))  # (B, Gh, Gw), normalised to [0, 1]
            # (B, Gh, Gw) -> (B, 1, Gh, Gw) -> (B, 1, H, W) -> (B, H, W)
            return F.interpolate(grid[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]

        calls["torchcam"] = torchcam
    return calls


def time_calls(
    calls: dict[str, Call], warmup: int, repeats: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, Tensor]]:
    """Wall and process-CPU seconds of each call over ``repeats`` rounds after ``warmup`` rounds (the calls take
    turns within a round), and each call's output in the last round."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in calls}
    outputs: dict[str, Tensor] = {}
    for i in range(warmup + repeats):
        for name, fn in calls.items():
            wall, cpu = time.perf_counter(), time.process_time()
            out = fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if i >= warmup:
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
            if out is not None:
                outputs[name] = out
    return times, outputs


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": 1000 * statistics.median(ordered),
        "p10_ms": 1000 * ordered[int(0.1 * (len(ordered) - 1))],
        "p90_ms": 1000 * ordered[int(0.9 * (len(ordered) - 1))],
    }


def agreement(ours: Tensor, theirs: Tensor) -> dict[str, float]:
    """Per-example Pearson correlation (min and mean over examples) and largest |difference| of (B, H, W) maps."""
    a, b = ours.double().flatten(1), theirs.double().flatten(1)  # (B, H, W) -> (B, H*W)
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    corr = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))
    return {
        "pearson_min": corr.min().item(),
        "pearson_mean": corr.mean().item(),
        "max_abs_diff": (ours.double() - theirs.double()).abs().max().item(),
    }


def version(module: str) -> str | None:
    try:
        return metadata.version(PEERS[module])
    except metadata.PackageNotFoundError:
        return None


def write(record: dict[str, Any], results: Path) -> str:
    """``gradcam_peers.json`` and ``.md``; returns the Markdown."""
    results.mkdir(parents=True, exist_ok=True)
    path = results / "gradcam_peers.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    timings, ratios = record["timings"], record["ratio_to_forward_backward"]
    rows = [
        [
            name,
            *(f"{timings[name]['wall'][key]:.0f}" for key in ("median_ms", "p10_ms", "p90_ms")),
            f"{ratios['wall'][name]:.2f}",
            f"{timings[name]['cpu']['median_ms']:.0f}",
            f"{ratios['cpu'][name]:.2f}",
        ]
        for name in timings
    ]
    header = ["call", "wall median ms", "p10", "p90", "x fwd+bwd (wall)", "CPU median ms", "x fwd+bwd (CPU)"]
    lines = [
        f"# Grad-CAM against its peers: {record['model']} at {record['image_size']} px, batch {record['batch_size']}, "
        f"{record['device']} ({record['threads']} threads)",
        "",
        f"Median of {record['repeats']} interleaved rounds after {record['warmup']} warm-up rounds; target layer "
        f"`{record['target_layer']}`; each image's predicted class, the same for every library. Peers: "
        + ", ".join(f"{m} {v}" for m, v in record["peer_versions"].items())
        + ".",
        "",
        format_table(header, rows, "md"),
        "",
        "Agreement with mmfuse's (B, H, W) maps: per-example Pearson correlation r, and the largest |difference|. "
        "torchcam min-max normalises its map before upsampling only, mmfuse and pytorch-grad-cam after upsampling "
        "too: an affine rescaling per example, which leaves r at 1 and moves values by up to a few hundredths.",
        "",
        format_table(
            ["peer", "1 - min r", "1 - mean r", "max |diff|"],
            [
                [peer, f"{1 - a['pearson_min']:.1e}", f"{1 - a['pearson_mean']:.1e}", f"{a['max_abs_diff']:.2e}"]
                for peer, a in record["agreement"].items()
            ],
            "md",
        ),
        "",
        "Load average (1, 5, 15 min) before: {}; after: {}.".format(
            *("/".join(f"{v:.2f}" for v in record[key]) for key in ("load_average_before", "load_average_after"))
        ),
    ]
    for peer, reason in record["not_run"].items():
        lines += ["", f"{peer} not run: {reason}"]
    lines += ["", f"Verdict: {record['verdict']}", "", f"Command: `{record['command']}`"]
    markdown = "\n".join(lines) + "\n"
    path.with_suffix(".md").write_text(markdown)
    return markdown


def paired_ratios(times: dict[str, dict[str, list[float]]], peers: list[str]) -> dict[str, dict[str, float]]:
    """Per peer: median, p10 and p90 over rounds of mmfuse_i / peer_i on the wall clock (the two ran back to back
    in round i, so a change in load between rounds cancels)."""
    out = {}
    for peer in peers:
        ordered = sorted(a / b for a, b in zip(times["mmfuse"]["wall"], times[peer]["wall"]))
        n = len(ordered) - 1
        out[peer] = {
            "median": statistics.median(ordered),
            "p10": ordered[int(0.1 * n)],
            "p90": ordered[int(0.9 * n)],
        }
    return out


def verdict(paired: dict[str, dict[str, float]]) -> str:
    """mmfuse faster than, on par with (paired ratio within :data:`TIE`) or slower than each peer."""
    parts = []
    for peer, ratio in paired.items():
        median = ratio["median"]
        word = "faster than" if median < 1 - TIE else "on par with" if median <= 1 + TIE else "slower than"
        parts.append(f"{word} {peer} (mmfuse / {peer} = {median:.3f}, p10-p90 {ratio['p10']:.3f}-{ratio['p90']:.3f})")
    if not parts:
        return "no peer ran."
    return f"mmfuse is {'; '.join(parts)}. On par: within {TIE:.0%}, the spread of repeated runs on this machine."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="timm classifier name (random init)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    classifier = load_classifier(args.model)
    model, layer = classifier.model, default_target_layer(classifier.model)
    mean, std = torch.tensor(classifier.mean)[:, None, None], torch.tensor(classifier.std)[:, None, None]
    images = (torch.rand(args.batch_size, 3, args.image_size, args.image_size) - mean) / std
    with torch.no_grad():
        classes = model(images).argmax(dim=1)  # (B,) predicted classes, fixed for every library
    peers, not_run = peer_modules()
    load_before = os.getloadavg()
    times, outputs = time_calls(make_calls(model, layer, images, classes, peers), args.warmup, args.repeats)
    timings = {name: {clock: summary(t) for clock, t in clocks.items()} for name, clocks in times.items()}
    paired = paired_ratios(times, list(peers))
    ratios = {
        clock: {
            name: t[clock]["median_ms"] / timings["forward_backward"][clock]["median_ms"] for name, t in timings.items()
        }
        for clock in ("wall", "cpu")
    }
    record = {
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "device": "cpu",
        "threads": args.threads,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "target_layer": layer,
        "classes": classes.tolist(),
        "peer_versions": {module: version(module) for module in peers},
        "not_run": not_run,
        "timings": timings,
        "ratio_to_forward_backward": ratios,
        "agreement": {peer: agreement(outputs["mmfuse"], outputs[peer]) for peer in peers},
        "mmfuse_over_peer": paired,
        "verdict": verdict(paired),
        "load_average_before": load_before,  # this run itself adds about `threads`
        "load_average_after": os.getloadavg(),
        "command": "python benchmarks/gradcam_peers.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "results"),
        "provenance": collect_provenance(repo_dir=REPO, seed=args.seed),
    }
    print(write(record, args.results))


if __name__ == "__main__":
    main()
