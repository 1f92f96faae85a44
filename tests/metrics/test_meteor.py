"""nlg.metrics.meteor: METEOR's paraphrase table cut to what a set of references can match."""

from __future__ import annotations

import gzip

from nlg.metrics import meteor


def test_cut_paraphrase_table_keeps_entries_a_reference_can_match(tmp_path):
    entries = [  # (probability, phrase, paraphrase), sorted by phrase as METEOR's table is
        (b"0.1", b"a pub", b"an inn"),  # phrase wholly in the vocabulary: kept
        (b"0.2", b"a pub", b"a bar"),  # kept (same phrase)
        (b"0.3", b"bistro", b"a cafe"),  # paraphrase wholly in the vocabulary: kept
        (b"0.4", b"bistro", b"eatery"),  # neither side: no reference can match it
        (b"0.5", b"pub food", b"a bar"),  # "food" unknown, "bar" unknown: dropped
    ]
    text = b"".join(b"\n".join(entry) + b"\n" for entry in entries)
    source = tmp_path / "table.gz"
    source.write_bytes(gzip.compress(text))
    for block_size in (1, 7, 1 << 22):  # blocks that cut lines and entries anywhere
        assert list(meteor._table_entries(source, block_size)) == entries
    target = tmp_path / "cache" / "cut.gz"
    assert meteor.cut_paraphrase_table(source, target, {b"a", b"pub", b"cafe"}) == (3, 5)
    assert gzip.decompress(target.read_bytes()) == b"".join(
        b"\n".join(entry) + b"\n" for entry in entries[:3]
    )
    assert meteor.cached_cut_table(target) == target
    target.write_bytes(gzip.compress(b"0.1\na pub\nan inn\n"))  # damaged: not used
    assert meteor.cached_cut_table(target) is None
    assert meteor.cached_cut_table(tmp_path / "missing.gz") is None

