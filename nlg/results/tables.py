"""The tables of `nlg results`: one run beside the paper (`results`, `markdown`), and the rows of
several runs and seeds (`runs_results`: Markdown and results.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nlg import datasets, methods
from nlg.datasets.recipe import PaperResult, Recipe
from nlg.files import InputError
from nlg.results.scores import (
    ABBREVIATION,
    LOWER_IS_BETTER,
    PAPER_CARDS,
    PAPER_ORDER,
    SEED_SETTING,
    Run,
    Scores,
    paper_percent,
    paper_scores,
    read_run,
    read_scores,
)
from nlg.results.stats import CONFIDENCE, Aggregate, aggregate, clean, digits_keeping_order

UNTRAINED = "untrained"  # the row of the same card before training: results' own, not a method


def method_label(method: str) -> str:
    """The paper's row label of a method (nlg.methods: Method.label); `untrained` for the
    untrained row; a name no method has (a run.json of another version) as it is."""
    if method == UNTRAINED:
        return UNTRAINED
    if method in methods.names():
        return methods.get(method).label or method
    return method


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
    ours = {"this_run": read_scores(run, recipe, suite_percent, dataset_name, rounded=False)}
    if untrained:
        ours["untrained"] = read_scores(untrained, recipe, suite_percent, dataset_name, rounded=False)
    paper = paper_scores(recipe, subsets)
    digits = table_digits(list(ours.values()), recipe.scoring.metrics, subsets,
                          paper_percent(recipe))
    ours = {key: {subset: {m: None if v is None else round(v, digits[m]) for m, v in values.items()}
                  for subset, values in scores.items()} for key, scores in ours.items()}
    rows = {f"this run ({card})": ours["this_run"]}
    report = {"dataset": dataset_name, "model_card": card, "metrics": list(recipe.scoring.metrics),
              "subsets": subsets, "percent": sorted(paper_percent(recipe)), "this_run": ours["this_run"]}
    if untrained:
        rows[f"untrained {card}"] = report["untrained"] = ours["untrained"]
    report["paper"] = paper
    rows.update({f"paper, {PAPER_CARDS[c]} with LoRA": scores for c, scores in paper.items()})
    return markdown(rows, recipe.scoring.metrics, subsets), report


def table_digits(tables: list[Scores], metrics: tuple[str, ...], subsets: list[str],
                 percent: frozenset[str]) -> dict[str, int]:
    """Per metric, the decimals of the one-run table: 2 for a metric in percent, else 4, or more
    where that would show two different values of ours in one column alike
    (stats.digits_keeping_order; the paper's values are as precise as it prints them)."""
    def shown(value: float, digits: int) -> str:
        return str(round(value, digits))

    return {metric: max(digits_keeping_order([t.get(s, {}).get(metric) for t in tables],
                                             2 if metric in percent else 4, shown=shown)
                        for s in subsets) for metric in metrics}


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
            untrained = Row(UNTRAINED, first.model_card, UNTRAINED,
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
        key = (result.model_card, result.method, result.params, result.copied, result.external and result.source)
        if key not in rows:
            name = method_label(result.method) + ("*" if result.copied else "")
            cited = f"({result.source})" if result.external else ""
            rows[key] = Row("paper", result.model_card, result.method,
                            " ".join(filter(None, (name, result.params, cited))))
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


def card_name(card: str) -> str:
    return PAPER_CARDS.get(card, card)


def _selection_text(selection: dict | None) -> str:
    """`valid_loss: step 2000 (1000: 3.21, 2000: 3.02)`, or `last checkpoint` without one."""
    if selection is None:
        return "last checkpoint"
    criterion = selection["criterion"] + (f" {selection['metric']}" if selection.get("metric") else "")
    values = [c.get("value") for c in selection.get("candidates", [])]
    digits = digits_keeping_order(values, 4, shown=lambda value, digits: f"{value:.{digits}g}")
    candidates = ", ".join(f"{c['step']}: " + ("n/a" if c.get("value") is None else f"{c['value']:.{digits}g}")
                           for c in selection.get("candidates", []))
    return f"{criterion}: step {selection.get('chosen_step')}" + (f" ({candidates})" if candidates else "")


def _seeds_text(seeds: list[int]) -> str:
    return f"n={len(seeds)}: " + ", ".join(map(str, seeds))


def runs_markdown(rows: list[Row], metrics: tuple[str, ...], subsets: list[str],
                  styles: dict[str, Style]) -> str:
    """The table (mean±std per row), then the 95 % intervals, then each seed's own row."""
    columns = [(m, s) for m in metrics for s in subsets]
    heads = [m if len(subsets) == 1 else f"{m} {ABBREVIATION[s]}" for m, s in columns]
    styles = keep_order(styles, rows, metrics, subsets)

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
                 [[card_name(r.model_card) + (" (paper)" if r.kind == "paper" else ""), r.label,
                   "paper" if r.kind == "paper" else _seeds_text(r.seeds),
                   *(mean_cell(r, m, s) for m, s in columns)] for r in rows], len(columns))
    intervals = table(["model", "method", "seeds", *heads],
                      [[card_name(r.model_card), r.label, _seeds_text(r.seeds),
                        *(interval_cell(r, m, s) for m, s in columns)] for r in ours], len(columns))
    seeds = table(["model", "method", "seed", "checkpoint", "selection", *heads],
                  [[card_name(r.model_card), r.label, str(run.seed),
                    *(("none", "none (not trained)") if r.kind == UNTRAINED
                      else (run.checkpoint or "n/a", _selection_text(run.selection))),
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


def keep_order(styles: dict[str, Style], rows: list[Row], metrics: tuple[str, ...],
               subsets: list[str]) -> dict[str, Style]:
    """The paper's styles with more decimals where its digits would show two different values
    of one column alike (issue 29: NIST .0063 and .0113 both 0.01 hid that the trained model is
    worse): per metric, the most any column of any table (means beside the paper's values,
    intervals, each seed) needs to keep every order of our raw values. The paper's values are
    as precise as it prints them: they set the decimals, but do not add to them."""
    out = {}
    for metric in metrics:
        digits = styles[metric].digits
        for subset in subsets:
            means = [r.cells.get(subset, {}).get(metric) for r in rows if r.kind != "paper"]
            bounds = [x for cell in means if cell is not None and cell.interval for x in cell.interval]
            seeds = [v[metric] for r in rows if r.kind != "paper" for v in r.values.get(subset, [])]
            for column in ([c.mean for c in means if c is not None], bounds, seeds):
                digits = max(digits, digits_keeping_order(column, styles[metric].digits))
        out[metric] = Style(digits, styles[metric].drop_zero)
    return out


def _row_json(row: Row) -> dict:
    if row.kind == "paper":
        return {"kind": "paper", "label": row.label, "model_card": row.model_card,
                "method": row.method, "params": row.paper[0].params,
                "copied": row.paper[0].copied, "source": row.paper[0].source,
                "external": row.paper[0].external,
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
            "runs": [{"seed": run.seed, "run_dir": str(run.directory),
                      # the untrained model comes from no checkpoint and no selection
                      "checkpoint": None if row.kind == UNTRAINED else run.checkpoint,
                      "selection": None if row.kind == UNTRAINED else run.selection,
                      "scores_files": {s: str(path) for s, path in files[i].items()},
                      "scored": {s: row.records[str(path)] for s, path in files[i].items()},
                      "scores": {s: {m: clean(v) for m, v in row.values[s][i].items()}
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
