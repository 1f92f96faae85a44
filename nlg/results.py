"""A run's scores beside the paper's, in the paper's layout: results.md and results.json.

    nlg results webnlg --card gpt2.md --scores all=scores.json seen=scores_seen.json
                unseen=scores_unseen.json [--untrained SUBSET=FILE ...]
                --md results.md --json results.json

Each FILE is what `nlg score --json` wrote for one subset (the decode's --filter). The table
has one row per system (this run, the same card untrained if given, then the paper's GPT-2 M
and L with LoRA from the dataset's recipe) and one column per metric and subset, metrics in
the recipe's order and subsets as the paper prints them (unseen, seen, all: U, S, A):

    | system | BLEU U | BLEU S | BLEU A | METEOR U | ... | TER A |

Every number is on the scale the paper's table prints it (`PaperResult.percent`): a metric
the paper prints in percent but the suite reports on 0..1 (E2E's BLEU, METEOR, ROUGE-L) is
multiplied by 100, one the suite already reports on 0..100 (GenerationEval's BLEU) is not.
Shown values are rounded (2 decimals in percent, else 4); a metric the run could not compute
(e.g. METEOR without Java) or did not ask for (`nlg score -m`) is n/a in the table and null in
the JSON; a file with none of the recipe's metrics is an error:

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
from nlg.datasets.recipe import Recipe
from nlg.files import InputError, atomic_files, check_outputs, read_json

PAPER_ORDER = ("unseen", "seen", "all")  # how the paper's WebNLG table orders the subsets
ABBREVIATION = {"unseen": "U", "seen": "S", "all": "A"}
PAPER_CARDS = {"gpt2.md": "GPT-2 M", "gpt2.lg": "GPT-2 L"}
LOWER_IS_BETTER = ("TER",)

Scores = dict[str, dict[str, float | None]]  # subset -> metric -> value


def paper_percent(recipe: Recipe) -> frozenset[str]:
    """The metrics the paper's table prints in percent."""
    return frozenset().union(*(result.percent for result in recipe.paper))


def on_paper_scale(value: float | None, metric: str, paper: frozenset[str], suite: frozenset[str]) -> float | None:
    """A suite's score on the paper's printed scale, rounded for the table."""
    if value is None:
        return None
    if metric in paper and metric not in suite:
        value *= 100
    elif metric in suite and metric not in paper:
        value /= 100
    return round(value, 2 if metric in paper else 4)


def read_scores(files: dict[str, Path], recipe: Recipe, suite_percent: frozenset[str]) -> Scores:
    """Each subset's `nlg score --json` file, checked and put on the paper's scale."""
    percent = paper_percent(recipe)
    scores: Scores = {}
    for subset, path in files.items():
        try:
            raw = read_json(path)
        except OSError as error:
            raise InputError(f"{path}: cannot read scores ({error.strerror})") from None
        if not isinstance(raw, dict) or not set(recipe.scoring.metrics) & set(raw):
            raise InputError(f"{path}: none of {', '.join(recipe.scoring.metrics)} (expected the "
                             f"`nlg score --json` output of the {recipe.scoring.suite} suite)")
        bad = [m for m in recipe.scoring.metrics if not isinstance(raw.get(m), (int, float, type(None)))]
        if bad:
            raise InputError(f"{path}: {bad[0]} is {raw[bad[0]]!r}, not a number or null")
        scores[subset] = {m: on_paper_scale(raw.get(m), m, percent, suite_percent) for m in recipe.scoring.metrics}
    return scores


def paper_scores(recipe: Recipe, subsets: list[str]) -> dict[str, Scores]:
    """The paper's numbers as printed, per model card, for the subsets shown."""
    return {card: {subset: dict(recipe.paper_result(card, subset).scores) for subset in subsets}
            for card in PAPER_CARDS if all(recipe.paper_result(card, subset) for subset in subsets)}


def cell(value: float | None) -> str:
    return "n/a" if value is None else str(value)


def markdown(rows: dict[str, Scores], metrics: tuple[str, ...], subsets: list[str]) -> str:
    """One row per system, one column per metric and subset."""
    def header(metric: str, subset: str) -> str:
        return metric if len(subsets) == 1 else f"{metric} {ABBREVIATION[subset]}"

    columns = [(metric, subset) for metric in metrics for subset in subsets]
    lines = ["| system | " + " | ".join(header(m, s) for m, s in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {system} | " + " | ".join(cell(scores[s][m]) for m, s in columns) + " |"
              for system, scores in rows.items()]
    notes = [f"{metric}: lower is better." for metric in metrics if metric in LOWER_IS_BETTER]
    if len(subsets) > 1:
        notes.append("U, S, A: categories unseen in training, seen, all.")
    return "\n".join(lines) + ("\n\n" + " ".join(notes) if notes else "") + "\n"


def results(dataset_name: str, card: str, run: dict[str, Path], untrained: dict[str, Path]) -> tuple[str, dict]:
    """The Markdown table and the JSON object for one run."""
    dataset = datasets.get(dataset_name)
    recipe = dataset.recipe
    for subset in [*run, *untrained]:
        if subset not in recipe.scoring.subsets:
            raise InputError(f"{dataset_name}: no {subset!r} subset (the paper reports {', '.join(recipe.scoring.subsets)})")
    if untrained and set(untrained) != set(run):
        raise InputError(f"--untrained gives subsets {sorted(untrained)}, --scores {sorted(run)}: give the same")
    from nlg.metrics import suite

    suite_percent = frozenset(suite(recipe.scoring.suite).PERCENT)
    subsets = sorted(run, key=PAPER_ORDER.index)
    this_run = read_scores(run, recipe, suite_percent)
    rows = {f"this run ({card})": this_run}
    report = {"dataset": dataset_name, "model_card": card, "metrics": list(recipe.scoring.metrics),
              "subsets": subsets, "percent": sorted(paper_percent(recipe)), "this_run": this_run}
    if untrained:
        rows[f"untrained {card}"] = report["untrained"] = read_scores(untrained, recipe, suite_percent)
    report["paper"] = paper_scores(recipe, subsets)
    rows.update({f"paper, {PAPER_CARDS[c]} with LoRA": scores for c, scores in report["paper"].items()})
    return markdown(rows, recipe.scoring.metrics, subsets), report


def subset_files(values: list[str], flag: str) -> dict[str, Path]:
    """SUBSET=FILE arguments as a dict; a malformed or repeated one is an error."""
    files: dict[str, Path] = {}
    for value in values:
        subset, sep, path = value.partition("=")
        if not sep or not path or subset in files:
            raise InputError(f"{flag} {value!r}: expected SUBSET=FILE, each subset once (e.g. all=scores.json)")
        files[subset] = Path(path)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nlg results", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=datasets.names())
    parser.add_argument("--card", required=True, help="the model card of the run (e.g. gpt2.md)")
    parser.add_argument("--scores", nargs="+", required=True, metavar="SUBSET=FILE",
                        help="the run's `nlg score --json` file per subset (all, seen, unseen)")
    parser.add_argument("--untrained", nargs="+", default=[], metavar="SUBSET=FILE",
                        help="the same card untrained, scored alike (the demo's comparison)")
    parser.add_argument("--md", required=True, help="Markdown table to write")
    parser.add_argument("--json", required=True, help="JSON to write")
    args = parser.parse_args(argv)
    run, untrained = subset_files(args.scores, "--scores"), subset_files(args.untrained, "--untrained")
    check_outputs(inputs={"--scores": run.values(), "--untrained": untrained.values()},
                  outputs={"--md": args.md, "--json": args.json})
    text, report = results(args.dataset, args.card, run, untrained)
    with atomic_files() as open_file:  # both files or neither
        open_file(args.md).write(text)
        open_file(args.json).write(json.dumps(report, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
