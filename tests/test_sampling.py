"""Length-bucketed batch sampler: every item once, similar lengths together, reshuffled per epoch."""
import pytest
import torch

from dmha.batches import LengthBucketSampler, in_input_order


def test_evaluation_order_is_longest_first_and_reversible():
    lengths = [3, 9, 1, 7, 5]
    sampler = LengthBucketSampler(lengths, 2)
    assert list(sampler) == [[1, 3], [4, 0], [2]]
    assert in_input_order(["b", "d", "e", "a", "c"], sampler.order()) == ["a", "b", "c", "d", "e"]
    with pytest.raises(ValueError, match="batch_size"):
        LengthBucketSampler(lengths, 0)


def test_training_batches_are_random_but_bucketed():
    lengths = [int(x) for x in torch.randint(10, 500, (400,), generator=torch.Generator().manual_seed(0))]
    sampler = LengthBucketSampler(lengths, 8, shuffle=True, seed=1, pool=50)
    first = list(sampler)
    assert sorted(i for b in first for i in b) == list(range(400))  # each item exactly once
    padded = sum(max(lengths[i] for i in b) * len(b) for b in first)
    plain = LengthBucketSampler(lengths, 8, shuffle=True, seed=1, pool=1)
    padded_plain = sum(max(lengths[i] for i in b) * len(b) for b in plain)
    assert padded < 0.7 * padded_plain  # far less padding than random batches
    assert list(LengthBucketSampler(lengths, 8, shuffle=True, seed=1, pool=50)) == first  # seeded
    sampler.set_epoch(1)
    assert list(sampler) != first  # a new shuffle each epoch


def test_equal_lengths_give_plain_random_batches():
    sampler = LengthBucketSampler([5] * 64, 8, shuffle=True, seed=0)
    batches = list(sampler)
    assert any(b != sorted(b) for b in batches)  # not grouped by index: the permutation survives


def test_ranks_take_disjoint_batches(monkeypatch):
    import dmha.batches as sampling

    lengths = list(range(1, 42))
    per_rank = {}
    for rank in (0, 1):
        monkeypatch.setattr(sampling, "_rank_world", lambda rank=rank: (rank, 2))
        train = LengthBucketSampler(lengths, 4, shuffle=True, seed=3, distributed=True)
        evaluate = LengthBucketSampler(lengths, 4, distributed=True)
        per_rank[rank] = (list(train), evaluate.order())
    assert len(per_rank[0][0]) == len(per_rank[1][0]) == 6  # 11 batches padded to 12: same steps per rank
    assert sorted(per_rank[0][1] + per_rank[1][1]) == list(range(41))  # evaluation: every item once
    assert set(per_rank[0][1]).isdisjoint(per_rank[1][1])
    monkeypatch.setattr(sampling, "_rank_world", lambda: (1, 2))
    assert len(list(LengthBucketSampler(lengths, 4))) == 11  # not distributed: all batches


def test_batches_keep_within_the_padded_length_budget():
    """A few long items among short ones: the long ones get small batches (alone when over budget)."""
    lengths = [10] * 20 + [100, 100, 100, 500]
    for sampler in (LengthBucketSampler(lengths, 8, max_length=250),
                    LengthBucketSampler(lengths, 8, shuffle=True, seed=0, max_length=250),
                    LengthBucketSampler(lengths, 8, shuffle=True, seed=0, pool=1, max_length=250)):
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every item once
        for batch in batches:
            padded = len(batch) * max(lengths[i] for i in batch)
            assert len(batch) <= 8 and (padded <= 250 or len(batch) == 1)
        assert [23] in batches  # 500 alone is over the budget: a batch of its own
    unbudgeted = list(LengthBucketSampler(lengths, 8))
    assert unbudgeted[0] == [23, 20, 21, 22, 0, 1, 2, 3]  # without one: 8 × 500 padded


def test_cut_batches_is_greedy_in_the_given_order():
    from dmha.batching import cut_batches

    assert cut_batches([0, 1, 2, 3], [1, 1, 3, 3], 3, max_length=6) == [[0, 1], [2, 3]]  # 3 × 3 > 6
    assert cut_batches([3, 2, 1, 0], [1, 1, 3, 3], 3, max_length=6) == [[3, 2], [1, 0]]
    assert cut_batches([0, 1], [1, 1], 3) == [[0, 1]] and cut_batches([], [], 3) == []
