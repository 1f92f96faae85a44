"""A run's scores beside the paper's, in the paper's layout: results.md and results.json.

    nlg results webnlg --card gpt2.md --scores all=scores.json seen=scores_seen.json
                unseen=scores_unseen.json [--untrained SUBSET=FILE ...]
                --md results.md --json results.json
    nlg results webnlg --runs RUN_DIR [RUN_DIR ...] --md results.md --json results.json
                [--plot results.png]

The second form reads the runs of scripts/reproduce.sh by their run.json and aggregates the
seeds of each row (see "Several runs and seeds" below).

Each FILE is what `nlg score --json` wrote for one subset (the decode's --filter). The table
has one row per system (this run, the same card untrained if given, then the paper's GPT-2 M
and L with LoRA from the dataset's recipe) and one column per metric and subset, metrics in
the recipe's order and subsets as the paper prints them (unseen, seen, all: U, S, A):

    | system | BLEU U | BLEU S | BLEU A | METEOR U | ... | TER A |

Every number is on the scale the paper's table prints it (`PaperResult.percent`): a metric
the paper prints in percent but the suite reports on 0..1 (E2E's BLEU, METEOR, ROUGE-L) is
multiplied by 100, one the suite already reports on 0..100 (GenerationEval's BLEU) is not.
Shown values are rounded (2 decimals in percent, else 4, or more where two different values of
ours in one column would otherwise look alike: every order of the raw values is kept; the JSON
holds the values as shown); a metric the run could not compute
(e.g. METEOR without Java) or did not ask for (`nlg score -m`) is n/a in the table and null in
the JSON. Every scores file is checked against its "scored" record (`nlg.score`): one without
it (an older `nlg score`), of another suite or dataset, with a metric that is not the suite's
or none of the recipe's, or with a value that is not a finite number or null is an error
naming the file and key. results.json is strict JSON (no NaN):

    {"dataset": "webnlg", "model_card": "gpt2.md", "metrics": [...], "subsets": [...],
     "percent": ["BLEU"], "this_run": {SUBSET: {METRIC: value}}, "untrained": {...},
     "paper": {"gpt2.md": {SUBSET: {METRIC: value}}, "gpt2.lg": {...}}}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nlg import datasets
from nlg.cli import run_main
from nlg.files import InputError, atomic_files, check_outputs
from nlg.results.scores import (  # noqa: F401  (the package's API: nlg.results.X)
    PAPER_CARDS,
    PAPER_ORDER,
    on_paper_scale,
    read_run,
    read_scores,
    read_scores_file,
    subset_files,
    to_paper_scale,
)
from nlg.results.stats import CONFIDENCE, Aggregate, aggregate, t_quantile  # noqa: F401
from nlg.results.tables import markdown, results, runs_results  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nlg results", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=datasets.names())
    parser.add_argument("--runs", nargs="+", metavar="DIR",
                        help="run directories of scripts/reproduce.sh (each with run.json): one row "
                        "per setting, the mean±std over its seeds")
    parser.add_argument("--card", help="the model card of the run (e.g. gpt2.md); with --scores")
    parser.add_argument("--scores", nargs="+", metavar="SUBSET=FILE",
                        help="the run's `nlg score --json` file per subset (all, seen, unseen)")
    parser.add_argument("--untrained", nargs="+", default=[], metavar="SUBSET=FILE",
                        help="the same card untrained, scored alike (the demo's comparison)")
    parser.add_argument("--md", required=True, help="Markdown table to write")
    parser.add_argument("--json", required=True, help="JSON to write")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="with --runs: each metric against trainable parameters (needs the "
                        "`plot` extra, matplotlib)")
    args = parser.parse_args(argv)
    if args.runs:
        if args.card or args.scores or args.untrained:
            parser.error("--runs reads cards and scores from each run.json: give no --card, "
                         "--scores or --untrained with it")
        return main_runs(args)
    if args.plot:
        parser.error("--plot needs --runs")
    if not (args.card and args.scores):
        parser.error("give --runs DIR ..., or --card and --scores SUBSET=FILE ...")
    run, untrained = subset_files(args.scores, "--scores"), subset_files(args.untrained, "--untrained")
    check_outputs(inputs={"--scores": run.values(), "--untrained": untrained.values()},
                  outputs={"--md": args.md, "--json": args.json})
    text, report = results(args.dataset, args.card, run, untrained)
    write_report(args, text, report)
    print(text)
    return 0


def write_report(args: argparse.Namespace, text: str, report: dict, png: bytes | None = None) -> None:
    """results.md, results.json (strict JSON: no NaN) and the plot: all or none."""
    with atomic_files() as open_file:
        open_file(args.md).write(text)
        open_file(args.json).write(json.dumps(report, indent=2, allow_nan=False) + "\n")
        if png is not None:
            open_file(args.plot, "wb").write(png)


def main_runs(args: argparse.Namespace) -> int:
    """`nlg results DATASET --runs DIR ...`"""
    directories = [Path(d) for d in args.runs]
    outputs = {"--md": args.md, "--json": args.json, "--plot": args.plot}
    check_outputs(inputs={"--runs": [d / "run.json" for d in directories]}, outputs=outputs)
    text, report, rows = runs_results(args.dataset, directories)
    inputs = [Path(f) for row in report["rows"] for run in row.get("runs", [])
              for f in run["scores_files"].values()]
    check_outputs(inputs={"a scores file of --runs": inputs}, outputs=outputs)
    png = None
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError("--plot needs matplotlib: pip install 'nlg[plot]'") from None
        from nlg.results.plot import plot_rows

        png, left_out = plot_rows(rows, tuple(report["metrics"]), report["subsets"])
        if left_out:
            print(f"note: --plot: no parameter count, so not plotted: {'; '.join(left_out)}",
                  file=sys.stderr)
    write_report(args, text, report, png)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
