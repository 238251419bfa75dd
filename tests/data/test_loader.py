"""ResumableDataLoader: the order is a function of (seed, epoch) and continues exactly after a restore."""

from __future__ import annotations

import pytest
import torch

from mmfuse.data.loader import ResumableDataLoader
from mmfuse.errors import ConfigError

DATA = list(range(50))


def _loader(**kwargs: int) -> ResumableDataLoader:
    args = {"batch_size": 4, "seed": 3, "num_replicas": 1, "rank": 0} | kwargs
    return ResumableDataLoader(DATA, shuffle=True, drop_last=True, **args)


def _epoch(loader: ResumableDataLoader, epoch: int) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)
    return [batch.tolist() for batch in loader]


def test_restored_loader_continues_where_the_saved_one_stopped() -> None:
    full = _epoch(_loader(), 2)
    first = _loader()
    first.sampler.set_epoch(2)
    iterator = iter(first)
    seen = [next(iterator).tolist() for _ in range(5)]
    state = first.state_dict()
    assert state["epoch"] == 2 and state["batches_done"] == 5
    resumed = _loader()
    resumed.load_state_dict(state)
    rest = [batch.tolist() for batch in resumed]
    assert seen + rest == full and len(resumed) == len(full) == 12
    assert _epoch(resumed, 3) == _epoch(_loader(), 3)  # the skip applies to the interrupted epoch only


def test_order_depends_on_seed_and_epoch_not_on_the_global_rng() -> None:
    torch.manual_seed(1)
    a = _epoch(_loader(), 0)
    torch.manual_seed(2)
    assert _epoch(_loader(), 0) == a
    assert _epoch(_loader(), 1) != a and _epoch(_loader(seed=4), 0) != a
    state = torch.get_rng_state()
    _epoch(_loader(), 0)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_finished_epoch_restores_to_a_fresh_next_epoch() -> None:
    loader = _loader()
    _epoch(loader, 0)
    state = loader.state_dict()
    resumed = _loader()
    resumed.load_state_dict(state)
    assert len(_epoch(resumed, 1)) == 12


def test_ranks_get_disjoint_shards() -> None:
    shards = [{i for b in _epoch(_loader(num_replicas=2, rank=r), 0) for i in b} for r in (0, 1)]
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 24


@pytest.mark.parametrize("change", [{"batch_size": 8}, {"num_replicas": 2}, {"seed": 5}])
def test_resuming_with_other_settings_is_refused(change: dict[str, int]) -> None:
    loader = _loader()
    iter(loader).__next__()
    with pytest.raises(ConfigError, match=next(iter(change))):
        _loader(**change).load_state_dict(loader.state_dict())
