"""Grad-CAM (Selvaraju et al., ICCV 2017) and HiResCAM (Draelos & Carin, 2020) on any timm vision encoder, alone or
inside an image-text model, and on torchvision's image classifiers.

Grad-CAM: ``cam = ReLU(sum_c w_c * A_c)`` with ``w_c`` the spatial mean of the target's gradient with respect to the
activation ``A`` of one layer. HiResCAM keeps the gradient's position: ``cam = ReLU(sum_c G_c * A_c)``, element-wise.
The two agree when the gradient is the same at every position (a global-average-pooled classifier); they differ when
the model *selects* positions, as a cross-attention fusion does: there the gradient is large only where the fusion
looks, and Grad-CAM's spatial mean throws exactly that away (it then lights up every object with similar features).
Same rules, layer choice and normalisation as pytorch-grad-cam's ``GradCAM`` / ``HiResCAM``, but in torch from end to
end, with one forward and one backward per batch, the token-to-grid reshape read from the encoder (no
``reshape_transform`` to write) and a model that may take a whole :class:`~mmfuse.types.Batch`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmfuse.attribution.amp import full_precision
from mmfuse.attribution.base import EXPLAINERS, Attribution
from mmfuse.attribution.hooks import capture_output, explain_mode, gradients, resolve_module
from mmfuse.attribution.reshape import normalize_per_example, to_grid, token_layout, upsample
from mmfuse.attribution.targets import PredictedClass, Target
from mmfuse.errors import ConfigError
from mmfuse.registry import Registry
from mmfuse.types import Batch

__all__ = ["CAM_METHODS", "GradCAM", "HiResCAM", "default_target_layer", "gradcam", "hirescam"]

# Last stages of torchvision classifiers, which have no timm feature_info: a module whose output is the last spatial
# map (ResNet/ResNeXt/Wide ResNet, RegNet, ShuffleNetV2, GoogLeNet, Inception v3), or a container whose last child is
# (MobileNet, EfficientNet, ConvNeXt, Swin, VGG, DenseNet, SqueezeNet, AlexNet: `features`; MNASNet: `layers`;
# MaxViT: `blocks`). pytorch-grad-cam's README recommends the same layers.
_TORCHVISION_STAGES = ("layer4", "trunk_output", "conv5", "inception5b", "Mixed_7c")
_TORCHVISION_CONTAINERS = ("features", "layers", "blocks")


def _vision_encoder(model: nn.Module) -> nn.Module:
    """The image encoder of an image-text model (``model.vision``), or the model itself for a timm classifier."""
    if not hasattr(model, "vision"):
        return model
    vision = model.vision
    if not isinstance(vision, nn.Module):
        raise ValueError(f"{type(model).__name__} has no vision encoder (its fusion ignores images): no image map")
    return vision


def _last_stage(backbone: Any) -> str:
    """Dotted path, inside a timm model, of its default Grad-CAM layer."""
    if hasattr(backbone, "num_prefix_tokens") and hasattr(backbone, "blocks"):
        return f"blocks.{len(backbone.blocks) - 1}.norm1"  # pytorch-grad-cam's choice for ViTs
    info = getattr(backbone, "feature_info", None)
    if info is None:
        return _torchvision_stage(backbone)
    name = info.module_name()[-1] if hasattr(info, "module_name") else info[-1]["module"]
    modules = dict(backbone.named_modules())
    # features_only wrappers flatten `stages.3` to `stages_3`; getter wrappers keep the model under `model.`
    for candidate in (name, name.replace(".", "_"), f"model.{name}"):
        if candidate in modules:
            return str(candidate)
    raise ConfigError(f"last feature stage {name!r} not found in {type(backbone).__name__}; pass target_layer=...")


def _last_child(module: nn.Module) -> str | None:
    names = [name for name, _ in module.named_children()]
    return names[-1] if names else None


def _torchvision_stage(model: nn.Module) -> str:
    """Dotted path of the default Grad-CAM layer of a torchvision classifier (a model without timm feature_info)."""
    blocks = getattr(getattr(model, "encoder", None), "layers", None)
    if isinstance(getattr(model, "class_token", None), Tensor) and isinstance(blocks, nn.Module):
        last = _last_child(blocks)  # torchvision ViT: the last block's first norm, as for timm's ViTs
        if last is not None:
            return f"encoder.layers.{last}.ln_1"
    for name in _TORCHVISION_STAGES:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    for name in _TORCHVISION_CONTAINERS:
        container = getattr(model, name, None)
        last = _last_child(container) if isinstance(container, nn.Module) else None
        if last is not None:
            return f"{name}.{last}"
    children = [name for name, _ in model.named_children()]
    raise ConfigError(
        f"{type(model).__name__} has no timm feature_info and no known last stage; pass target_layer=... "
        f"(the last module with a spatial output; its top-level modules: {children})"
    )


def default_target_layer(model: nn.Module) -> str:
    """The default CAM layer: the last layer with a spatial map before the read-out.

    In a plain timm classifier that is the last feature stage of a CNN, or the last block's ``norm1`` of a ViT
    (whose final norm reaches the head through the class token only). A torchvision classifier gets the same: its
    last stage (``layer4`` of a ResNet, the last module of ``features`` of a MobileNet, EfficientNet or ConvNeXt...)
    or, for its ViT, ``encoder.layers.<last>.ln_1``. In an image-text model it is the vision
    encoder's projection ``vision.proj``: its (B, N, D) tokens are exactly what the fusion reads, at every position,
    for CNNs and ViTs alike; an encoder without a projection falls back to its backbone's last stage.

    Args:
        model: an image-text model, a plain timm classifier or a torchvision classifier.

    Returns:
        A dotted module path inside ``model``.

    Raises:
        ConfigError: a model of none of these kinds; the message lists its top-level modules.
    """
    if not hasattr(model, "vision"):
        return _last_stage(model)
    encoder = _vision_encoder(model)
    if isinstance(getattr(encoder, "proj", None), nn.Module):
        return "vision.proj"
    return f"vision.backbone.{_last_stage(getattr(encoder, 'backbone', encoder))}"


def _forward(model: nn.Module, inputs: Tensor | Batch) -> Any:
    if isinstance(inputs, Batch):
        return model(inputs.images, inputs.input_ids, inputs.attention_mask)
    return model(inputs)


CAM_METHODS: Registry[type[GradCAM]] = Registry("cam_method")


@CAM_METHODS.register("gradcam")
class GradCAM:
    """Grad-CAM on one layer of a timm or torchvision classifier or of an image-text model's vision encoder.

    Args:
        model: a timm or torchvision image classifier (called with images) or an
            :class:`~mmfuse.models.ImageTextModel` (called with a :class:`~mmfuse.types.Batch`).
        target_layer: dotted module path; None = :func:`default_target_layer`. A bad path raises
            :class:`~mmfuse.errors.ConfigError` listing valid paths near it.
    """

    method = "gradcam"

    def __init__(self, model: nn.Module, target_layer: str | None = None) -> None:
        self.model = model
        self.target_layer = target_layer or default_target_layer(model)
        resolve_module(model, self.target_layer)
        self.layout = token_layout(_vision_encoder(model))

    def channel_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """Grad-CAM's channel weights: the spatial mean of the gradients.

        Args:
            activations: (B, C, Gh, Gw) fp32 activations of the target layer.
            grads: (B, C, Gh, Gw) fp32 gradients of the target with respect to them.

        Returns:
            (B, C) weights.
        """
        return grads.mean(dim=(2, 3))

    def cam(self, activations: Tensor, grads: Tensor) -> Tensor:
        """The map at the layer's resolution.

        Args:
            activations: (B, C, Gh, Gw) fp32 activations of the target layer.
            grads: (B, C, Gh, Gw) fp32 gradients of the target with respect to them.

        Returns:
            (B, Gh, Gw) non-negative map.
        """
        weights = self.channel_weights(activations, grads)  # (B, C)
        return torch.relu((weights[:, :, None, None] * activations).sum(dim=1))  # (B, C, Gh, Gw) -> (B, Gh, Gw)

    def __call__(self, inputs: Tensor | Batch, target: Target | None = None) -> Attribution:
        """Explain a batch.

        Args:
            inputs: (B, 3, H, W) images for a classifier, or a Batch for an image-text model.
            target: what to explain; default :class:`~mmfuse.attribution.targets.PredictedClass`.

        Returns:
            Attribution with ``image`` (B, H, W) min-max normalised per example and ``image_grid`` (B, Gh, Gw)
            the raw non-negative CAM at the layer's resolution.
        """
        target = target or PredictedClass()
        batch = inputs if isinstance(inputs, Batch) else None
        with explain_mode(self.model), capture_output(self.model, self.target_layer) as capture:
            output = _forward(self.model, inputs)
            if capture.output is None:
                raise ConfigError(f"target_layer={self.target_layer!r} did not run in the forward pass")
            activation = capture.output
            (grad,) = gradients(target(output, batch), [activation])
        images = inputs.images if isinstance(inputs, Batch) else inputs
        return self._attribution(activation.detach(), grad, (images.shape[-2], images.shape[-1]))

    def _attribution(self, activation: Tensor, grad: Tensor, size: tuple[int, int]) -> Attribution:
        with full_precision(activation.device):
            acts = to_grid(activation.float(), self.layout)  # (B, N, C) or 4-D -> (B, C, Gh, Gw)
            grads = to_grid(grad.float(), self.layout)
            cam = self.cam(acts, grads)  # (B, Gh, Gw)
            # Normalised before and after upsampling, as pytorch-grad-cam does: the same map for any usual scale, and a
            # map whose whole range is below the epsilon (random-init torchvision CNNs: ~1e-10) is still stretched.
            image = normalize_per_example(upsample(normalize_per_example(cam), size))  # (B, Gh, Gw) -> (B, H, W)
        return Attribution(method=self.method, image=image, image_grid=cam)


@CAM_METHODS.register("hirescam")
class HiResCAM(GradCAM):
    """HiResCAM: the gradient multiplies the activation position by position before the channel sum.

    Faithful to the model's computation where Grad-CAM is not: for a layer followed (up to the target) by a linear
    read-out, the map is exactly each position's contribution to the target. Arguments as :class:`GradCAM`.
    """

    method = "hirescam"

    def cam(self, activations: Tensor, grads: Tensor) -> Tensor:
        """(B, C, Gh, Gw) activations and gradients -> (B, Gh, Gw) ``ReLU(sum_c G_c * A_c)``."""
        return torch.relu((grads * activations).sum(dim=1))


@EXPLAINERS.register("gradcam")
def gradcam(model: nn.Module, batch: Batch, target: Target) -> Attribution:
    """Grad-CAM at the default layer of the vision encoder (image map only); see :class:`GradCAM`."""
    return GradCAM(model)(batch, target)


@EXPLAINERS.register("hirescam")
def hirescam(model: nn.Module, batch: Batch, target: Target) -> Attribution:
    """HiResCAM at the default layer of the vision encoder (image map only); see :class:`HiResCAM`."""
    return HiResCAM(model)(batch, target)
