"""Hand-built models with a known dependence, and small probe data sets, for the probe tests."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.tokenizer import train_word_tokenizer
from mmfuse.probes import ProbeData

NAMES = ("she", "he", "anna", "james", "maria", "omar")
VOCAB = [*NAMES, "asks", ":", "what", "colour", "is", "the", "circle", "square", "?", "her", "him", "his", "muslim"]


class TokenModel(nn.Module):
    """Two classes: class 0 exactly when one of ``token_ids`` is in the text, else class 1 (ignores the image)."""

    def __init__(self, token_ids: Sequence[int], margin: float = 4.0) -> None:
        super().__init__()
        self.register_buffer("token_ids", torch.tensor(list(token_ids)))
        self.scale = nn.Parameter(torch.tensor(margin))

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hit = (torch.isin(input_ids, self.token_ids) & attention_mask).any(dim=1).float()  # (B,)
        return torch.stack([hit, 1 - hit], dim=1) * self.scale  # (B, 2)


class RedModel(nn.Module):
    """Two classes from the image alone: class 0 when the centre pixel is more red than blue (ignores the text)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0))

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        centre = images[:, :, h // 2, w // 2]  # (B, 3)
        red = centre[:, 0] - centre[:, 2]  # (B,)
        return torch.stack([red, -red], dim=1) * self.scale  # (B, 2)


class FrameModel(nn.Module):
    """Two classes from the image border alone: class 0 when the outermost pixels are brighter than 0.75."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        border = torch.cat([images[:, :, 0, :], images[:, :, -1, :]], dim=2).mean(dim=(1, 2))  # (B,)
        return torch.stack([border - 0.75, 0.75 - border], dim=1) * self.scale  # (B, 2)


def texts_with_names(n: int) -> list[str]:
    """Questions that start with a name or pronoun, cycling through :data:`NAMES`."""
    return [f"{NAMES[i % len(NAMES)]} asks : what colour is the {('circle', 'square')[i % 2]} ?" for i in range(n)]


def make_data(texts: Sequence[str], colors: Sequence[tuple[int, int, int]] | None = None, size: int = 16) -> ProbeData:
    """Probe data: one flat-coloured image per text (red/blue alternating by default), label = 0 for red."""
    colors = colors or [((230, 25, 25), (40, 80, 255))[i % 2] for i in range(len(texts))]
    rows = [
        {"image": Image.new("RGB", (size, size), c), "text": t, "label": int(c[2] > c[0])}
        for t, c in zip(texts, colors)
    ]
    return ProbeData(rows, ImageTextCollator(train_word_tokenizer(VOCAB)), ("red", "blue"))


@pytest.fixture
def data() -> ProbeData:
    return make_data(texts_with_names(60))


def token_ids(data: ProbeData, words: Sequence[str]) -> list[int]:
    tokenizer = data.collate.tokenizer  # type: ignore[attr-defined]
    return [int(tokenizer.convert_tokens_to_ids(w)) for w in words]
