"""Image-text retrieval recall@K in both directions, with several captions per image.

Text -> image: each caption is a query with exactly one correct image; a hit at K when that image is among the K
most similar. Image -> text: each image is a query whose correct answers are all of its captions; a hit at K when
ANY of them is among the K most similar texts (the standard of Karpathy & Fei-Fei 2015 and every COCO/Flickr
retrieval table since). Recall@K is the share of queries with a hit. In torchmetrics this is ``RetrievalHitRate``
(one query per ``indexes`` group), which :func:`recall_at_k` uses; ``RetrievalRecall`` is a different quantity
(the share of a query's relevant items retrieved: 1/5 for an image with one of five captions in its top K).

Re-ranking (Li et al., ALBEF 2021 and BLIP 2022): the contrastive similarity picks each query's top k candidates,
and a slower pair scorer (the image-text matching head on the fused pair) orders those k; the other candidates keep
their contrastive order below them (:func:`rerank_top_k`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.retrieval import RetrievalHitRate
from torchmetrics.utilities import dim_zero_cat

from mmfuse.types import EncoderOutput

__all__ = ["PairScorer", "RetrievalRecall", "first_of_each", "recall_at_k", "rerank_top_k", "top_k_candidates"]

_QUERY_CHUNK = 1024  # queries scored at once: bounds memory at chunk x candidates
_PAIR_CHUNK = 256  # image-text pairs fused at once when re-ranking

PairScorer = Callable[[EncoderOutput, EncoderOutput], Tensor]
"""Scores P image-text pairs, row p of the image features (tokens (P, N, D)) with row p of the text features
(tokens (P, L, D), mask (P, L)): (P,) float, higher = a better match."""


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


def rerank_top_k(scores: Tensor, k: int, pair_scores: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Scores in which each query's top ``k`` candidates are ordered by a second scorer.

    Args:
        scores: (Q, C) first-stage scores (higher = better), e.g. contrastive similarities.
        k: candidates re-ranked per query (at most C are).
        pair_scores: given (P,) query rows and (P,) candidate columns, their (P,) second-stage scores.

    Returns:
        (Q, C) float scores: every query's top ``k`` candidates rank above all its others, in ``pair_scores``
        order; the others keep their first-stage order.

    Example:
        >>> first = torch.tensor([[0.9, 0.8, 0.1]])  # the candidate scorer would put column 1 first
        >>> rerank_top_k(first, 2, lambda q, c: (c == 1).float()).argsort(dim=1, descending=True).tolist()
        [[1, 0, 2]]
    """
    num_queries, num_candidates = scores.shape
    k = min(k, num_candidates)
    top = scores.topk(k, dim=1).indices  # (Q, k)
    rows = torch.arange(num_queries, device=scores.device)[:, None].expand_as(top)  # (Q, k)
    second = pair_scores(rows.flatten(), top.flatten()).view(num_queries, k).float()  # (Q, k)
    reranked = top.gather(1, second.argsort(dim=1, descending=True, stable=True))  # (Q, k) in second-stage order
    out = scores.detach().float().clone()
    # Ranks as scores: the j-th re-ranked candidate gets (max + 1) + (k - j), above every first-stage score.
    ceiling = out.max() + 1.0 if out.numel() else out.new_zeros(())
    steps = torch.arange(k, 0, -1, device=scores.device, dtype=out.dtype)  # (k,) k, k-1, ..., 1
    out[rows, reranked] = ceiling + steps
    return out


def top_k_candidates(queries: Tensor, candidates: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` candidates most similar (dot product) to each query, chunk by chunk.

    Args:
        queries: (Q, E) embeddings. candidates: (C, E) embeddings. k: how many (at most C).

    Returns:
        (scores (Q, k) float, candidate indices (Q, k) long), best first.
    """
    k = min(k, candidates.shape[0])
    values, indices = [], []
    for start in range(0, queries.shape[0], _QUERY_CHUNK):
        top = (queries[start : start + _QUERY_CHUNK].float() @ candidates.float().T).topk(k, dim=1)  # (q, C) -> (q, k)
        values.append(top.values)
        indices.append(top.indices)
    if not values:
        return queries.new_zeros((0, k)).float(), torch.zeros((0, k), dtype=torch.long, device=queries.device)
    return torch.cat(values), torch.cat(indices)


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

    With ``rerank_k`` > 0 the metric also keeps the encoders' token features (each image once per process; the
    text tokens without padding), and ``compute(pair_scorer=...)`` adds the recalls of the ranking whose top
    ``rerank_k`` candidates per query are re-ordered by ``pair_scorer`` (:func:`rerank_top_k`), named
    ``<name>_itm``. Under DDP every process scores its share of the pairs. Memory: the token features of the
    split's distinct images and texts.

    Args:
        ks: the K values.
        rerank_k: candidates re-ranked per query; 0 = no re-ranking (no token features kept).
        **kwargs: torchmetrics ``Metric`` options.
    """

    full_state_update = False
    image_embeds: list[Tensor]
    text_embeds: list[Tensor]
    image_ids: list[Tensor]
    indices: list[Tensor]
    token_image_ids: list[Tensor]
    image_tokens: list[Tensor]
    image_pooled: list[Tensor]
    text_tokens: list[Tensor]
    text_lengths: list[Tensor]
    text_pooled: list[Tensor]

    def __init__(self, ks: Sequence[int] = (1, 5, 10), rerank_k: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if rerank_k < 0:
            raise ValueError(f"rerank_k must be >= 0 (0 = off); got {rerank_k}")
        self.ks = tuple(ks)
        self.rerank_k = rerank_k
        names = ["image_embeds", "text_embeds", "image_ids", "indices"]
        if rerank_k:
            names += ["token_image_ids", "image_tokens", "image_pooled", "text_tokens", "text_lengths", "text_pooled"]
        for name in names:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._seen_images: set[int] = set()  # image ids whose tokens this process keeps already
        self._image_layout: tuple[int, tuple[int, int] | None] = (0, None)  # num_prefix_tokens, grid_size

    def update(
        self,
        image_embeds: Tensor,
        text_embeds: Tensor,
        image_ids: Tensor,
        indices: Tensor | None,
        image: EncoderOutput | None = None,
        text: EncoderOutput | None = None,
    ) -> None:
        """Args: image_embeds (B, E), text_embeds (B, E) of B image-text rows; image_ids (B,) long; indices (B,)
        long row index in the split (None: rows are taken as they come, none dropped); image (tokens (B, N, D)) and
        text (tokens (B, L, D), mask (B, L)): the encoder outputs, needed with ``rerank_k``."""
        if indices is None:
            indices = torch.full_like(image_ids, -1)
        self.image_embeds.append(image_embeds.detach().float())
        self.text_embeds.append(text_embeds.detach().float())
        self.image_ids.append(image_ids.detach())
        self.indices.append(indices.detach())
        if self.rerank_k:
            if image is None or text is None:
                raise ValueError("RetrievalRecall(rerank_k > 0) needs the encoder outputs: update(..., image, text)")
            self._keep_tokens(image_ids, image, text)

    def _keep_tokens(self, image_ids: Tensor, image: EncoderOutput, text: EncoderOutput) -> None:
        new_rows = []
        for row, image_id in enumerate(image_ids.tolist()):
            if image_id not in self._seen_images:
                self._seen_images.add(image_id)
                new_rows.append(row)
        rows = torch.tensor(new_rows, dtype=torch.long, device=image_ids.device)
        self.token_image_ids.append(image_ids.detach()[rows])
        self.image_tokens.append(image.tokens.detach()[rows])  # (U, N, D); image tokens are all valid
        self.image_pooled.append(image.pooled.detach()[rows])
        self._image_layout = (image.num_prefix_tokens, image.grid_size)
        mask = text.mask if text.mask is not None else text.tokens.new_ones(text.tokens.shape[:2], dtype=torch.bool)
        self.text_tokens.append(text.tokens.detach()[mask])  # (B, L, D) -> (sum of lengths, D), padding dropped
        self.text_lengths.append(mask.sum(dim=1))
        self.text_pooled.append(text.pooled.detach())

    def reset(self) -> None:
        super().reset()
        self._seen_images = set()

    def compute(self, pair_scorer: PairScorer | None = None) -> dict[str, Tensor]:
        """``t2i_r{K}``, ``i2t_r{K}`` and ``r_mean`` over every row seen since the last reset; with ``rerank_k``
        and a ``pair_scorer``, the same of the re-ranked ranking with the suffix ``_itm``."""
        images, texts = dim_zero_cat(self.image_embeds), dim_zero_cat(self.text_embeds)  # lists, or gathered tensors
        image_ids, indices = dim_zero_cat(self.image_ids), dim_zero_cat(self.indices)
        keep = torch.arange(indices.shape[0], device=indices.device)
        if bool((indices >= 0).all()):
            keep = first_of_each(indices)  # rows padded in by a distributed sampler repeat an index
            images, texts, image_ids = images[keep], texts[keep], image_ids[keep]
        _, text_images = torch.unique(image_ids, return_inverse=True)  # (T,) column of each text's image
        image_matrix = images[first_of_each(image_ids)]  # (I, E), columns in sorted-id order, as text_images
        similarity = texts @ image_matrix.T  # (T, E) @ (E, I) -> (T, I)
        out = _with_mean(recall_at_k(similarity, text_images, self.ks))
        if self.rerank_k and pair_scorer is not None:
            image_features, text_features = self._token_features(keep)
            reranked = self._reranked_recall(similarity, text_images, image_features, text_features, pair_scorer)
            out |= {f"{name}_itm": value for name, value in reranked.items()}
        return out

    def _token_features(self, keep: Tensor) -> tuple[EncoderOutput, EncoderOutput]:
        """Image features (I, N, D) in sorted-id order (as the similarity's columns); text features (T, L, D) of the
        kept rows, padded again."""
        token_ids = dim_zero_cat(self.token_image_ids)
        first = first_of_each(token_ids)  # several processes may have kept the same image
        num_prefix_tokens, grid_size = self._image_layout
        image = EncoderOutput(
            tokens=dim_zero_cat(self.image_tokens)[first], mask=None, pooled=dim_zero_cat(self.image_pooled)[first],
            num_prefix_tokens=num_prefix_tokens, grid_size=grid_size,
        )  # fmt: skip
        lengths, flat = dim_zero_cat(self.text_lengths), dim_zero_cat(self.text_tokens)  # (T,), (sum of lengths, D)
        mask = torch.arange(int(lengths.max()), device=lengths.device)[None, :] < lengths[:, None]  # (T, L)
        tokens = flat.new_zeros((*mask.shape, flat.shape[-1]))
        tokens[mask] = flat  # (sum of lengths, D) -> (T, L, D), padding at the end
        text = EncoderOutput(tokens=tokens[keep], mask=mask[keep], pooled=dim_zero_cat(self.text_pooled)[keep])
        return image, text

    def _reranked_recall(
        self, similarity: Tensor, text_images: Tensor, image: EncoderOutput, text: EncoderOutput, scorer: PairScorer
    ) -> dict[str, Tensor]:
        """Recall@K with each query's top ``rerank_k`` candidates ordered by ``scorer`` (text->image: a text's top
        images; image->text: an image's top texts)."""

        def text_queries(texts: Tensor, images: Tensor) -> Tensor:
            return self._score_pairs(scorer, image, text, images, texts)

        def image_queries(images: Tensor, texts: Tensor) -> Tensor:
            return self._score_pairs(scorer, image, text, images, texts)

        t2i = recall_at_k(rerank_top_k(similarity, self.rerank_k, text_queries), text_images, self.ks)
        i2t = recall_at_k(rerank_top_k(similarity.T, self.rerank_k, image_queries).T, text_images, self.ks)
        out = {name: value for name, value in t2i.items() if name.startswith("t2i")}
        out |= {name: value for name, value in i2t.items() if name.startswith("i2t")}
        return _with_mean(out)

    def _score_pairs(
        self, scorer: PairScorer, image: EncoderOutput, text: EncoderOutput, image_rows: Tensor, text_rows: Tensor
    ) -> Tensor:
        """(P,) scores of the pairs (image_rows[p], text_rows[p]), in chunks; under DDP each process scores a share
        and the shares are summed (the gathered features are the same in every process)."""
        num_pairs = image_rows.shape[0]
        world, rank = 1, 0
        if self._to_sync and dist.is_available() and dist.is_initialized():
            world, rank = dist.get_world_size(), dist.get_rank()
        share = -(-num_pairs // world)  # ceil
        scores = torch.zeros(num_pairs, device=image_rows.device)
        for start in range(rank * share, min(num_pairs, (rank + 1) * share), _PAIR_CHUNK):
            stop = min(start + _PAIR_CHUNK, (rank + 1) * share, num_pairs)
            chunk = scorer(image.select_rows(image_rows[start:stop]), text.select_rows(text_rows[start:stop]))
            scores[start:stop] = chunk.float().to(scores.device)
        if world > 1:
            dist.all_reduce(scores)
        return scores


def _with_mean(recalls: dict[str, Tensor]) -> dict[str, Tensor]:
    return recalls | {"r_mean": torch.stack(list(recalls.values())).mean()}


def first_of_each(values: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct value, in sorted-value order.

    Example:
        >>> first_of_each(torch.tensor([7, 3, 7, 3, 5])).tolist()
        [1, 4, 0]
    """
    unique, inverse = torch.unique(values, return_inverse=True)
    positions = torch.arange(values.shape[0], device=values.device)
    first = torch.full((unique.shape[0],), values.shape[0], dtype=torch.long, device=values.device)
    return first.scatter_reduce(0, inverse, positions, reduce="amin")
