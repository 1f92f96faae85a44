"""nlg.metrics.ter: pyter's TER (GenerationEval's), hand-checked and against a plain reference.

`plain_ter` below restates pyter's algorithm in the slowest obvious way (a full dynamic-programming
table per candidate, every candidate sorted as pyter sorts them); the fast version must agree
with it exactly, ties included, on many random cases over a tiny vocabulary (where ties abound).
"""

from __future__ import annotations

import random

import pytest

from nlg.metrics import ter


def plain_levenshtein(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        previous, row = row, [i] + [0] * len(b)
        for j, y in enumerate(b, start=1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (x != y))
    return row[-1]


def plain_ter(hyp: list[str], ref: list[str]) -> float:
    shifts = 0
    while True:
        base = plain_levenshtein(hyp, ref)
        candidates = []
        for i in range(len(hyp)):
            for j in range(len(ref)):
                if i == j or hyp[i] != ref[j]:
                    continue
                length = 1
                while (
                    i + length < len(hyp)
                    and j + length < len(ref)
                    and hyp[i + length] == ref[j + length]
                ):
                    length += 1
                rest = hyp[:i] + hyp[i + length :]
                rest[j:j] = hyp[i : i + length]
                candidates.append((base - plain_levenshtein(rest, ref), rest))
        if not candidates or max(candidates)[0] <= 0:
            return (shifts + base) / len(ref)
        hyp, shifts = max(candidates)[1], shifts + 1


def test_ter_with_a_shift():
    # the block "b c" moves after "a", giving "a b c": one shift, no edit, 3 reference words
    # (without shifts: 2 edits, delete and insert "a")
    assert ter.ter("b c a".split(), "a b c".split()) == pytest.approx(1 / 3)
    # no shift lowers the distance of a plain substitution: 1 edit / 3 words
    assert ter.ter("a x c".split(), "a b c".split()) == pytest.approx(1 / 3)
    # a shift (1) and an insertion (1) for 4 reference words
    assert ter.ter("c d a".split(), "a b c d".split()) == pytest.approx(2 / 4)
    assert ter.ter([], "a b".split()) == 1.0
    with pytest.raises(ValueError):
        ter.ter(["a"], [])


def test_instance_ter_min_over_references_empty_counts_one():
    # the second reference is matched exactly; an empty reference counts 1, as GenerationEval
    assert ter.instance_ter("a b c", ["x y z", "a b c", ""]) == 0.0
    assert ter.instance_ter("a b c", ["", ""]) == 1.0
    assert ter.corpus_ter([["a b"], ["a b", "b"]], ["a b", "b"]) == [0.0, 0.0]


def test_ter_equals_plain_pyter_algorithm_on_random_cases():
    rng = random.Random(7)
    for _ in range(1500):
        hyp = [rng.choice("abcd") for _ in range(rng.randint(0, 10))]
        ref = [rng.choice("abcd") for _ in range(rng.randint(1, 10))]
        assert ter.ter(hyp, ref) == plain_ter(hyp, ref), (hyp, ref)


def test_python_levenshtein_equals_plain_and_rapidfuzz():
    rng = random.Random(3)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        expected = plain_levenshtein(a, b)
        assert ter.python_levenshtein(a, b) == expected
        assert ter.levenshtein(a, b) == expected
