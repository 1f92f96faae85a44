"""Checkpoint selection on validation, never on test: `nlg select`.

    nlg select RUN/lora --list                                    verified candidates, one a line
    nlg select RUN/lora --criterion last --out RUN/selection.json
    nlg select RUN/lora --criterion valid_loss --out RUN/selection.json
    nlg select RUN/lora --criterion valid_metric --metric BLEU \\
        --scores 200=RUN/select/checkpoint-200/scores.json 400=... --out RUN/selection.json

The candidates are the training run's checkpoints (`nlg train` keeps one every --save_interval
steps and one at the end), each verified against its manifest first: one that fails stops
the selection with one line naming the file. The criteria:

    last          the newest checkpoint, no values
    valid_loss    the lowest validation loss (NLL per completion token) that `nlg train` logged in
                  RUN/lora/metrics.jsonl at the candidate's step; every candidate needs one
                  (validate at every checkpoint: --eval_interval a divisor of --save_interval)
    valid_metric  the best value of METRIC in each candidate's `nlg score --json` file, made by
                  beam-searching the validation split with that checkpoint (the pipeline script
                  does that); highest wins, lowest for TER

Ties go to the earliest step (the same quality from less training). Nothing here reads a test
file: the only inputs are the checkpoints, metrics.jsonl and the given scores files.

selection.json (atomic):
    {"criterion": "valid_loss", "metric": null, "chosen_step": 400,
     "checkpoint": "RUN/lora/checkpoint-400",
     "candidates": [{"step": 200, "value": 3.21}, {"step": 400, "value": 3.02}]}
(for `last`, candidates carry "value": null).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from nlg.files import InputError, atomic_write, check_outputs, read_jsonl, read_text

CRITERIA = ("last", "valid_loss", "valid_metric")
LOWER_IS_BETTER = frozenset({"TER"})  # as nlg.results; every other metric: higher is better
METRICS_FILE = "metrics.jsonl"  # nlg.training.log.METRICS_FILE, without importing torch


@dataclass(frozen=True)
class Candidate:
    step: int
    value: float | None


@dataclass(frozen=True)
class Selection:
    """The chosen checkpoint, the criterion and every candidate's value (selection.json)."""

    criterion: str
    metric: str | None
    chosen_step: int
    checkpoint: str
    candidates: list[Candidate]

    def to_json(self) -> dict:
        return asdict(self)


def chosen_checkpoint(path: Path) -> Path:
    """The checkpoint a selection.json chose (its "checkpoint"); InputError naming the file when it
    cannot be read or names none, or names one that is gone."""
    from nlg.files import read_json

    data = read_json(path)
    checkpoint = data.get("checkpoint") if isinstance(data, dict) else None
    if not isinstance(checkpoint, str) or not checkpoint:
        raise InputError(f"{path}: no \"checkpoint\" (not written by nlg select?)")
    if not Path(checkpoint).is_dir():
        raise InputError(f"{path} names {checkpoint}, which is gone")
    return Path(checkpoint)


def candidates(train_dir: Path, verify: str = "all") -> list[tuple[int, Path]]:
    """The training run's checkpoints by step, verified (files match their manifest): every one,
    or with verify="last" only the newest (the one `last` takes; full fine-tuning checkpoints are
    whole models, not worth reading when unused). One that fails verification raises InputError
    naming the file."""
    from nlg.training.checkpoints import list_checkpoints, verify_checkpoint

    found = list_checkpoints(train_dir)
    if not found:
        raise InputError(f"{train_dir}: no checkpoint to select from (has `nlg train` run there?)")
    for _, path in found if verify == "all" else found[-1:]:
        try:
            verify_checkpoint(path)
        except InputError as error:
            raise InputError(f"candidate checkpoint {path} fails verification: {error}") from None
    return found


def valid_losses(metrics_file: Path) -> dict[int, float]:
    """Step -> validation loss from a metrics.jsonl (`{"step", "epoch", "valid_loss", ...}`
    records; the last one of a step wins, as after a resumed run)."""
    if not metrics_file.is_file():
        raise InputError(f"{metrics_file}: missing: no validation losses to select by (VALID_SPLIT empty?)")
    losses = {}
    for number, record in read_jsonl(metrics_file):
        if not isinstance(record, dict) or "valid_loss" not in record:
            continue
        step, loss = record.get("step"), record["valid_loss"]
        if not isinstance(step, int) or not _finite(loss):
            raise InputError(f"{metrics_file}:{number}: a validation record needs an integer step and a "
                             f"finite valid_loss, got step {step!r}, valid_loss {loss!r}")
        losses[step] = float(loss)
    return losses


def metric_value(scores_file: Path, metric: str) -> float:
    """METRIC from an `nlg score --json` file; it must be there and a finite number."""
    try:
        scores = json.loads(read_text(scores_file))
    except json.JSONDecodeError as error:
        raise InputError(f"{scores_file}: not valid JSON ({error.msg})") from None
    if not isinstance(scores, dict) or metric not in scores:
        names = ", ".join(scores) if isinstance(scores, dict) else "none"
        raise InputError(f"{scores_file}: no {metric} score (it has: {names})")
    if not _finite(scores[metric]):
        raise InputError(f"{scores_file}: {metric} is {scores[metric]!r}, not a finite number")
    return float(scores[metric])


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def best_step(values: Mapping[int, float], lower_is_better: bool) -> int:
    """argmin (or argmax) over steps; ties go to the earliest step."""
    sign = 1.0 if lower_is_better else -1.0
    return min(values, key=lambda step: (sign * values[step], step))


def select(train_dir: Path, criterion: str, metric: str | None = None,
           scores: Mapping[int, Path] | None = None) -> Selection:
    """Choose among the verified checkpoints of `train_dir` by `criterion` (module docstring)."""
    found = candidates(train_dir, verify="last" if criterion == "last" else "all")
    steps = [step for step, _ in found]
    paths = dict(found)
    if criterion == "last":
        values: dict[int, float] = {}
        chosen = steps[-1]
    elif criterion == "valid_loss":
        losses = valid_losses(train_dir / METRICS_FILE)
        missing = [step for step in steps if step not in losses]
        if missing:
            raise InputError(f"{train_dir / METRICS_FILE}: no valid_loss at step(s) "
                             f"{', '.join(map(str, missing))} of checkpoint(s) there; validate at every "
                             "checkpoint (EVAL_INTERVAL a divisor of SAVE_INTERVAL)")
        values = {step: losses[step] for step in steps}
        chosen = best_step(values, lower_is_better=True)
    elif criterion == "valid_metric":
        if not metric:
            raise InputError("--criterion valid_metric needs --metric (e.g. BLEU)")
        scores = dict(scores or {})
        missing = [step for step in steps if step not in scores]
        extra = [step for step in scores if step not in paths]
        if missing or extra:
            raise InputError(f"--scores must give one file per candidate checkpoint of {train_dir} (steps "
                             f"{', '.join(map(str, steps))}); missing: {', '.join(map(str, missing)) or 'none'}, "
                             f"no such checkpoint: {', '.join(map(str, extra)) or 'none'}")
        values = {step: metric_value(scores[step], metric) for step in steps}
        chosen = best_step(values, lower_is_better=metric in LOWER_IS_BETTER)
    else:
        raise InputError(f"unknown criterion {criterion!r} (one of: {', '.join(CRITERIA)})")
    return Selection(criterion=criterion, metric=metric if criterion == "valid_metric" else None,
                     chosen_step=chosen, checkpoint=str(paths[chosen]),
                     candidates=[Candidate(step, values.get(step)) for step in steps])


def parse_scores(values: list[str]) -> dict[int, Path]:
    """STEP=FILE pairs of --scores."""
    scores = {}
    for value in values:
        step, sep, path = value.partition("=")
        if not sep or not step.isdigit() or not path:
            raise InputError(f"--scores {value}: expected STEP=FILE (e.g. 200=select/checkpoint-200/scores.json)")
        if int(step) in scores:
            raise InputError(f"--scores: step {int(step)} given twice")
        scores[int(step)] = Path(path)
    return scores


def check_select_outputs(train_dir: Path, scores: Mapping[int, Path], out: Path) -> None:
    """Refuse, before any work, an --out that is one of select's inputs: the training log
    (metrics.jsonl), any file of a candidate checkpoint, or a given scores file, as `nlg beam`
    does (nlg.files.check_outputs); and a new file inside a candidate checkpoint folder, which
    its manifest would no longer describe."""
    from nlg.training.checkpoints import list_checkpoints

    found = list_checkpoints(train_dir)
    check_outputs({"TRAIN_DIR's metrics log": train_dir / METRICS_FILE,
                   **{f"candidate checkpoint {path}'s file": sorted(p for p in path.rglob("*") if p.is_file())
                      for _, path in found},
                   "--scores": list(scores.values())},
                  {"--out": out})
    for _, path in found:
        if os.path.realpath(out).startswith(os.path.realpath(path).rstrip(os.sep) + os.sep):
            raise InputError(f"--out {out}: inside the candidate checkpoint {path}, whose manifest "
                             "lists its files; write the selection elsewhere (e.g. beside the run)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nlg select",
        description="Choose the checkpoint of a training run to decode on test, by validation only: the "
        "last one, the lowest validation loss in metrics.jsonl, or the best validation score of each "
        "candidate's beam search. Candidates are verified first; ties go to the earliest step.")
    parser.add_argument("train_dir", type=Path, help="the training run's --work_dir (checkpoint-*/, metrics.jsonl)")
    parser.add_argument("--list", action="store_true", help="print the verified candidate checkpoints, one a line")
    parser.add_argument("--criterion", choices=CRITERIA)
    parser.add_argument("--metric", help="valid_metric: the score to compare (e.g. BLEU; TER: lowest wins)")
    parser.add_argument("--scores", nargs="+", default=[], metavar="STEP=FILE",
                        help="valid_metric: each candidate's `nlg score --json` file on the validation split")
    parser.add_argument("--out", type=Path, help="selection.json to write")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(str(path) for _, path in candidates(args.train_dir)))
        return 0
    if args.criterion is None or args.out is None:
        parser.error("--criterion and --out are required (or --list)")
    scores = parse_scores(args.scores)
    check_select_outputs(args.train_dir, scores, args.out)
    selection = select(args.train_dir, args.criterion, args.metric, scores)
    with atomic_write(args.out) as handle:
        json.dump(selection.to_json(), handle, indent=1)
        handle.write("\n")
    from nlg.results.stats import digits_keeping_order

    shown = [c.value for c in selection.candidates if c.value is not None]
    digits = digits_keeping_order(shown, 4, shown=lambda value, digits: f"{value:.{digits}g}")
    values = ", ".join(f"{c.step}: {c.value:.{digits}g}" for c in selection.candidates if c.value is not None)
    print(f"selected {selection.checkpoint} ({args.criterion}{' ' + args.metric if selection.metric else ''}"
          f"{'; ' + values if values else ''})")
    return 0


if __name__ == "__main__":
    import sys

    from nlg.cli import run_main

    sys.exit(run_main(main))
