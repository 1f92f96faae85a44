"""A sweep's table (`reproduce.sh DATASET --sweep NAME=V1,V2,...`, nlg.pipeline.sweep): one row per
point, its chosen point picked on validation only.

Per point (its seeds' run directories, each with run.json, selection.json and the training log):
    trainable parameters    run.json's params
    validation loss         the training log's (METHOD/metrics.jsonl) valid_loss at the selected
                            checkpoint's step, mean ± std over the seeds (n/a without validation)
    validation metric       with SELECT=valid_metric: selection.json's value of SELECT_METRIC at
                            the selected checkpoint, mean ± std over the seeds
    test metrics            mean ± std over the seeds, on the paper's scale (nlg.results.tables:
                            the same rows, statistics and styles as `nlg results --runs`)

The chosen point (`choose`) is the best on validation: the lowest mean validation loss, or with
SELECT=valid_metric the best mean validation metric (TER the lowest); ties go to the earlier point.
It reads selection.json and the training logs only: never a test file, a prediction or a score,
so no test result can choose it. Without a validation value for every point (the E2E demo trains
on its valid split and validates on none) no point is chosen, and the table says why. The chosen
point's test scores are the sweep's result.

Where a method records a paper's sweep (its `paper_sweeps`, keyed by dataset and the swept
settings), the paper's rows are shown beside ours, or, where the method says they are not
recorded, a line saying so. Writes results.md, results.json (strict JSON) and, with matplotlib,
results.png: each metric against the swept value (a log axis for powers of two), the mean with
its 95 % interval over the seeds as error bars.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nlg import datasets, methods
from nlg.files import InputError, atomic_files, read_json
from nlg.results.scores import ABBREVIATION, LOWER_IS_BETTER, PAPER_ORDER, read_run
from nlg.results.stats import CONFIDENCE, Aggregate, aggregate, digits_keeping_order
from nlg.results.tables import Row, format_params, keep_order, paper_styles, run_rows

VALID_LOSS = "valid_loss"


@dataclass
class Validation:
    """One run's value on validation at its selected checkpoint."""

    step: int
    loss: float | None  # the training log's valid_loss at the step
    metric: float | None  # selection.json's value of the chosen candidate (valid_metric)


def validation(run_dir: Path) -> Validation:
    """The validation values of one run directory: selection.json and the training log beside
    its chosen checkpoint. Reads no test file."""
    from nlg.select import METRICS_FILE, valid_losses

    selection = read_json(run_dir / "selection.json")
    step, checkpoint = selection.get("chosen_step"), selection.get("checkpoint")
    if not isinstance(step, int) or not isinstance(checkpoint, str):
        raise InputError(f"{run_dir / 'selection.json'}: no chosen_step and checkpoint (not written by nlg select?)")
    # the training log of the chosen checkpoint: METHOD/ of this run (or of the point it shares)
    log = Path(checkpoint).parent / METRICS_FILE
    if not log.is_file():
        log = run_dir / Path(checkpoint).parent.name / METRICS_FILE
    loss = valid_losses(log).get(step) if log.is_file() else None
    metric = None
    if selection.get("criterion") == "valid_metric":
        metric = next((c.get("value") for c in selection.get("candidates", []) if c.get("step") == step), None)
    return Validation(step, loss, metric)


@dataclass
class Choice:
    index: int | None  # the chosen point, None when validation cannot choose
    criterion: str  # "validation loss" or "validation METRIC"
    values: list[Aggregate]  # per point, over its seeds
    reason: str  # why none was chosen ("" when one was)


def choose(points: list[list[Path]], select: str, metric: str) -> Choice:
    """The point best on validation (module docstring); each point is its seeds' run directories."""
    by_metric = select == "valid_metric"
    criterion = f"validation {metric}" if by_metric else "validation loss"
    values = []
    for directories in points:
        found = [validation(d) for d in directories]
        values.append(aggregate([v.metric if by_metric else v.loss for v in found]))
    missing = [i for i, value in enumerate(values) if value.mean is None]
    if missing:
        return Choice(None, criterion, values, f"no {criterion} at the selected checkpoint of every point "
                      f"(none in {points[missing[0]][0]}: no VALID_SPLIT?), so no point is chosen: "
                      "the test split is never used to choose")
    lower = not by_metric or metric in LOWER_IS_BETTER
    best = min(range(len(values)), key=lambda i: values[i].mean if lower else -values[i].mean)
    return Choice(best, criterion, values, "")


def paper_sweep(dataset: str, method: str, names: list[str]) -> dict | None:
    """The method's record of a paper's sweep of these settings on this dataset (its
    `paper_sweeps`: {"source", "card", "rows": {VALUE: {column: value}} or None, "note"})."""
    return getattr(methods.get(method), "paper_sweeps", {}).get((dataset, tuple(names)))


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _cell(agg: Aggregate | None, digits: int) -> str:
    if agg is None or agg.mean is None:
        return "n/a"
    return _fmt(agg.mean, digits) + ("" if agg.std is None else f"±{agg.std:.{digits}f}")


def sweep_table(dataset: str, names: list[str], points: list[tuple[dict[str, str], list[Path]]],
                select: str, select_metric: str, method: str, card: str) -> tuple[str, dict, list]:
    """The Markdown, the JSON object, and (values, row, validation) per point for the plot."""
    recipe = datasets.get(dataset).recipe
    choice = choose([dirs for _, dirs in points], select, select_metric)
    rows: list[Row] = []
    for values, directories in points:
        ours = [row for row in run_rows([read_run(d, dataset) for d in directories], recipe, dataset)
                if row.kind == "run"]
        if len(ours) != 1:
            raise InputError(f"sweep point {values}: its seeds' run.json differ in more than SEED "
                             f"({', '.join(map(str, directories))})")
        rows.append(ours[0])
    metrics = recipe.scoring.metrics
    subsets = sorted({s for row in rows for s in row.cells}, key=PAPER_ORDER.index)
    styles = keep_order(paper_styles(recipe), rows, metrics, subsets)
    columns = [(m, s) for m in metrics for s in subsets]
    heads = [m if len(subsets) == 1 else f"{m} {ABBREVIATION[s]}" for m, s in columns]
    valid_digits = digits_keeping_order([v.mean for v in choice.values], 3)
    by_metric = select == "valid_metric"
    head = [*names, "params", "seeds", "valid loss" if not by_metric else f"valid {select_metric}", *heads, "chosen"]
    lines = ["| " + " | ".join(head) + " |", "|" + " ---: |" * (len(head) - 1) + " --- |"]
    for index, ((values, _), row) in enumerate(zip(points, rows, strict=True)):
        cells = [values[name] for name in names]
        cells += [format_params(row.runs[0].params) or "n/a", str(len(row.seeds)),
                  _cell(choice.values[index], valid_digits)]
        cells += [styles[m](row.cells[s][m].mean, row.cells[s][m].std) if s in row.cells and
                  row.cells[s][m].mean is not None else "n/a" for m, s in columns]
        cells.append("**chosen**" if index == choice.index else "")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"One row per point: the mean over its seeds ± their sample standard deviation (none for one seed); "
             f"{choice.criterion} at each seed's selected checkpoint (SELECT={select}). The chosen point is the best "
             f"{choice.criterion}, chosen without reading the test split; its test scores are the sweep's result."]
    if choice.index is None:
        notes.append(f"No point chosen: {choice.reason}.")
    else:
        chosen = points[choice.index][0]
        notes.append("Chosen: " + ", ".join(f"{k}={v}" for k, v in chosen.items()) + ".")
    notes += [f"{metric}: lower is better." for metric in metrics if metric in LOWER_IS_BETTER]
    paper = paper_sweep(dataset, method, names)
    text = "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"
    if paper is not None:
        text += "\n" + paper_markdown(paper, names, card) + "\n"
    report = {
        "dataset": dataset, "method": method, "model_card": card, "swept": names, "select": select,
        "criterion": choice.criterion, "metrics": list(metrics), "subsets": subsets, "confidence": CONFIDENCE,
        "chosen": None if choice.index is None else {"point": choice.index, "values": points[choice.index][0],
                                                     "validation": choice.values[choice.index].as_json()},
        "not_chosen_because": choice.reason or None,
        "points": [{"values": values, "params": row.runs[0].params, "seeds": row.seeds,
                    "run_dirs": [str(d) for d in dirs], "validation": choice.values[i].as_json(),
                    "scores": {s: {m: cell.as_json() for m, cell in row.cells[s].items()} for s in row.cells}}
                   for i, ((values, dirs), row) in enumerate(zip(points, rows, strict=True))],
        "paper": paper,
    }
    return text, report, [(values, row, choice.values[i]) for i, ((values, _), row) in
                          enumerate(zip(points, rows, strict=True))]


def paper_markdown(paper: Mapping, names: list[str], card: str) -> str:
    """The paper's rows of this sweep, or the line saying they are not recorded."""
    where = f"{paper['source']}, {paper['card']}"
    if not paper.get("rows"):
        return f"The paper's rows ({where}) are not recorded here: {paper['note']}"
    columns = list(next(iter(paper["rows"].values())))
    lines = [f"The paper's rows ({where}; ours above are {card}):", "",
             "| " + " | ".join([*names, *columns]) + " |", "|" + " ---: |" * (len(names) + len(columns))]
    lines += ["| " + " | ".join([value, *(str(row.get(c, "n/a")) for c in columns)]) + " |"
              for value, row in paper["rows"].items()]
    return "\n".join(lines)


def _log_axis(values: list[float]) -> bool:
    """Powers of two (ranks, widths) or values spread over a decade: a log axis."""
    if not values or min(values) <= 0:
        return False
    powers = all(float(v).is_integer() and int(v) & (int(v) - 1) == 0 for v in values)
    return (powers and len(values) > 2) or max(values) / min(values) >= 10


def plot_sweep(names: list[str], plotted: list, metrics: tuple[str, ...], subsets: list[str],
               criterion: str) -> bytes:
    """Each metric (and the validation value, where there is one) against the first swept setting
    with more than one value; one line per value of the other settings; the mean with its 95 %
    interval over the seeds as error bars. Three panels a row."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subset = "all" if "all" in subsets else subsets[0]
    first = next((n for n in names if len({values[n] for values, _, _ in plotted}) > 1), names[0])
    rest = [n for n in names if n != first]
    has_validation = any(valid.mean is not None for _, _, valid in plotted)
    panels = [criterion] * has_validation + list(metrics)
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    groups: dict[tuple, list] = {}
    for values, row, valid in plotted:
        groups.setdefault(tuple(values[n] for n in rest), []).append((float(values[first]), row, valid))
    xs = [float(values[first]) for values, _, _ in plotted]
    for axis, panel in zip(axes.flat, panels, strict=False):
        for key, members in groups.items():
            members.sort(key=lambda m: m[0])
            cells = [valid if panel == criterion else row.cells.get(subset, {}).get(panel) for _, row, valid in members]
            shown = [(x, c) for (x, _, _), c in zip(members, cells, strict=True) if c is not None and c.mean is not None]
            if not shown:
                continue
            errors = [0.0 if c.interval is None else c.interval[1] - c.mean for _, c in shown]
            label = ", ".join(f"{n}={v}" for n, v in zip(rest, key, strict=True)) or None
            axis.errorbar([x for x, _ in shown], [c.mean for _, c in shown], yerr=errors, marker="o", capsize=3,
                          label=label)
        if _log_axis(xs):
            axis.set_xscale("log", base=2)
        axis.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))])  # the swept values
        axis.set_xlabel(first)
        axis.set_title(panel if panel == criterion or len(subsets) == 1 else f"{panel} ({subset})")
        axis.grid(alpha=0.3, which="both")
        if rest and panel == panels[0]:
            axis.legend(fontsize="small")
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.suptitle("mean over seeds, 95 % interval", fontsize="small")
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=110)
    plt.close(figure)
    return png.getvalue()


def write_sweep(dataset: str, names: list[str], points: list[tuple[dict[str, str], list[Path]]], select: str,
                select_metric: str, method: str, card: str, md: Path, json_path: Path, png: Path) -> None:
    """results.md, results.json and (with matplotlib) results.png, all or none."""
    text, report, plotted = sweep_table(dataset, names, points, select, select_metric, method, card)
    image = None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        image = plot_sweep(names, plotted, tuple(report["metrics"]), report["subsets"], report["criterion"])
    with atomic_files() as open_file:
        open_file(md).write(text)
        open_file(json_path).write(json.dumps(report, indent=2, allow_nan=False) + "\n")
        if image is not None:
            open_file(png, "wb").write(image)
