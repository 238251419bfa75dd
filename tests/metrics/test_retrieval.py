"""Recall@K in both directions on hand-made similarity matrices, and the epoch metric over a split (and over DDP)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics.retrieval import RetrievalRecall as TorchmetricsRecall

from mmfuse.metrics import RetrievalRecall, recall_at_k, rerank_top_k
from mmfuse.types import EncoderOutput

# 3 images (columns), 7 captions (rows): image 0 has captions 0-2, image 1 captions 3-4, image 2 captions 5-6.
TEXT_IMAGES = torch.tensor([0, 0, 0, 1, 1, 2, 2])
SIMILARITY = torch.tensor(
    [
        [0.9, 0.1, 0.0],  # caption 0: image 0 first            -> t2i hit at 1
        [0.2, 0.8, 0.1],  # caption 1: image 0 second           -> hit at 2
        [0.1, 0.3, 0.5],  # caption 2: image 0 third            -> hit at 3
        [0.0, 0.7, 0.2],  # caption 3: image 1 first            -> hit at 1
        [0.6, 0.4, 0.0],  # caption 4: image 1 second           -> hit at 2
        [0.3, 0.2, 0.1],  # caption 5: image 2 third            -> hit at 3
        [0.0, 0.1, 0.95],  # caption 6: image 2 first           -> hit at 1
    ]
)
# Image -> text, ranking the 7 captions by each column:
#   image 0: 0.9 (c0, its own) first                                           -> hit at 1
#   image 1: 0.8 (c1, not its own), 0.7 (c3, its own)                          -> hit at 2
#   image 2: 0.95 (c6, its own) first                                          -> hit at 1
EXPECTED = {
    "t2i_r1": 3 / 7, "t2i_r2": 5 / 7, "t2i_r3": 1.0,
    "i2t_r1": 2 / 3, "i2t_r2": 1.0, "i2t_r3": 1.0,
}  # fmt: skip


def test_recall_on_a_hand_made_matrix_with_several_captions_per_image() -> None:
    got = recall_at_k(SIMILARITY, TEXT_IMAGES, ks=(1, 2, 3))
    assert {k: round(float(v), 6) for k, v in got.items()} == {k: round(v, 6) for k, v in EXPECTED.items()}


def test_image_to_text_counts_any_caption_not_the_share_of_captions() -> None:
    # torchmetrics' RetrievalRecall is the share of an image's captions in its top K: for image 0 at K=1 that is 1/3,
    # where the standard image->text recall@1 counts the hit.
    share = TorchmetricsRecall(top_k=1)
    share.update(
        SIMILARITY.T[:1].flatten(), (TEXT_IMAGES == 0)[None].flatten(), indexes=torch.zeros(7, dtype=torch.long)
    )
    assert float(share.compute()) == pytest.approx(1 / 3)
    assert float(recall_at_k(SIMILARITY[:, :1], torch.zeros(7, dtype=torch.long), ks=(1,))["i2t_r1"]) == 1.0


def _brute_force(similarity: torch.Tensor, text_images: torch.Tensor, k: int) -> tuple[float, float]:
    ranks = similarity.argsort(dim=1, descending=True)[:, :k]
    t2i = (ranks == text_images[:, None]).any(dim=1).float().mean()
    hits = []
    for image in range(similarity.shape[1]):
        mine = (text_images == image).nonzero().flatten()
        if len(mine):
            top = similarity[:, image].argsort(descending=True)[:k]
            hits.append(bool(torch.isin(top, mine).any()))
    return float(t2i), sum(hits) / len(hits)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_recall_matches_a_brute_force_count_on_random_scores(k: int) -> None:
    generator = torch.Generator().manual_seed(k)
    text_images = torch.randint(0, 40, (200,), generator=generator)
    similarity = torch.randn(200, 40, generator=generator)
    got = recall_at_k(similarity, text_images, ks=(k,))
    t2i, i2t = _brute_force(similarity, text_images, k)
    assert float(got[f"t2i_r{k}"]) == pytest.approx(t2i) and float(got[f"i2t_r{k}"]) == pytest.approx(i2t)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="text_images"):
        recall_at_k(SIMILARITY, torch.tensor([0, 1]))


def _rows(order: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Embeddings whose dot products are SIMILARITY: text rows, and each row's image embedding (one-hot axes)."""
    images = torch.eye(3)  # image i = axis i
    texts = SIMILARITY  # (7, 3): text t . image i = SIMILARITY[t, i]
    return images[TEXT_IMAGES[order]], texts[order], TEXT_IMAGES[order] * 1000 + 17, order


def test_the_epoch_metric_gathers_dedupes_and_ranks_every_text_against_every_image() -> None:
    metric = RetrievalRecall(ks=(1, 2, 3))
    order = torch.tensor([4, 0, 6, 2, 1, 5, 3, 0, 4])  # shuffled, with rows 0 and 4 repeated (sampler padding)
    for chunk in order.split(4):
        metric.update(*_rows(chunk))
    got = metric.compute()
    for key, value in EXPECTED.items():
        assert float(got[key]) == pytest.approx(value), key
    assert float(got["r_mean"]) == pytest.approx(sum(EXPECTED.values()) / 6)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ddp_worker(rank: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    metric = RetrievalRecall(ks=(1, 2, 3), rerank_k=3)
    # A distributed sampler's shards of the 7 rows, padded to 4 each by repeating row 0.
    shard = torch.tensor([[0, 2, 4, 6], [1, 3, 5, 0]][rank])
    metric.update(*_rows(shard), *_features(TEXT_IMAGES[shard], shard))
    results[rank] = {k: float(v) for k, v in metric.compute(pair_scorer=_oracle).items()}  # pairs split by rank
    dist.destroy_process_group()


@pytest.mark.slow  # forked gloo workers can deadlock in all_gather (seen under a loaded CI run); opt in with -m slow
def test_under_ddp_every_process_ranks_the_whole_split() -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        # fork: the workers start with this process's imports instead of importing everything again.
        mp.start_processes(_ddp_worker, args=(_free_port(), results), nprocs=2, join=True, start_method="fork")
        by_rank = dict(results)
    assert by_rank[0] == by_rank[1]
    for key, value in EXPECTED.items():
        assert by_rank[0][key] == pytest.approx(value), key
        assert by_rank[0][f"{key}_itm"] == 1.0, key


def test_rerank_orders_the_top_k_by_the_second_scorer_and_keeps_the_rest() -> None:
    first = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    second = torch.tensor([[0.0, 2.0, 1.0, 9.0], [5.0, 0.0, 1.0, 3.0]])  # column 3 of row 0 is outside its top 3

    def pair_scores(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        return second[rows, columns]

    order = rerank_top_k(first, 3, pair_scores).argsort(dim=1, descending=True)
    # row 0: top 3 by first = {0, 1, 2}, reordered by second: 1, 2, 0; column 3 stays last despite its 9.
    # row 1: top 3 = {3, 2, 1} -> by second: 3 (3.0), 2 (1.0), 1 (0.0); column 0 (first-stage last) stays last.
    assert order.tolist() == [[1, 2, 0, 3], [3, 2, 1, 0]]


def _features(own_images: torch.Tensor, rows: torch.Tensor) -> tuple[EncoderOutput, EncoderOutput]:
    """Encoder outputs whose pooled vectors name the row's image (one-hot over 3 images) and text; the texts carry
    padding, which the metric must drop and restore."""
    image_pooled = torch.eye(3)[own_images]  # (B, 3)
    image = EncoderOutput(tokens=image_pooled[:, None, :].repeat(1, 2, 1), mask=None, pooled=image_pooled)
    lengths = 1 + rows % 3  # 1 to 3 real tokens
    mask = torch.arange(3)[None, :] < lengths[:, None]  # (B, 3)
    text_tokens = torch.eye(3)[own_images][:, None, :].repeat(1, 3, 1) * mask[..., None]
    return image, EncoderOutput(tokens=text_tokens, mask=mask, pooled=torch.eye(3)[own_images])


def _oracle(image: EncoderOutput, text: EncoderOutput) -> torch.Tensor:
    """A matching head that knows the answer: the text's (unpadded) tokens point at its image."""
    assert text.mask is not None
    text_vector = (text.tokens * text.mask[..., None]).sum(1) / text.mask.sum(1, keepdim=True)  # (P, 3)
    return (image.tokens.mean(1) * text_vector).sum(-1)  # (P,) 1 for the right pair, 0 otherwise


def test_reranking_with_the_matching_head_fixes_what_the_contrastive_ranking_got_wrong() -> None:
    metric = RetrievalRecall(ks=(1, 2, 3), rerank_k=3)
    order = torch.tensor([4, 0, 6, 2, 1, 5, 3, 0, 4])  # with repeats, as a distributed sampler pads
    for chunk in order.split(4):
        metric.update(*_rows(chunk), *_features(TEXT_IMAGES[chunk], chunk))
    got = metric.compute(pair_scorer=_oracle)
    for key, value in EXPECTED.items():  # the contrastive ranking alone: as before
        assert float(got[key]) == pytest.approx(value), key
    for key in EXPECTED:  # re-ranked among all 3 images: every query finds its match first
        assert float(got[f"{key}_itm"]) == 1.0, key
    assert float(got["r_mean_itm"]) == 1.0


def test_reranking_only_reorders_the_top_k() -> None:
    metric = RetrievalRecall(ks=(1, 2, 3), rerank_k=1)  # top 1 of each query: the order is the contrastive one
    rows = torch.arange(7)
    metric.update(*_rows(rows), *_features(TEXT_IMAGES, rows))
    got = metric.compute(pair_scorer=_oracle)
    for key, value in EXPECTED.items():
        assert float(got[f"{key}_itm"]) == pytest.approx(value), key


def test_reranking_needs_the_encoder_outputs() -> None:
    with pytest.raises(ValueError, match="encoder outputs"):
        RetrievalRecall(rerank_k=2).update(*_rows(torch.arange(2)))
