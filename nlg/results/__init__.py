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
Shown values are rounded (2 decimals in percent, else 4); a metric the run could not compute
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
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nlg import datasets, methods
from nlg.cli import run_main
from nlg.datasets.recipe import PaperResult, Recipe
from nlg.files import InputError, atomic_files, check_outputs, read_json

PAPER_ORDER = ("unseen", "seen", "all")  # how the paper's WebNLG table orders the subsets
ABBREVIATION = {"unseen": "U", "seen": "S", "all": "A"}
PAPER_CARDS = {"gpt2.md": "GPT-2 M", "gpt2.lg": "GPT-2 L"}
LOWER_IS_BETTER = ("TER",)

Scores = dict[str, dict[str, float | None]]  # subset -> metric -> value


def paper_percent(recipe: Recipe) -> frozenset[str]:
    """The metrics the paper's table prints in percent."""
    return frozenset().union(*(result.percent for result in recipe.paper))


def to_paper_scale(value: float | None, metric: str, paper: frozenset[str],
                   suite: frozenset[str]) -> float | None:
    """A suite's score on the paper's printed scale (x100 for a metric the paper prints in
    percent and the suite reports on 0..1; /100 the other way round)."""
    if value is None:
        return None
    if metric in paper and metric not in suite:
        value *= 100
    elif metric in suite and metric not in paper:
        value /= 100
    return value


def on_paper_scale(value: float | None, metric: str, paper: frozenset[str], suite: frozenset[str]) -> float | None:
    """A suite's score on the paper's printed scale, rounded for the table."""
    value = to_paper_scale(value, metric, paper, suite)
    return None if value is None else round(value, 2 if metric in paper else 4)


def read_scores_file(path: Path, recipe: Recipe, dataset_name: str,
                     records: dict[str, dict] | None = None) -> dict[str, float | None]:
    """One `nlg score --json` file: the recipe's metrics on the suite's scale (None where not
    computed). Refused, with one line naming the file and key: a file without the "scored"
    record (an older `nlg score`: rescore), of another suite or dataset, holding a metric that
    is not the suite's or none of the recipe's, or a value that is not a finite number or null.
    A file whose dataset was not recorded (scored without --dataset) is taken with a note.
    `records`, if given, receives the file's record under its path (for results.json)."""
    from nlg.metrics import suite

    raw = read_json_file(path)
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected the JSON object `nlg score --json` writes")
    record = raw.get("scored")
    rescore = (f"score it again: nlg score REF PRED {' '.join(recipe.scoring.score_args())} "
               f"--json {path}")
    if not isinstance(record, dict) or not isinstance(record.get("suite"), str):
        raise InputError(f"{path}: no \"scored\" record of what was scored (written by an older "
                         f"`nlg score`, or not by it); {rescore}")
    if record["suite"] != recipe.scoring.suite:
        raise InputError(f"{path}: scored.suite is {record['suite']!r}; {dataset_name} is scored "
                         f"with the {recipe.scoring.suite} suite")
    if record.get("dataset") is None:
        print(f"note: {path}: no dataset recorded (scored without --dataset); taken as "
              f"{dataset_name}'s", file=sys.stderr)
    elif record["dataset"] != dataset_name:
        raise InputError(f"{path}: scored.dataset is {record['dataset']!r}, not {dataset_name!r}")
    known = suite(recipe.scoring.suite).METRICS
    metrics = [key for key in raw if key != "scored"]
    for metric in metrics:
        if metric not in known:
            raise InputError(f"{path}: {metric} is not a metric of the {recipe.scoring.suite} suite "
                             f"({', '.join(known)})")
        value = raw[metric]
        if value is not None and not _is_number(value):
            raise InputError(f"{path}: {metric} is {json.dumps(value)}, not a finite number or null")
    if record.get("metrics") != metrics:
        raise InputError(f"{path}: scored.metrics is {json.dumps(record.get('metrics'))}, but the "
                         f"file holds {json.dumps(metrics)}")
    if not set(recipe.scoring.metrics) & set(metrics):
        raise InputError(f"{path}: none of {', '.join(recipe.scoring.metrics)} (expected the "
                         f"`nlg score --json` output of the {recipe.scoring.suite} suite)")
    if records is not None:
        records[str(path)] = record
    return {metric: raw.get(metric) for metric in recipe.scoring.metrics}


def read_scores(files: dict[str, Path], recipe: Recipe, suite_percent: frozenset[str],
                dataset_name: str, rounded: bool = True, records: dict | None = None) -> Scores:
    """Each subset's `nlg score --json` file, checked and put on the paper's scale (rounded
    for the single-run table, unrounded for aggregation)."""
    percent = paper_percent(recipe)
    scale = on_paper_scale if rounded else to_paper_scale
    scores: Scores = {}
    for subset, path in files.items():
        raw = read_scores_file(Path(path), recipe, dataset_name, records)
        scores[subset] = {m: scale(value, m, percent, suite_percent) for m, value in raw.items()}
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
    this_run = read_scores(run, recipe, suite_percent, dataset_name)
    rows = {f"this run ({card})": this_run}
    report = {"dataset": dataset_name, "model_card": card, "metrics": list(recipe.scoring.metrics),
              "subsets": subsets, "percent": sorted(paper_percent(recipe)), "this_run": this_run}
    if untrained:
        rows[f"untrained {card}"] = report["untrained"] = read_scores(untrained, recipe, suite_percent, dataset_name)
    report["paper"] = paper_scores(recipe, subsets)
    rows.update({f"paper, {PAPER_CARDS[c]} with LoRA": scores for c, scores in report["paper"].items()})
    return markdown(rows, recipe.scoring.metrics, subsets), report


# ---------------------------------------------------------------------------------------------
# Several runs and seeds: `nlg results DATASET --runs DIR [DIR ...]`
# ---------------------------------------------------------------------------------------------
#
# Each DIR is one run of scripts/reproduce.sh (dataset, card, method, seed) holding run.json:
#
#   {"dataset": "webnlg", "model_card": "gpt2.md", "method": "lora", "seed": 110,
#    "params": 393216, "settings": {"LR": "2e-4", "SEED": "110", ...},
#    "checkpoint": "lora/checkpoint-2000",
#    "selection": {"criterion": "valid_loss", "metric": null, "chosen_step": 2000,
#                  "candidates": [{"step": 1000, "value": 3.21}, ...]} | null,
#    "subsets": {"all": {"scores": "scores.json", "references": ..., "predictions": ...}, ...},
#    "untrained": {"all": {"scores": "untrained/scores.json", ...}} | null}
#
# (paths relative to DIR). Runs that share model_card, method, params and every setting but SEED
# are the seeds of one row. Per row, metric and subset, over the n seeds' values x_i (on the
# paper's scale):
#     mean  m = sum(x_i) / n
#     std   s = sqrt(sum((x_i - m)^2) / (n - 1))          the sample standard deviation
#     95 %  m ± t(0.975; n - 1) · s / sqrt(n)             Student's t with n - 1 degrees of freedom
# With n = 1 there is no spread: s and the interval are null and the cell shows the value alone.
# A metric missing (null) in any seed is null for the row: a mean over fewer seeds than the
# row holds would not be the row's.

SEED_SETTING = "SEED"  # the pipeline setting that varies between the seeds of one row
CONFIDENCE = 0.95
# The paper's name for each method of nlg.methods (its tables' row labels).
def method_label(name: str) -> str:
    """The papers' row label of a method (nlg.methods: Method.label); "untrained" stays itself."""
    return methods.label(name)


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's T with integer df degrees of freedom, in closed form
    (Abramowitz & Stegun 26.7.3-4): with θ = atan(t/√df),
        df odd:  2/π · (θ + sin θ · Σ_{k=1}^{(df-1)/2} a_k),  a_1 = cos θ, a_k = a_{k-1} cos²θ (2k-2)/(2k-1)
        df even: sin θ · Σ_{k=0}^{df/2-1} b_k,               b_0 = 1,     b_k = b_{k-1} cos²θ (2k-1)/(2k)"""
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            if k > 1:
                term *= cos2 * (2 * k - 2) / (2 * k - 1)
            total += term
        return 2 / math.pi * (theta + sin * total)
    total, term = 1.0, 1.0
    for k in range(1, df // 2):
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return sin * total


def t_quantile(confidence: float, df: int) -> float:
    """t such that P(|T| <= t) = confidence (e.g. 4.3027 for 95 % and 2 degrees of freedom),
    by bisection on the closed form above (no scipy needed)."""
    low, high = 0.0, 1.0
    while _t_two_sided(high, df) < confidence:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if _t_two_sided(middle, df) < confidence else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Aggregate:
    """One metric of one row over its seeds (see the formulas above)."""

    mean: float | None
    std: float | None  # None when n < 2
    n: int
    interval: tuple[float, float] | None  # the 95 % confidence interval; None when n < 2

    def as_json(self) -> dict:
        return {"mean": _clean(self.mean), "std": _clean(self.std), "n": self.n,
                "ci95": None if self.interval is None else [_clean(x) for x in self.interval]}


def _clean(value: float | None) -> float | None:
    """Float noise of the scale conversion removed (68.34000000000001 -> 68.34)."""
    return None if value is None else round(value, 10)


def aggregate(values: list[float | None]) -> Aggregate:
    """Mean, sample standard deviation and 95 % Student-t interval of one metric's seeds."""
    n = len(values)
    if n == 0 or any(value is None for value in values):
        return Aggregate(None, None, n, None)
    mean = math.fsum(values) / n
    if n == 1:
        return Aggregate(mean, None, 1, None)
    std = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (n - 1))
    half = t_quantile(CONFIDENCE, n - 1) * std / math.sqrt(n)
    return Aggregate(mean, std, n, (mean - half, mean + half))


@dataclass(frozen=True)
class Run:
    """One run directory as its run.json describes it (the contract above)."""

    directory: Path
    dataset: str
    model_card: str
    method: str
    seed: int
    params: int | None
    settings: dict[str, str]
    checkpoint: str | None
    selection: dict | None
    subsets: dict[str, Path]  # subset -> its scores file
    untrained: dict[str, Path]  # the same for the untrained model; empty when none

    def key(self) -> tuple:
        """What makes two runs seeds of one row: all but the seed."""
        settings = tuple(sorted((k, v) for k, v in self.settings.items() if k != SEED_SETTING))
        return self.model_card, self.method, self.params, settings


def read_json_file(path: Path) -> object:
    """A JSON file, or one line naming the file and line (nlg.files.read_json: its depth and
    number limits). The only JSON reader of this module; NaN and Infinity are let through here
    and refused where a number is checked."""
    return read_json(path)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _subset_files(value: object, where: str, directory: Path, recipe: Recipe) -> dict[str, Path]:
    """`subsets` (or `untrained`) of run.json: {subset: {"scores": FILE, ...}} -> {subset: path}."""
    if not isinstance(value, dict) or not value:
        raise InputError(f"{where}: expected an object {{SUBSET: {{\"scores\": FILE, ...}}}}")
    files = {}
    for subset, entry in value.items():
        if subset not in recipe.scoring.subsets:
            raise InputError(f"{where}.{subset}: not a subset the paper reports "
                             f"({', '.join(recipe.scoring.subsets)})")
        if not isinstance(entry, dict) or not isinstance(entry.get("scores"), str):
            raise InputError(f"{where}.{subset}: expected {{\"scores\": FILE, ...}}")
        path = directory / entry["scores"]
        if not path.is_file():
            raise InputError(f"{where}.{subset}.scores: {path}: no such file (an incomplete run; "
                             f"score it again, or leave {directory} out)")
        files[subset] = path
    return files


def _check_selection(value: object, where: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("criterion"), str):
        raise InputError(f"{where}: expected null or {{\"criterion\": ..., \"chosen_step\": ..., "
                         "\"candidates\": [...]}}")
    candidates = value.get("candidates", [])
    if not isinstance(candidates, list) or not all(
            isinstance(c, dict) and isinstance(c.get("step"), int)
            and (c.get("value") is None or _is_number(c.get("value"))) for c in candidates):
        raise InputError(f"{where}.candidates: expected [{{\"step\": N, \"value\": a finite "
                         "number or null}, ...]")
    return value


def read_run(directory: Path, dataset_name: str) -> Run:
    """A run directory's run.json, checked; an error names the file and key."""
    path = directory / "run.json"
    if not path.is_file():
        raise InputError(f"{path}: no such file (the run has not finished its score stage; "
                         f"finish it, or leave {directory} out)")
    record = read_json_file(path)
    if not isinstance(record, dict):
        raise InputError(f"{path}: expected a JSON object")
    types = {"dataset": (str, "a string"), "model_card": (str, "a string"),
             "method": (str, "a string"), "seed": (int, "an integer"), "settings": (dict, "an object")}
    for key, (kind, name) in types.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise InputError(f"{path}: {key} is {record.get(key)!r}, expected {name}")
    if record["dataset"] != dataset_name:
        raise InputError(f"{path}: a run of {record['dataset']}, not of {dataset_name}")
    params = record.get("params")
    if params is not None and (not isinstance(params, int) or isinstance(params, bool) or params < 0):
        raise InputError(f"{path}: params is {params!r}, expected a count or null")
    if not all(isinstance(v, str) for v in record["settings"].values()):
        raise InputError(f"{path}: settings: expected strings (NAME: value as the script holds it)")
    checkpoint = record.get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise InputError(f"{path}: checkpoint is {checkpoint!r}, expected a path or null")
    recipe = datasets.get(dataset_name).recipe
    untrained = record.get("untrained")
    return Run(directory, record["dataset"], record["model_card"], record["method"], record["seed"],
               params, dict(record["settings"]), checkpoint,
               _check_selection(record.get("selection"), f"{path}: selection"),
               _subset_files(record.get("subsets"), f"{path}: subsets", directory, recipe),
               {} if untrained is None else _subset_files(untrained, f"{path}: untrained",
                                                           directory, recipe))


@dataclass
class Row:
    """One row of the multi-run table: our seeds of one setting, their untrained model, or a
    paper result."""

    kind: str  # run | untrained | paper
    model_card: str
    method: str
    label: str
    seeds: list[int] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    values: dict[str, list[Scores]] = field(default_factory=dict)  # unused for paper rows
    cells: dict[str, dict[str, Aggregate]] = field(default_factory=dict)  # subset -> metric
    paper: list[PaperResult] = field(default_factory=list)
    records: dict[str, dict] = field(default_factory=dict)  # scores file -> its "scored" record


def format_params(params: int | None) -> str:
    """A trainable parameter count as the paper prints it: 393216 -> 0.39M."""
    if params is None:
        return ""
    millions = params / 1e6
    return f"{millions:.2f}M" if millions >= 0.01 else f"{millions:.3g}M"


def _group(runs: list[Run]) -> list[list[Run]]:
    """Runs with equal keys, in the order of their first run; seeds sorted; a seed twice is an
    error."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key(), []).append(run)
    for members in groups.values():
        members.sort(key=lambda run: run.seed)
        for a, b in zip(members, members[1:], strict=False):
            if a.seed == b.seed:
                raise InputError(f"{a.directory} and {b.directory}: both seed {a.seed} of one setting "
                                 "(give each seed once)")
    return list(groups.values())


def _labels(groups: list[list[Run]]) -> list[str]:
    """`LoRA 0.39M`, and where two rows of one card would share it, the settings that differ."""
    base = [" ".join(filter(None, (method_label(g[0].method),
                                   format_params(g[0].params)))) for g in groups]
    labels = list(base)
    for index, group in enumerate(groups):
        twins = [other for j, other in enumerate(groups) if base[j] == base[index]
                 and other[0].model_card == group[0].model_card]
        if len(twins) > 1:
            differ = sorted({k for other in twins for k, v in other[0].settings.items()
                             if k != SEED_SETTING and v != group[0].settings.get(k)})
            labels[index] += " (" + ", ".join(f"{k}={group[0].settings.get(k)}" for k in differ) + ")"
    return labels


def _aggregate_row(row: Row, files: list[dict[str, Path]], recipe: Recipe,
                   suite_percent: frozenset[str], dataset_name: str) -> None:
    """Read each seed's scores files and aggregate them per subset and metric."""
    subsets = set(files[0])
    for run, subset_files in zip(row.runs, files, strict=True):
        if set(subset_files) != subsets:
            raise InputError(f"{run.directory / 'run.json'}: subsets {', '.join(sorted(subset_files))}; "
                             f"seed {row.runs[0].seed} of its row has {', '.join(sorted(subsets))}")
    per_seed = [read_scores(f, recipe, suite_percent, dataset_name, rounded=False, records=row.records)
                for f in files]
    for subset in subsets:  # the seeds of a row are scored on one test set
        first = files[0][subset]
        for seed_files in files[1:]:
            ours, theirs = row.records[str(first)], row.records[str(seed_files[subset])]
            if ours.get("references_sha256") != theirs.get("references_sha256"):
                raise InputError(f"{seed_files[subset]}: scored against other references than "
                                 f"{first} (references_sha256 differs): not seeds of one test set")
    row.values = {subset: [seed[subset] for seed in per_seed] for subset in subsets}
    row.cells = {subset: {metric: aggregate([seed[subset][metric] for seed in per_seed])
                          for metric in recipe.scoring.metrics} for subset in subsets}


def run_rows(runs: list[Run], recipe: Recipe, dataset_name: str) -> list[Row]:
    """Our rows: each setting's seeds, then (where runs have one) their untrained model."""
    from nlg.metrics import suite

    suite_percent = frozenset(suite(recipe.scoring.suite).PERCENT)
    groups = _group(runs)
    rows = []
    for group, label in zip(groups, _labels(groups), strict=True):
        first = group[0]
        row = Row("run", first.model_card, first.method, label, [r.seed for r in group], group)
        _aggregate_row(row, [r.subsets for r in group], recipe, suite_percent, dataset_name)
        rows.append(row)
        with_untrained = [r for r in group if r.untrained]
        if with_untrained:
            untrained = Row("untrained", first.model_card, "untrained",
                            "untrained" + (f" (before {label})" if len(groups) > 1 else ""),
                            [r.seed for r in with_untrained], with_untrained)
            _aggregate_row(untrained, [r.untrained for r in with_untrained], recipe, suite_percent,
                           dataset_name)
            rows.append(untrained)
    return rows


def paper_rows(recipe: Recipe, cards: list[str], subsets: list[str]) -> list[Row]:
    """Every PaperResult of the recipe for the cards, one row per (card, method, size), labelled
    as the paper labels it (method, `*` when copied from Li & Liang, size)."""
    rows: dict[tuple, Row] = {}
    for result in recipe.paper:
        if result.model_card not in cards or result.subset not in subsets:
            continue
        key = (result.model_card, result.method, result.params, result.copied)
        if key not in rows:
            name = method_label(result.method) + ("*" if result.copied else "")
            rows[key] = Row("paper", result.model_card, result.method,
                            " ".join(filter(None, (name, result.params))))
        rows[key].paper.append(result)
    return list(rows.values())


@dataclass(frozen=True)
class Style:
    """How the paper prints one metric: decimals, and whether a value below 1 drops its 0."""

    digits: int
    drop_zero: bool

    def __call__(self, value: float | None, spread: float | None = None) -> str:
        """`70.4±.1`: the value and its spread with the paper's digits; the spread (and a value
        the paper prints as `.38`) without its leading zero."""
        if value is None:
            return "n/a"
        text = f"{value:.{self.digits}f}"
        if self.drop_zero:
            text = _drop_zero(text)
        return text if spread is None else f"{text}±{_drop_zero(f'{spread:.{self.digits}f}')}"


def _drop_zero(text: str) -> str:
    return text.replace("0.", ".", 1) if text.lstrip("-").startswith("0.") else text


def _decimals(value: float) -> int:
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 2


def paper_styles(recipe: Recipe) -> dict[str, Style]:
    """Per metric, the most decimals the paper prints it with (values and ±) and whether all
    its values are fractions printed without the 0 (WebNLG's METEOR .38)."""
    styles = {}
    for metric in recipe.scoring.metrics:
        values = [r.scores[metric] for r in recipe.paper if metric in r.scores]
        spreads = [r.spread[metric] for r in recipe.paper if metric in r.spread]
        digits = max(map(_decimals, values + spreads), default=2)
        styles[metric] = Style(digits, bool(values) and all(abs(v) < 1 for v in values))
    return styles


def _card_name(card: str) -> str:
    return PAPER_CARDS.get(card, card)


def _selection_text(selection: dict | None) -> str:
    """`valid_loss: step 2000 (1000: 3.21, 2000: 3.02)`, or `last checkpoint` without one."""
    if selection is None:
        return "last checkpoint"
    criterion = selection["criterion"] + (f" {selection['metric']}" if selection.get("metric") else "")
    candidates = ", ".join(f"{c['step']}: " + ("n/a" if c.get("value") is None else f"{c['value']:.4g}")
                           for c in selection.get("candidates", []))
    return f"{criterion}: step {selection.get('chosen_step')}" + (f" ({candidates})" if candidates else "")


def _seeds_text(seeds: list[int]) -> str:
    return f"n={len(seeds)}: " + ", ".join(map(str, seeds))


def runs_markdown(rows: list[Row], metrics: tuple[str, ...], subsets: list[str],
                  styles: dict[str, Style]) -> str:
    """The table (mean±std per row), then the 95 % intervals, then each seed's own row."""
    columns = [(m, s) for m in metrics for s in subsets]
    heads = [m if len(subsets) == 1 else f"{m} {ABBREVIATION[s]}" for m, s in columns]

    def table(head: list[str], body: list[list[str]], right: int) -> list[str]:
        return ["| " + " | ".join(head) + " |",
                "|" + " --- |" * (len(head) - right) + " ---: |" * right,
                *("| " + " | ".join(cells) + " |" for cells in body)]

    def mean_cell(row: Row, metric: str, subset: str) -> str:
        if row.kind == "paper":
            result = next((r for r in row.paper if r.subset == subset), None)
            if result is None or metric not in result.scores:
                return "n/a"
            return styles[metric](result.scores[metric], result.spread.get(metric))
        cell = row.cells.get(subset, {}).get(metric)
        return "n/a" if cell is None else styles[metric](cell.mean, cell.std)

    def interval_cell(row: Row, metric: str, subset: str) -> str:
        cell = row.cells.get(subset, {}).get(metric)
        if cell is None or cell.interval is None:
            return "n/a"
        return "[" + ", ".join(styles[metric](x) for x in cell.interval) + "]"

    ours = [row for row in rows if row.kind != "paper"]
    main = table(["model", "method", "seeds", *heads],
                 [[_card_name(r.model_card) + (" (paper)" if r.kind == "paper" else ""), r.label,
                   "paper" if r.kind == "paper" else _seeds_text(r.seeds),
                   *(mean_cell(r, m, s) for m, s in columns)] for r in rows], len(columns))
    intervals = table(["model", "method", "seeds", *heads],
                      [[_card_name(r.model_card), r.label, _seeds_text(r.seeds),
                        *(interval_cell(r, m, s) for m, s in columns)] for r in ours], len(columns))
    seeds = table(["model", "method", "seed", "checkpoint", "selection", *heads],
                  [[_card_name(r.model_card), r.label, str(run.seed), run.checkpoint or "n/a",
                    _selection_text(run.selection),
                    *("n/a" if r.values[s][i][m] is None else styles[m](r.values[s][i][m])
                      for m, s in columns)]
                   for r in ours for i, run in enumerate(r.runs)], len(columns))
    notes = ["Ours: the mean over the seeds ± their sample standard deviation (n - 1 degrees of "
             "freedom; none for one seed); the paper's: as printed, ± over its 3 seeds where it "
             "gives one, * copied by the paper from Li & Liang (2021)."]
    notes += [f"{metric}: lower is better." for metric in metrics if metric in LOWER_IS_BETTER]
    if len(subsets) > 1:
        notes.append("U, S, A: categories unseen in training, seen, all.")
    return "\n".join([*main, "", " ".join(notes), "",
                      "95 % confidence intervals (Student's t, n - 1 degrees of freedom; none "
                      "for one seed):", "", *intervals, "",
                      "Each seed (checkpoint chosen by the selection shown, on validation):", "",
                      *seeds]) + "\n"


def _row_json(row: Row) -> dict:
    if row.kind == "paper":
        return {"kind": "paper", "label": row.label, "model_card": row.model_card,
                "method": row.method, "params": row.paper[0].params,
                "copied": row.paper[0].copied, "source": row.paper[0].source,
                "scores": {r.subset: dict(r.scores) for r in row.paper},
                "spread": {r.subset: dict(r.spread) for r in row.paper if r.spread}}
    first = row.runs[0]
    files = [run.subsets if row.kind == "run" else run.untrained for run in row.runs]
    return {"kind": row.kind, "label": row.label, "model_card": row.model_card,
            "method": first.method, "params": first.params,
            "settings": {k: v for k, v in first.settings.items() if k != SEED_SETTING},
            "seeds": row.seeds,
            "scores": {s: {m: cell.as_json() for m, cell in metrics.items()}
                       for s, metrics in row.cells.items()},
            "runs": [{"seed": run.seed, "run_dir": str(run.directory), "checkpoint": run.checkpoint,
                      "selection": run.selection,
                      "scores_files": {s: str(path) for s, path in files[i].items()},
                      "scored": {s: row.records[str(path)] for s, path in files[i].items()},
                      "scores": {s: {m: _clean(v) for m, v in row.values[s][i].items()}
                                 for s in row.values}}
                     for i, run in enumerate(row.runs)]}


def runs_results(dataset_name: str, directories: list[Path]) -> tuple[str, dict, list[Row]]:
    """The Markdown and the JSON object of `nlg results --runs`, and the rows (for --plot)."""
    recipe = datasets.get(dataset_name).recipe
    seen: dict[Path, Path] = {}
    for directory in directories:
        resolved = directory.resolve()
        if resolved in seen:
            raise InputError(f"--runs {directory}: given twice (also as {seen[resolved]})")
        seen[resolved] = directory
    runs = [read_run(directory, dataset_name) for directory in directories]
    ours = run_rows(runs, recipe, dataset_name)
    subsets = sorted({s for row in ours for s in row.cells}, key=PAPER_ORDER.index)
    our_cards = list(dict.fromkeys(row.model_card for row in ours))
    # the paper's rows for our cards; a card of its own (the demo's gpt2.tiny): all of them
    cards = [c for c in PAPER_CARDS if c in our_cards] or list(PAPER_CARDS)
    theirs = paper_rows(recipe, cards, subsets)
    rows = [row for card in dict.fromkeys(our_cards + cards)
            for row in ours + theirs if row.model_card == card]
    styles = paper_styles(recipe)
    report = {"dataset": dataset_name, "metrics": list(recipe.scoring.metrics), "subsets": subsets,
              "percent": sorted(paper_percent(recipe)), "confidence": CONFIDENCE,
              "rows": [_row_json(row) for row in rows]}
    return runs_markdown(rows, recipe.scoring.metrics, subsets, styles), report, rows


def _paper_params(text: str) -> float | None:
    """"0.37M" -> 370000.0; None where the paper prints no size."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([MK]?)\s*", text or "")
    if not match:
        return None
    return float(match[1]) * {"M": 1e6, "K": 1e3, "": 1}[match[2]]


def plot_rows(rows: list[Row], metrics: tuple[str, ...], subsets: list[str]) -> tuple[bytes, list[str]]:
    """Each metric against trainable parameters (log axis), on subset `all` (else the first
    shown): our rows as the mean with its 95 % interval as error bars, filled, the paper's
    points hollow, one marker per method. Returns the PNG and the rows left out (no parameter
    count: a run whose train_config.json has none, a paper row without a size)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subset = "all" if "all" in subsets else subsets[0]
    markers = dict(zip(dict.fromkeys(r.method for r in rows), "osD^vP*X<>ph", strict=False))
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6), squeeze=False)
    left_out = []
    for axis, metric in zip(axes[0], metrics, strict=True):
        for row in rows:
            name = f"{_card_name(row.model_card)} {row.label}"
            if row.kind == "paper":
                result = next((r for r in row.paper if r.subset == subset), None)
                x = _paper_params(row.paper[0].params)
                y = None if result is None else result.scores.get(metric)
                error = None
            else:
                cell = row.cells.get(subset, {}).get(metric)
                x, y = row.runs[0].params, None if cell is None else cell.mean
                error = None if cell is None or cell.interval is None else cell.interval[1] - cell.mean
            if not x or y is None:
                if metric == metrics[0]:
                    left_out.append(name)
                continue
            axis.errorbar([x], [y], yerr=None if error is None else [error], capsize=3,
                          marker=markers.get(row.method, "o"), linestyle="none",
                          markerfacecolor="none" if row.kind == "paper" else None,
                          color="C1" if row.kind == "paper" else "C0",
                          label=("paper: " if row.kind == "paper" else "ours: ") + name)
        axis.set_xscale("log")
        axis.set_xlabel("trainable parameters")
        axis.set_title(metric if len(subsets) == 1 else f"{metric} ({subset})")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=3, fontsize="small",
                      bbox_to_anchor=(0.5, 0))
    figure.tight_layout(rect=(0, 0.08 + 0.04 * (len(handles) // 3), 1, 1))
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120)
    plt.close(figure)
    return png.getvalue(), left_out


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
        png, left_out = plot_rows(rows, tuple(report["metrics"]), report["subsets"])
        if left_out:
            print(f"note: --plot: no parameter count, so not plotted: {'; '.join(left_out)}",
                  file=sys.stderr)
    write_report(args, text, report, png)
    print(text)
    return 0

if __name__ == "__main__":
    sys.exit(run_main(main))
