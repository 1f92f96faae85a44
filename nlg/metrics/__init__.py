"""Metric suites: each scores hypotheses against references as one published scorer does.

    from nlg.metrics import score_files
    report = score_files("e2e", "e2e_ref.txt", "e2e_pred.txt")          # the E2E challenge
    report = score_files("webnlg", "refs/", "hypothesis", num_refs=6)   # GenerationEval
    report.scores   # {"BLEU": ..., ...}: the flat {metric: value} that `nlg score --json` writes

A suite is one module of this package (`SUITES`) with
    METRICS                                      the names of its corpus scores, in report order
    PERCENT                                      those of them it reports on a 0..100 scale
    read_files(ref, hyp, **options)              -> (references per instance, hypotheses)
    score(references, hypotheses, **options)     -> ScoreReport
    format_report(report)                        -> the text its official script prints
Shared pieces live beside them: `mteval` (mteval-v13a BLEU/NIST and multi-bleu-detok BLEU),
`java` and `meteor` (the METEOR JVM and its paraphrase-table cache), `coco` (ROUGE-L, CIDEr),
`ter` and `chrf` (GenerationEval's TER and chrF++), `treebank` (its NLTK word tokenisation).
Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from nlg.files import InputError

SUITES = {"e2e": "nlg.metrics.e2e", "webnlg": "nlg.metrics.webnlg"}


@dataclass
class ScoreReport:
    """Corpus scores (None where unavailable), optional per-instance scores, and why not."""

    scores: dict[str, float | None]
    per_instance: list[dict] = field(default_factory=list)
    unavailable: str | None = None  # why the metrics that need Java are missing
    notes: list[str] = field(default_factory=list)  # e.g. that a cache was built


_NOTED: set[str] = set()  # the notes print_notes has printed in this process


def print_notes(notes: Iterable[str]) -> None:
    """Print each note to stderr as `note: ...`, each text once per process: a note that says the
    same for every subset scored in one run (which tokenisation ran, e.g. that NLTK's punkt data
    is missing) is said once; notes that differ (a count, a path) are each printed."""
    for note in notes:
        if note not in _NOTED:
            _NOTED.add(note)
            print(f"note: {note}", file=sys.stderr)


def suite(name: str) -> ModuleType:
    """The module of a suite by name ("e2e", "webnlg")."""
    if name not in SUITES:
        raise InputError(f"unknown metric suite {name!r}; known: {', '.join(SUITES)}")
    return importlib.import_module(SUITES[name])


def score(
    suite_name: str, references: Sequence[Sequence[str]], hypotheses: Sequence[str], **options
) -> ScoreReport:
    """Score hypotheses against their references (one list per instance) with a suite."""
    return suite(suite_name).score(references, hypotheses, **options)


def score_files(
    suite_name: str, ref_path: str | Path, hyp_path: str | Path, **options
) -> ScoreReport:
    """Read a suite's reference and hypothesis files and score them. Reading options (such as
    webnlg's `num_refs`) go to its `read_files`, the rest to its `score`."""
    module = suite(suite_name)
    reading = {k: options.pop(k) for k in getattr(module, "READ_OPTIONS", ()) if k in options}
    references, hypotheses = module.read_files(ref_path, hyp_path, **reading)
    return module.score(references, hypotheses, **options)
