"""The E2E NLG Challenge suite: BLEU, NIST, METEOR, ROUGE-L and CIDEr as its official scorer
(github.com/tuetschek/e2e-metrics, `measure_scores.py`) gives them, on the files it reads.

The official scorer computes
  * BLEU and NIST with mteval-v13a (its edited `mteval/mteval-v13a-sig.pl`, Perl, default
    options: lowercased, "closest" reference length, smoothed BLEU) on SGML files it writes;
  * METEOR 1.5, ROUGE-L and CIDEr with the MS-COCO caption evaluation (pycocoevalcap) on text
    run through the Stanford PTB tokenizer (`-preserveLines -lowerCase`, punctuation tokens
    dropped).
This module gives the same numbers (to 1e-14 on the E2E test set, per instance too, against a
re-creation of the official script) in less time:
  * BLEU and NIST are re-implemented in Python (`nlg.metrics.mteval`; the Perl script alone takes
    several seconds): every sentence's n-grams are counted once for both metrics;
  * references and predictions go through ONE PTB tokenizer run (the official starts Java twice);
  * the METEOR JVM is started first and works while everything else runs; it is the floor of
    the wall time, and most of its time goes to loading its 62 MB paraphrase table, so the part
    of that table the references can ever match is cached per reference set (`nlg.metrics.meteor`;
    `--no_cache` to skip), which gives identical METEOR scores;
  * ROUGE-L and CIDEr are pycocoevalcap's own code (`nlg.metrics.coco`).
An empty prediction is scored as an empty output (its per-instance scores are 0), not an error.
`pymteval=True` (`-p`) computes BLEU and NIST like the official script's `-p` option (its
`metrics/pymteval.py`), which the LoRA paper's E2E script uses.

Files (UTF-8; every line is stripped of surrounding whitespace, as the official script does)
  REF   text: per instance, its references one per line, a blank line between instances (a
        trailing blank line is optional). A file with no blank line at all holds one reference
        per line and instance (the official script's single-reference format).
        .csv/.tsv: the official release's `mr,ref` table; see `read_table` and `read_files`.
  PRED  text: one system output per line; an empty line is an empty output.
        .csv/.tsv: an `mr,output` table; its MRs choose and order the references.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

from nlg.files import InputError, read_lines
from nlg.metrics import ScoreReport
from nlg.metrics.coco import ptb_tokenize, rouge_cider
from nlg.metrics.java import MissingJavaError, find_java, java_unavailable_reason
from nlg.metrics.meteor import Meteor, build_cut_table, start_meteor
from nlg.metrics.mteval import bleu_nist, corpus_bleu_nist, mteval_statistics, segment_bleu_nist

METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
PERCENT: frozenset[str] = frozenset()  # every score as the official script prints it: BLEU 0..1
JAVA_METRICS = ("METEOR", "ROUGE_L", "CIDEr")


# ---------------------------------------------------------------------------------------------
# Reading the files
# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------


def read_references(path: str | Path) -> list[list[str]]:
    """References per instance from a REF file (format in the module docstring); a CSV/TSV
    groups the references of consecutive rows with the same MR."""
    if is_table(path):
        return [
            [ref for _, _, ref in group]
            for group in consecutive_groups(read_table(path, HEADER_REF))
        ]
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
    """One output per line (an empty line is an empty output), or the output column of a CSV/TSV."""
    if is_table(path):
        return [output for _, _, output in read_table(path, HEADER_SYS)]
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
# The official CSV/TSV formats
# ---------------------------------------------------------------------------------------------
# The official measure_scores.py reads a .csv/.tsv file (by its suffix, any case) as follows,
# and so does `read_table`: lines stripped, the byte-order mark removed from the first line,
# mis-encoded pound and e-acute signs fixed (Ł, Â£ -> £; Ã©, ã© -> é), empty lines dropped;
# tab-separated if the first line holds a tab, else comma-separated (Python's csv rules). Its
# first row is a header when exactly one field matches the MR pattern and exactly one the
# pattern of the wanted column (a case-insensitive match at the start of the field); with no
# field matching either, the file has no header and exactly two columns: MR, then text. Every
# row has the first row's number of columns. (The official script means to read headerless
# files by position but fails on them, comparing a list with 0; here they work.)

HEADER_MR = r"(mr|src|source|meaning(?:[_ .-]rep(?:resentation)?)?|da|dial(?:ogue)?[_ .-]act)s?"
HEADER_SYS = r"(out(?:put)?|ref(?:erence)?|sys(?:tem)?(?:[_ .-](?:out(?:put)?|ref(?:erence)?))?)s?"
HEADER_REF = r"(trg|tgt|target|ref(?:erence)?|human(?:[_ .-](?:ref(?:erence)?))?)s?"
_ENCODING_FIXES = (("Ł", "£"), ("Â£", "£"), ("Ã©", "é"), ("ã©", "é"))


def is_table(path: str | Path) -> bool:
    """Whether the official scorer reads this file as CSV/TSV (by its suffix)."""
    return re.search(r"\.[ct]sv$", str(path), re.I) is not None


def _table_rows(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each row of a CSV/TSV file, cleaned as the official script does."""
    lines = [line.strip() for line in read_lines(path)]
    if lines:
        lines[0] = lines[0].replace("\ufeff", "")
    numbered = []
    for number, line in enumerate(lines, start=1):
        for wrong, right in _ENCODING_FIXES:
            line = line.replace(wrong, right)
        if line:
            numbered.append((number, line))
    if not numbered:
        raise InputError(f"{path}: no rows (the file is empty)")
    delimiter = "\t" if "\t" in numbered[0][1] else ","
    reader = csv.reader((line for _, line in numbered), delimiter=delimiter, strict=True)
    try:
        for fields in reader:
            yield numbered[reader.line_num - 1][0], fields
    except csv.Error as error:
        raise InputError(
            f"{path}:{numbered[reader.line_num - 1][0]}: not valid CSV ({error})"
        ) from None


def read_table(path: str | Path, header_text: str) -> list[tuple[int, str, str]]:
    """(line number, MR, text) of each data row of an official CSV/TSV file; the text column is
    the one whose header matches `header_text` (HEADER_REF or HEADER_SYS), else the second."""
    rows = list(_table_rows(path))
    first_line, header = rows[0]
    mr_cols = [i for i, name in enumerate(header) if re.match(HEADER_MR, name, re.I)]
    text_cols = [i for i, name in enumerate(header) if re.match(header_text, name, re.I)]
    if len(mr_cols) == len(text_cols) == 1:
        (mr_col,), (text_col,) = mr_cols, text_cols
        rows = rows[1:]
    elif not mr_cols and not text_cols and len(header) == 2:
        mr_col, text_col = 0, 1
    else:
        what = "reference" if header_text == HEADER_REF else "output"
        raise InputError(
            f"{path}:{first_line}: no usable header: need exactly one MR column (mr, src, "
            f"source, ...: columns {mr_cols}) and one {what} column ({header_text}: columns "
            f"{text_cols}), or no header and exactly 2 columns (this row has {len(header)})"
        )
    for number, fields in rows:
        if len(fields) != len(header):
            raise InputError(
                f"{path}:{number}: {len(fields)} columns, but line {first_line} has {len(header)}"
            )
    return [(number, fields[mr_col], fields[text_col]) for number, fields in rows]


def consecutive_groups(rows: Sequence[tuple[int, str, str]]) -> list[list[tuple[int, str, str]]]:
    """Rows grouped by runs of the same MR (the official grouping of a reference table)."""
    groups: list[list[tuple[int, str, str]]] = []
    for row in rows:
        if groups and groups[-1][-1][1] == row[1]:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def read_files(ref_path: str | Path, pred_path: str | Path) -> tuple[list[list[str]], list[str]]:
    """References per instance and predictions, paired as the official scorer pairs them.

    A CSV/TSV system output names each output's MR: its references are every row of the
    reference table with that MR (in table order, wherever they are), so outputs may come in
    any order. Unlike the official scorer, which scores whatever MRs it is given, the output
    must hold each MR of the reference table exactly once (`check_system_mrs`): an MR without
    references, a repeated MR and a missing one are errors. Otherwise outputs are taken in the
    order of the reference groups (consecutive rows with one MR, or blank-line groups)."""
    outputs = read_table(pred_path, HEADER_SYS) if is_table(pred_path) else []
    if is_table(ref_path) and any(mr for _, mr, _ in outputs):  # else the order is all we have
        ref_rows = read_table(ref_path, HEADER_REF)
        by_mr: dict[str, list[str]] = {}
        for _, mr, ref in ref_rows:
            by_mr.setdefault(mr, []).append(ref)
        check_system_mrs(ref_rows, outputs, ref_path, pred_path)
        references = [by_mr[mr] for _, mr, _ in outputs]
        predictions = [output for _, _, output in outputs]
    else:
        references = read_references(ref_path)
        predictions = [out for _, _, out in outputs] if outputs else read_predictions(pred_path)
    check_counts(references, predictions, str(ref_path), str(pred_path))
    return references, predictions


def check_system_mrs(
    ref_rows: Sequence[tuple[int, str, str]],
    outputs: Sequence[tuple[int, str, str]],
    ref_path: str | Path,
    pred_path: str | Path,
) -> None:
    """A system table holds each MR of the reference table exactly once: scoring 3 of 8 MRs,
    or one MR twice, gives a corpus score of another test set. Raises InputError naming the
    first unknown or repeated MR (with both lines), or the count of missing MRs and the first
    of them (with its line in the reference table). To score a subset on purpose, give a
    reference table holding only its MRs."""
    first_ref_line: dict[str, int] = {}
    for number, mr, _ in ref_rows:
        first_ref_line.setdefault(mr, number)
    seen: dict[str, int] = {}
    for number, mr, _ in outputs:
        if mr not in first_ref_line:
            raise InputError(f"{pred_path}:{number}: no reference in {ref_path} has the MR {mr!r}")
        if mr in seen:
            raise InputError(
                f"{pred_path}:{number}: the MR {mr!r} has an output at line {seen[mr]} already "
                "(a system output holds each MR once)"
            )
        seen[mr] = number
    missing = [mr for mr in first_ref_line if mr not in seen]
    if missing:
        raise InputError(
            f"{pred_path}: no output for {len(missing)} of the {len(first_ref_line)} MRs of "
            f"{ref_path}, the first {missing[0]!r} ({ref_path}:{first_ref_line[missing[0]]}); "
            "to score a subset, give references holding only its MRs"
        )


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


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
    meteor, cut_table = (None, None) if reason else start_meteor(references, java, cache_dir)
    coco, notes = {}, []
    # METEOR loads its paraphrase table while the rest runs
    with meteor or nullcontext(), ThreadPoolExecutor(max_workers=1) as pool:
        sentences = [ref for refs in references for ref in refs] + list(predictions)
        tokens = pool.submit(ptb_tokenize, sentences, java) if meteor else None
        segments, bleu, nist = _mteval(references, predictions, per_instance, pymteval)
        if tokens is not None:  # Java tokenised while Python counted n-grams
            coco, notes = _coco_metrics(references, tokens.result(), meteor, cut_table, java)
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


def _mteval(references, predictions, per_instance: bool, pymteval: bool):
    """Per-instance mteval statistics (when needed), corpus BLEU and NIST."""
    segments = mteval_statistics(references, predictions) if per_instance or not pymteval else []
    if pymteval:
        return segments, *bleu_nist(references, predictions, True)
    return segments, *corpus_bleu_nist(segments)


def _coco_metrics(
    references: Sequence[Sequence[str]],
    tokens: Sequence[str],
    meteor: Meteor,
    cut_table: Path | None,
    java: str,
) -> tuple[dict[str, tuple[float, list[float]]], list[str]]:
    """METEOR, ROUGE_L and CIDEr (corpus, per instance) on the PTB-tokenised references (in
    order) and predictions (after them), and notes."""
    ref_tokens, start = [], 0
    for refs in references:
        ref_tokens.append(tokens[start : start + len(refs)])
        start += len(refs)
    hyp_tokens = tokens[start:]
    notes = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        meteor_job = pool.submit(meteor.score, ref_tokens, hyp_tokens)  # the JVM works...
        coco = rouge_cider(ref_tokens, hyp_tokens)  # ... while these run here
        if cut_table is not None:  # first run with these references
            notes.append(build_cut_table(cut_table, tokens[:start], java))
        coco["METEOR"] = meteor_job.result()
    return coco, notes


def score_files(ref_path: str | Path, pred_path: str | Path, **options) -> dict[str, float | None]:
    """Corpus scores of a PRED file against a REF file, in METRICS order (None for the metrics
    that need Java when there is none; `strict` raises MissingJavaError instead). Options as
    for `score`."""
    return score_report(ref_path, pred_path, **options).scores


def score_report(ref_path: str | Path, pred_path: str | Path, **options) -> ScoreReport:
    """Read both files, check they pair up, and `score` them (options as for `score`)."""
    return score(*read_files(ref_path, pred_path), **options)


def format_report(report: ScoreReport) -> str:
    """The official script's report: `SCORES:`, a rule, then `NAME: value` (4 decimals)."""
    return format_scores(report.scores)


def format_scores(scores: Mapping[str, float | None]) -> str:
    """The official script's report: `SCORES:`, a rule, then `NAME: value` (4 decimals)."""
    lines = ["SCORES:", "=============="]
    lines += [
        f"{name}: {'n/a' if scores.get(name) is None else f'{scores[name]:.4f}'}"
        for name in METRICS
    ]
    return "\n".join(lines)
