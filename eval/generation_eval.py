#!/usr/bin/env python3
"""Stand-in for the WebNLG challenge's GenerationEval `eval.py` (github.com/WebNLG/GenerationEval),
which the LoRA paper runs to score WebNLG and DART.

    python eval/generation_eval.py -R refs/reference -H hypothesis -nr 6 -m bleu,meteor,ter

Its arguments (-R, -H, -lng, -nr, -m, -nc, -nw, -b) with its defaults (-nr 4; -m all the metrics
offered here: bleu,meteor,chrf++,ter), and its results table, rounded as it rounds them (BLEU
to two decimals as its Perl script prints it, the others with round(x, 2)). The work is done by
`nlg.metrics.webnlg` (see `nlg score --help` for --json and --per_instance): no Perl, no METEOR
download, no NLTK data download, no torch. Not offered: BERTScore and BLEURT (asking for them
is an error), its "BLEU NLTK" column, and languages other than English. A final newline in a
file ends its last line (GenerationEval reads it as one more, empty, instance; see
nlg/metrics/webnlg.py). Runs from a checkout without installing the package.
"""

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from nlg.score import add_webnlg_options

    parser = argparse.ArgumentParser(
        prog="generation_eval.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("-R", "--reference", required=True, help="reference prefix (PREFIX0, ...)")
    parser.add_argument("-H", "--hypothesis", required=True, help="hypothesis file")
    parser.add_argument("-lng", "--language", default="en", help="evaluated language (en only)")
    add_webnlg_options(parser, default_metrics="bleu,meteor,chrf++,ter")
    parser.set_defaults(num_refs=4)
    parser.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    from nlg.files import InputError
    from nlg.score import run

    args = build_parser().parse_args(argv)
    if args.language != "en":
        raise InputError(f"-lng {args.language}: only English (en) is offered here")
    args.ref, args.pred = args.reference, args.hypothesis
    args.per_instance, args.no_cache, args.strict, args.pymteval = None, False, False, False
    return run(args, "webnlg", as_generation_eval=True)


def _main() -> int:
    try:
        import nlg.score  # noqa: F401
    except ImportError:  # a plain checkout: make the repository root importable
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from nlg.cli import run_main

    return run_main(main, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_main())
