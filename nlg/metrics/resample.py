"""Corpus scores of many resampled corpora at once, from per-instance sufficient statistics.

A resample is a row of instance indices (repeats allowed, in order): `idx` of shape (R, n). Its
value for a metric is the suite's corpus score of the corpus made of those instances, in that
order, as `nlg score` reports it for the files that corpus would be written to. Every statistic
that depends on the corpus is recomputed per resample:

  mteval BLEU (E2E)    clipped matches, hypothesis n-grams and closest reference lengths summed
                       over the resample, then mteval's (or pymteval's) formula;
  NIST (E2E)           as BLEU, with each matched n-gram's information weight
                       log2(count(prefix) / count(n-gram)) from the resample's references (an
                       instance drawn twice counts its references twice);
  METEOR (both)        each instance's METEOR statistics (one SCORE line per instance, once),
                       summed over the resample (they are counts), then one EVAL line per
                       resample: the jar scores the sum as it scores the corpus;
  ROUGE-L (E2E)        the mean of per-instance scores;
  CIDEr-D (E2E)        pycocoevalcap's: the document frequency of each n-gram counted over the
                       resample's instances (log of the resample size as the reference length),
                       so every instance's tf-idf vectors, cosines and score are recomputed;
  multi-bleu (WebNLG)  sums of per-instance counts, then multi-bleu-detok's formula;
  chrF++ (WebNLG)      corpus-level from summed statistics (each instance's best reference),
                       as GenerationEval's chrF.py, instances without a reference left out;
  TER (WebNLG)         the mean of per-instance TER.

Integer statistics are summed exactly and the formulas are the scorers' own Python functions,
so BLEU (both suites), chrF++ and METEOR equal `nlg score` bit for bit. ROUGE-L and TER are
summed in the scorers' order (numpy's mean, Python's left-to-right sum); NIST's and CIDEr's
floating-point sums run in another order than the scorers' loops, so they agree to ~1e-12
relative, not to the last bit. Everything here is numpy over a block of resamples at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from nlg.files import InputError
from nlg.metrics import suite
from nlg.metrics.chrf import chrf_statistics, chrf_totals
from nlg.metrics.coco import ptb_tokenize
from nlg.metrics.java import MissingJavaError, find_java, java_unavailable_reason
from nlg.metrics.meteor import Meteor, build_cut_table, start_meteor
from nlg.metrics.mteval import (
    BLEU_N,
    NIST_N,
    SegmentStats,
    bleu_nist_totals,
    bleu_python_totals,
    instance_ngrams,
    multi_bleu_counts,
    multi_bleu_totals,
    nist_python_totals,
)
from nlg.metrics.ter import corpus_ter
from nlg.metrics.treebank import Tokenizer, punkt_sentences

BLOCK = 50  # resamples per numpy block: bounds the memory of the (block x n-grams) arrays


def counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of n instances is drawn in each resample: (R, n) float counts."""
    rows = idx.shape[0]
    flat = (idx + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def scatter_sum(weights: np.ndarray, columns: np.ndarray, width: int) -> np.ndarray:
    """out[r, c] = sum of weights[r, e] over the entries e with columns[e] == c: (R, width)."""
    rows = weights.shape[0]
    flat = (columns[None, :] + width * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, weights.ravel(), minlength=rows * width).reshape(rows, width)


def segment_sum(values: np.ndarray, segments: np.ndarray, width: int) -> np.ndarray:
    """out[r, s] = sum of values[r, e] over the entries e of segment s; `segments` ascending."""
    out = np.zeros((values.shape[0], width))
    if segments.size:
        starts = np.flatnonzero(np.r_[True, segments[1:] != segments[:-1]])
        out[:, segments[starts]] = np.add.reduceat(values, starts, axis=1)
    return out


def entries(triples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, value) triples as three arrays (ints, ints, floats)."""
    rows, columns, values = [], [], []
    for row, column, value in triples:
        rows.append(row)
        columns.append(column)
        values.append(value)
    return (
        np.array(rows, dtype=np.int64),
        np.array(columns, dtype=np.int64),
        np.array(values, dtype=np.float64),
    )


def blocks(idx: np.ndarray) -> Iterator[np.ndarray]:
    """The resamples BLOCK at a time (a block's (rows, n) count matrix stays small)."""
    for start in range(0, idx.shape[0], BLOCK):
        yield idx[start : start + BLOCK]


def summed_rows(table: np.ndarray, idx: np.ndarray) -> Iterator[list[int]]:
    """Per resample, in order, the column sums of the integer `table` (one row per instance)
    over its draws: each row weighted by how often the resample draws that instance."""
    for block in blocks(idx):
        yield from (counts(block, len(table)).astype(np.int64) @ table).tolist()


# ---------------------------------------------------------------------------------------------
# mteval BLEU and NIST (E2E)
# ---------------------------------------------------------------------------------------------


class MtevalResampler:
    """E2E's BLEU and NIST (mteval-v13a, or pymteval with `pymteval`) of resampled corpora."""

    def __init__(
        self, references: Sequence[Sequence[str]], hypotheses: Sequence[str], pymteval: bool
    ):
        self.pymteval = pymteval
        instances = instance_ngrams(references, hypotheses, pymteval)
        self.n = len(instances)
        # per instance: hyp_len, closest_ref_len, n_refs, ref_words, matches 1..5, hypothesis
        # n-grams 1..5 clamped at 0 (mteval) or not (pymteval)
        self.table = np.array(
            [
                [s.hyp_len, s.closest_ref_len, s.n_refs, s.ref_words, *s.matches]
                + [s.hyp_ngrams(k, clamp=not pymteval) for k in range(1, NIST_N + 1)]
                for s in (x.stats for x in instances)
            ],
            dtype=np.int64,
        )
        self.mean_ref_len = np.array([s.stats.ref_words / float(s.stats.n_refs) for s in instances])
        # the matched n-grams (their clipped matches per instance) and every n-gram whose
        # reference count their weights need: themselves and their prefixes
        matched = sorted({g for x in instances for g in x.clipped}, key=lambda g: (len(g), g))
        needed = sorted({g[:-1] for g in matched if len(g) > 1} | set(matched))
        column = {g: k for k, g in enumerate(needed)}
        self.width = len(needed)
        self.matched = np.array([column[g] for g in matched], dtype=np.int64)
        self.order = np.array([len(g) - 1 for g in matched], dtype=np.int64)
        # mteval takes the total reference words for unigrams, and for the prefix "0" too
        self.prefix = np.array(
            [
                -1 if len(g) == 1 or (not pymteval and g[:-1] == ("0",)) else column[g[:-1]]
                for g in matched
            ],
            dtype=np.int64,
        )
        self.ref_inst, self.ref_col, self.ref_count = entries(
            (i, column[g], c)
            for i, x in enumerate(instances)
            for g, c in x.ref_counts.items()
            if g in column
        )
        matched_index = {g: m for m, g in enumerate(matched)}
        self.clip_inst, self.clip_col, self.clip_count = entries(
            (i, matched_index[g], c) for i, x in enumerate(instances) for g, c in x.clipped.items()
        )

    def _info(self, block: np.ndarray) -> np.ndarray:
        """Summed information of the matched n-grams per order: (rows, NIST_N)."""
        drawn = counts(block, self.n)
        info = np.zeros((block.shape[0], NIST_N))
        if not self.matched.size:
            return info
        ref_counts = scatter_sum(drawn[:, self.ref_inst] * self.ref_count, self.ref_col, self.width)
        total_words = drawn @ self.table[:, 3].astype(np.float64)
        hits = scatter_sum(
            drawn[:, self.clip_inst] * self.clip_count, self.clip_col, len(self.matched)
        )
        count = ref_counts[:, self.matched]
        prefix = np.where(
            self.prefix[None, :] < 0, total_words[:, None], ref_counts[:, np.maximum(self.prefix, 0)]
        )
        used = hits > 0  # where an n-gram is not drawn its counts may be 0: no weight needed
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.pymteval:
                weight = np.log(prefix / count) / math.log(2)
            else:
                weight = -np.log(count / prefix) / math.log(2)
            weighted = np.where(used, weight * hits, 0.0)
        for k in range(NIST_N):
            info[:, k] = weighted[:, self.order == k].sum(axis=1)
        return info

    def values(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """BLEU and NIST of each resample: {"BLEU": (R,), "NIST": (R,)}."""
        bleu, nist = np.empty(idx.shape[0]), np.empty(idx.shape[0])
        row = 0
        for block in blocks(idx):
            sums = counts(block, self.n).astype(np.int64) @ self.table
            info = self._info(block)
            if self.pymteval:  # its mean reference length is a float sum in file order
                mean_ref_len = np.cumsum(self.mean_ref_len[block], axis=1)[:, -1]
            for r in range(block.shape[0]):
                hyp_len, ref_len, n_refs, ref_words = (int(v) for v in sums[r, :4])
                matches = [int(v) for v in sums[r, 4 : 4 + NIST_N]]
                hyp_ngrams = [int(v) for v in sums[r, 4 + NIST_N :]]
                if self.pymteval:
                    bleu[row] = bleu_python_totals(ref_len, matches, hyp_ngrams[:BLEU_N])
                    nist[row] = nist_python_totals(list(info[r]), hyp_ngrams, mean_ref_len[r])
                else:
                    total = SegmentStats(hyp_len, ref_len, n_refs, ref_words, matches, list(info[r]))
                    bleu[row], nist[row] = bleu_nist_totals(total, hyp_ngrams, block.shape[1])
                row += 1
        return {"BLEU": bleu, "NIST": nist}


# ---------------------------------------------------------------------------------------------
# Means of per-instance scores (ROUGE-L, TER)
# ---------------------------------------------------------------------------------------------


@dataclass
class MeanResampler:
    """A corpus score that is the mean of per-instance scores: numpy's mean (pycocoevalcap's
    ROUGE-L) or Python's left-to-right sum over the count (GenerationEval's TER)."""

    name: str
    scores: np.ndarray
    numpy_mean: bool

    def values(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        drawn = self.scores[idx]
        if self.numpy_mean:
            return {self.name: np.mean(drawn, axis=1)}
        return {self.name: np.cumsum(drawn, axis=1)[:, -1] / idx.shape[1]}


# ---------------------------------------------------------------------------------------------
# GenerationEval's BLEU and chrF++ (WebNLG)
# ---------------------------------------------------------------------------------------------


class MultiBleuResampler:
    """multi-bleu-detok's corpus BLEU (0..100) of resampled corpora."""

    def __init__(self, references: Sequence[Sequence[str]], hypotheses: Sequence[str]):
        self.table = np.array(multi_bleu_counts(references, hypotheses), dtype=np.int64)

    def values(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        bleu = [multi_bleu_totals(t[2 : 2 + BLEU_N], t[2 + BLEU_N :], t[0], t[1]).bleu
                for t in summed_rows(self.table, idx)]
        return {"BLEU": np.array(bleu, dtype=np.float64)}


class ChrfResampler:
    """GenerationEval's corpus chrF++ of resampled corpora (summed best-reference statistics)."""

    def __init__(
        self,
        references: Sequence[Sequence[str]],
        hypotheses: Sequence[str],
        char_order: int = 6,
        word_order: int = 2,
        beta: float = 2.0,
    ):
        best, _ = chrf_statistics(references, hypotheses, char_order, word_order, beta)
        width = 3 * (char_order + word_order)
        self.char_order, self.beta = char_order, beta
        # per instance: has a reference (0/1), then (matches, hyp, ref) of each order
        self.table = np.array(
            [[0] * (1 + width) if s is None else [1] + [v for t in s for v in t] for s in best],
            dtype=np.int64,
        )

    def values(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        chrf = []
        for total in summed_rows(self.table, idx):
            stats = [total[1 + 3 * k : 4 + 3 * k] for k in range((len(total) - 1) // 3)]
            chrf.append(chrf_totals(stats, total[0] > 0, self.char_order, self.beta))
        return {"chrF++": np.array(chrf, dtype=np.float64)}


# ---------------------------------------------------------------------------------------------
# METEOR (both suites)
# ---------------------------------------------------------------------------------------------


class MeteorResampler:
    """METEOR of resampled corpora from each instance's statistics line (nlg.metrics.meteor
    .Meteor.statistics): one EVAL line per resample in the running METEOR.

    METEOR's EVAL adds up the statistics of the lines it is given (MeteorStats.addStats) and
    scores the sum. A line holds 23 counts: hypothesis and reference lengths and function words,
    per matching stage (exact, stem, synonym, paraphrase) the hypothesis' and reference's content
    and function-word matches, the chunks, and the word matches of each side. addStats adds them
    all, except the chunks of a perfect instance (every word of both sides matched, one chunk),
    which it leaves out. The same sum is computed here, exactly (counts), and sent as one line:
    the jar then scores the numbers it would have summed itself, bit for bit, without answering
    a score for every instance of every resample (~0.1 s per resample of 630). Should a line
    ever hold a fraction, every resample's lines are sent as they are instead."""

    CHUNKS = 20  # the chunks' place in a statistics line

    def __init__(self, meteor: Meteor, stats: Sequence[str]):
        self.meteor, self.stats = meteor, list(stats)
        table = np.array([[float(v) for v in line.split()] for line in stats])
        self.counts = bool(np.all(table == np.round(table))) and table.shape[1] == 23
        if self.counts:
            stages = table[:, 4 : self.CHUNKS].reshape(len(table), 4, 4)  # stage x (tc, rc, tf, rf)
            perfect = (
                (stages[:, :, [0, 2]].sum(axis=(1, 2)) == table[:, 0])
                & (stages[:, :, [1, 3]].sum(axis=(1, 2)) == table[:, 1])
                & (table[:, self.CHUNKS] == 1)
            )
            table[perfect, self.CHUNKS] = 0.0
        self.table = table

    def values(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        if self.counts:
            corpora = []
            for block in blocks(idx):
                sums = counts(block, len(self.stats)) @ self.table
                corpora += [[" ".join(f"{v:.1f}" for v in row)] for row in sums.tolist()]
        else:
            corpora = [[self.stats[i] for i in row] for row in idx.tolist()]
        results = self.meteor.evaluate_many(corpora, per_instance=False)
        return {"METEOR": np.array([score for score, _ in results])}


# ---------------------------------------------------------------------------------------------
# CIDEr-D (E2E)
# ---------------------------------------------------------------------------------------------
# pycocoevalcap's CIDEr-D of instance i with references j:
#   w(g) = log(N) - log(max(1, df(g))), df(g) = instances whose references hold g, N instances;
#   for each order k, hypothesis vector h_g = tf_h(g) w(g), reference vector f_g = tf_j(g) w(g),
#   val_jk = sum_g min(h_g, f_g) f_g / (|h_k| |f_k|) (when both norms are non-zero)
#            * exp(-(len_h - len_j)^2 / (2 * 6^2))   (len: the number of bigrams, as coded);
#   score_i = 10 * mean_k(sum_j val_jk) / (number of references), CIDEr = mean_i score_i.
# Since w >= 0, min(h_g, f_g) f_g = min(tf_h, tf_j) tf_j w(g)^2 and the squared norms are sums of
# tf^2 w(g)^2: per resample each is a sum of fixed coefficients times w(g)^2.


def _by_order(cooked: dict) -> list[tuple[tuple, int]]:
    return sorted(cooked.items(), key=lambda item: len(item[0]))


class CiderReferences:
    """The reference side of CIDEr-D, shared by the systems scored against these references.

    Arrays hold one resample per column (rows of entries down, resamples across), so gathering
    and summing entries moves contiguous rows. Most n-grams occur in the references of a single
    instance u; their df in a resample is simply how often u is drawn, so their entries are
    merged per row and weighted by one row per instance (`sources`): only n-grams shared by
    several instances need a weight of their own."""

    def __init__(self, ref_tokens: Sequence[Sequence[str]]):
        from pycocoevalcap.cider.cider_scorer import precook

        self.n = len(ref_tokens)
        self.cooked = [[precook(ref, 4) for ref in refs] for refs in ref_tokens]
        self.column: dict[tuple, int] = {}
        self.holders: list[list[int]] = []  # per column: the instances whose references hold it
        for i, refs in enumerate(self.cooked):
            for g in sorted({g for ref in refs for g in ref}):
                self.holders[self.column_of(g)].append(i)
        # every reference (numbered through the corpus) has rows 4 * ref + k for orders k
        self.owner = np.array([i for i, refs in enumerate(self.cooked) for _ in refs])
        self.n_refs = np.array([len(refs) for refs in self.cooked], dtype=np.float64)
        self.bigrams = np.array(
            [sum(c for g, c in ref.items() if len(g) == 2) for refs in self.cooked for ref in refs]
        )
        self.norm_entries = entries(
            (4 * j + len(g) - 1, self.column_of(g), c * c)
            for j, ref in enumerate(ref for refs in self.cooked for ref in refs)
            for g, c in _by_order(ref)
        )
        self.source: np.ndarray | None = None

    def column_of(self, g: tuple) -> int:
        """The column of an n-gram (a new one for an n-gram seen first)."""
        if g not in self.column:
            self.column[g] = len(self.column)
            self.holders.append([])
        return self.column[g]

    def prepare(self) -> None:
        """Once every system's n-grams have columns: where each column's weight comes from
        (`sources` rows: the shared n-grams, then one per instance, then log(N)^2 for n-grams
        in no reference), and the references' norm entries merged by it."""
        shared = [k for k, held in enumerate(self.holders) if len(held) > 1]
        source = np.full(len(self.holders), len(shared) + self.n, dtype=np.int64)
        source[shared] = np.arange(len(shared))
        for k, held in enumerate(self.holders):
            if len(held) == 1:
                source[k] = len(shared) + held[0]
        self.source, self.shared = source, len(shared)
        df = [(rank, i) for rank, k in enumerate(shared) for i in self.holders[k]]
        self.df_col = np.array([rank for rank, _ in df], dtype=np.int64)
        self.df_inst = np.array([i for _, i in df], dtype=np.int64)
        self.norm_row, self.norm_src, self.norm_coef = self.merged(self.norm_entries)

    def merged(self, triples: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """(row, column, coefficient) entries as (row, source, summed coefficient), by row."""
        rows, columns, coefs = triples
        width = self.shared + self.n + 1
        keys, inverse = np.unique(rows * width + self.source[columns], return_inverse=True)
        return keys // width, keys % width, np.bincount(inverse, coefs, minlength=len(keys))

    def weights(self, block: np.ndarray) -> np.ndarray:
        """w(g)^2 of every source row for each resample of the block: (sources, rows)."""
        size = float(block.shape[1])
        drawn = counts(block, self.n).T  # (instances, rows)
        df = segment_rows(drawn[self.df_inst], self.df_col, self.shared)
        w = np.log(size) - np.log(np.maximum(1.0, np.vstack([df, drawn])))
        w2 = np.vstack([w * w, np.full((1, block.shape[0]), np.log(size) ** 2)])
        return w2

    def norms(self, w2: np.ndarray) -> np.ndarray:
        """|f_k| of every reference row 4 * ref + k: (4 * references, rows)."""
        values = w2[self.norm_src] * self.norm_coef[:, None]
        return np.sqrt(segment_rows(values, self.norm_row, 4 * len(self.owner)))


def segment_rows(values: np.ndarray, segments: np.ndarray, width: int) -> np.ndarray:
    """out[s] = sum of the rows values[e] of segment s (`segments` ascending): (width, ...)."""
    out = np.zeros((width, *values.shape[1:]))
    if segments.size:
        starts = np.flatnonzero(np.r_[True, segments[1:] != segments[:-1]])
        out[segments[starts]] = np.add.reduceat(values, starts, axis=0)
    return out


class CiderResampler:
    """One system's CIDEr-D of resampled corpora (see the comment above). Create every system's
    resampler before the first `cider_values`: its hypotheses' n-grams get columns too."""

    def __init__(self, refs: CiderReferences, hyp_tokens: Sequence[str]):
        from pycocoevalcap.cider.cider_scorer import precook

        self.refs = refs
        cooked = [precook(hyp, 4, True) for hyp in hyp_tokens]
        self.hyp_entries = entries(
            (4 * i + len(g) - 1, refs.column_of(g), c * c)
            for i, hyp in enumerate(cooked)
            for g, c in _by_order(hyp)
        )
        pairs = [(i, ref) for i, group in enumerate(refs.cooked) for ref in group]
        self.num_entries = entries(
            (4 * j + len(g) - 1, refs.column_of(g), min(cooked[i][g], c) * c)
            for j, (i, ref) in enumerate(pairs)
            for g, c in _by_order(ref)
            if g in cooked[i]
        )
        hyp_bigrams = np.array([sum(c for g, c in h.items() if len(g) == 2) for h in cooked])
        delta = (hyp_bigrams[refs.owner] - refs.bigrams).astype(np.float64)
        self.penalty = np.e ** (-(delta**2) / (2 * 6.0**2))
        self.hyp_rows = (4 * refs.owner[:, None] + np.arange(4)[None, :]).ravel()
        self.hyp: tuple | None = None

    def prepare(self) -> None:
        """Merge the entries by weight source (after `CiderReferences.prepare`)."""
        self.hyp = self.refs.merged(self.hyp_entries)
        self.num = self.refs.merged(self.num_entries)

    def instance_scores(self, w2: np.ndarray, ref_norms: np.ndarray) -> np.ndarray:
        """Every instance's CIDEr-D under the weights w2: (instances, rows)."""
        refs = self.refs
        (hyp_row, hyp_src, hyp_coef), (num_row, num_src, num_coef) = self.hyp, self.num
        hyp_sq = segment_rows(w2[hyp_src] * hyp_coef[:, None], hyp_row, 4 * refs.n)
        numerators = segment_rows(w2[num_src] * num_coef[:, None], num_row, ref_norms.shape[0])
        denominators = np.sqrt(hyp_sq)[self.hyp_rows] * ref_norms
        val = np.divide(numerators, denominators, out=numerators, where=denominators != 0)
        val = val.reshape(-1, 4, w2.shape[1]) * self.penalty[:, None, None]
        per_instance = segment_rows(val.sum(axis=1) / 4.0, refs.owner, refs.n)
        return per_instance / refs.n_refs[:, None] * 10.0


def cider_values(
    refs: CiderReferences, systems: Sequence[CiderResampler], idx: np.ndarray
) -> list[np.ndarray]:
    """Each system's CIDEr-D of each resample: the mean of its instances' scores."""
    out = [np.empty(idx.shape[0]) for _ in systems]
    if refs.source is None or len(refs.source) != len(refs.column):
        refs.prepare()
        for system in systems:
            system.prepare()
    start = 0
    for block in blocks(idx):
        w2 = refs.weights(block)
        ref_norms = refs.norms(w2)
        for values, system in zip(out, systems, strict=True):
            scores = system.instance_scores(w2, ref_norms).T  # (rows, instances)
            values[start : start + block.shape[0]] = np.mean(
                np.take_along_axis(scores, block, axis=1), axis=1
            )
        start += block.shape[0]
    return out


# ---------------------------------------------------------------------------------------------
# A suite's metrics for several systems on one reference set
# ---------------------------------------------------------------------------------------------


@dataclass
class Resamplers:
    """Every metric of a suite for systems scored against one reference set.

    `values(idx)` gives, per system, {metric: (R,) values}; metrics that cannot be computed here
    (no Java) are left out and named in `missing`, with `unavailable` saying why."""

    metrics: tuple[str, ...]  # the suite's names, in its report order
    systems: list[list]  # per system: its resamplers (each gives some metrics)
    cider: tuple[CiderReferences, list[CiderResampler]] | None = None
    missing: tuple[str, ...] = ()
    unavailable: str | None = None
    notes: list[str] = field(default_factory=list)

    def values(self, idx: np.ndarray) -> list[dict[str, np.ndarray]]:
        out = [{} for _ in self.systems]
        for values, resamplers in zip(out, self.systems, strict=True):
            for resampler in resamplers:
                values |= resampler.values(idx)
        if self.cider is not None:
            for values, cider in zip(out, cider_values(*self.cider, idx), strict=True):
                values["CIDEr"] = cider
        return [{name: values[name] for name in self.metrics if name in values} for values in out]


@contextmanager
def resamplers(
    suite_name: str,
    references: Sequence[Sequence[str]],
    systems: Sequence[Sequence[str]],
    **options,
) -> Iterator[Resamplers]:
    """The resamplers of a suite ("e2e" or "webnlg") for systems (hypotheses in the order of
    `references`), with the options of that suite's `score` (bar `per_instance`). METEOR runs
    while the block lasts."""
    module = suite(suite_name)
    java = options.pop("java", "auto")
    java = find_java() if java == "auto" else java
    strict = options.pop("strict", False)
    cache_dir = options.pop("cache_dir", "auto")
    names = METRIC_NAMES[suite_name](options)
    if any(len(hyps) != len(references) for hyps in systems) or not references:
        raise InputError(
            f"{[len(h) for h in systems]} hypotheses for {len(references)} instances"
        )
    needs_java = [name for name in names if name in JAVA_NEEDED[suite_name]]
    reason = java_unavailable_reason(java) if needs_java else None
    if reason and strict:
        raise MissingJavaError(reason)
    meteor, cut_table = None, None
    if "METEOR" in names and not reason:  # loads its paraphrase table while Python works
        salt = "webnlg" if suite_name == "webnlg" else ""
        meteor, cut_table = start_meteor(references, java, cache_dir, salt=salt)
    with meteor or nullcontext():
        build = _e2e if suite_name == "e2e" else _webnlg
        made = build(references, systems, names, None if reason else java, meteor, options)
        if cut_table is not None:  # the first run with these references
            made.notes.insert(0, build_cut_table(cut_table, made.meteor_refs, java))
        missing = tuple(needs_java) if reason else ()
        yield Resamplers(
            tuple(n for n in module.METRICS if n in names and n not in missing),
            made.systems,
            made.cider,
            missing,
            reason,
            made.notes,
        )


@dataclass
class _Made:
    systems: list[list]
    cider: tuple[CiderReferences, list[CiderResampler]] | None
    notes: list[str]
    meteor_refs: list[str]  # the texts METEOR's paraphrase table is cut to


def _e2e(references, systems, names, java, meteor, options) -> _Made:
    """E2E: mteval BLEU/NIST on the texts; METEOR, ROUGE-L and CIDEr on PTB tokens."""
    from pycocoevalcap.rouge.rouge import Rouge

    if any(not refs for refs in references):
        raise InputError("every instance needs at least one reference")
    made = _Made([[MtevalResampler(references, hyps, options.get("pymteval", False))]
                  for hyps in systems], None, [], [])
    if java is None:
        return made
    sentences = [ref for refs in references for ref in refs]
    tokens = ptb_tokenize(sentences + [h for hyps in systems for h in hyps], java)
    ref_tokens, start = [], 0
    for refs in references:
        ref_tokens.append(tokens[start : start + len(refs)])
        start += len(refs)
    made.meteor_refs = tokens[:start]
    cider_refs, ciders = CiderReferences(ref_tokens), []
    rouge = Rouge()
    for k, resamplers_ in enumerate(made.systems):
        hyp_tokens = tokens[start + k * len(references) : start + (k + 1) * len(references)]
        if meteor is not None:
            resamplers_.append(MeteorResampler(meteor, meteor.statistics(ref_tokens, hyp_tokens)))
        scores = [rouge.calc_score([h], refs) for h, refs in zip(hyp_tokens, ref_tokens, strict=True)]
        resamplers_.append(MeanResampler("ROUGE_L", np.array(scores, dtype=np.float64), True))
        ciders.append(CiderResampler(cider_refs, hyp_tokens))
    made.cider = (cider_refs, ciders)
    return made


def _webnlg(references, systems, names, java, meteor, options) -> _Made:
    """WebNLG: BLEU and chrF++ on the texts; METEOR and TER on NLTK tokens."""
    made = _Made([[] for _ in systems], None, [], [])
    chrf_options = {k: options[k] for k in ("char_order", "word_order", "beta") if k in options}
    tokenizer = Tokenizer(punkt_sentences()) if "METEOR" in names or "TER" in names else None
    ref_tokens = [tokenizer(refs) for refs in references] if tokenizer else []
    made.meteor_refs = [ref for group in ref_tokens for ref in group if ref]
    for hyps, resamplers_ in zip(systems, made.systems, strict=True):
        if "BLEU" in names:
            resamplers_.append(MultiBleuResampler(references, hyps))
        if "chrF++" in names:
            resamplers_.append(ChrfResampler(references, hyps, **chrf_options))
        hyp_tokens = tokenizer(hyps) if tokenizer else []
        if "TER" in names:
            ter = np.array(corpus_ter(ref_tokens, hyp_tokens), dtype=np.float64)
            resamplers_.append(MeanResampler("TER", ter, False))
        if meteor is not None:
            stats = meteor.statistics(ref_tokens, hyp_tokens, files_convention=True)
            resamplers_.append(MeteorResampler(meteor, stats))
    if tokenizer is not None:
        made.notes.append(f"METEOR and TER on tokenised text: {tokenizer.name}")
    return made


METRIC_NAMES = {
    "e2e": lambda options: list(suite("e2e").METRICS),
    "webnlg": lambda options: suite("webnlg").metric_names(
        options.pop("metrics", suite("webnlg").METRICS)
    ),
}
JAVA_NEEDED = {"e2e": ("METEOR", "ROUGE_L", "CIDEr"), "webnlg": ("METEOR",)}
