"""`nlg score`: score hypotheses against references with one metric suite.

    nlg score e2e_ref.txt e2e_pred.txt [-p] [--json FILE] [--per_instance FILE] [--strict]
    nlg score testset_w_refs.csv outputs.txt              # the E2E challenge's own CSV
    nlg score refs/ hypothesis [-nr 6] [-m bleu,meteor,ter,chrf++] [--json FILE]   # WebNLG, DART

The suite (`--suite e2e|webnlg`) is inferred from the references when not given: a folder
(holding reference0, reference1, ...) or a prefix PREFIX with PREFIX0 (or another PREFIX<k>)
present is GenerationEval's multi-reference layout (webnlg), whose numbered files must run
from 0 without a gap; a file is E2E's (text with blank lines between instances, or the
official .csv/.tsv). `--json FILE` writes the corpus scores as one flat JSON object
{metric: value} (null where a metric could not be computed):
    e2e     BLEU (0..1), NIST, METEOR, ROUGE_L, CIDEr           as the E2E scorer prints them
    webnlg  BLEU (0..100), METEOR, chrF++, TER (0..1), the metrics asked for with -m
            (GenerationEval's names and scales)
and one reserved key, "scored", recording what was scored, so that `nlg results` can refuse
the scores of another suite or dataset:
    "scored": {"suite": "webnlg", "dataset": "webnlg" (`--dataset`; null when not given),
               "metrics": ["BLEU", "METEOR", "TER"], "instances": 1862,
               "references_sha256": ..., "predictions_sha256": ...,
               "options": {...the scoring options that change a number: -p, -nr, chrF++ orders}}
Each sha256 is of the JSON array the suite read (`json.dumps(list, ensure_ascii=False)`, UTF-8):
per instance its references (a list of strings), or the predictions (strings) in scoring
order. It names the texts, not the files: the same texts under another name, with a
byte-order mark or in another layout (E2E text or CSV) give the same record.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

from nlg import datasets
from nlg.cli import run_main, spellings
from nlg.files import Failure, InputError, atomic_files, check_outputs, json_line
from nlg.metrics import SUITES, ScoreReport, print_notes, score, suite

E2E_ONLY = ("pymteval",)
WEBNLG_ONLY = ("num_refs", "metrics", "ncorder", "nworder", "beta")
RECORD_KEY = "scored"  # the one key of a --json file that is not a metric
NOT_RECORDED = ("strict", "per_instance", "cache_dir")  # options that change no number


def infer_suite(ref: str | Path) -> str:
    """webnlg for a folder or a prefix PREFIX with a numbered PREFIX<k> present (PREFIX0, or
    another one, so that a gap is named), else e2e."""
    ref = Path(ref)
    if ref.is_dir() or (not ref.is_file() and suite("webnlg").numbered_files(ref)):
        return "webnlg"
    return "e2e"


def add_webnlg_options(parser: argparse.ArgumentParser, default_metrics: str | None) -> None:
    """GenerationEval's options (`-nr -m -nc -nw -b`), shared with eval/generation_eval.py."""
    parser.add_argument(
        "-nr", "--num_refs", type=int, help="number of reference files (default: as many as exist)"
    )
    parser.add_argument(
        "-m",
        "--metrics",
        default=default_metrics,
        help="metrics to compute, comma-separated, from bleu,meteor,chrf++,ter (default: all four)",
    )
    parser.add_argument("-nc", "--ncorder", type=int, help="chrF++ character n-gram order (6)")
    parser.add_argument("-nw", "--nworder", type=int, help="chrF++ word n-gram order (2)")
    parser.add_argument("-b", "--beta", type=float, help="chrF++ beta (2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlg score",
        description="Score system outputs as the E2E challenge's measure_scores.py (BLEU, NIST, "
        "METEOR, ROUGE-L, CIDEr) or as WebNLG's GenerationEval (BLEU, METEOR, chrF++, TER) does.",
    )
    parser.add_argument(
        "ref",
        help="references: an E2E file (text or .csv/.tsv), or a folder/prefix of "
        "reference0, reference1, ... (webnlg)",
    )
    parser.add_argument("pred", help="predictions: one per line, in the same order (or .csv/.tsv)")
    parser.add_argument("--suite", choices=sorted(SUITES),
                        help="default: the --dataset's, else inferred from REF")
    parser.add_argument("--dataset", choices=datasets.names(),
                        help="the dataset these are the test references of; recorded in --json, "
                        "where `nlg results` checks it")
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
        "--strict", action="store_true", help="fail (exit 1) unless every metric can be computed"
    )
    parser.add_argument(
        "-p",
        "--python",
        "--pymteval",
        dest="pymteval",
        action="store_true",
        help="e2e: BLEU/NIST like the official script's -p (its Python pymteval), as the LoRA "
        "paper's script runs it",
    )
    add_webnlg_options(parser, default_metrics=None)
    return parser


def suite_options(args: argparse.Namespace, suite_name: str) -> dict:
    """The options of `args` that `score_files` takes for this suite; refuses the other suite's."""
    given = {
        name for name in E2E_ONLY + WEBNLG_ONLY if getattr(args, name, None) not in (None, False)
    }
    foreign = given & set(WEBNLG_ONLY if suite_name == "e2e" else E2E_ONLY)
    if foreign:
        flags = ", ".join(sorted(f"--{name}" for name in foreign))
        raise InputError(f"{flags}: not an option of the {suite_name} suite")
    options = dict(
        strict=args.strict,
        per_instance=bool(args.per_instance),
        cache_dir=None if args.no_cache else "auto",
    )
    if suite_name == "e2e":
        return options | {"pymteval": args.pymteval}
    renamed = {
        "ncorder": "char_order",
        "nworder": "word_order",
        "beta": "beta",
        "num_refs": "num_refs",
        "metrics": "metrics",
    }
    return options | {renamed[n]: getattr(args, n) for n in renamed if getattr(args, n) is not None}


def check_paths(args: argparse.Namespace, suite_name: str) -> None:
    """Before scoring: --json and --per_instance are neither an input nor each other."""
    references = [args.ref]
    if suite_name == "webnlg":  # a folder or a prefix of reference0, reference1, ...
        references += suite("webnlg").reference_files(args.ref, getattr(args, "num_refs", None))
    check_outputs(inputs={"REF": references, "PRED": args.pred},
                  outputs={"--json": args.json, "--per_instance": args.per_instance})


def run(args: argparse.Namespace, suite_name: str, **report_style) -> int:
    """Score, write --json/--per_instance (both or neither), then print the suite's report
    (`report_style`: options of its format_report); notes go to stderr."""
    module = suite(suite_name)
    check_paths(args, suite_name)
    options = suite_options(args, suite_name)
    reading = {k: options.pop(k) for k in getattr(module, "READ_OPTIONS", ()) if k in options}
    references, hypotheses = module.read_files(args.ref, args.pred, **reading)
    try:
        report = score(suite_name, references, hypotheses, **options)
    except RuntimeError as error:  # MissingJavaError, or Java failing under us
        raise Failure(str(error)) from None
    for name, value in report.scores.items():
        if value is not None and not math.isfinite(value):  # never a NaN in a JSON file
            print(f"warning: {name} is {value}: written as null", file=sys.stderr)
            report.scores[name] = None
    record = scored_record(args, suite_name, references, hypotheses, report, reading | options)
    write_outputs(args, report, record)
    print(module.format_report(report, **report_style))
    print()
    if report.unavailable:
        missing = ", ".join(name for name, value in report.scores.items() if value is None)
        print(
            f"warning: {missing} not computed: {report.unavailable} (--strict makes this an error)",
            file=sys.stderr,
        )
    print_notes(report.notes)
    return 0


def text_sha256(texts: list) -> str:
    """sha256 of a JSON array of texts (or of lists of texts), as the --json record states it."""
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()


def scored_record(args: argparse.Namespace, suite_name: str, references: list[list[str]],
                  hypotheses: list[str], report: ScoreReport, options: dict) -> dict:
    """The --json file's "scored" object: what these scores are of (see the module docstring)."""
    return {
        "suite": suite_name,
        "dataset": getattr(args, "dataset", None),
        "metrics": list(report.scores),
        "instances": len(hypotheses),
        "references_sha256": text_sha256([list(group) for group in references]),
        "predictions_sha256": text_sha256(list(hypotheses)),
        "options": {k: v for k, v in options.items() if k not in NOT_RECORDED},
    }


def write_outputs(args: argparse.Namespace, report: ScoreReport, record: dict | None = None) -> None:
    """--json and --per_instance, as one (nlg.files.atomic_files): a failure leaves neither."""
    with atomic_files() as open_file:
        if args.json:
            content = report.scores | ({RECORD_KEY: record} if record is not None else {})
            open_file(args.json).write(json.dumps(content, indent=2, allow_nan=False) + "\n")
        if args.per_instance:
            open_file(args.per_instance).writelines(json_line(record) for record in report.per_instance)


def chosen_suite(args: argparse.Namespace) -> str:
    """--suite, else the --dataset's suite, else inferred from REF; --suite and --dataset
    must agree."""
    if args.dataset is None:
        return args.suite or infer_suite(args.ref)
    expected = datasets.get(args.dataset).recipe.scoring.suite
    if args.suite and args.suite != expected:
        raise InputError(f"--suite {args.suite}: {args.dataset} is scored with the {expected} suite")
    return expected


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args, chosen_suite(args))


if __name__ == "__main__":
    sys.exit(run_main(main))
