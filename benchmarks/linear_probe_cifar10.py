"""Pretrained against random-init MobileNetV2 features under a linear probe on the real CIFAR-10 sample.

    HF_HUB_OFFLINE=1 python benchmarks/linear_probe_cifar10.py

The same measurement as ``tests/encoders/test_pretrained_weights.py`` (whose helpers it runs: one home for the
probe), written with its provenance to ``benchmarks/results/linear_probe_cifar10.json`` and ``.md``: torchvision's
ImageNet MobileNetV2 built through ``model.vision.model_name: torchvision:mobilenet_v2`` with
``model.vision.pretrained: <the weights package's .pth>``, 1,000 CIFAR-10 test images upsampled to 96 px, the first 70
per class train a logistic regression on the pooled features and the other 30 test it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmfuse.provenance import collect_provenance  # noqa: E402
from mmfuse.tables import format_table  # noqa: E402
from tests.encoders import test_pretrained_weights as probe  # noqa: E402


def main() -> None:
    start = time.perf_counter()
    weights = probe._weights_file()
    images, labels, is_train = probe._cifar()
    accuracy = {
        "pretrained": probe._probe_accuracy(probe._pooled_features(str(weights), images), labels, is_train),
        "random_init": probe._probe_accuracy(probe._pooled_features(None, images), labels, is_train),
    }
    results = {
        "command": "HF_HUB_OFFLINE=1 python benchmarks/linear_probe_cifar10.py",
        "weights": weights.name,
        "image_size": probe.SIZE,
        "train_per_class": probe.TRAIN_PER_CLASS,
        "accuracy": accuracy,
        "chance": 0.1,
        "wall_s": time.perf_counter() - start,
        "provenance": collect_provenance(repo_dir=REPO, seed=0),
    }
    out = REPO / "benchmarks" / "results"
    (out / "linear_probe_cifar10.json").write_text(json.dumps(results, indent=2) + "\n")
    hw, git = results["provenance"]["hardware"], results["provenance"]["git"]
    text = (
        "# CIFAR-10 linear probe: pretrained vs random-init MobileNetV2 features\n\n"
        f"`{results['command']}` — commit {str(git.get('commit'))[:10]}{' (dirty)' if git.get('dirty') else ''}, "
        f"seed 0, {hw['processor']} x{hw['cpu_count']} (flags {hw.get('cpu_flags')}), {results['wall_s']:.0f} s.\n\n"
        + format_table(
            ["features", "probe accuracy (300 test images)"],
            [
                [f"ImageNet MobileNetV2 ({weights.name})", f"{accuracy['pretrained']:.3f}"],
                ["random init", f"{accuracy['random_init']:.3f}"],
                ["chance", "0.100"],
            ],
            "md",
            "lr",
        )
        + "\n"
    )
    (out / "linear_probe_cifar10.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
