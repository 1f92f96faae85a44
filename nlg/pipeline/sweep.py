"""Sweeps: `reproduce.sh DATASET --sweep NAME=V1,V2,... [--sweep NAME2=...] [--seeds N]` runs the
chain once per point and seed (several --sweep: every combination, a grid, the first --sweep
varying slowest).

    WORK_DIR/                       data and the demo's pre-training: done once, for every point
    WORK_DIR/sweep/POINT/seed-SEED/ one run directory per point and seed (run_chain)
    WORK_DIR/sweep/results.md       the sweep's table (nlg.results.sweep), results.json, results.png

POINT is each swept setting lower-cased, a dash, its value, `_` between settings:
`lora_dim-4`, `lora_dim-4_lr-2e-4` (a value is a checked number: digits, `.`, `e`, `+`, `-`,
so the name is safe on every file system). Without --seeds each point runs SEED alone.

What can be swept: every numeric setting (the pipeline's NUMBERS and the method's own numeric
flags upper-cased) that a run directory's stage records (nlg.pipeline.stages): the train stage's
(LR, WEIGHT_DECAY, LORA_DIM, ...), select's and beam's (BEAM, LENGTH_PENALTY, ...). A setting only
the shared stages record (PRETRAIN_LR: the demo's pre-training is one for all points), SEED (use
--seeds) or one no stage records (BEAM_BATCH: it shapes no result) is refused, as is a name the
pipeline does not know or a value that is not one (the pipeline's own number checks), each one
line before any work, exit 2. Every point is resolved as a run of its own (nlg.pipeline.settings:
the method's checks see the point's values), WORK_DIR shared.

Shared work: data and the base model (the demo's pre-training with the unswept settings) run once,
under a lock (WORK_DIR/.sweep-lock), so points started side by side wait for them. A point whose
train (and select) record equals a finished point's of the same seed, as decoding-only points'
do, links its METHOD/ to that point's (a relative symlink) and takes its selection.json: it
beam-searches the same checkpoint. The demo's untrained baseline, where the untrained stage's own
settings (MODEL_CARD, the beam settings, TEST_LIMIT, the test split) are equal, is copied from the
point that made it. Every point's stages are checked before any work like any run directory's:
one made with other settings is refused, naming each difference (--from STAGE redoes it in every
point). Finished points are skipped, an interrupted one resumes.

Scale-out: `--points` prints one command per point and seed (index K, point-major); `--point K`
runs that one alone (the shared stages first where not done), e.g. as a SLURM array task or one
per GPU with CUDA_VISIBLE_DEVICES; `--gather` makes the table once all have finished, naming each
point and seed that has not (and the command that runs it), never leaving one out. A run without
--point and --gather runs every point, then makes the table.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shlex
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlg.pipeline.settings import NUMBERS, Refusal, Settings, check_number, method_numbers, resolve
from nlg.pipeline.stages import (
    BEAM_NAMES,
    BY_NAME,
    STAGES,
    Records,
    check_run,
    marker,
    read_record,
    record_text,
)

SWEEP_DIR = "sweep"
NOT_SWEPT = {"SEED": "use --seeds N (or SEEDS=...) for seeds",
             "SEEDS": "use --seeds N (or SEEDS=...) for seeds"}
# What the untrained baseline is made from: the card, the beam search and the test contexts
UNTRAINED_NAMES = ("MODEL_CARD", *BEAM_NAMES, "TEST_LIMIT", "test.jsonl")


@dataclass(frozen=True)
class Axis:
    """One --sweep: a setting, its values (as given, checked) and the stage that records it."""

    name: str
    values: tuple[str, ...]
    stage: str


@dataclass(frozen=True)
class Point:
    index: int
    values: tuple[tuple[str, str], ...]  # (NAME, value) per axis
    settings: Settings

    @property
    def name(self) -> str:
        return point_name(self.values)

    def run_dir(self, seed: int) -> Path:
        return self.settings.work_dir / SWEEP_DIR / self.name / f"seed-{seed}"


def point_name(values: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    """`lora_dim-4_lr-2e-4` (module docstring)."""
    return "_".join(f"{name.lower()}-{value}" for name, value in values)


def stage_of(name: str, s: Settings) -> str | None:
    """The first run-directory stage (not shared, applying to the run) that records `name`, else
    the shared stage that does, else None."""
    shared = None
    for stage in STAGES:
        if not stage.applies(s) or name not in stage.names(s):
            continue
        if not stage.shared:
            return stage.name
        shared = shared or stage.name
    return shared


def parse_axes(specs: list[str], s: Settings) -> list[Axis]:
    """The --sweep NAME=V1,V2,... of a run with settings `s`, checked (Refusal: one line)."""
    numbers = {**NUMBERS, **method_numbers(s.method_object)}
    axes: list[Axis] = []
    for spec in specs:
        name, equals, values_text = spec.partition("=")
        if not equals or not name or not values_text:
            raise Refusal(f"--sweep {spec!r}: expected NAME=V1,V2,... (e.g. --sweep LORA_DIM=1,2,4,8,16)")
        if name in NOT_SWEPT:
            raise Refusal(f"--sweep {name}: {NOT_SWEPT[name]}")
        if name not in numbers:
            raise Refusal(f"--sweep {name}: not a numeric setting of reproduce.sh --method {s.method} "
                          f"(its own: {', '.join(sorted(method_numbers(s.method_object))) or 'none'}; "
                          "the pipeline's: LR, WEIGHT_DECAY, BEAM, LENGTH_PENALTY, ... see --help)")
        if any(axis.name == name for axis in axes):
            raise Refusal(f"--sweep {name}: given twice (one --sweep per setting, its values comma-separated)")
        stage = stage_of(name, s)
        if stage is None:
            raise Refusal(f"--sweep {name}: no stage records it (it shapes no result), so there is nothing to sweep")
        if BY_NAME[stage].shared:
            raise Refusal(f"--sweep {name}: a setting of the shared {stage} stage, done once for every point; "
                          "sweep a setting of training or decoding")
        values = values_text.split(",")
        for value in values:
            problem = "empty value" if value == "" else check_number(name, value, numbers[name])
            if problem:
                raise Refusal(f"--sweep {name}={values_text}: {problem}")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise Refusal(f"--sweep {name}={values_text}: {', '.join(repeated)} given more than once")
        axes.append(Axis(name, tuple(values), stage))
    return axes


def points(axes: list[Axis], dataset: str, environ: Mapping[str, str], demo: bool, method_flag: str,
           seed_count: str, base: Settings) -> list[Point]:
    """Every point of the grid, each resolved as a run of its own (WORK_DIR: the sweep's)."""
    found = []
    for index, combination in enumerate(itertools.product(*(axis.values for axis in axes))):
        values = tuple(zip((axis.name for axis in axes), combination, strict=True))
        point_env = {**environ, "WORK_DIR": str(base.work_dir), **dict(values)}
        try:
            settings = resolve(dataset, point_env, demo=demo, method_flag=method_flag, seed_count=seed_count)
        except Refusal as error:
            raise Refusal(f"--sweep point {point_name(values)}: {error}") from None
        found.append(Point(index, values, settings))
    return found


def seeds_of(s: Settings) -> list[int]:
    return s.seeds or [int(s["SEED"])]


def tasks(sweep_points: list[Point]) -> list[tuple[Point, int]]:
    """(point, seed) in --point order: point-major, then seeds."""
    return [(point, seed) for point in sweep_points for seed in seeds_of(point.settings)]


# ---------------------------------------------------------------------------------------------
# Sharing between points
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def shared_lock(work_dir: Path) -> Iterator[None]:
    """WORK_DIR/.sweep-lock held exclusively (points started side by side wait for the shared stages)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / ".sweep-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _marker_text(run: Path, stage: str) -> str | None:
    path = run / f".done-{stage}"
    return path.read_text() if path.is_file() else None


def share_training(point: Point, seed: int, others: list[Point], records: Records) -> Path | None:
    """Link `point`'s METHOD/ (and selection.json) to another finished point's of the same seed
    whose train (select) record equals this point's; returns that point's run directory."""
    run = point.run_dir(seed)
    s = point.settings
    if (run / ".done-train").is_file() or (run / s.method).exists() or (run / s.method).is_symlink():
        return None
    train = record_text(records.record("train", seed))
    for other in others:
        donor = other.run_dir(seed)
        if other is point or _marker_text(donor, "train") != train or (donor / s.method).is_symlink():
            continue
        run.mkdir(parents=True, exist_ok=True)
        (run / s.method).symlink_to(os.path.relpath(donor / s.method, run))
        (run / ".done-train").write_text(train)
        select = record_text(records.record("select", seed))
        if _marker_text(donor, "select") == select and (donor / "selection.json").is_file():
            shutil.copyfile(donor / "selection.json", run / "selection.json")
            (run / ".done-select").write_text(select)
        print(f"sweep: {point.name} seed {seed} shares the training of {other.name}", file=sys.stderr)
        return donor
    return None


def share_untrained(point: Point, seed: int, others: list[Point], records: Records) -> Path | None:
    """Copy the demo's untrained beam search from another point of the same seed made alike."""
    s, run = point.settings, point.run_dir(seed)
    if not s.demo or (run / ".done-untrained").is_file():
        return None
    mine = dict(records.record("untrained", seed))
    want = {name: mine.get(name) for name in UNTRAINED_NAMES}
    for other in others:
        donor = other.run_dir(seed)
        text = _marker_text(donor, "untrained")
        if other is point or text is None or not (donor / "untrained" / "predict.jsonl").is_file():
            continue
        theirs = read_record(text)
        if {name: theirs.get(name) for name in UNTRAINED_NAMES} != want:
            continue
        (run / "untrained").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(donor / "untrained" / "predict.jsonl", run / "untrained" / "predict.jsonl")
        (run / ".done-untrained").write_text(record_text(records.record("untrained", seed)))
        return donor
    return None


# ---------------------------------------------------------------------------------------------
# Running, listing, gathering
# ---------------------------------------------------------------------------------------------


def check_points(sweep_points: list[Point], until: str = "") -> None:
    """Before any work: every finished stage of every point's run directories fits its settings."""
    for point, seed in tasks(sweep_points):
        check_run(Records(point.settings), point.run_dir(seed), seed, until, shared=False)


def prepare(base: Settings) -> str:
    """The shared stages (data, the base model) with the unswept settings, once; the base model."""
    from nlg.pipeline.chain import base_model, run_data

    records = Records(base)
    with shared_lock(base.work_dir):
        run_data(base, records)
        return base_model(base, records)


def run_task(point: Point, seed: int, sweep_points: list[Point], base_model: str) -> None:
    from nlg.pipeline.chain import log, run_chain

    records = Records(point.settings)
    log(f"sweep point {point.name}, seed {seed}")
    share_training(point, seed, sweep_points, records)
    run = point.run_dir(seed)
    run.mkdir(parents=True, exist_ok=True)
    share_untrained(point, seed, sweep_points, records)
    run_chain(point.settings, run, seed, records, base_model)


def unfinished(sweep_points: list[Point]) -> list[tuple[int, Point, int, str]]:
    """(index, point, seed, why) of each task whose score stage is not finished with its settings."""
    from nlg.pipeline.stages import stage_differences

    found = []
    for index, (point, seed) in enumerate(tasks(sweep_points)):
        run = point.run_dir(seed)
        records = Records(point.settings)
        differs = stage_differences(records, "score", run, seed)
        if differs:
            found.append((index, point, seed, f"made with other settings: {differs}"))
        elif not marker(point.settings, "score", run).is_file():
            found.append((index, point, seed, "not started" if not run.is_dir() else "not finished"))
    return found


def point_command(argv: list[str], index: int) -> str:
    """The command that runs task `index` alone: this invocation's words, --point K instead of
    --points / --gather / --point."""
    words, skip = [], False
    for word in argv:
        if skip:
            skip = False
            continue
        if word in ("--points", "--gather"):
            continue
        if word == "--point":
            skip = True
            continue
        if word.startswith("--point="):
            continue
        words.append(word)
    return shlex.join(["scripts/reproduce.sh", *words, "--point", str(index)])


def gather(base: Settings, axes: list[Axis], sweep_points: list[Point], argv: list[str]) -> Path:
    """The sweep's table, once every point and seed has finished; Failed naming each that has not."""
    from nlg.pipeline.chain import Failed
    from nlg.results.sweep import write_sweep

    missing = unfinished(sweep_points)
    if missing:
        lines = [f"{point.name} seed {seed} ({point.run_dir(seed)}: {why}; run it with "
                 f"`{point_command(argv, index)}`)" for index, point, seed, why in missing]
        raise Failed(f"the sweep's table needs every point: {len(missing)} of {len(tasks(sweep_points))} "
                     f"not finished: " + "; ".join(lines))
    directory = base.work_dir / SWEEP_DIR
    write_sweep(base.dataset, [axis.name for axis in axes],
                [(dict(point.values), [point.run_dir(seed) for seed in seeds_of(point.settings)])
                 for point in sweep_points],
                base["SELECT"], base["SELECT_METRIC"], base.method, base["MODEL_CARD"],
                directory / "results.md", directory / "results.json", directory / "results.png")
    return directory / "results.md"


def sweep_removals(base: Settings, chosen: list[tuple[Point, int]], start: str) -> list[Path]:
    """What --from `start` removes in a sweep: a shared stage's outputs in WORK_DIR (with the
    unswept settings), and from `start` (or train, for a shared one) on in each chosen point's
    run directory."""
    from nlg.pipeline.stages import NAMES, removals

    found = removals(base, start, []) if BY_NAME[start].shared else []
    first = NAMES[max(NAMES.index(start), NAMES.index("train"))]
    for point, seed in chosen:
        found += removals(point.settings, first, [point.run_dir(seed)])
    return found


def run_sweep(dataset: str, environ: Mapping[str, str], args: Any, argv: list[str]) -> int:
    """`reproduce.sh DATASET --sweep ...` (module docstring); `args` as chain.parse_args gives them."""
    from nlg.pipeline.chain import log
    from nlg.pipeline.stages import remove

    base = resolve(dataset, environ, demo=args.demo, method_flag=args.method, seed_count=args.seeds)
    axes = parse_axes(args.sweep, base)
    sweep_points = points(axes, dataset, environ, args.demo, args.method, args.seeds, base)
    all_tasks = tasks(sweep_points)
    if args.points:
        for index in range(len(all_tasks)):
            print(point_command(argv, index))
        return 0
    if args.gather:
        table = gather(base, axes, sweep_points, argv)
        sys.stdout.write(table.read_text())
        return 0
    chosen = all_tasks
    if args.point != "":
        if not args.point.isdigit() or int(args.point) >= len(all_tasks):
            raise Refusal(f"--point {args.point}: not one of 0..{len(all_tasks) - 1} "
                          f"({len(sweep_points)} point(s) x {len(seeds_of(base))} seed(s); --points lists them)")
        chosen = [all_tasks[int(args.point)]]
    start = args.start
    for point, seed in chosen:
        check_run(Records(point.settings), point.run_dir(seed), seed, start, shared=False)
    if start:
        remove(sweep_removals(base, chosen, start))
    model = prepare(base)
    for point, seed in chosen:
        run_task(point, seed, sweep_points, model)
    if args.point != "":
        print(f"\nsweep: {chosen[0][0].name} seed {chosen[0][1]} done in {chosen[0][0].run_dir(chosen[0][1])}; "
              "the table: the same command with --gather instead of --point", file=sys.stderr)
        return 0
    log(f"results: the sweep over {', '.join(axis.name for axis in axes)}")
    table = gather(base, axes, sweep_points, argv)
    sys.stdout.write(table.read_text())
    print(f"\nresults: {table} (results.json, results.png beside it)", file=sys.stderr)
    return 0
