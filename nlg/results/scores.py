"""Reading scores: one `nlg score --json` file per subset, a run directory's run.json, and the
paper's printed scale (x100 for a metric the paper prints in percent where the suite reports
0..1, /100 the other way round)."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from nlg import datasets
from nlg.datasets.recipe import Recipe
from nlg.files import InputError, read_json

PAPER_ORDER = ("unseen", "seen", "all")  # how the paper's WebNLG table orders the subsets


ABBREVIATION = {"unseen": "U", "seen": "S", "all": "A"}


PAPER_CARDS = {"gpt2.md": "GPT-2 M", "gpt2.lg": "GPT-2 L"}


LOWER_IS_BETTER = ("TER",)

SEED_SETTING = "SEED"  # the pipeline setting that varies between the seeds of one row

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
        if value is not None and not is_number(value):
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


def read_json_file(path: Path) -> object:
    """A JSON file, or one line naming the file and line (nlg.files.read_json: its depth and
    number limits). The only JSON reader of this module; NaN and Infinity are let through here
    and refused where a number is checked."""
    return read_json(path)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def subset_files(values: list[str], flag: str) -> dict[str, Path]:
    """SUBSET=FILE arguments as a dict; a malformed or repeated one is an error."""
    files: dict[str, Path] = {}
    for value in values:
        subset, sep, path = value.partition("=")
        if not sep or not path or subset in files:
            raise InputError(f"{flag} {value!r}: expected SUBSET=FILE, each subset once (e.g. all=scores.json)")
        files[subset] = Path(path)
    return files


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
            and (c.get("value") is None or is_number(c.get("value"))) for c in candidates):
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
