"""BLEU and NIST as mteval-v13a computes them (the E2E scorer), and BLEU as Moses'
multi-bleu-detok.perl computes it (GenerationEval, for WebNLG and DART).

Both tokenise with mteval-v13a's internal normalisation (`mteval_tokenize`: punctuation split
off, `.` and `,` kept inside numbers, SGML entities decoded); mteval lowercases (ASCII only, as
Perl's tr/[A-Z]/[a-z]/), multi-bleu-detok does not. c = hypothesis, r = reference; n-gram
counts are clipped per instance by the largest count in any one of its references.

mteval-v13a (`bleu_nist`, `corpus_bleu_nist`, `segment_bleu_nist`):
  BLEU = BP * exp(1/4 * sum_{n=1..4} log p_n),  p_n = sum matched n-grams / sum hypothesis n-grams,
         BP = exp(min(0, 1 - R/C)), C = sum |c|, R = sum over instances of the length of the
         reference closest in length to c (ties: the shorter). A p_n with no match counts as
         1/(2^k * hypothesis n-grams) for the k-th such n (mteval's smoothing).
  NIST = LP * sum_{n=1..5} (sum over matched n-grams of info(w1..wn)) / sum hypothesis n-grams,
         info(w1..wn) = log2(count(w1..wn-1) / count(w1..wn)) with counts over all references
         (the count of the empty prefix is the total number of reference words),
         LP = exp(-beta * log(min(1, C / L))^2), beta = -ln(0.5) / ln(1.5)^2,
         L = total reference words / mean number of references per instance.
`pymteval=True` gives the E2E scorer's `-p` variant (its metrics/pymteval.py) instead.

multi-bleu-detok.perl (`multi_bleu`), case-sensitive, no smoothing, on the 0-100 scale:
  BLEU = 100 * BP * exp(1/4 * sum_{n=1..4} log p_n), p_n and BP as above, except that a p_n of
         0 makes BLEU 0 and an empty reference line is a reference of length 0 (it can be the
         closest one). Perl prints it with two decimals, which is what GenerationEval reports.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain

# Perl's \s on Unicode strings; Python's \s also matches \x1c-\x1f, which Perl leaves in words.
_PERL_SPACES = re.compile(
    "[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
)
# mteval's s/([\{-\~\[-\` -\&\(-\+\:-\@\/])/ $1 /g: spaces around ASCII punctuation but ' - . ,
_PUNCTUATION = str.maketrans({c: f" {c} " for c in '{|}~[\\]^_` !"#$%&()*+:;<=>?@/'})
_PERIOD_COMMA_AFTER = re.compile(r"([^0-9])([\.,])")  # split . and , unless preceded by a digit
_PERIOD_COMMA_BEFORE = re.compile(r"([\.,])([^0-9])")  # ... or followed by one
_DIGIT_DASH = re.compile(r"([0-9])(-)")
# Perl's tr/[A-Z]/[a-z]/: only ASCII letters are lowercased
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))
NIST_N, BLEU_N = 5, 4


def mteval_tokenize(text: str, pymteval: bool = False, lowercase: bool = True) -> list[str]:
    """mteval-v13a's default normalisation and tokenisation, lowercased unless `lowercase` is
    False (multi-bleu-detok.perl's case-sensitive use of the same tokenisation).

    >>> mteval_tokenize("Prices: £20-25, rated 4.5/5 &amp; it's \\"OK\\".")
    ['prices', ':', '£20', '-', '25', ',', 'rated', '4.5', '/', '5', '&', "it's", '"', 'ok', '"', '.']

    With `pymteval`, as the official `-p` option does it: Python's Unicode lowercasing and
    whitespace, and an empty text is one empty token (which then counts as a word).
    """
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in _ENTITIES:
        text = text.replace(entity, char)
    text = f" {text} "
    if lowercase and not pymteval:
        text = text.translate(_ASCII_LOWER)
    text = text.translate(_PUNCTUATION)
    text = _PERIOD_COMMA_AFTER.sub(r"\1 \2 ", text)
    text = _PERIOD_COMMA_BEFORE.sub(r" \1 \2", text)
    text = _DIGIT_DASH.sub(r"\1 \2 ", text)
    if pymteval:
        return [token.lower() for token in re.sub(r"\s+", " ", text).strip().split(" ")]
    text = _PERL_SPACES.sub(" ", text).strip(" ")
    return text.split(" ") if text else []


def ngram_counts(tokens: Sequence[str], max_n: int = NIST_N) -> Counter:
    """Counts of all 1..max_n-grams (as tuples) of a token list."""
    return Counter(
        tuple(tokens[i : i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1)
    )


@dataclass
class SegmentStats:
    """What BLEU and NIST need from one instance (index k below is for (k+1)-grams)."""

    hyp_len: int
    closest_ref_len: int  # reference closest in length to the hypothesis (ties: the shorter)
    n_refs: int  # references counted for NIST's average reference length
    ref_words: int  # total words over this instance's references
    matches: list[int]  # clipped n-gram matches
    info: list[float]  # sum of info(n-gram) * clipped matches

    def hyp_ngrams(self, n: int, clamp: bool = True) -> int:
        """Hypothesis n-grams; pymteval does not clamp at 0 (a 2-word output has -1 4-grams)."""
        count = self.hyp_len - n + 1
        return max(count, 0) if clamp else count


def _information(
    ref_counters: Sequence[Sequence[Counter]], total_words: int, pymteval: bool
) -> Callable[[tuple], float]:
    """info(w1..wn) = log2(count(w1..wn-1) / count(w1..wn)), counts over every reference."""
    counts = Counter(
        chain.from_iterable(c.elements() for counters in ref_counters for c in counters)
    )
    cache: dict[tuple, float] = {}

    def info(ngram: tuple) -> float:
        if ngram not in cache:
            prefix = ngram[:-1]
            if pymteval:
                cache[ngram] = math.log(
                    (counts[prefix] if prefix else total_words) / counts[ngram], 2
                )
            else:
                # mteval tests the prefix string for truth, so the prefix "0" counts as no prefix.
                denominator = counts[prefix] if prefix and prefix != ("0",) else total_words
                cache[ngram] = -math.log(counts[ngram] / denominator) / math.log(2)
        return cache[ngram]

    return info


def _closest_length(lengths: Sequence[int], hyp_len: int, pymteval: bool) -> tuple[int, int]:
    """The reference length closest to the hypothesis' (ties: the shorter) and the number of
    references NIST counts, as mteval (or pymteval) finds them."""
    if pymteval:
        return min(lengths, key=lambda length: (abs(length - hyp_len), length)), len(lengths)
    # mteval starts from the first reference and skips empty ones after it
    closest = lengths[0]
    for length in lengths[1:]:
        if length and (abs(hyp_len - length), length) < (abs(hyp_len - closest), closest):
            closest = length
    return closest, sum(1 for length in lengths if length)


@dataclass
class InstanceNgrams:
    """An instance's BLEU/NIST statistics before any corpus is known: NIST's information weights
    come from the n-gram counts of all references of the corpus, so they are left out here
    (`stats.info` is zero) and computed per corpus from `ref_counts` (nlg.metrics.resample)."""

    stats: SegmentStats
    ref_counts: Counter  # n-gram counts summed over the instance's references
    clipped: dict[tuple, int]  # each hypothesis n-gram with a clipped match: its matched count


def instance_ngrams(
    references: Sequence[Sequence[str]], predictions: Sequence[str], pymteval: bool = False
) -> list[InstanceNgrams]:
    """`mteval_statistics` without the information weights, and what they are made from."""
    out = []
    for refs, prediction in zip(references, predictions, strict=True):
        ref_tokens = [mteval_tokenize(ref, pymteval) for ref in refs]
        counters = [ngram_counts(tokens) for tokens in ref_tokens]
        hyp = mteval_tokenize(prediction, pymteval)
        lengths = [len(tokens) for tokens in ref_tokens]
        closest, n_refs = _closest_length(lengths, len(hyp), pymteval)
        matches, clipped = [0] * NIST_N, {}
        for ngram, count in ngram_counts(hyp).items():
            kept = min(count, max(counter[ngram] for counter in counters))
            if kept:
                matches[len(ngram) - 1] += kept
                clipped[ngram] = kept
        stats = SegmentStats(len(hyp), closest, n_refs, sum(lengths), matches, [0.0] * NIST_N)
        out.append(InstanceNgrams(stats, sum(counters, Counter()), clipped))
    return out


def mteval_statistics(
    references: Sequence[Sequence[str]], predictions: Sequence[str], pymteval: bool = False
) -> list[SegmentStats]:
    """Per-instance BLEU/NIST statistics, n-grams counted once per sentence."""
    ref_tokens = [[mteval_tokenize(ref, pymteval) for ref in refs] for refs in references]
    ref_counters = [[ngram_counts(tokens) for tokens in refs] for refs in ref_tokens]
    total_words = sum(len(tokens) for refs in ref_tokens for tokens in refs)
    info = _information(ref_counters, total_words, pymteval)

    stats = []
    for refs, counters, prediction in zip(ref_tokens, ref_counters, predictions, strict=True):
        hyp = mteval_tokenize(prediction, pymteval)
        lengths = [len(tokens) for tokens in refs]
        closest, n_refs = _closest_length(lengths, len(hyp), pymteval)
        matches, information = [0] * NIST_N, [0.0] * NIST_N
        for ngram, count in ngram_counts(hyp).items():
            clipped = min(count, max(counter[ngram] for counter in counters))
            if clipped:
                matches[len(ngram) - 1] += clipped
                information[len(ngram) - 1] += info(ngram) * clipped
        stats.append(SegmentStats(len(hyp), closest, n_refs, sum(lengths), matches, information))
    return stats


def _total(stats: Sequence[SegmentStats]) -> SegmentStats:
    return SegmentStats(
        hyp_len=sum(s.hyp_len for s in stats),
        closest_ref_len=sum(s.closest_ref_len for s in stats),
        n_refs=sum(s.n_refs for s in stats),
        ref_words=sum(s.ref_words for s in stats),
        matches=[sum(s.matches[k] for s in stats) for k in range(NIST_N)],
        info=[sum(s.info[k] for s in stats) for k in range(NIST_N)],
    )


def _bleu(ref_len: int, matches: Sequence[int], hyp_ngrams: Sequence[int]) -> float:
    """mteval's smoothed BLEU from summed statistics (hyp_ngrams[k]: (k+1)-grams)."""
    brevity = math.exp(min(0, 1 - ref_len / hyp_ngrams[0])) if hyp_ngrams[0] > 0 else 0.0
    log_sum, smooth = 0.0, 1
    for n in range(BLEU_N):
        if hyp_ngrams[n] == 0:
            continue  # mteval adds log(1) when the hypothesis has no n-grams at all
        if matches[n] == 0:
            smooth *= 2
            log_sum += math.log(1 / (smooth * hyp_ngrams[n]))
        else:
            log_sum += math.log(matches[n] / hyp_ngrams[n])
    return math.exp(log_sum / BLEU_N) * brevity


def _nist_length_penalty(ratio: float) -> float:
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    beta = -math.log(0.5) / math.log(1.5) / math.log(1.5)  # LP = 0.5 at 2/3 of the reference length
    return math.exp(-beta * math.log(ratio) * math.log(ratio))


def _nist(
    mean_refs: float, ref_words: int, info: Sequence[float], hyp_ngrams: Sequence[int]
) -> float:
    """mteval's NIST from summed statistics; average reference length = ref_words / mean_refs."""
    if ref_words == 0:
        return 0.0  # references that tokenise to nothing; mteval dies dividing by zero here
    total = sum(info[n] / max(hyp_ngrams[n], 1) for n in range(NIST_N))
    return total * _nist_length_penalty(hyp_ngrams[0] / (ref_words / mean_refs))


def _bleu_python(stats: Sequence[SegmentStats]) -> float:
    """BLEU as pymteval computes it: tiny floors instead of mteval's smoothing, unclamped counts."""
    total = _total(stats)
    hyp_ngrams = [sum(s.hyp_ngrams(n + 1, clamp=False) for s in stats) for n in range(BLEU_N)]
    return bleu_python_totals(total.closest_ref_len, total.matches, hyp_ngrams)


def bleu_python_totals(ref_len: int, matches: Sequence[int], hyp_ngrams: Sequence[int]) -> float:
    """pymteval's BLEU from summed statistics (hyp_ngrams unclamped, [k]: (k+1)-grams)."""
    brevity = 1.0
    if hyp_ngrams[0] <= ref_len:
        brevity = math.exp(1.0 - ref_len / (float(hyp_ngrams[0]) if hyp_ngrams[0] else 1e-5))
    log_sum = sum(
        math.log(max(matches[n], 1e-15) / max(hyp_ngrams[n], 1e-9)) for n in range(BLEU_N)
    )
    return brevity * math.exp((1.0 / BLEU_N) * log_sum)


def _nist_python(stats: Sequence[SegmentStats]) -> float:
    """NIST as pymteval computes it: the length penalty compares the output length with the SUM
    over instances of each instance's mean reference length, where mteval divides the total
    reference words by the mean number of references; the two differ when instances have
    different numbers of references (as in E2E) and the output is short."""
    total = _total(stats)
    hyp_ngrams = [sum(s.hyp_ngrams(n + 1, clamp=False) for s in stats) for n in range(NIST_N)]
    mean_ref_len = sum(s.ref_words / float(s.n_refs) for s in stats)
    return nist_python_totals(total.info, hyp_ngrams, mean_ref_len)


def nist_python_totals(
    info: Sequence[float], hyp_ngrams: Sequence[int], mean_ref_len: float
) -> float:
    """pymteval's NIST from summed statistics; `mean_ref_len` is the sum over instances of each
    one's mean reference length."""
    # pymteval divides by zero where no output has n words; count 1 n-gram there instead
    score = sum(info[n] / (hyp_ngrams[n] or 1) for n in range(NIST_N))
    ratio = hyp_ngrams[0] / float(mean_ref_len)
    return score * _nist_length_penalty(ratio)


def bleu_nist(
    references: Sequence[Sequence[str]], predictions: Sequence[str], pymteval: bool = False
) -> tuple[float, float]:
    """Corpus BLEU (0..1) and NIST, mteval-v13a (or pymteval with `pymteval=True`)."""
    stats = mteval_statistics(references, predictions, pymteval)
    return (_bleu_python(stats), _nist_python(stats)) if pymteval else corpus_bleu_nist(stats)


def corpus_bleu_nist(stats: Sequence[SegmentStats]) -> tuple[float, float]:
    """mteval's corpus BLEU and NIST from per-instance statistics."""
    total = _total(stats)
    hyp_ngrams = [total.hyp_len] + [
        sum(s.hyp_ngrams(n) for s in stats) for n in range(2, NIST_N + 1)
    ]
    return bleu_nist_totals(total, hyp_ngrams, len(stats))


def bleu_nist_totals(
    total: SegmentStats, hyp_ngrams: Sequence[int], instances: int
) -> tuple[float, float]:
    """mteval's corpus BLEU and NIST from the statistics summed over `instances` instances
    (hyp_ngrams clamped at 0 per instance, [k]: (k+1)-grams)."""
    return (
        _bleu(total.closest_ref_len, total.matches, hyp_ngrams),
        _nist(total.n_refs / instances, total.ref_words, total.info, hyp_ngrams),
    )


def segment_bleu_nist(stats: SegmentStats) -> tuple[float, float]:
    """mteval's segment-level BLEU (smoothed) and NIST for one instance."""
    hyp_ngrams = [stats.hyp_ngrams(n) for n in range(1, NIST_N + 1)]
    return (
        _bleu(stats.closest_ref_len, stats.matches, hyp_ngrams),
        _nist(stats.n_refs, stats.ref_words, stats.info, hyp_ngrams),
    )


# ---------------------------------------------------------------------------------------------
# multi-bleu-detok.perl (GenerationEval's BLEU)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MultiBleu:
    """multi-bleu-detok.perl's report: `BLEU = 55.31, 80.1/61.2/47.9/38.0 (BP=1.000, ...)`."""

    bleu: float  # 0..100, unrounded (Perl prints it with %.2f)
    precisions: tuple[float, ...]  # p_1..p_4, 0..100
    brevity_penalty: float
    hyp_len: int
    ref_len: int

    def line(self) -> str:
        """The line the Perl script prints (what GenerationEval parses BLEU from)."""
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        ratio = self.hyp_len / self.ref_len if self.ref_len else 0.0
        return (
            f"BLEU = {self.bleu:.2f}, {precisions} (BP={self.brevity_penalty:.3f}, "
            f"ratio={ratio:.3f}, hyp_len={self.hyp_len}, ref_len={self.ref_len})"
        )


def multi_bleu(references: Sequence[Sequence[str]], hypotheses: Sequence[str]) -> MultiBleu:
    """Corpus BLEU as multi-bleu-detok.perl: mteval-v13a tokenisation without lowercasing, every
    reference line of an instance counted (an empty one is a reference of length 0), closest
    reference length (ties: the shorter), no smoothing. Where Perl would stop (no hypothesis
    words, no reference words) BLEU is 0."""
    matches, totals = [0] * BLEU_N, [0] * BLEU_N
    hyp_len = ref_len = 0
    for counts in multi_bleu_counts(references, hypotheses):
        hyp_len += counts[0]
        ref_len += counts[1]
        for n in range(BLEU_N):
            matches[n] += counts[2 + n]
            totals[n] += counts[2 + BLEU_N + n]
    return multi_bleu_totals(matches, totals, hyp_len, ref_len)


def multi_bleu_counts(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str]
) -> list[tuple[int, ...]]:
    """Each instance's multi-bleu-detok statistics: (hypothesis length, closest reference
    length, clipped matches of 1..4-grams, hypothesis 1..4-grams); corpus BLEU is a function of
    their sums (`multi_bleu_totals`)."""
    out = []
    for refs, hypothesis in zip(references, hypotheses, strict=True):
        hyp = mteval_tokenize(hypothesis, lowercase=False)
        ref_tokens = [mteval_tokenize(ref, lowercase=False) for ref in refs]
        closest = min((abs(len(hyp) - len(tokens)), len(tokens)) for tokens in ref_tokens)[1]
        ref_counts = [ngram_counts(tokens, BLEU_N) for tokens in ref_tokens]
        matches, totals = [0] * BLEU_N, [0] * BLEU_N
        for ngram, count in ngram_counts(hyp, BLEU_N).items():
            totals[len(ngram) - 1] += count
            matches[len(ngram) - 1] += min(count, max(c[ngram] for c in ref_counts))
        out.append((len(hyp), closest, *matches, *totals))
    return out


def multi_bleu_totals(
    matches: Sequence[int], totals: Sequence[int], hyp_len: int, ref_len: int
) -> MultiBleu:
    """multi-bleu-detok's report from corpus sums of matches and hypothesis n-grams (1..4),
    hypothesis and closest-reference lengths."""
    precisions = [m / t if t else 0.0 for m, t in zip(matches, totals, strict=True)]
    if hyp_len == 0 or ref_len == 0:
        return MultiBleu(0.0, tuple(100 * p for p in precisions), 0.0, hyp_len, ref_len)
    brevity = math.exp(1 - ref_len / hyp_len) if hyp_len < ref_len else 1.0
    bleu = (
        brevity * math.exp(sum(math.log(p) for p in precisions) / BLEU_N)
        if all(precisions)
        else 0.0
    )
    return MultiBleu(100 * bleu, tuple(100 * p for p in precisions), brevity, hyp_len, ref_len)
