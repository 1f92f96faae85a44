#!/usr/bin/env python3
"""Stand-in for the E2E NLG Challenge's measure_scores.py (github.com/tuetschek/e2e-metrics).

    python eval/measure_scores.py REF PRED        # BLEU/NIST as mteval-v13a (the official default)
    python eval/measure_scores.py REF PRED -p     # BLEU/NIST as the official -p (pymteval)
    python eval/measure_scores.py testset_w_refs.csv outputs.txt     # the official CSV files

Same positional arguments, the same REF/PRED formats (text, or the official .csv/.tsv) and the
same `SCORES:` report as the official script; the work is done by `nlg.metrics.e2e` (see
`nlg score --help` for --json, --per_instance, --strict). Runs from a checkout without installing
the package, and without torch. The official script's -l/-s/-t/-H options are not supported.
"""

import sys
from pathlib import Path


def _main() -> int:
    try:
        import nlg.score  # noqa: F401
    except ImportError:  # a plain checkout: make the repository root importable
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from nlg.cli import run_main
    from nlg.score import main

    return run_main(lambda argv: main(["--suite", "e2e", *argv]), sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_main())
