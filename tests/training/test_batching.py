"""nlg.training.batching: truncation to --seq_len, padding to the longest pair or to static shapes, and each
epoch's batch plan."""

from __future__ import annotations

import pytest

from nlg.pairs import Pair
from nlg.training.batching import (
    IGNORE_INDEX,
    PAD_ID,
    Example,
    batches_per_epoch,
    bucket,
    collate,
    collate_static,
    epoch_batches,
    make_examples,
)


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


def test_bucket_ladder():
    assert [bucket(n) for n in (1, 16, 17, 64, 65, 80, 81, 128, 129, 200, 257, 1023)] == \
        [16, 16, 32, 64, 80, 80, 96, 128, 160, 224, 320, 1024]
    sizes = sorted({bucket(n) for n in range(1, 1025)})
    assert len(sizes) == 4 + 4 * 4  # 16..64, then four per octave up to 1024
    assert all(n <= bucket(n) < n + 16 for n in range(1, 65))
    assert all(n <= bucket(n) < 1.25 * n for n in range(65, 1025))  # under a quarter more
    assert bucket(90, cap=95) == 95 and bucket(90, cap=200) == 96  # never past the cap


def test_static_collate_pads_rows_width_and_slots():
    examples = [Example((5, 6, 9, 7, 8, 9), 3), Example((1, 9, 2, 9), 2)]
    exact = collate(examples)
    batch = collate_static(examples, "clm", rows=4, max_width=100)
    assert batch.shape == (4, 16, 16)
    assert batch.input_ids[:2, :5].tolist() == exact.input_ids.tolist()
    assert (batch.input_ids[:, 5:] == PAD_ID).all() and (batch.input_ids[2:] == PAD_ID).all()
    # The real loss slots come first, with the flat positions of the wider grid.
    assert batch.loss_targets[:5].tolist() == exact.loss_targets.tolist()
    assert batch.loss_index[:5].tolist() == [2, 3, 4, 16 + 1, 16 + 2]
    assert (batch.loss_targets[5:] == IGNORE_INDEX).all() and (batch.loss_index[5:] == 0).all()
    assert (batch.n_loss, batch.n_tokens, batch.counts.tolist()) == (5, 8, [5, 8])
    # The width bucket never passes the longest possible input (positions stay in the model).
    assert collate_static(examples, "jlm", rows=2, max_width=5).shape == (2, 5, 10)
    with pytest.raises(ValueError, match="do not fit"):
        collate_static(examples, "clm", rows=1, max_width=100)
