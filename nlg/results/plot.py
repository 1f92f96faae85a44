"""`nlg plot WORK_DIR`: training and validation loss curves from a run's metrics log.

Reads `WORK_DIR/metrics.jsonl`, the JSON-lines log `nlg train` writes: records with `loss`
(training loss at `step`) and records with `valid_loss` (validation at `step`). Writes a PNG
(default `WORK_DIR/loss.png`). matplotlib is an optional extra: `pip install 'nlg[plot]'`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nlg.cli import spellings
from nlg.files import InputError, atomic_write, check_outputs, read_jsonl
from nlg.results.tables import UNTRAINED, Row, card_name
from nlg.training.log import METRICS_FILE


@dataclass
class Curves:
    train_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    valid_steps: list[int] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)


def _number(value: object, integer: bool = False) -> bool:
    """A finite JSON number (an integer when `integer`); not a string, a bool, NaN or inf."""
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        return False
    return math.isfinite(value)


def read_curves(path: str | os.PathLike) -> Curves:
    """Training and validation losses by step. A record without `step`, a `step` that is not an
    integer, or a `loss` / `valid_loss` that is not a finite number is an error naming the line
    and key (`nlg train` writes only finite numbers: anything else was edited or damaged)."""
    curves = Curves()
    for line, record in read_jsonl(path):
        if not isinstance(record, dict) or "step" not in record:
            raise InputError(f"{path}:{line}: metrics record without a 'step'")
        if not _number(record["step"], integer=True):
            raise InputError(f"{path}:{line}: 'step' is {record['step']!r}, not an integer")
        for key, steps, losses in (("loss", curves.train_steps, curves.train_loss),
                                   ("valid_loss", curves.valid_steps, curves.valid_loss)):
            if key not in record:
                continue
            if not _number(record[key]):
                raise InputError(f"{path}:{line}: {key!r} is {record[key]!r}, not a finite number")
            steps.append(record["step"])
            losses.append(float(record[key]))
    if not curves.train_loss and not curves.valid_loss:
        raise InputError(f"{path}: no 'loss' or 'valid_loss' records to plot")
    return curves


FEW_POINTS = 30  # up to this many points of a curve: a marker and its value on each


def plot_curves(curves: Curves, output: str | os.PathLike, title: str = "") -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never needs a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("nlg plot needs matplotlib: pip install 'nlg[plot]' (or pip install matplotlib)") from None
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    few = FEW_POINTS
    if curves.train_loss:
        axes.plot(curves.train_steps, curves.train_loss, label="train loss", linewidth=1.2,
                  marker="o" if len(curves.train_loss) <= few else None, markersize=4, zorder=2)
    if curves.valid_loss:
        axes.plot(curves.valid_steps, curves.valid_loss, "s--", label="valid loss", linewidth=1.5,
                  markersize=7, color="C3", zorder=3)
    train_at, valid_at = dict(zip(curves.train_steps, curves.train_loss, strict=True)), dict(
        zip(curves.valid_steps, curves.valid_loss, strict=True))
    for steps, losses, colour, other in ((curves.train_steps, curves.train_loss, "C0", valid_at),
                                         (curves.valid_steps, curves.valid_loss, "C3", train_at)):
        if 0 < len(losses) <= few:  # a short run: each value written beside its point,
            for step, loss in zip(steps, losses, strict=True):  # away from the other curve's
                below = step in other and other[step] > loss
                axes.annotate(f"{loss:.4g}", (step, loss), textcoords="offset points",
                              xytext=(5, -13 if below else 5), fontsize="small", color=colour)
    losses = curves.train_loss + curves.valid_loss
    low, high = min(losses), max(losses)
    margin = max((high - low) * 0.12, abs(high) * 0.01, 0.01)  # a flat or short curve gets room
    axes.set_ylim(low - margin, high + margin)
    steps = curves.train_steps + curves.valid_steps
    if min(steps) == max(steps):
        axes.set_xlim(min(steps) - 1, max(steps) + 1)
    axes.ticklabel_format(axis="y", useOffset=False, style="plain")  # values, not "+3.2" offsets
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats / completion token)")
    axes.set_title(title or "training and validation loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    output = Path(output)
    with atomic_write(output, "wb") as handle:
        figure.savefig(handle, format="png")
    plt.close(figure)
    return output


def _paper_params(text: str) -> float | None:
    """"0.37M" -> 370000.0; None where the paper prints no size."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([MK]?)\s*", text or "")
    if not match:
        return None
    return float(match[1]) * {"M": 1e6, "K": 1e3, "": 1}[match[2]]


def plot_points(rows: list[Row], metric: str, subset: str
                ) -> tuple[list[tuple[Row, float, float, float | None]], list[float], list[str]]:
    """What one metric's panel draws: (row, trainable parameters, value, error bar or None)
    per row with a size and a value, the untrained rows' values as levels (a line, not a
    point: the untrained model trains no parameter, so it has no place on the x axis), and
    the names of the rows left out for want of a size or a value."""
    points, levels, left_out = [], [], []
    for row in rows:
        if row.kind == "paper":
            result = next((r for r in row.paper if r.subset == subset), None)
            x = _paper_params(row.paper[0].params)
            y = None if result is None else result.scores.get(metric)
            error = None
        else:
            cell = row.cells.get(subset, {}).get(metric)
            x, y = row.runs[0].params, None if cell is None else cell.mean
            error = None if cell is None or cell.interval is None else cell.interval[1] - cell.mean
        if row.kind == UNTRAINED:
            if y is not None:
                levels.append(y)
        elif not x or y is None:
            left_out.append(f"{card_name(row.model_card)} {row.label}")
        else:
            points.append((row, x, y, error))
    return points, levels, left_out


CARD_MARKERS = {"gpt2.md": "o", "gpt2.lg": "s"}  # the paper's cards; any other card: OTHER_MARKERS
OTHER_MARKERS = "^vD<>Pp*"


def plot_rows(rows: list[Row], metrics: tuple[str, ...], subsets: list[str]) -> tuple[bytes, list[str]]:
    """Each metric against trainable parameters (log axis), on subset `all` (else the first
    shown). One colour per method (ours and the paper's alike), one marker per model card
    (GPT-2 M a circle, GPT-2 L a square, a card of ours such as gpt2.tiny a triangle); our rows
    filled, at the mean with its 95 % interval as error bars, the paper's hollow. The untrained
    model has no trained parameters: a dotted horizontal line at its mean, not a point. A
    legend tells the methods, cards and kinds apart. Returns the PNG and the rows left out (no
    parameter count: a run whose train_config.json has none, a paper row without a size)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    subset = "all" if "all" in subsets else subsets[0]
    methods = [m for m in dict.fromkeys(r.method for r in rows) if m != UNTRAINED]
    colours = {method: f"C{index % 10}" for index, method in enumerate(methods)}
    cards = list(dict.fromkeys(r.model_card for r in rows))
    others = iter(OTHER_MARKERS)
    markers = {card: CARD_MARKERS.get(card) or next(others, "o") for card in cards}
    labels = {r.method: r.label.split(" ")[0].rstrip("*") for r in rows if r.kind == "paper"}
    labels.update({r.method: r.label.split(" ")[0] for r in rows if r.kind == "run"})
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    left_out, untrained_drawn = [], False
    for axis, metric in zip(axes[0], metrics, strict=True):
        points, levels, missing = plot_points(rows, metric, subset)
        if metric == metrics[0]:
            left_out = missing
        for y in levels:
            axis.axhline(y, color="0.45", linestyle=":", linewidth=1.2)
            untrained_drawn = True
        for row, x, y, error in points:
            axis.errorbar([x], [y], yerr=None if error is None else [error], capsize=3,
                          marker=markers[row.model_card], markersize=7, linestyle="none",
                          color=colours[row.method], markeredgewidth=1.4,
                          markerfacecolor="none" if row.kind == "paper" else colours[row.method])
        axis.set_xscale("log")
        axis.set_xlabel("trainable parameters")
        axis.set_title(metric if len(subsets) == 1 else f"{metric} ({subset})")
        axis.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=colours[m], marker="s", linestyle="none", markersize=8,
                      label=labels.get(m, m)) for m in methods]
    handles += [Line2D([], [], color="black", marker=markers[c], linestyle="none", markersize=7,
                       markerfacecolor="none", label=card_name(c)) for c in cards]
    handles += [Line2D([], [], color="black", marker="o", linestyle="none", label="ours (95 % interval)"),
                Line2D([], [], color="black", marker="o", markerfacecolor="none", linestyle="none",
                       label="paper")]
    if untrained_drawn:
        handles.append(Line2D([], [], color="0.45", linestyle=":", label="untrained (no trained parameters)"))
    columns = min(len(handles), max(3, 2 * len(metrics)))
    figure.legend(handles=handles, loc="lower center", ncol=columns, fontsize="small",
                  bbox_to_anchor=(0.5, 0))
    legend_rows = -(-len(handles) // columns)
    figure.tight_layout(rect=(0, 0.05 + 0.055 * legend_rows, 1, 1))
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120)
    plt.close(figure)
    return png.getvalue(), left_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nlg plot", description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path, help="a training run's work_dir (holds metrics.jsonl)")
    parser.add_argument(*spellings("output"), "-o", dest="output", type=Path, default=None,
                        help="PNG to write (default WORK_DIR/loss.png)")
    args = parser.parse_args(argv)
    metrics = args.work_dir / METRICS_FILE
    output = args.output or args.work_dir / "loss.png"
    check_outputs(inputs={"WORK_DIR": metrics}, outputs={"--output": output})
    if not metrics.is_file():
        raise InputError(f"{metrics}: no metrics log (is {args.work_dir} an `nlg train` work_dir?)")
    curves = read_curves(metrics)
    output = plot_curves(curves, output, title=str(args.work_dir))
    print(f"wrote {output} ({len(curves.train_loss)} training, {len(curves.valid_loss)} validation points)")
    return 0


if __name__ == "__main__":
    import sys

    from nlg.cli import run_main

    sys.exit(run_main(main))
