"""Typed containers passed between components."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["EncoderOutput", "FusionOutput", "Batch", "DataSpec"]


@dataclass
class EncoderOutput:
    """What every image and text encoder returns.

    Attributes:
        tokens: (B, N, D) token features; N includes prefix tokens.
        mask: (B, N) bool, True = valid token; None = all valid.
        pooled: (B, D) summary vector.
        num_prefix_tokens: CLS/register tokens at the start of ``tokens``.
        grid_size: (Gh, Gw) patch grid of an image encoder; None for text.
    """

    tokens: Tensor
    mask: Tensor | None
    pooled: Tensor
    num_prefix_tokens: int = 0
    grid_size: tuple[int, int] | None = None

    def select_rows(self, rows: Tensor) -> EncoderOutput:
        """The output of the given rows.

        Args:
            rows: (P,) long row indices into B.

        Returns:
            EncoderOutput with tokens (P, N, D), mask (P, N) or None, pooled (P, D).
        """
        return EncoderOutput(
            tokens=self.tokens[rows],
            mask=None if self.mask is None else self.mask[rows],
            pooled=self.pooled[rows],
            num_prefix_tokens=self.num_prefix_tokens,
            grid_size=self.grid_size,
        )


@dataclass
class FusionOutput:
    """What every fusion module returns.

    Attributes:
        fused: (B, D) joint representation fed to the head.
        tokens: (B, M, D) fused tokens (text tokens after cross-attention) or None.
        attn_weights: per fusion layer, (B, nh, L, N) text-to-image attention; None unless asked for.
        image_attn_weights: per fusion layer, (B, nh, N, L) image-to-text attention (co-attention only).
    """

    fused: Tensor
    tokens: Tensor | None = None
    attn_weights: tuple[Tensor, ...] | None = None
    image_attn_weights: tuple[Tensor, ...] | None = None


@dataclass
class Batch:
    """One training batch.

    Attributes:
        images: (B, 3, H, W) float in [0, 1]; the vision encoder normalises with its own statistics.
        input_ids: (B, L) long token ids.
        attention_mask: (B, L) bool, True = real token.
        labels: (B,) long class indices (-1 = none), or None at prediction time.
        image_ids: (B,) long, equal for rows that show the same image (the captions of one image); None when the
            data has no image identity (the shapes world).
        indices: (B,) long row index of each example in its split, so an evaluation can drop the repeats that a
            distributed sampler pads with; None when unknown.
        soft_targets: (B, K) float VQA answer scores: the VQA accuracy that answering each class would earn (0 for
            answers no annotator gave); None for data without answer annotations.
    """

    images: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor | None = None
    image_ids: Tensor | None = None
    indices: Tensor | None = None
    soft_targets: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device`` (non-blocking where possible)."""

        def move(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.to(device, non_blocking=True)

        return Batch(
            self.images.to(device, non_blocking=True),
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            move(self.labels),
            move(self.image_ids),
            move(self.indices),
            move(self.soft_targets),
        )

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class DataSpec:
    """Facts about a dataset that the model is built from (derived once, never typed twice).

    Attributes:
        num_classes: size of the answer / label vocabulary.
        vocab_size: size of the tokenizer's vocabulary.
        pad_token_id: id used for padding.
        image_size: side of the (square) images the data yields.
        class_names: label names, index-aligned.
        tokenizer: where the tokenizer came from (``data.tokenizer``: a directory or a Hugging Face hub id); None =
            a word-level tokenizer trained on the data (and in specs saved before this field existed).
    """

    num_classes: int
    vocab_size: int
    pad_token_id: int
    image_size: int
    class_names: tuple[str, ...] = ()
    tokenizer: str | None = None
