"""Pointing game on real COCO boxes: does each attribution method's map of a retrieval model's image-text matching
score point at the object the caption names?

    HF_HUB_OFFLINE=1 python benchmarks/coco_pointing.py --config runs/<run>/config.yaml \\
        --ckpt runs/<run>/checkpoints/<best>.ckpt [--synonyms my_synonyms.json] [--gallery runs/coco_gallery]

Data: every caption of ``../shared/data/coco-mini`` (both annotated splits) that names a COCO category its image
holds (:class:`mmfuse.attribution.boxes.CategoryMatcher`, synonym list ``mmfuse/attribution/coco_synonyms.json`` or
``--synonyms``). Unit: one example per caption, scored against the boxes of the first category it names. Target: the
ITM head's log-odds of ``match`` for the caption and its own image. Each registered method with an image map is scored
with the pointing game (a maximal pixel within ``--tolerance`` px of a box, measured in the original image, as
TorchRay does) and energy in box (the share of the map's positive mass inside the tight boxes), at the model's input
resolution after its resize and crop; baselines: a centred Gaussian and seeded random maps on the patch grid. Means
come with percentile-bootstrap intervals that resample whole images (the captions of one image share its pixels).

Writes ``benchmarks/results/coco_mini_pointing.json`` (figures, a per-category table, resolved config, provenance
with the commit, machine and CPU flags) and ``.md``. ``--gallery DIR`` also explains the classic inputs of
``../shared/data/attribution-examples`` (Transformer-MM-Explainability's CLIP images with their prompts and COCO
images with their questions) into an HTML gallery there.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmfuse.attribution import EXPLAINERS, Attribution, ScalarOf, explain, logits_of
from mmfuse.attribution.boxes import (
    SYNONYMS_FILE,
    CategoryMatcher,
    ImageBoxes,
    InputGeometry,
    PointingExample,
    box_masks,
    eval_geometry,
    pointing_examples,
    read_instances,
)
from mmfuse.attribution.metrics import centre_prior_maps, energy_in_mask, pointing_game_in_mask, random_maps
from mmfuse.commands._common import build_cli, check_device, existing_path
from mmfuse.data.coco import CocoCaptionsReader
from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.formats import FileSourceConfig
from mmfuse.data.images import decode_image
from mmfuse.errors import ConfigError
from mmfuse.experiment import load_config
from mmfuse.heads import MATCH, MATCHING_CLASSES, NO_MATCH
from mmfuse.io import read_json, write_atomic, write_json
from mmfuse.provenance import collect_provenance
from mmfuse.stats import bootstrap_interval
from mmfuse.tables import format_table
from mmfuse.types import Batch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULT = "coco_mini_pointing"
BASELINES = ("centre prior", "random")
ANCHOR = {
    "source": "TorchRay pointing-game benchmark (Fong et al., ICCV 2019; facebookresearch/TorchRay docs/pointing.csv)",
    "grad_cam": {"vgg16": 0.542, "resnet50": 0.573},
    "center": 0.278,
    "setting": "classification networks fine-tuned on COCO, explaining the ground-truth class logit, every "
    "(image, class present) pair of COCO val2014 (all 80 categories), segmentation masks, 15 px tolerance at the "
    "original resolution, accuracy averaged over classes",
}


@dataclass
class Loaded:
    """The model and what its evaluation needs."""

    model: Any
    tokenizer: Any
    transform: Any
    preprocess: Any
    image_size: int
    max_length: int


def itm_log_odds(output: Any) -> Tensor:
    """(B,) log-odds of ``match``, ``logit(match) - logit(no_match)``: the ITM probability before its softmax
    saturates, free of the offset the two logits share."""
    logits = logits_of(output)  # (B, 2)
    return logits[:, MATCH] - logits[:, NO_MATCH]


def load_model(config: Path, ckpt: Path, device: str) -> Loaded:
    """The retrieval model of ``--ckpt``, built as ``mmfuse explain`` builds it, and its data settings."""
    from mmfuse.training import FusionLitModule, check_checkpoint_matches

    cli = build_cli(config, [])
    check_checkpoint_matches(ckpt, dict(cli.model.hparams))
    model = FusionLitModule.load_from_checkpoint(ckpt, map_location="cpu").model.to(device).eval()
    if model.cfg.task != "retrieval":
        raise ConfigError(f"--ckpt {str(ckpt)!r}: model.task={model.cfg.task!r}; this benchmark explains an ITM head")
    data = cli.datamodule
    if getattr(data, "eval_transform", None) is None:
        raise ConfigError(f"--config {str(config)!r}: its data module has no evaluation transform for photos")
    return Loaded(model, data.tokenizer, data.eval_transform, data.preprocess, data.image_size, data.max_length)


def coco_examples(root: Path, synonyms: Path) -> tuple[list[PointingExample], int, int]:
    """The examples of every annotated split, the captions read and the images annotated."""
    reader = CocoCaptionsReader(FileSourceConfig(format="coco", root=str(root)), root)
    images: dict[str, ImageBoxes] = {}
    categories: tuple[str, ...] = ()
    for name in reader.split_files.values():
        instances = read_instances(
            existing_path(str(root / name.replace("captions_", "instances_")), "--data instances file")
        )
        images.update(instances.images)
        categories = instances.categories
    records = [r for r in reader.read().records() if "problem" not in r]
    matcher = CategoryMatcher.from_file(synonyms, categories)
    return pointing_examples(records, images, matcher), len(records), len(images)


def load_images(root: Path, examples: list[PointingExample], loaded: Loaded) -> dict[str, tuple[Tensor, InputGeometry]]:
    """Image path -> ((3, S, S) input in [0, 1], its geometry); images whose decoded shape does not match the
    annotation (an EXIF rotation) are left out."""
    out = {}
    for example in examples:
        if example.image in out:
            continue
        decoded = decode_image(root / example.image, None, draft_side=loaded.transform.decode_side)
        w, h = example.size
        if abs(decoded.width / decoded.height - w / h) > 0.02:
            continue
        geometry = eval_geometry(example.size, loaded.image_size, loaded.preprocess, decoded.size)
        pixels = np.asarray(loaded.transform(decoded), dtype=np.float32) / 255.0  # (S, S, 3)
        out[example.image] = (torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), geometry)  # -> (3, S, S)
    return out


def image_methods(loaded: Loaded, batch: Batch, requested: list[str] | None) -> tuple[list[str], list[str]]:
    """The methods to score (those that give an image map on one example) and the ones left out."""
    names = requested or EXPLAINERS.names()
    unknown = [m for m in names if m not in EXPLAINERS.names()]
    if unknown:
        raise ConfigError(f"unknown attribution method(s) {unknown}; known: {EXPLAINERS.names()}")
    one = Batch(batch.images[:1], batch.input_ids[:1], batch.attention_mask[:1])
    found = explain(loaded.model, one, names, target=ScalarOf(itm_log_odds))
    kept = [m for m in names if found[m].image is not None]
    if not kept:
        raise ConfigError(f"--methods {' '.join(names)}: none of them gives an image map to score")
    return kept, [m for m in names if m not in kept]


def score_all(
    loaded: Loaded,
    examples: list[PointingExample],
    pixels: dict[str, tuple[Tensor, InputGeometry]],
    args: argparse.Namespace,
) -> tuple[dict[str, dict[str, list[float]]], list[dict[str, Any]], list[str], list[str]]:
    """Per method (and baseline) the per-example pointing hits and energies, the per-example rows, and the scored
    and left-out methods."""
    collate = ImageTextCollator(loaded.tokenizer, loaded.max_length)
    device = next(loaded.model.parameters()).device
    generator = torch.Generator().manual_seed(args.seed)
    size = (loaded.image_size, loaded.image_size)
    values: dict[str, dict[str, list[float]]] = {}
    rows: list[dict[str, Any]] = []
    methods: list[str] = []
    left_out: list[str] = []
    start = time.perf_counter()
    for first in range(0, len(examples), args.batch_size):
        chunk = examples[first : first + args.batch_size]
        batch = collate([{"image": pixels[e.image][0], "text": e.text} for e in chunk]).to(device)
        if not methods:
            methods, left_out = image_methods(loaded, batch, args.methods)
        geometries = [pixels[e.image][1] for e in chunk]
        loose = box_masks([e.boxes for e in chunk], geometries, args.tolerance)
        tight = box_masks([e.boxes for e in chunk], geometries)
        with torch.no_grad():
            log_odds = itm_log_odds(loaded.model(batch.images, batch.input_ids, batch.attention_mask)).cpu()
        maps = {m: _image_map(a) for m, a in _explain(loaded, batch, methods).items()}
        maps["centre prior"] = centre_prior_maps(len(chunk), *size, sigma=args.sigma)
        maps["random"] = random_maps(len(chunk), loaded.model.vision.grid_size, size, generator)
        for name, heat in maps.items():
            entry = values.setdefault(name, {"pointing_game": [], "energy_in_box": []})
            entry["pointing_game"] += pointing_game_in_mask(heat, loose).float().tolist()
            entry["energy_in_box"] += energy_in_mask(heat, tight).tolist()
        for k, example in enumerate(chunk):
            rows.append(_row(example, float(log_odds[k]), float(tight[k].float().mean()), values, len(rows)))
        done = first + len(chunk)
        print(f"  {done}/{len(examples)} examples, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return values, rows, methods, left_out


def _explain(loaded: Loaded, batch: Batch, methods: list[str]) -> dict[str, Attribution]:
    return explain(loaded.model, batch, methods, target=ScalarOf(itm_log_odds))


def _image_map(attribution: Attribution) -> Tensor:
    """(B, H, W) image map on the CPU, in fp32."""
    if attribution.image is None:
        raise ValueError(f"{attribution.method} gave no image map on this batch")
    return attribution.image.detach().float().cpu()


def _row(
    example: PointingExample, log_odds: float, box_share: float, values: dict[str, dict[str, list[float]]], i: int
) -> dict[str, Any]:
    """One example's row: what it is, its ITM log-odds, its boxes' share of the input, each method's hit and energy."""
    return {
        "image_id": example.image_id,
        "caption_id": example.caption_id,
        "caption": example.text.strip(),
        "category": example.category,
        "words": example.words,
        "named": list(example.named),
        "itm_log_odds": round(log_odds, 4),
        "box_share": round(box_share, 4),
        "pointing_game": {m: int(v["pointing_game"][i]) for m, v in values.items()},
        "energy_in_box": {m: round(v["energy_in_box"][i], 4) for m, v in values.items()},
    }


def summarise(
    values: dict[str, dict[str, list[float]]], rows: list[dict[str, Any]], names: list[str], n_boot: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Per method (in the order of ``names``): the mean pointing game, its class-averaged form (TorchRay's), its
    difference from the centre prior's (paired, per example) and the mean energy, each with a bootstrap interval
    over images; plus the boxes' share of the input (a uniform map's energy)."""
    images = np.array([r["image_id"] for r in rows])
    classes = np.unique([r["category"] for r in rows], return_inverse=True)[1].astype(np.float64)
    centre = np.asarray(values["centre prior"]["pointing_game"])

    def interval(per_example: np.ndarray, statistic: Any = None) -> dict[str, Any]:
        found = bootstrap_interval(per_example, statistic, n_boot, seed=seed, clusters=images)
        return found.as_dict("mean", brief=True)

    out: dict[str, dict[str, Any]] = {}
    for name in names:
        hits = np.asarray(values[name]["pointing_game"])
        out[name] = {
            "pointing_game": interval(hits),
            "pointing_game_class_mean": interval(np.stack([hits, classes], 1), _class_mean),
            "pointing_game_minus_centre_prior": interval(hits - centre),
            "energy_in_box": interval(np.asarray(values[name]["energy_in_box"])),
        }
        if name == "centre prior":
            del out[name]["pointing_game_minus_centre_prior"]
    out["uniform map"] = {"energy_in_box": interval(np.array([r["box_share"] for r in rows]))}
    return out


def per_category(rows: list[dict[str, Any]], names: list[str], smallest: int) -> dict[str, dict[str, Any]]:
    """Per category with at least ``smallest`` examples (most first): the count, the boxes' mean share of the input
    and each method's pointing-game hit rate (point estimates)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["category"]] = counts.get(row["category"], 0) + 1
    out = {}
    for category, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if n < smallest:
            continue
        mine = [r for r in rows if r["category"] == category]
        hits = {m: round(sum(r["pointing_game"][m] for r in mine) / n, 3) for m in names}
        out[category] = {"n": n, "box_share": round(sum(r["box_share"] for r in mine) / n, 3), "pointing_game": hits}
    return out


def _class_mean(rows: np.ndarray) -> float:
    """Mean over classes of the per-class hit rate; ``rows`` is (n, 2): hit, class index."""
    classes = rows[:, 1].astype(int)
    counts = np.bincount(classes)
    rates = np.bincount(classes, weights=rows[:, 0])[counts > 0] / counts[counts > 0]
    return float(rates.mean())


def write_gallery(loaded: Loaded, out: Path) -> Path:
    """Explain Transformer-MM-Explainability's CLIP images (each prompt) and COCO images (each question) with every
    method; the page shows the ITM verdict (match / no match) per pair."""
    from mmfuse.attribution.gallery import write_gallery as write_html

    folder = existing_path(str(DATA / "attribution-examples" / "transformer-mm-explainability"), "--gallery", True)
    prompts = read_json(folder / "prompts.json")
    pairs = [(path, text) for path, texts in prompts["clip_image_text"].items() for text in texts]
    pairs += list(prompts["lxmert_vqa_questions"].items())
    rows = []
    for path, text in pairs:
        image = loaded.transform(decode_image(folder / path, None, draft_side=loaded.transform.decode_side))
        rows.append({"image": image, "text": text})
    batch = ImageTextCollator(loaded.tokenizer, loaded.max_length)(rows).to(next(loaded.model.parameters()).device)
    with torch.no_grad():
        predictions = loaded.model(batch.images, batch.input_ids, batch.attention_mask).logits.argmax(-1).cpu()
    attributions = _explain(loaded, batch, EXPLAINERS.names())
    return write_html(
        out, loaded.model, loaded.tokenizer, batch, attributions, predictions, None, MATCHING_CLASSES,
        texts=[t for _, t in pairs], ids=[p for p, _ in pairs], resample="bicubic",
    )  # fmt: skip


def markdown(record: dict[str, Any]) -> str:
    """The result page: how it was run, the table beside the anchor, what differs from it, and the categories."""
    s, c, anchor = record["settings"], record["counts"], record["anchor"]
    header = ["method", "pointing game", "pointing game, class mean", "pointing game − centre prior", "energy in box"]
    keys = ("pointing_game", "pointing_game_class_mean", "pointing_game_minus_centre_prior", "energy_in_box")
    table = [[name, *(_cell(m.get(k)) for k in keys)] for name, m in record["methods"].items()]
    names = [m for m in record["methods"] if m != "uniform map"]
    categories = [
        [category, row["n"], f"{row['box_share']:.2f}", *(f"{row['pointing_game'][m]:.2f}" for m in names)]
        for category, row in record["per_category"].items()
    ]
    left_out = ", ".join(record["left_out"]) or "none"
    lines = [
        f"# Pointing game on COCO boxes ({RESULT})",
        "",
        _provenance_line(record),
        "",
        f"{c['examples']} captions of {c['images_used']} images ({c['captions']} captions of {c['images']} annotated "
        f"images read; {c['captions_naming_a_present_category']} name a category their image holds, "
        f"{c['left_out_outside_crop']} of these lie wholly outside the centre crop). Target: {s['target']}; the "
        f"ITM head calls {record['itm']['share_matched']:.0%} of these pairs a match (mean log-odds "
        f"{record['itm']['mean_log_odds']:.2f}). Mean "
        f"[95% bootstrap interval, {s['n_boot']} resamples of whole images]. Pointing game: a maximal pixel within "
        f"{s['tolerance']:g} px (in the original image) of a box of the caption's first-named category; class mean: "
        "averaged per category first, as TorchRay reports it; − centre prior: the paired difference per caption. "
        "Energy in box: the share of the map's positive mass "
        "inside the tight boxes; `uniform map`: the boxes' share of the input. Methods without an image map (left "
        f"out): {left_out}.",
        "",
        format_table(header, table, "md"),
        "",
        f"Anchor: {anchor['source']}: Grad-CAM {anchor['grad_cam']['vgg16']:.1%} (VGG16) and "
        f"{anchor['grad_cam']['resnet50']:.1%} (ResNet-50) on COCO, centre point {anchor['center']:.1%}; "
        f"{anchor['setting']}. What differs here: {record['differences']}",
        "",
        f"## Pointing game per category (at least {s['min_category']} captions)",
        "",
        format_table(["category", "n", "box share", *names], categories, "md"),
        "",
    ]
    return "\n".join(lines)


def _provenance_line(record: dict[str, Any]) -> str:
    hw, git, s = record["provenance"]["hardware"], record["provenance"]["git"], record["settings"]
    dirty = " (dirty tree)" if git.get("dirty") else ""
    return (
        f"`{record['command']}`: commit {str(git.get('commit'))[:10]}{dirty}, seed {s['seed']}, "
        f"{hw.get('processor') or hw.get('machine')} x{hw.get('cpu_count')} (flags {hw.get('cpu_flags')}), "
        f"{s['threads']} threads, {record['seconds']:.0f} s. Checkpoint `{record['checkpoint']}`."
    )


def _cell(summary: dict[str, Any] | None) -> str:
    if summary is None or summary["mean"] is None:
        return "–"
    return f"{summary['mean']:.3f} [{summary['ci_low']:.3f}, {summary['ci_high']:.3f}]"


DIFFERENCES = (
    "the target is a retrieval model's ITM score for a caption (log-odds of match), not a classifier's logit for a "
    "ground-truth class; the model was trained on Flickr8k captions, never on COCO labels; one map per caption, scored "
    "against boxes (more lenient than TorchRay's segmentation masks) of the first category the caption names, found "
    "through a synonym list; the map covers only the model's centre crop (objects outside it are left out); a small "
    "subset (coco-mini, COCO 2017) instead of the 40k images of val2014, so intervals are wide."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the run's config.yaml (or the experiment YAML)")
    parser.add_argument("--ckpt", required=True, help="checkpoint of a model.task: retrieval run")
    parser.add_argument("--synonyms", default=str(SYNONYMS_FILE), help="synonym list replacing the shipped one")
    parser.add_argument("--data", default=str(DATA / "coco-mini"), help="COCO root (annotations/, train2017/...)")
    parser.add_argument("--methods", nargs="+", default=None, help="methods (default: every one with an image map)")
    parser.add_argument("--tolerance", type=float, default=15.0, help="pointing-game margin, original pixels")
    parser.add_argument("--sigma", type=float, default=0.25, help="centre prior's std, as a fraction of the side")
    parser.add_argument("--n", type=int, default=None, help="score only the first N examples (default all)")
    parser.add_argument("--min-category", type=int, default=10, help="smallest category in the per-category table")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gallery", default=None, help="also write an HTML gallery of the classic inputs here")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    counts = {"--batch-size": args.batch_size, "--n-boot": args.n_boot, "--threads": args.threads, "--n": args.n or 1}
    bad = [f"{flag} {value}" for flag, value in counts.items() if value < 1]
    bad += [f"--tolerance {args.tolerance}"] * (args.tolerance < 0) + [f"--sigma {args.sigma}"] * (args.sigma <= 0)
    if bad:
        raise ConfigError(f"{bad[0]}: counts must be >= 1, --tolerance >= 0 and --sigma > 0")
    check_device(args.device)
    return args


def visible_examples(
    examples: list[PointingExample], pixels: dict[str, tuple[Tensor, InputGeometry]]
) -> tuple[list[PointingExample], dict[str, int]]:
    """The examples whose image was loaded and whose boxes reach into the centre crop, and how many were left out."""
    loaded = [e for e in examples if e.image in pixels]
    in_crop = box_masks([e.boxes for e in loaded], [pixels[e.image][1] for e in loaded]).flatten(1).any(dim=1)
    kept = [e for e, keep in zip(loaded, in_crop.tolist()) if keep]
    return kept, {"left_out_rotated": len(examples) - len(loaded), "left_out_outside_crop": len(loaded) - len(kept)}


def settings(args: argparse.Namespace, synonyms: Path) -> dict[str, Any]:
    """What the figures depend on besides the model and the data."""
    return {
        "target": "ITM log-odds, logit(match) - logit(no_match), of each caption with its own image",
        "unit": "caption (its first-named category present in the image); bootstrap clusters: images",
        "tolerance": args.tolerance,
        "centre_prior_sigma": args.sigma,
        "random_maps": "uniform per patch of the encoder's grid",
        "n_boot": args.n_boot,
        "level": 0.95,
        "seed": args.seed,
        "n": args.n,
        "min_category": args.min_category,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "device": args.device,
        "data": str(args.data),
        "synonyms": {"path": str(args.synonyms), "sha256": hashlib.sha256(synonyms.read_bytes()).hexdigest()},
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config, ckpt = existing_path(args.config, "--config"), existing_path(args.ckpt, "--ckpt")
    synonyms = existing_path(args.synonyms, "--synonyms")
    root = existing_path(args.data, "--data", directory=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    examples, n_captions, n_images = coco_examples(root, synonyms)
    loaded = load_model(config, ckpt, args.device)
    start = time.perf_counter()
    pixels = load_images(root, examples, loaded)
    scored, left_out_counts = visible_examples(examples, pixels)
    values, rows, methods, left_out = score_all(loaded, scored[: args.n], pixels, args)
    names = [*methods, *BASELINES]
    counts = {"images": n_images, "captions": n_captions, "captions_naming_a_present_category": len(examples)}
    counts |= left_out_counts | {"examples": len(rows), "images_used": len({r["image_id"] for r in rows})}
    counts["examples_naming_several_present_categories"] = sum(len(r["named"]) > 1 for r in rows)
    log_odds = np.array([r["itm_log_odds"] for r in rows])
    itm = {"mean_log_odds": float(log_odds.mean()), "share_matched": float((log_odds > 0).mean())}
    record = {
        "benchmark": RESULT,
        "command": "python benchmarks/coco_pointing.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "checkpoint": str(args.ckpt),
        "seconds": round(time.perf_counter() - start, 1),
        "settings": settings(args, synonyms),
        "counts": counts,
        "itm": itm,
        "methods": summarise(values, rows, names, args.n_boot, args.seed),
        "per_category": per_category(rows, names, args.min_category),
        "left_out": left_out,
        "anchor": ANCHOR,
        "differences": DIFFERENCES,
        "config": load_config(config).to_dict(),
        "provenance": collect_provenance(repo_dir=REPO, seed=args.seed),
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / f"{RESULT}.json", record)
    write_atomic(results / f"{RESULT}.md", markdown(record))
    print(markdown(record))
    print(f"wrote {results / RESULT}.json and .md")
    if args.gallery is not None:
        print(f"gallery: {write_gallery(loaded, Path(args.gallery))}")


if __name__ == "__main__":
    main()
