"""chrF++ as GenerationEval computes it (its metrics/chrF.py, Maja Popović's chrF with word n-grams).

Character n-grams (orders 1..nc, default 6) are taken from each line with its spaces removed;
word n-grams (orders 1..nw, default 2) from its words, where a word longer than one character
has a punctuation mark at its end, or else at its start, split off (ASCII punctuation, one mark).
For a hypothesis and one reference, order n has
    m_n = sum over n-grams of min(count in hypothesis, count in reference),
    P_n = m_n / (hypothesis n-grams),  R_n = m_n / (reference n-grams),
    F_n = (1 + beta^2) P_n R_n / (beta^2 P_n + R_n),  F_n = 0 for an order with no match,
and the sentence score is (sum of the nc + nw F_n) / (nc + nw). Each instance keeps the counts of
its best reference (highest sentence score; the first on ties). The corpus score sums those
counts over instances and takes the same mean of F-beta over the nc + nw orders (an order with
no match counts 1e-16 there, as in chrF.py). As in chrF.py, an order that the reference is too
short to have contributes nothing, hypothesis n-grams included; instances whose references are
all empty are left out (GenerationEval drops them before chrF.py sees them). Default beta 2:
recall weighs four times as much as precision.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_PUNCTUATION = frozenset(string.punctuation)


def words(line: str) -> list[str]:
    """chrF.py's words: whitespace-split, one punctuation mark split off a word's end or start."""
    out = []
    for word in line.split():
        if len(word) > 1 and word[-1] in _PUNCTUATION:
            out += [word[:-1], word[-1]]
        elif len(word) > 1 and word[0] in _PUNCTUATION:
            out += [word[0], word[1:]]
        else:
            out.append(word)
    return out


def ngram_counts(items: Sequence[str] | str, order: int) -> list[Counter]:
    """Counts of the n-grams of orders 1..order (a string gives character n-grams)."""
    if isinstance(items, str):
        return [
            Counter(items[i : i + n] for i in range(len(items) - n + 1))
            for n in range(1, order + 1)
        ]
    return [
        Counter(tuple(items[i : i + n]) for i in range(len(items) - n + 1))
        for n in range(1, order + 1)
    ]


@dataclass(frozen=True)
class _Counts:
    """A line's character and word n-gram counts."""

    orders: list[Counter]  # character orders 1..nc, then word orders 1..nw

    @classmethod
    def of(cls, line: str, char_order: int, word_order: int) -> _Counts:
        chars = line.strip().replace(" ", "")
        return cls(ngram_counts(chars, char_order) + ngram_counts(words(line), word_order))


def _f_beta(matches: float, hyp: float, ref: float, beta: float, zero: float) -> float:
    """F-beta of one order from counts; `zero` where chrF.py gives no score."""
    precision = matches / hyp if hyp > 0 else 1e-16
    recall = matches / ref if ref > 0 else 1e-16
    denominator = beta**2 * precision + recall
    return (1 + beta**2) * precision * recall / denominator if denominator > 0 else zero


def _statistics(hyp: _Counts, ref: _Counts) -> list[tuple[int, int, int]]:
    """(matches, hypothesis n-grams, reference n-grams) per order; (0, 0, 0) for an order the
    reference does not reach (chrF.py only visits the orders the reference has)."""
    stats = []
    for hyp_counts, ref_counts in zip(hyp.orders, ref.orders, strict=True):
        if not ref_counts:
            stats.append((0, 0, 0))
            continue
        matches = sum(
            min(count, hyp_counts[g]) for g, count in ref_counts.items() if g in hyp_counts
        )
        stats.append((matches, sum(hyp_counts.values()), sum(ref_counts.values())))
    return stats


def _mean_f(
    stats: Sequence[tuple[float, float, float]], char_order: int, beta: float, zero: float
) -> float:
    """Mean F-beta over the orders, added up as chrF.py adds them (the character orders' sum
    plus the word orders' sum: the same float, so the same best reference on near-ties)."""
    scores = [_f_beta(m, h, r, beta, zero) if m or zero else 0.0 for m, h, r in stats]
    return (sum(scores[:char_order]) + sum(scores[char_order:])) / len(stats)


def chrf(
    references: Sequence[Sequence[str]],
    hypotheses: Sequence[str],
    char_order: int = 6,
    word_order: int = 2,
    beta: float = 2.0,
) -> tuple[float, list[float | None]]:
    """Corpus chrF++ (0..1) and each instance's sentence score (None where every reference is
    empty, an instance chrF.py never sees)."""
    best, sentence_scores = chrf_statistics(references, hypotheses, char_order, word_order, beta)
    totals = [[0, 0, 0] for _ in range(char_order + word_order)]
    for stats in best:
        for total, counts in zip(totals, stats or (), strict=False):
            for k in range(3):
                total[k] += counts[k]
    return chrf_totals(totals, any(s is not None for s in best), char_order, beta), sentence_scores


def chrf_statistics(
    references: Sequence[Sequence[str]],
    hypotheses: Sequence[str],
    char_order: int = 6,
    word_order: int = 2,
    beta: float = 2.0,
) -> tuple[list[list[tuple[int, int, int]] | None], list[float | None]]:
    """Each instance's (matches, hypothesis n-grams, reference n-grams) per order against its
    best reference (None where every reference is empty), and its sentence score. The corpus
    score is a function of their sums (`chrf_totals`)."""
    best_stats: list[list[tuple[int, int, int]] | None] = []
    sentence_scores: list[float | None] = []
    for refs, hypothesis in zip(references, hypotheses, strict=True):
        refs = [ref for ref in refs if ref.strip()]
        if not refs:
            best_stats.append(None)
            sentence_scores.append(None)
            continue
        hyp = _Counts.of(hypothesis, char_order, word_order)
        best_score, best = -1.0, []
        for ref in refs:
            stats = _statistics(hyp, _Counts.of(ref, char_order, word_order))
            score = _mean_f(stats, char_order, beta, zero=0.0)
            if score > best_score:
                best_score, best = score, stats
        sentence_scores.append(best_score)
        best_stats.append(best)
    return best_stats, sentence_scores


def chrf_totals(
    totals: Sequence[Sequence[float]], any_instance: bool, char_order: int = 6, beta: float = 2.0
) -> float:
    """Corpus chrF++ from the per-order sums of `chrf_statistics` (0 when no instance has a
    reference: `any_instance` False)."""
    if not any_instance:
        return 0.0
    return _mean_f(totals, char_order, beta, zero=1e-16)
