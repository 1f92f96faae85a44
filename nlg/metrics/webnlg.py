"""The WebNLG suite: BLEU, METEOR, TER and chrF++ as the WebNLG challenge's GenerationEval
(github.com/WebNLG/GenerationEval, `eval.py -R refs/reference -H hypothesis -nr 6 -m ...`)
computes them; the LoRA paper scores WebNLG and DART with it.

    BLEU    multi-bleu-detok.perl on the files as they are (`nlg.metrics.mteval.multi_bleu`),
            0..100; GenerationEval reports Perl's two decimals
    METEOR  METEOR 1.5 `-l en -norm`, every instance against all N references (empty ones too),
            on NLTK-tokenised text (`nlg.metrics.meteor`), 0..1
    TER     pyter's TER on NLTK-tokenised words, per instance the minimum over the references
            (an empty one counts 1), averaged over instances (`nlg.metrics.ter`), 0..1
    chrF++  its metrics/chrF.py: character 6-grams, word 2-grams, beta 2, over the non-empty
            references (`nlg.metrics.chrf`), 0..1
The tokenisation is GenerationEval's `' '.join(nltk.word_tokenize(line))` (`nlg.metrics.treebank`).
BERTScore and BLEURT, which GenerationEval can also compute, are not offered: they need large
neural models; asking for them is an error.

Files (UTF-8): reference files `PREFIX0 ... PREFIX{N-1}` (or `reference0 ...` in a folder), and a
hypothesis file; each holds one line per instance, all with the same number of lines, and an
empty reference line means the instance has no reference there (the LoRA paper's decoder pads
instances with fewer than N references so). With N = 1 the reference file may be given itself.

A file's final newline ends its last line. GenerationEval splits each file on "\\n" instead, so
for a file that ends with a newline (as every file the paper's decoder writes) it reads one more,
empty, instance: its METEOR then fails ("test and reference not same length", reported as -1) and
its TER becomes (sum + 1) / (N + 1); BLEU (Perl reads lines) and chrF++ (all-empty references
are dropped) are unaffected. Here such a file has N instances: METEOR, TER and chrF++ equal
GenerationEval's on the same files without their final newline, BLEU equals its BLEU on the files
as written (without the final newline Perl drops the last character of each file's last line,
taking it for the newline).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

from nlg.files import InputError, read_lines
from nlg.metrics import ScoreReport
from nlg.metrics.chrf import chrf
from nlg.metrics.java import MissingJavaError, find_java, java_unavailable_reason
from nlg.metrics.meteor import build_cut_table, start_meteor
from nlg.metrics.mteval import multi_bleu
from nlg.metrics.ter import corpus_ter
from nlg.metrics.treebank import Tokenizer, punkt_sentences

METRICS = ("BLEU", "METEOR", "chrF++", "TER")  # GenerationEval's column order
PERCENT = frozenset({"BLEU"})  # reported on 0..100 (multi-bleu-detok); the others on 0..1
OPTION_NAMES = {"bleu": "BLEU", "meteor": "METEOR", "chrf++": "chrF++", "ter": "TER"}
NOT_OFFERED = {"bert": "BERTScore", "bleurt": "BLEURT"}
READ_OPTIONS = ("num_refs",)


# ---------------------------------------------------------------------------------------------
# Reading the files
# ---------------------------------------------------------------------------------------------


def reference_files(ref: str | Path, num_refs: int | None = None) -> list[Path]:
    """The reference files of `ref`: a folder holding reference0.., a prefix PREFIX with PREFIX0..,
    or (one reference) the file itself.

    The numbered files present must be PREFIX0 .. PREFIX{K-1} without a gap: a missing number
    below the highest present is an error naming the folder, the missing name and what is
    there (reading on from PREFIX0 would silently drop every file after the gap). `num_refs`
    None takes all K; `num_refs` N takes the first N, and N larger than K is an error naming
    the files missing below N, as GenerationEval fails to open them."""
    if num_refs is not None and num_refs < 1:
        raise InputError(f"-nr must be at least 1, not {num_refs}")
    ref = Path(ref)
    prefix = ref / "reference" if ref.is_dir() else ref
    if num_refs == 1 and ref.is_file():
        return [ref]
    present = numbered_files(prefix)
    if not present and num_refs is None and ref.is_file():
        return [ref]
    if not present and num_refs is None:
        raise InputError(f"{prefix}0: no such file (the references are {prefix}0, {prefix}1, ...)")
    wanted = len(present) if num_refs is None else num_refs
    highest = max(present, default=-1)
    gaps = [k for k in range(max(wanted, highest + 1)) if k not in present]
    if gaps:
        folder, stem = prefix.parent, prefix.name
        missing = ", ".join(f"{stem}{k}" for k in gaps[:3]) + (", ..." if len(gaps) > 3 else "")
        there = ", ".join(f"{stem}{k}" for k in sorted(present)[:6]) or "none"
        if len(present) > 6:
            there += f", ... ({len(present)} files)"
        need = f"-nr {num_refs} needs" if num_refs is not None and wanted > highest else "need"
        raise InputError(
            f"{folder}: {missing} missing ({need} {stem}0 to {stem}{max(wanted, highest + 1) - 1} "
            f"without a gap; present: {there})"
        )
    return [Path(f"{prefix}{k}") for k in range(wanted)]


def numbered_files(prefix: Path) -> set[int]:
    """The numbers k of the files PREFIX<k> (k written without leading zeros) that exist."""
    if not prefix.parent.is_dir():
        return set()
    pattern = re.compile(re.escape(prefix.name) + r"(0|[1-9][0-9]*)")
    return {
        int(match[1])
        for path in prefix.parent.iterdir()
        if (match := pattern.fullmatch(path.name)) and path.is_file()
    }


def read_files(
    ref: str | Path, hyp: str | Path, num_refs: int | None = None
) -> tuple[list[list[str]], list[str]]:
    """References per instance (one per reference file, "" where a file's line is empty) and
    hypotheses; every file must have as many lines as the hypothesis file."""
    if num_refs is not None and num_refs < 1:
        raise InputError(f"-nr must be at least 1, not {num_refs}")
    hypotheses = read_lines(hyp)
    columns = []
    for path in reference_files(ref, num_refs):
        lines = read_lines(path)
        if len(lines) != len(hypotheses):
            raise InputError(
                f"{path} has {len(lines)} lines but {hyp} has {len(hypotheses)}; every reference "
                "file needs one line per hypothesis (an empty line where there is no reference)"
            )
        columns.append(lines)
    if not hypotheses:
        raise InputError(f"{hyp}: nothing to score (the file is empty)")
    return [list(refs) for refs in zip(*columns, strict=True)], hypotheses


def metric_names(requested: str | Sequence[str]) -> list[str]:
    """GenerationEval's -m value ("bleu,meteor,ter,chrf++", any case) as METRICS names."""
    names = requested.split(",") if isinstance(requested, str) else list(requested)
    out = []
    for name in (n.strip().lower() for n in names if n.strip()):
        if name in NOT_OFFERED:
            raise InputError(
                f"{NOT_OFFERED[name]} is not offered here (it needs a large neural model); "
                f"choose from {','.join(OPTION_NAMES)}"
            )
        if name not in OPTION_NAMES:
            raise InputError(f"unknown metric {name!r}; choose from {','.join(OPTION_NAMES)}")
        out.append(OPTION_NAMES[name])
    if not out:
        raise InputError("no metric asked for")
    return [name for name in METRICS if name in out]


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def score(
    references: Sequence[Sequence[str]],
    hypotheses: Sequence[str],
    *,
    metrics: str | Sequence[str] = METRICS,
    char_order: int = 6,
    word_order: int = 2,
    beta: float = 2.0,
    strict: bool = False,
    per_instance: bool = False,
    java: str | None = "auto",
    cache_dir: str | Path | None = "auto",
) -> ScoreReport:
    """GenerationEval's metrics for hypotheses against their references (N per instance, ""
    where there is none). Without Java METEOR is None and `unavailable` says why (`strict`:
    MissingJavaError); `cache_dir` as for the E2E suite (METEOR's paraphrase-table cut)."""
    names = metric_names(metrics)
    if len(references) != len(hypotheses) or not hypotheses:
        raise InputError(f"{len(hypotheses)} hypotheses for {len(references)} instances")
    java = find_java() if java == "auto" else java
    reason = java_unavailable_reason(java) if "METEOR" in names else None
    if reason and strict:
        raise MissingJavaError(reason)
    meteor, cut_table = None, None
    if "METEOR" in names and not reason:  # loads its paraphrase table while Python works
        meteor, cut_table = start_meteor(references, java, cache_dir, salt="webnlg")
    with meteor or nullcontext():
        ref_tokens, hyp_tokens, notes = _tokenise(references, hypotheses, names)
        with ThreadPoolExecutor(max_workers=1) as pool:
            job = pool.submit(meteor.score, ref_tokens, hyp_tokens) if meteor else None
            chrf_options = (char_order, word_order, beta)
            scores, columns = _python_metrics(
                references, hypotheses, ref_tokens, hyp_tokens, names, chrf_options
            )
            if cut_table is not None:  # the first run with these references
                refs = [ref for group in ref_tokens for ref in group if ref]
                notes.insert(0, build_cut_table(cut_table, refs, java))
            if job is not None:
                scores["METEOR"], columns["METEOR"] = job.result()
    rows = _rows(references, hypotheses, columns) if per_instance else []
    return ScoreReport({name: scores.get(name) for name in names}, rows, reason, notes)


def _tokenise(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str], names: Sequence[str]
) -> tuple[list[list[str]], list[str], list[str]]:
    """GenerationEval's tokenisation of references and hypotheses where METEOR or TER need it,
    and notes saying which tokenisation ran."""
    if "METEOR" not in names and "TER" not in names:
        return [], [], []
    tokenizer = Tokenizer(punkt_sentences())
    hyp_tokens = tokenizer(hypotheses)
    ref_tokens = [tokenizer(refs) for refs in references]
    notes = [f"METEOR and TER on tokenised text: {tokenizer.name}"]
    if tokenizer.changed_by_split:
        notes.append(
            f"{tokenizer.changed_by_split} line(s) hold sentence breaks that change their "
            "tokens; GenerationEval finds those with NLTK's punkt, which is not installed, so "
            "their tokens may differ from its (install it: python -m nltk.downloader punkt_tab)"
        )
    return ref_tokens, hyp_tokens, notes


def _python_metrics(
    references: Sequence[Sequence[str]],
    hypotheses: Sequence[str],
    ref_tokens: Sequence[Sequence[str]],
    hyp_tokens: Sequence[str],
    names: Sequence[str],
    chrf_options: tuple[int, int, float],
) -> tuple[dict[str, float | None], dict[str, Sequence[float | None]]]:
    """BLEU, chrF++ and TER as asked: corpus scores and per-instance columns."""
    scores: dict[str, float | None] = {}
    columns: dict[str, Sequence[float | None]] = {}
    if "BLEU" in names:
        scores["BLEU"] = multi_bleu(references, hypotheses).bleu
    if "chrF++" in names:
        scores["chrF++"], columns["chrF++"] = chrf(references, hypotheses, *chrf_options)
    if "TER" in names:
        columns["TER"] = corpus_ter(ref_tokens, hyp_tokens)
        scores["TER"] = sum(columns["TER"]) / len(columns["TER"])
    return scores, columns


def _rows(
    references: Sequence[Sequence[str]],
    hypotheses: Sequence[str],
    columns: dict[str, Sequence[float | None]],
) -> list[dict]:
    """One row per instance: its line, texts and scores."""
    rows = []
    for i, hypothesis in enumerate(hypotheses):
        row = {"line": i + 1, "hypothesis": hypothesis, "references": list(references[i])}
        row |= {name: values[i] for name, values in columns.items()}
        rows.append(row)
    return rows


def format_report(report: ScoreReport, as_generation_eval: bool = False) -> str:
    """GenerationEval's results table (tabulate's plain layout). BLEU has Perl's two decimals;
    the others four, or as GenerationEval prints them (`round(x, 2)`) with `as_generation_eval`."""
    headers, values = [], []
    for name, value in report.scores.items():
        headers.append(name)
        if value is None:
            values.append("n/a")
        elif name == "BLEU":
            values.append(f"{value:.2f}")
        else:
            values.append(str(round(value, 2)) if as_generation_eval else f"{value:.4f}")
    widths = [max(len(h), len(v)) for h, v in zip(headers, values, strict=True)]
    lines = [
        "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)),
        "  ".join("-" * w for w in widths),
        "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True)),
    ]
    return "\n".join(lines)
