"""Image-text retrieval recall@K in both directions, with several captions per image.

Text -> image: each caption is a query with exactly one correct image; a hit at K when that image is among the K
most similar. Image -> text: each image is a query whose correct answers are all of its captions; a hit at K when
ANY of them is among the K most similar texts (the standard of Karpathy & Fei-Fei 2015 and every COCO/Flickr
retrieval table since). Recall@K is the share of queries with a hit. In torchmetrics this is ``RetrievalHitRate``
(one query per ``indexes`` group), which :func:`recall_at_k` uses; ``RetrievalRecall`` is a different quantity
(the share of a query's relevant items retrieved: 1/5 for an image with one of five captions in its top K).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.retrieval import RetrievalHitRate
from torchmetrics.utilities import dim_zero_cat

__all__ = ["recall_at_k", "RetrievalRecall"]

_QUERY_CHUNK = 1024  # queries scored at once: bounds memory at chunk x candidates


def recall_at_k(similarity: Tensor, text_images: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Tensor]:
    """Recall@K of text->image and image->text retrieval from a text-by-image similarity matrix.

    Args:
        similarity: (T, I) score of each text against each image (higher = more similar).
        text_images: (T,) long, the column of each text's own image.
        ks: the K values.

    Returns:
        ``t2i_r{K}`` and ``i2t_r{K}`` for each K: scalar float tensors in [0, 1]. An image without any text among
        the rows is not a query (it can still be retrieved, wrongly, for a text).

    Example:
        >>> sim = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])  # texts 1 and 2 show image 1; text 2 is missed
        >>> {k: round(float(v), 3) for k, v in recall_at_k(sim, torch.tensor([0, 1, 1]), ks=(1,)).items()}
        {'t2i_r1': 0.667, 'i2t_r1': 1.0}
    """
    num_texts, num_images = similarity.shape
    if text_images.shape != (num_texts,) or (num_texts and int(text_images.max()) >= num_images):
        raise ValueError(
            f"text_images must be (T,) = ({num_texts},) columns below I = {num_images}; got shape "
            f"{tuple(text_images.shape)}"
        )
    relevant = F.one_hot(text_images.long(), num_images).bool()  # (T, I)
    scores = similarity.detach().float()
    out = {f"t2i_r{k}": _hit_rate(scores, relevant, k) for k in ks}
    out |= {f"i2t_r{k}": _hit_rate(scores.T, relevant.T, k) for k in ks}
    return out


def _hit_rate(scores: Tensor, relevant: Tensor, k: int) -> Tensor:
    """Mean over the queries (rows) that have a relevant item of torchmetrics' hit rate at ``k``, chunk by chunk.

    Args:
        scores: (Q, C) float. relevant: (Q, C) bool.
    """
    total, queries = torch.zeros((), dtype=torch.float64), 0
    for start in range(0, scores.shape[0], _QUERY_CHUNK):
        chunk_scores, chunk_relevant = scores[start : start + _QUERY_CHUNK], relevant[start : start + _QUERY_CHUNK]
        counted = int(chunk_relevant.any(dim=1).sum())
        if counted == 0:
            continue
        # sync_on_compute=False: every process ranks the same (already gathered) matrix; a second gather would
        # double every candidate.
        metric = RetrievalHitRate(top_k=k, empty_target_action="skip", sync_on_compute=False).to(scores.device)
        rows = torch.arange(chunk_scores.shape[0], device=scores.device)[:, None].expand_as(chunk_scores)  # (q, C)
        metric.update(chunk_scores.flatten(), chunk_relevant.flatten(), indexes=rows.flatten())
        total += metric.compute().double().cpu() * counted
        queries += counted
    return (total / max(queries, 1)).float()


class RetrievalRecall(Metric):
    """Recall@K over a whole split: gathers image and text embeddings over the epoch (and, under DDP, across
    processes), then ranks every text against every distinct image (:func:`recall_at_k`).

    Rows repeated by a distributed sampler's padding are dropped by their ``indices``; an image seen with several
    captions is ranked once (its first embedding). ``compute`` also gives ``r_mean``, the mean of all recalls.

    Args:
        ks: the K values.
        **kwargs: torchmetrics ``Metric`` options.
    """

    full_state_update = False
    image_embeds: list[Tensor]
    text_embeds: list[Tensor]
    image_ids: list[Tensor]
    indices: list[Tensor]

    def __init__(self, ks: Sequence[int] = (1, 5, 10), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ks = tuple(ks)
        for name in ("image_embeds", "text_embeds", "image_ids", "indices"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, image_embeds: Tensor, text_embeds: Tensor, image_ids: Tensor, indices: Tensor | None) -> None:
        """Args: image_embeds (B, E), text_embeds (B, E) of B image-text rows; image_ids (B,) long; indices (B,)
        long row index in the split (None: rows are taken as they come, none dropped)."""
        if indices is None:
            indices = torch.full_like(image_ids, -1)
        self.image_embeds.append(image_embeds.detach().float())
        self.text_embeds.append(text_embeds.detach().float())
        self.image_ids.append(image_ids.detach())
        self.indices.append(indices.detach())

    def compute(self) -> dict[str, Tensor]:
        """``t2i_r{K}``, ``i2t_r{K}`` and ``r_mean`` over every row seen since the last reset."""
        images, texts = dim_zero_cat(self.image_embeds), dim_zero_cat(self.text_embeds)  # lists, or gathered tensors
        image_ids, indices = dim_zero_cat(self.image_ids), dim_zero_cat(self.indices)
        if bool((indices >= 0).all()):
            keep = _first_of_each(indices)  # rows padded in by a distributed sampler repeat an index
            images, texts, image_ids = images[keep], texts[keep], image_ids[keep]
        _, text_images = torch.unique(image_ids, return_inverse=True)  # (T,) column of each text's image
        image_matrix = images[_first_of_each(image_ids)]  # (I, E), columns in sorted-id order, as text_images
        out = recall_at_k(texts @ image_matrix.T, text_images, self.ks)  # (T, E) @ (E, I) -> (T, I)
        out["r_mean"] = torch.stack(list(out.values())).mean()
        return out


def _first_of_each(values: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct value, in sorted-value order.

    Example:
        >>> _first_of_each(torch.tensor([7, 3, 7, 3, 5])).tolist()
        [1, 4, 0]
    """
    unique, inverse = torch.unique(values, return_inverse=True)
    positions = torch.arange(values.shape[0], device=values.device)
    first = torch.full((unique.shape[0],), values.shape[0], dtype=torch.long, device=values.device)
    return first.scatter_reduce(0, inverse, positions, reduce="amin")
