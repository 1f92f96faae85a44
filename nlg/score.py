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
            (GenerationEval's names and scales).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nlg.cli import run_main, spellings
from nlg.files import Failure, InputError, atomic_files, check_outputs, json_line
from nlg.metrics import SUITES, score_files, suite

E2E_ONLY = ("pymteval",)
WEBNLG_ONLY = ("num_refs", "metrics", "ncorder", "nworder", "beta")


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
    parser.add_argument("--suite", choices=sorted(SUITES), help="default: inferred from REF")
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
    try:
        report = score_files(suite_name, args.ref, args.pred, **suite_options(args, suite_name))
    except RuntimeError as error:  # MissingJavaError, or Java failing under us
        raise Failure(str(error)) from None
    write_outputs(args, report)
    print(module.format_report(report, **report_style))
    print()
    if report.unavailable:
        missing = ", ".join(name for name, value in report.scores.items() if value is None)
        print(
            f"warning: {missing} not computed: {report.unavailable} (--strict makes this an error)",
            file=sys.stderr,
        )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def write_outputs(args: argparse.Namespace, report) -> None:
    """--json and --per_instance, as one (nlg.files.atomic_files): a failure leaves neither."""
    with atomic_files() as open_file:
        if args.json:
            open_file(args.json).write(json.dumps(report.scores, indent=2) + "\n")
        if args.per_instance:
            open_file(args.per_instance).writelines(json_line(record) for record in report.per_instance)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args, args.suite or infer_suite(args.ref))


if __name__ == "__main__":
    sys.exit(run_main(main))
