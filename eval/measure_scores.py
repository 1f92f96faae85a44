#!/usr/bin/env python3
"""Stand-in for the E2E NLG Challenge's measure_scores.py (github.com/tuetschek/e2e-metrics).

    python eval/measure_scores.py REF PRED        # BLEU/NIST as mteval-v13a (the official default)
    python eval/measure_scores.py REF PRED -p     # BLEU/NIST as the official -p (pymteval)

Same positional arguments and the same `SCORES:` report as the official script; the work is
done by `nlg.metrics` (see `nlg score --help` for --json, --per_instance, --strict). Runs from a
checkout without installing the package. The official script's -l/-s/-t/-H options and its
CSV/TSV inputs are not supported.
"""

import sys
from pathlib import Path


def _main() -> int:
    try:
        from nlg.metrics import main
    except ImportError:  # a plain checkout: make the repository root importable
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from nlg.metrics import main
    from nlg.cli import run_main

    return run_main(main)


if __name__ == "__main__":
    sys.exit(_main())
