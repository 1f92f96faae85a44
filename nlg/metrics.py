"""E2E NLG Challenge scores: BLEU, NIST, METEOR, ROUGE-L and CIDEr, as the official scorer gives them.

The official scorer (github.com/tuetschek/e2e-metrics, `measure_scores.py`) computes
  * BLEU and NIST with mteval-v13a (its edited `mteval/mteval-v13a-sig.pl`, Perl, default
    options: lowercased, "closest" reference length, smoothed BLEU) on SGML files it writes;
  * METEOR 1.5, ROUGE-L and CIDEr with the MS-COCO caption evaluation (pycocoevalcap) on text
    run through the Stanford PTB tokenizer (`-preserveLines -lowerCase`, punctuation tokens
    dropped).
This module gives the same numbers (to 1e-14 on the E2E test set, per instance too, against a
re-creation of the official script) in less time:
  * BLEU and NIST are re-implemented in Python (the Perl script alone takes several seconds):
    every sentence's n-grams are counted once and both metrics come from the same statistics;
  * references and predictions go through ONE PTB tokenizer run (the official starts Java twice);
  * the METEOR JVM is started first and works while everything else runs; it is the floor of
    the wall time, and most of its time (~5 s of CPU) goes to loading its 62 MB paraphrase table.
    So the part of that table that the references can ever match (~1/5) is cached per reference
    set (default ~/.cache/nlg; built during the first run, ~5 s of CPU; `--no_cache` to skip),
    which gives identical METEOR scores (see "METEOR's paraphrase table" below);
  * ROUGE-L and CIDEr are pycocoevalcap's own code.
An empty prediction is scored as an empty output (its per-instance scores are 0), not an error.
`-p/--python/--pymteval` instead computes BLEU and NIST like the official script's `-p` option
(its `metrics/pymteval.py`), which the LoRA paper's E2E script uses; it differs from mteval
mainly in NIST's length penalty (see `_nist_python`).

Files (UTF-8; every line is stripped of surrounding whitespace, as the official script does)
  REF   per instance, its references one per line, a blank line between instances (a trailing
        blank line is optional). A file with no blank line at all holds one reference per line
        and instance (the official script's single-reference format).
  PRED  one system output per line; an empty line is an empty output.

mteval-v13a, as computed here (c = hypothesis, r = reference, n-gram counts clipped per
instance by the largest count in any one of its references):
  BLEU = BP * exp(1/4 * sum_{n=1..4} log p_n),  p_n = sum matched n-grams / sum hypothesis n-grams,
         BP = exp(min(0, 1 - R/C)), C = sum |c|, R = sum over instances of the length of the
         reference closest in length to c (ties: the shorter). A p_n with no match counts as
         1/(2^k * hypothesis n-grams) for the k-th such n (mteval's smoothing).
  NIST = LP * sum_{n=1..5} (sum over matched n-grams of info(w1..wn)) / sum hypothesis n-grams,
         info(w1..wn) = log2(count(w1..wn-1) / count(w1..wn)) with counts over all references
         (the count of the empty prefix is the total number of reference words),
         LP = exp(-beta * log(min(1, C / L))^2), beta = -ln(0.5) / ln(1.5)^2,
         L = total reference words / mean number of references per instance.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from nlg.cli import run_main, spellings
from nlg.files import InputError, atomic_write, read_lines, write_jsonl

METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
JAVA_METRICS = ("METEOR", "ROUGE_L", "CIDEr")

JAVA_HELP = (
    "METEOR 1.5 and the Stanford PTB tokenizer (ROUGE_L and CIDEr are computed on its output) "
    "need a Java runtime, and `java` is not on PATH. Install one, e.g. "
    "`apt-get install default-jre-headless` (Debian/Ubuntu), `brew install openjdk` (macOS) or "
    "`conda install -c conda-forge openjdk`."
)


class MissingJavaError(RuntimeError):
    """METEOR/ROUGE_L/CIDEr were required (--strict) but cannot be computed here."""


# ---------------------------------------------------------------------------------------------
# Reading the files
# ---------------------------------------------------------------------------------------------


def read_references(path: str | Path) -> list[list[str]]:
    """References per instance from a REF file (format in the module docstring)."""
    lines = [line.strip() for line in read_lines(path)]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise InputError(f"{path}: no references (the file is empty)")
    if "" not in lines:  # the official script's single-reference format
        return [[line] for line in lines]
    groups: list[list[str]] = [[]]
    for number, line in enumerate(lines, start=1):
        if line:
            groups[-1].append(line)
        elif not groups[-1]:
            where = "starts with a blank line" if number == 1 else "has two blank lines in a row"
            raise InputError(
                f"{path}:{number}: the file {where}: an instance without references "
                "(instances are separated by exactly one blank line)"
            )
        else:
            groups.append([])
    return groups


def read_predictions(path: str | Path) -> list[str]:
    """One output per line; an empty line is an empty output."""
    return [line.strip() for line in read_lines(path)]


def check_counts(
    references: Sequence, predictions: Sequence, ref_name: str = "REF", pred_name: str = "PRED"
) -> None:
    """Refuse to score unless there is exactly one prediction per reference group."""
    if len(references) == len(predictions):
        return
    hint = ""
    if (
        predictions
        and len(predictions) > len(references)
        and not any(predictions[len(references) :])
    ):
        hint = f" ({pred_name} ends with {len(predictions) - len(references)} extra empty line(s))"
    raise InputError(
        f"{pred_name} has {len(predictions)} predictions but {ref_name} has {len(references)} "
        f"instances (groups of references separated by blank lines); they must match one to one{hint}"
    )


# ---------------------------------------------------------------------------------------------
# BLEU and NIST: mteval-v13a
# ---------------------------------------------------------------------------------------------

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


def mteval_tokenize(text: str, pymteval: bool = False) -> list[str]:
    """mteval-v13a's default normalisation and tokenisation, lowercased.

    >>> mteval_tokenize("Prices: £20-25, rated 4.5/5 &amp; it's \\"OK\\".")
    ['prices', ':', '£20', '-', '25', ',', 'rated', '4.5', '/', '5', '&', "it's", '"', 'ok', '"', '.']

    With `pymteval`, as the official `-p` option does it: Python's Unicode lowercasing and
    whitespace, and an empty text is one empty token (which then counts as a word).
    """
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in _ENTITIES:
        text = text.replace(entity, char)
    text = f" {text} "
    if not pymteval:
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
        if pymteval:
            closest = min(lengths, key=lambda length: (abs(length - len(hyp)), length))
            n_refs = len(refs)
        else:
            # mteval starts from the first reference and skips empty ones after it
            closest = lengths[0]
            for length in lengths[1:]:
                if length and (abs(len(hyp) - length), length) < (abs(len(hyp) - closest), closest):
                    closest = length
            n_refs = sum(1 for length in lengths if length)
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
    brevity = 1.0
    if hyp_ngrams[0] <= total.closest_ref_len:
        brevity = math.exp(
            1.0 - total.closest_ref_len / (float(hyp_ngrams[0]) if hyp_ngrams[0] else 1e-5)
        )
    log_sum = sum(
        math.log(max(total.matches[n], 1e-15) / max(hyp_ngrams[n], 1e-9)) for n in range(BLEU_N)
    )
    return brevity * math.exp((1.0 / BLEU_N) * log_sum)


def _nist_python(stats: Sequence[SegmentStats]) -> float:
    """NIST as pymteval computes it: the length penalty compares the output length with the SUM
    over instances of each instance's mean reference length, where mteval divides the total
    reference words by the mean number of references; the two differ when instances have
    different numbers of references (as in E2E) and the output is short."""
    total = _total(stats)
    hyp_ngrams = [sum(s.hyp_ngrams(n + 1, clamp=False) for s in stats) for n in range(NIST_N)]
    # pymteval divides by zero where no output has n words; count 1 n-gram there instead
    score = sum(total.info[n] / (hyp_ngrams[n] or 1) for n in range(NIST_N))
    mean_ref_len = sum(s.ref_words / float(s.n_refs) for s in stats)
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
    return (
        _bleu(total.closest_ref_len, total.matches, hyp_ngrams),
        _nist(total.n_refs / len(stats), total.ref_words, total.info, hyp_ngrams),
    )


def segment_bleu_nist(stats: SegmentStats) -> tuple[float, float]:
    """mteval's segment-level BLEU (smoothed) and NIST for one instance."""
    hyp_ngrams = [stats.hyp_ngrams(n) for n in range(1, NIST_N + 1)]
    return (
        _bleu(stats.closest_ref_len, stats.matches, hyp_ngrams),
        _nist(stats.n_refs, stats.ref_words, stats.info, hyp_ngrams),
    )


# ---------------------------------------------------------------------------------------------
# METEOR, ROUGE-L, CIDEr: the MS-COCO caption evaluation (Java for METEOR and the tokenizer)
# ---------------------------------------------------------------------------------------------

# Characters the PTB tokenizer treats as line breaks (the official reader splits lines there too);
# as spaces they tokenise the same, and every input line stays one output line.
_LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# JVM options that only save CPU (no optimising JIT, one GC thread: METEOR ~15% less CPU time);
# since Java 17 all floating point is strict, so the numbers cannot change.
_QUICK_JVM = ["-XX:+IgnoreUnrecognizedVMOptions", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
# The commands pycocoevalcap runs (Meteor from its meteor/ directory, where it finds data/).
PTB_ARGS = ["edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
METEOR_ARGS = ["-Xmx2G", "-jar", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm"]


def find_java() -> str | None:
    return shutil.which("java")


def coco_dir() -> Path:
    """The installed pycocoevalcap package (it has no __init__.py, so use its __path__)."""
    import pycocoevalcap

    return Path(next(iter(pycocoevalcap.__path__)))


def ptb_tokenize(sentences: Sequence[str], java: str) -> list[str]:
    """pycocoevalcap's PTBTokenizer for many sentences in one Java run: Stanford PTBTokenizer
    `-preserveLines -lowerCase`, then its punctuation tokens dropped."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR

    jar = coco_dir() / "tokenizer" / STANFORD_CORENLP_3_4_1_JAR
    text = "".join(_LINE_BREAKS.sub(" ", sentence) + "\n" for sentence in sentences)
    command = [java, *_QUICK_JVM, "-cp", str(jar), *PTB_ARGS]
    done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"the PTB tokenizer failed ({' '.join(command)}):\n{err}")
    lines = done.stdout.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(sentences):
        raise RuntimeError(
            f"the PTB tokenizer returned {len(lines)} lines for {len(sentences)} sentences"
        )
    punctuation = frozenset(PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in lines]


class Meteor:
    """METEOR 1.5 in a long-lived JVM, run as pycocoevalcap runs it (`-stdio -l en -norm`).

    Start it early: loading the paraphrase table takes seconds, during which other metrics run.
    Protocol: one `SCORE ||| ref ||| ... ||| hyp` line per instance gives a line of statistics;
    `EVAL ||| stats ||| ...` gives each instance's score and then the corpus score (computed from
    the summed statistics, not an average of sentence scores).
    """

    def __init__(self, java: str, paraphrase_table: Path | None = None):
        meteor_dir = coco_dir() / "meteor"
        self._stderr = tempfile.TemporaryFile()
        table = ["-a", str(paraphrase_table)] if paraphrase_table else []  # default: its own
        self.command = [java, *_QUICK_JVM, *METEOR_ARGS, *table]
        self.process = subprocess.Popen(
            self.command,
            cwd=meteor_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )

    def _readline(self) -> float:
        line = self.process.stdout.readline()
        try:
            return float(line.strip())
        except ValueError:
            self.process.kill()
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")[-2000:]
            raise RuntimeError(
                f"METEOR ({' '.join(self.command)}) answered {line!r}:\n{err}"
            ) from None

    def _send(self, lines: Sequence[str]) -> None:
        try:
            for line in lines:
                self.process.stdin.write(line.encode("utf-8") + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the reader sees the dead process and reports its stderr

    def score(
        self, references: Sequence[Sequence[str]], hypotheses: Sequence[str]
    ) -> tuple[float, list[float]]:
        """Corpus METEOR and per-instance METEOR of tokenised texts."""
        # pycocoevalcap cleans the hypothesis (only) the same way
        lines = [
            " ||| ".join(("SCORE", " ||| ".join(refs), hyp.replace("|||", "").replace("  ", " ")))
            for refs, hyp in zip(references, hypotheses, strict=True)
        ]
        # a writer thread, so that a full stdout pipe can never block both sides
        writer = threading.Thread(target=self._send, args=(lines,), daemon=True)
        writer.start()
        stats = [self.process.stdout.readline().decode("utf-8").strip() for _ in lines]
        writer.join()
        if not all(stats):
            self._readline()  # raises with METEOR's stderr
        self._send([" ||| ".join(["EVAL", *stats])])
        per_instance = [self._readline() for _ in lines]
        return self._readline(), per_instance

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._stderr.close()


def rouge_cider(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str]
) -> dict[str, tuple[float, list[float]]]:
    """pycocoevalcap's ROUGE-L (beta 1.2, mean of sentence scores) and CIDEr (its CIDEr-D:
    sigma 6, clipped, x10, idf over this corpus' references) on tokenised texts."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [hyp] for i, hyp in enumerate(hypotheses)}
    out = {}
    for name, scorer in (("ROUGE_L", Rouge()), ("CIDEr", Cider())):
        corpus, per_instance = scorer.compute_score(gts, res)
        out[name] = (float(corpus), [float(x) for x in per_instance])
    return out


# ---------------------------------------------------------------------------------------------
# METEOR's paraphrase table, cut down to one set of references (cached)
# ---------------------------------------------------------------------------------------------
# Loading its 62 MB paraphrase table (5.3M entries) is most of METEOR's time. METEOR's matcher
# (edu.cmu.meteor.aligner.ParaphraseMatcher) looks for each entry's phrase in one sentence and
# its paraphrase in the other, both ways round, comparing whole words; the entry's probability
# is unused. An entry can therefore only ever match if its phrase or its paraphrase lies wholly
# within some reference (as METEOR normalises it). Keeping those entries (a superset: the
# vocabulary below over-approximates METEOR's words), in file order, leaves every alignment
# unchanged. On the E2E test set the METEOR statistics of every instance are identical with the
# cut and the full table, for template outputs (562 words matched by paraphrase) as for
# references with words swapped for paraphrases (2508). The cut depends only on the references,
# so it is built once per reference set (~5 s of CPU, while the first run's METEOR works) and
# cached; later runs load ~1M entries instead of 5.3M.

PARAPHRASE_CACHE_VERSION = 1
_NORMALIZER = "edu.cmu.meteor.util.Normalizer"  # METEOR's own -norm tokeniser, as a program


def default_cache_dir() -> Path:
    """$NLG_CACHE_DIR, else $XDG_CACHE_HOME/nlg, else ~/.cache/nlg."""
    if os.environ.get("NLG_CACHE_DIR"):
        return Path(os.environ["NLG_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nlg"


def paraphrase_table() -> Path:
    return coco_dir() / "meteor" / "data" / "paraphrase-en.gz"


def cut_table_path(references: Sequence[Sequence[str]], cache_dir: Path) -> Path:
    """Where the cut table for these references is cached (it need not exist yet)."""
    source = paraphrase_table().stat()
    key = hashlib.sha256(
        f"{PARAPHRASE_CACHE_VERSION} {source.st_size} {source.st_mtime_ns}".encode()
    )
    for refs in references:
        key.update("\n".join(refs).encode() + b"\n\n")
    return Path(cache_dir) / f"meteor-paraphrase-en-{key.hexdigest()[:24]}.gz"


def cached_cut_table(path: Path) -> Path | None:
    """The cached cut table if it is there and intact (its sha256 is kept beside it)."""
    try:
        digest = path.with_suffix(".sha256").read_text().strip()
        data = path.read_bytes()
    except OSError:
        return None
    return path if hashlib.sha256(data).hexdigest() == digest else None


def meteor_vocabulary(sentences: Sequence[str], java: str) -> set[bytes]:
    """Every word METEOR can see in these (tokenised) sentences: the words of its normaliser's
    output, with and without punctuation, as is and lowercased, plus the words as given."""
    jar = coco_dir() / "meteor" / "meteor-1.5.jar"
    text = "".join(_LINE_BREAKS.sub(" ", sentence) + "\n" for sentence in sentences).encode()
    utf8 = ["-Dfile.encoding=UTF-8", "-Dsun.stdout.encoding=UTF-8"]  # its main uses the defaults
    runs = [
        subprocess.Popen(
            [java, *_QUICK_JVM, *utf8, "-cp", str(jar), _NORMALIZER, "en", keep_punctuation],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for keep_punctuation in ("true", "false")
    ]
    words = set(text.split())
    for run in runs:
        out, err = run.communicate(text)
        if run.returncode != 0:
            raise RuntimeError(
                f"METEOR's normaliser failed:\n{err.decode(errors='replace')[-2000:]}"
            )
        words |= set(out.split()) | set(out.decode("utf-8").lower().encode().split())
    return words


def _table_entries(source: Path, block_size: int = 1 << 22) -> Iterator[tuple[bytes, ...]]:
    """(probability, phrase, paraphrase) of each entry of a gzipped METEOR paraphrase table
    (three lines per entry), read in blocks: the table is 272 MB uncompressed."""
    with gzip.open(source, "rb") as handle:
        tail = b""
        while block := handle.read(block_size):
            lines = (tail + block).split(b"\n")
            whole = (len(lines) - 1) // 3 * 3  # the last line may be cut off mid-way
            yield from zip(lines[0:whole:3], lines[1:whole:3], lines[2:whole:3], strict=True)
            tail = b"\n".join(lines[whole:])
        lines = tail.split(b"\n")
        yield from zip(lines[0::3], lines[1::3], lines[2::3], strict=False)


def cut_paraphrase_table(source: Path, target: Path, vocabulary: set[bytes]) -> tuple[int, int]:
    """Write the entries of `source` whose phrase or paraphrase has only `vocabulary` words to
    `target` (gzip, same format, same order) with its sha256 beside it. Returns the number of
    entries kept and read."""
    kept = total = 0
    last_phrase, phrase_known = None, False  # the table is sorted by phrase
    with (
        atomic_write(target, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as out,
    ):
        for entry in _table_entries(source):
            total += 1
            if entry[1] != last_phrase:
                last_phrase, phrase_known = entry[1], vocabulary.issuperset(entry[1].split())
            if phrase_known or vocabulary.issuperset(entry[2].split()):
                out.write(b"\n".join(entry) + b"\n")
                kept += 1
    with atomic_write(target.with_suffix(".sha256")) as handle:
        handle.write(hashlib.sha256(target.read_bytes()).hexdigest() + "\n")
    return kept, total


# ---------------------------------------------------------------------------------------------
# Putting it together
# ---------------------------------------------------------------------------------------------


@dataclass
class ScoreReport:
    """Corpus scores (None where unavailable), optional per-instance scores, and why not."""

    scores: dict[str, float | None]
    per_instance: list[dict[str, float | None]] = field(default_factory=list)
    unavailable: str | None = None  # why METEOR/ROUGE_L/CIDEr are missing
    notes: list[str] = field(default_factory=list)  # e.g. that a cache was built


def java_unavailable_reason(java: str | None) -> str | None:
    if java is None:
        return JAVA_HELP
    try:
        coco_dir()
    except ImportError:
        return "METEOR, ROUGE_L and CIDEr need pycocoevalcap: `pip install pycocoevalcap`."
    return None


def score(
    references: Sequence[Sequence[str]],
    predictions: Sequence[str],
    *,
    pymteval: bool = False,
    strict: bool = False,
    per_instance: bool = False,
    java: str | None = "auto",
    cache_dir: str | Path | None = "auto",
) -> ScoreReport:
    """All five E2E metrics for predictions against their references (one group each).

    Without Java (`java=None`, or none on PATH with the default "auto"), METEOR, ROUGE_L and
    CIDEr are None and `unavailable` says why; with `strict` that raises MissingJavaError.
    `cache_dir` holds METEOR's paraphrase table cut to these references ("auto":
    `default_cache_dir()`; None: neither read nor write it, load the full table).
    """
    check_counts(references, predictions)
    if not references:
        raise InputError("nothing to score: no instances")
    if any(not refs for refs in references):
        raise InputError("every instance needs at least one reference")
    java = find_java() if java == "auto" else java
    reason = java_unavailable_reason(java)
    if reason and strict:
        raise MissingJavaError(reason)

    cut_table = cached = None
    if not reason and cache_dir is not None and paraphrase_table().is_file():
        cache = default_cache_dir() if cache_dir == "auto" else Path(cache_dir)
        cut_table = cut_table_path(references, cache)
        cached = cached_cut_table(cut_table)
    meteor = None if reason else Meteor(java, cached)  # starts loading its paraphrase table now
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            tokenized = None  # Java tokenises while Python counts n-grams
            if not reason:
                sentences = [ref for refs in references for ref in refs] + list(predictions)
                tokenized = pool.submit(ptb_tokenize, sentences, java)
            segments = (
                mteval_statistics(references, predictions) if per_instance or not pymteval else []
            )
            bleu, nist = (
                bleu_nist(references, predictions, True) if pymteval else corpus_bleu_nist(segments)
            )
            coco, notes = {}, []
            if tokenized is not None:
                tokens = tokenized.result()
                ref_tokens, start = [], 0
                for refs in references:
                    ref_tokens.append(tokens[start : start + len(refs)])
                    start += len(refs)
                hyp_tokens = tokens[start:]
                meteor_job = pool.submit(meteor.score, ref_tokens, hyp_tokens)  # JVM works...
                coco = rouge_cider(ref_tokens, hyp_tokens)  # ... while these run here
                if cut_table is not None and cached is None:  # first run with these references
                    notes.append(_build_cut_table(cut_table, tokens[:start], java))
                coco["METEOR"] = meteor_job.result()
    except BaseException:
        if meteor is not None:
            meteor.process.kill()
        raise
    finally:
        if meteor is not None:
            meteor.close()

    scores = {"BLEU": bleu, "NIST": nist} | {
        name: coco[name][0] if coco else None for name in JAVA_METRICS
    }
    rows = []
    for i, stats in enumerate(segments if per_instance else []):
        seg_bleu, seg_nist = segment_bleu_nist(stats)
        row = {"line": i + 1, "prediction": predictions[i], "references": list(references[i])}
        row |= {"BLEU": seg_bleu, "NIST": seg_nist}
        row |= {name: coco[name][1][i] if coco else None for name in JAVA_METRICS}
        rows.append(row)
    return ScoreReport(scores, rows, reason, notes)


def _build_cut_table(path: Path, ref_tokens: Sequence[str], java: str) -> str:
    """Cache METEOR's paraphrase table cut to these references; say what happened."""
    try:
        kept, total = cut_paraphrase_table(
            paraphrase_table(), path, meteor_vocabulary(ref_tokens, java)
        )
    except (OSError, RuntimeError) as error:
        return f"could not cache METEOR's paraphrase table cut to these references: {error}"
    return (
        f"cached METEOR's paraphrase table cut to these references ({kept} of {total} entries) "
        f"in {path}; runs with these references load it instead (~4 s less)"
    )


def score_files(
    ref_path: str | Path,
    pred_path: str | Path,
    *,
    pymteval: bool = False,
    strict: bool = False,
    java: str | None = "auto",
    cache_dir: str | Path | None = "auto",
) -> dict[str, float | None]:
    """Corpus scores of a PRED file against a REF file, in METRICS order (None for the metrics
    that need Java when there is none; `strict` raises MissingJavaError instead). Options as
    for `score`."""
    options = dict(pymteval=pymteval, strict=strict, java=java, cache_dir=cache_dir)
    return score_report(ref_path, pred_path, **options).scores


def score_report(ref_path: str | Path, pred_path: str | Path, **options) -> ScoreReport:
    """Read both files, check they pair up, and `score` them (options as for `score`)."""
    references, predictions = read_references(ref_path), read_predictions(pred_path)
    check_counts(references, predictions, str(ref_path), str(pred_path))
    return score(references, predictions, **options)


def format_scores(scores: Mapping[str, float | None]) -> str:
    """The official script's report: `SCORES:`, a rule, then `NAME: value` (4 decimals)."""
    lines = ["SCORES:", "=============="]
    lines += [
        f"{name}: {'n/a' if scores.get(name) is None else f'{scores[name]:.4f}'}"
        for name in METRICS
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlg score",
        description="Score system outputs like the E2E NLG Challenge's measure_scores.py: "
        "BLEU and NIST (mteval-v13a), METEOR 1.5, ROUGE-L and CIDEr (MS-COCO caption evaluation).",
    )
    parser.add_argument(
        "ref", help="references: per instance one per line, a blank line between instances"
    )
    parser.add_argument("pred", help="predictions: one per line, in the same order")
    parser.add_argument(
        "--json", metavar="FILE", help="also write the corpus scores as JSON (null = unavailable)"
    )
    parser.add_argument(
        *spellings("per_instance"),
        dest="per_instance",
        metavar="FILE",
        help="also write per-instance scores, prediction and references as JSON lines",
    )
    parser.add_argument(
        *spellings("no_cache"),
        dest="no_cache",
        action="store_true",
        help="neither use nor build the cached cut of METEOR's paraphrase table (same scores, "
        "~5 s slower; the cache lives in $NLG_CACHE_DIR, default ~/.cache/nlg)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 1) unless all five metrics can be computed",
    )
    parser.add_argument(
        "-p",
        "--python",
        "--pymteval",
        dest="pymteval",
        action="store_true",
        help="BLEU/NIST like the official script's -p (its Python pymteval), as the LoRA paper's script runs it",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = score_report(
            args.ref,
            args.pred,
            pymteval=args.pymteval,
            strict=args.strict,
            per_instance=bool(args.per_instance),
            cache_dir=None if args.no_cache else "auto",
        )
    except RuntimeError as error:  # MissingJavaError, or Java failing under us
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_scores(report.scores))
    print()
    if report.unavailable:
        print(
            f"warning: METEOR, ROUGE_L and CIDEr not computed: {report.unavailable} "
            "(--strict makes this an error)",
            file=sys.stderr,
        )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        with atomic_write(args.json) as handle:
            handle.write(json.dumps(report.scores, indent=2) + "\n")
    if args.per_instance:
        write_jsonl(args.per_instance, report.per_instance)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
