"""nlg.batching: truncation to --seq_len, padding to the longest pair, and each epoch's batch plan."""

from __future__ import annotations

import pytest

from nlg.batching import batches_per_epoch, collate, epoch_batches, make_examples
from nlg.pairs import Pair


def test_seq_len_truncates_and_counts():
    pairs = [Pair([1, 2, 3, 9], [4, 5, 9], 1), Pair([1, 9], [4, 9], 2), Pair([1, 2, 3, 4, 5, 9], [6, 9], 3)]
    examples, cut = make_examples(pairs, seq_len=5)
    assert cut == 2
    assert [e.tokens for e in examples] == [(1, 2, 3, 9, 4), (1, 9, 4, 9), (1, 2, 3, 4, 5)]
    batch = collate(examples)
    assert batch.input_ids.shape == (3, 4)  # padded to the longest pair, not to seq_len
    assert batch.n_loss == 1 + 2 + 0  # the third pair lost its whole completion
    assert collate(examples, pad_to=16).input_ids.shape == (3, 16)  # the paper's fixed padding


@pytest.mark.parametrize("grouped", [False, True])
def test_batch_plan_is_deterministic_and_splits_across_ranks(grouped):
    lengths = [(i * 37) % 50 + 5 for i in range(101)]
    plan = dict(epoch=3, seed=7, group_by_length=grouped)
    one = epoch_batches(lengths, 8, **plan)
    assert one == epoch_batches(lengths, 8, **plan)
    assert one != epoch_batches(lengths, 8, **{**plan, "epoch": 4})
    assert sorted(i for b in one for i in b) == list(range(101))
    assert len(one) == batches_per_epoch(101, 8, 1)
    # Two ranks with batch 4 see, step by step, the pairs one process sees with batch 8.
    even = lengths[:100]
    single = epoch_batches(even, 8, **plan)
    ranks = [epoch_batches(even, 4, world_size=2, rank=r, **plan) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == batches_per_epoch(100, 4, 2)
    for k, batch in enumerate(single):
        assert sorted(batch) == sorted(ranks[0][k] + ranks[1][k])
    if grouped:  # similar lengths together: far less padding than random batches
        def padding(batches):
            return sum(max(even[i] for i in b) * len(b) - sum(even[i] for i in b) for b in batches)
        assert padding(single) < 0.3 * padding(epoch_batches(even, 8, epoch=3, seed=7))
