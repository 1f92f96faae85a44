"""METEOR 1.5 in one long-lived JVM, and its paraphrase table cut to one set of references.

Both suites run METEOR 1.5 (the jar pycocoevalcap ships) with `-l en -norm`: the E2E scorer
through pycocoevalcap (`-stdio`), GenerationEval on files (`-r N`). One JVM in `-stdio` mode
serves both: a `SCORE ||| ref ||| ... ||| hyp` line gives an instance's statistics (METEOR aligns
the hypothesis with each reference and keeps the best), and `EVAL` turns the statistics of all
instances into per-instance scores and the corpus score. The corpus score is computed from the
summed statistics (matches, chunks, lengths), as the file mode computes it:
    P = m / |hyp|, R = m / |ref|, Fmean = P R / (alpha P + (1 - alpha) R),
    penalty = gamma (chunks / m) ** beta, METEOR = Fmean (1 - penalty)
with METEOR 1.5's English parameters (alpha 0.85, beta 0.2, gamma 0.6, delta 0.75) and matches
weighted over exact, stem, synonym and paraphrase modules.

`|||` is the protocol's field separator: METEOR splits a SCORE line at every run of three pipes,
wherever it stands, so a reference holding `|||` would become two references. pycocoevalcap
(the E2E scorer) sends references as they are and deletes `|||` from the hypothesis; that is
the official E2E behaviour, kept with `files_convention=False`. GenerationEval writes files, in
which `|||` is an ordinary word; with `files_convention=True` (the WebNLG suite) every run of
three or more pipes is sent as single pipes between spaces (`|||` -> `| | |`). METEOR's `-norm`
tokeniser splits every pipe off as a token of its own, so both spellings normalise to the same
words and score as the file-based run scores the original text.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from nlg.files import atomic_write
from nlg.metrics.java import QUICK_JVM, coco_dir, one_line

# The command pycocoevalcap runs (from its meteor/ directory, where METEOR finds data/).
METEOR_ARGS = ["-Xmx2G", "-jar", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm"]
_PIPES = re.compile(r"\|{3,}")  # what METEOR's stdio reader would split a line at


def protect_pipes(text: str) -> str:
    """`text` with every run of 3+ pipes spaced out (`a|||b` -> `a| | |b`): the stdio reader
    cannot split it there, and METEOR's -norm tokens are the same (each pipe is a token)."""
    return _PIPES.sub(lambda run: " ".join(run.group()), text)


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
        self.command = [java, *QUICK_JVM, *METEOR_ARGS, *table]
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
        self,
        references: Sequence[Sequence[str]],
        hypotheses: Sequence[str],
        files_convention: bool = False,
    ) -> tuple[float, list[float]]:
        """Corpus METEOR and per-instance METEOR of tokenised texts (`files_convention`: the
        texts as a file-based run reads them, `|||` included; see the module docstring)."""
        return self.evaluate(self.statistics(references, hypotheses, files_convention))

    def statistics(
        self,
        references: Sequence[Sequence[str]],
        hypotheses: Sequence[str],
        files_convention: bool = False,
    ) -> list[str]:
        """Each instance's METEOR statistics line (the answer to its SCORE line): what its
        score and every corpus score it is part of are computed from."""
        if files_convention:
            references = [[protect_pipes(ref) for ref in refs] for refs in references]
            hypotheses = [protect_pipes(hyp) for hyp in hypotheses]
        else:  # pycocoevalcap cleans the hypothesis (only) so
            hypotheses = [hyp.replace("|||", "").replace("  ", " ") for hyp in hypotheses]
        lines = [
            " ||| ".join(("SCORE", " ||| ".join(refs), hyp))
            for refs, hyp in zip(references, hypotheses, strict=True)
        ]
        # a writer thread, so that a full stdout pipe can never block both sides
        writer = threading.Thread(target=self._send, args=(lines,), daemon=True)
        writer.start()
        stats = [self.process.stdout.readline().decode("utf-8").strip() for _ in lines]
        writer.join()
        if not all(stats):
            self._readline()  # raises with METEOR's stderr
        return stats

    def evaluate(self, stats: Sequence[str]) -> tuple[float, list[float]]:
        """The corpus score of instances with these statistics lines (in this order, repeats
        counted), and each one's score: one EVAL line."""
        return self.evaluate_many([stats])[0]

    def evaluate_many(
        self, corpora: Sequence[Sequence[str]], per_instance: bool = True
    ) -> list[tuple[float, list[float]]]:
        """`evaluate` for several corpora (e.g. bootstrap resamples) in one exchange: an EVAL
        line each, written by a thread while the answers are read (per-instance scores are
        left empty unless `per_instance`)."""
        lines = [" ||| ".join(["EVAL", *stats]) for stats in corpora]
        writer = threading.Thread(target=self._send, args=(lines,), daemon=True)
        writer.start()
        results = []
        for stats in corpora:
            scores = [self._readline() for _ in stats]
            results.append((self._readline(), scores if per_instance else []))
        writer.join()
        return results

    def __enter__(self) -> Meteor:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        """Close it; kill it first when the block failed (it may be blocked on a pipe)."""
        if error_type is not None:
            self.process.kill()
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._stderr.close()


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


def cut_table_path(references: Sequence[Sequence[str]], cache_dir: Path, salt: str = "") -> Path:
    """Where the cut table for these references is cached (it need not exist yet); `salt` tells
    apart suites that tokenise the same references differently before METEOR sees them."""
    source = paraphrase_table().stat()
    key = hashlib.sha256(
        f"{PARAPHRASE_CACHE_VERSION} {source.st_size} {source.st_mtime_ns}".encode()
    )
    if salt:
        key.update(salt.encode() + b"\0")
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
    text = "".join(one_line(sentence) + "\n" for sentence in sentences).encode()
    utf8 = ["-Dfile.encoding=UTF-8", "-Dsun.stdout.encoding=UTF-8"]  # its main uses the defaults
    runs = [
        subprocess.Popen(
            [java, *QUICK_JVM, *utf8, "-cp", str(jar), _NORMALIZER, "en", keep_punctuation],
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


def build_cut_table(path: Path, ref_tokens: Sequence[str], java: str) -> str:
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


def start_meteor(
    references: Sequence[Sequence[str]], java: str, cache_dir: str | Path | None, salt: str = ""
) -> tuple[Meteor, Path | None]:
    """Start METEOR now, so that it loads its paraphrase table while the caller works: with the
    cached cut of the table for these references if there is one, else with the full table.
    Returns it and where to cache the cut table after this run (None: cached already, or
    `cache_dir` None: neither read nor write the cache; "auto": `default_cache_dir()`)."""
    cut_table = cached = None
    if cache_dir is not None and paraphrase_table().is_file():
        cache = default_cache_dir() if cache_dir == "auto" else Path(cache_dir)
        cut_table = cut_table_path(references, cache, salt)
        cached = cached_cut_table(cut_table)
    return Meteor(java, cached), (cut_table if cached is None else None)
