"""`nlg reproduce DATASET`: the LoRA paper's GPT-2 experiments end to end (scripts/reproduce.sh
fronts it). The usage text (nlg.pipeline.usage) documents every flag and setting.

    shared, in WORK_DIR:   data -> pretrain (--demo) | the given or downloaded base model
    per run directory:     train -> select -> beam -> untrained (--demo) -> decode -> score
    with seeds:            one table over the seeds' run directories

`run_chain(settings, run_dir, seed)` runs one run directory's stages; `reproduce` runs
the shared stages, then each seed's run directory, then the seeds' table. Each stage skips when
its marker's record fits the settings (nlg.pipeline.stages). Training and beam search run as
`python -m nlg.train` / `nlg.beam`, on NPROC > 1 processes through torchrun; every other stage is
`$NLG STAGE` (NLG, split like a shell's words). A stage that fails ends the run with its exit
status; the pipeline's own problems are one `reproduce.sh: ...` line, exit 2 for bad input
(before any work), 1 for a failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nlg.files import InputError
from nlg.pipeline import run_record, write_run_record, write_subset
from nlg.pipeline.settings import PROG, Refusal, Settings, resolve
from nlg.pipeline.stages import (
    BY_NAME,
    NAMES,
    Records,
    check_run,
    is_done,
    mark_done,
    record_text,
    removals,
    remove,
)

REPO = Path(__file__).resolve().parents[2]
_START = time.monotonic()


class Failed(Exception):
    """A failure of the pipeline itself: `reproduce.sh: MESSAGE`, exit 1."""


class StageFailed(Exception):
    """A command of a stage failed: the run ends with its exit status (it said why)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def log(message: str) -> None:
    elapsed = int(time.monotonic() - _START)
    print(f"\n== {message}  [{elapsed // 60}m{elapsed % 60:02d}s]", file=sys.stderr, flush=True)


def call(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a stage's command; StageFailed with its exit status when it fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    result = subprocess.run(command, **kwargs)
    if result.returncode != 0:
        raise StageFailed(result.returncode)
    return result


def nlg(s: Settings, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return call([*s.nlg, *args], **kwargs)


def launch(s: Settings, module: str, *args: str) -> None:
    """Run a module on NPROC processes (torchrun) or one."""
    nproc = s.number("NPROC")
    if nproc > 1:
        call(["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", module, *args])
    else:
        call([sys.executable, "-m", module, *args])


def plot(s: Settings, directory: Path) -> None:
    try:
        nlg(s, "plot", str(directory))
    except StageFailed:
        print("(no loss plot: matplotlib missing?)", file=sys.stderr)


def vocab_args(s: Settings) -> list[str]:
    return ["--vocab", s["NLG_VOCAB_DIR"]] if s["NLG_VOCAB_DIR"] else []


# ---------------------------------------------------------------------------------------------
# Files of one subset (all, seen, unseen) of a run directory
# ---------------------------------------------------------------------------------------------


def suffix(subset: str) -> str:
    return "" if subset == "all" else f"_{subset}"


def ref_path(s: Settings, run: Path, subset: str) -> Path:
    # E2E's references are one grouped file; WebNLG's and DART's a folder of reference0..5
    return run / f"{s.dataset}_ref{suffix(subset)}{'.txt' if s.dataset == 'e2e' else ''}"


def pred_path(s: Settings, run: Path, subset: str) -> Path:
    return run / f"{s.dataset}_pred{suffix(subset)}.txt"


def scores_path(run: Path, subset: str) -> Path:
    return run / f"scores{suffix(subset)}.json"


def decode_subsets(s: Settings, run: Path, formatted: Path, subsets: list[str]) -> None:
    """RUN/predict.jsonl -> each subset's reference and prediction files."""
    for subset in subsets:
        filter_args = [] if subset == "all" else ["--filter", subset]
        nlg(s, "decode", "--sample_file", str(run / "predict.jsonl"), "--input_file", str(formatted),
            *s.words("DECODE_ARGS"), *filter_args, "--output_ref_file", str(ref_path(s, run, subset)),
            "--output_pred_file", str(pred_path(s, run, subset)), *vocab_args(s))


def score_subsets(s: Settings, run: Path, subsets: list[str], quiet: bool = False) -> None:
    """Each subset's report (on stdout unless `quiet`) and scores json."""
    out = subprocess.DEVNULL if quiet else None
    for subset in subsets:
        if len(subsets) != 1 and not quiet:
            print(f"-- {subset}", flush=True)
        nlg(s, "score", str(ref_path(s, run, subset)), str(pred_path(s, run, subset)), *s.words("SCORE_ARGS"),
            "--json", str(scores_path(run, subset)), stdout=out)


def beam_args(s: Settings) -> list[str]:
    flags = ["--beam", s["BEAM"], "--length_penalty", s["LENGTH_PENALTY"], "--no_repeat_ngram_size",
             s["NO_REPEAT_NGRAM"], "--repetition_penalty", s["REPETITION_PENALTY"], "--eval_len", s["EVAL_LEN"],
             "--seq_len", s["BEAM_SEQ_LEN"], "--batch_size", s["BEAM_BATCH"]]
    for eos in s.words("EOS_IDS"):
        flags += ["--eos_token_id", eos]
    return flags


def beam_model_args(s: Settings, base: str, checkpoint: Path) -> list[str]:
    """The trained checkpoint for nlg beam (its method.json says what it is): what the method
    trained, on the base model, or a whole model (a method that needs no base)."""
    base_args = ["--init_checkpoint", base] if s.method_object.needs_base else []
    return ["--model_card", s["MODEL_CARD"], *base_args, "--checkpoint", str(checkpoint)]


# ---------------------------------------------------------------------------------------------
# Shared stages: data, and the base model (given, the demo's pre-training, or downloaded)
# ---------------------------------------------------------------------------------------------


def run_data(s: Settings, records: Records) -> None:
    if not is_done(records, "data", s.work_dir, 0):
        log(f"data: encode {s.dataset} into {s.data_dir}")
        if s.raw_dir:
            nlg(s, "data", s.dataset, "--raw-dir", s.raw_dir, "--out-dir", str(s.data_dir), *vocab_args(s))
        else:
            download(s)
        s.work_dir.mkdir(parents=True, exist_ok=True)
        mark_done(records, "data", s.work_dir, 0)
    for split in s.splits_read():
        path = s.data_dir / f"{split}.jsonl"
        if not path.is_file():
            raise Failed(f"{path} is missing (no raw {split} split in {s.raw_dir or s.data_dir / 'raw'}?)")


def download(s: Settings) -> None:
    """The paper's raw files downloaded into DATA_DIR/raw and encoded; when that fails, name the
    setting that gives the files instead (nobody gave --download)."""
    s.data_dir.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    result = subprocess.run([*s.nlg, "data", s.dataset, "--download", "--raw-dir", str(s.data_dir / "raw"),
                             "--out-dir", str(s.data_dir), *vocab_args(s)], stderr=subprocess.PIPE, text=True)
    if result.returncode == 0:
        return
    last = result.stderr.splitlines()[-1] if result.stderr.splitlines() else ""
    reason = last.split("; without network")[0] if "; without network" in last else ""
    reason = reason.removeprefix("nlg data: ")
    splits = ", ".join(sorted({s["TRAIN_SPLIT"], *s.words("VALID_SPLIT"), "test"}))
    raise Failed(f"no {s.dataset} raw files: {s.raw_env} is not set and downloading them into {s.data_dir}/raw "
                 f"failed ({reason}); set {s.raw_env} to a folder holding the raw splits this run reads "
                 f"({splits}; `nlg data {s.dataset} --help`)")


def base_model(s: Settings, records: Records) -> str:
    """The base model the method trains on: INIT_CHECKPOINT, the demo's pre-trained one, or the
    published GPT-2 in PRETRAINED_DIR (downloaded when missing)."""
    if s.init_given:
        if not Path(s.init_given).exists():
            raise Failed(f"INIT_CHECKPOINT={s.init_given} does not exist")
        return s.init_given
    if s.pretrain:
        pretrain_dir = s.work_dir / "pretrain"
        if not is_done(records, "pretrain", s.work_dir, 0):
            log(f"pretrain (demo): train a random {s['MODEL_CARD']} fully on {s['TRAIN_SPLIT']} to stand in for GPT-2")
            steps = ["--max_step", s["PRETRAIN_STEPS"]] if s.number("PRETRAIN_STEPS") > 0 else []
            # No validation: in the E2E and DART demos the valid split is the training data.
            call([sys.executable, "-m", "nlg.train", "--full_finetune", "--model_card", s["MODEL_CARD"],
                  "--train_data", str(s.data_dir / f"{s['TRAIN_SPLIT']}.jsonl"),
                  "--train_batch_size", s["BATCH"], "--lr", s["PRETRAIN_LR"], "--max_epoch", s["PRETRAIN_EPOCHS"],
                  *steps, "--warmup_step", s["WARMUP"], "--seq_len", s["SEQ_LEN"], "--random_seed",
                  s["PRETRAIN_SEED"], "--label_smooth", "0", "--save_interval", s["SAVE_INTERVAL"],
                  "--eval_interval", "1000000", "--log_interval", "20", "--work_dir", str(pretrain_dir),
                  "--resume", "latest"])
            from nlg.pipeline import prune_checkpoints

            prune_checkpoints(pretrain_dir)  # only the model it ends with is used
            plot(s, pretrain_dir)
            mark_done(records, "pretrain", s.work_dir, 0)
        from nlg.training.checkpoints import latest_checkpoint

        newest = latest_checkpoint(pretrain_dir)  # a whole model: the demo's "pretrained GPT-2"
        if newest is None:
            raise Failed(f"{pretrain_dir} holds no checkpoint: redo it with --from pretrain")
        return str(newest)
    base = s.base_path
    if not (Path(base) / "config.json").is_file():
        log(f"download the pretrained {s['MODEL_CARD']} into {base}")
        try:
            call([str(REPO / "scripts" / "download_pretrained.sh"), s["MODEL_CARD"], base])
        except StageFailed:
            raise Failed("no pretrained checkpoint: set INIT_CHECKPOINT to a local GPT-2 (HF directory or .bin)") \
                from None
        records.forget_base()  # the downloaded files are what the record holds from now on
    return base


# ---------------------------------------------------------------------------------------------
# One run directory: train -> select -> beam -> untrained -> decode -> score
# ---------------------------------------------------------------------------------------------


def select_checkpoint(s: Settings, records: Records, base: str, run: Path, seed: int) -> None:
    """RUN/selection.json by SELECT, on validation only."""
    train_dir = run / s.method
    if s["SELECT"] != "valid_metric":
        nlg(s, "select", str(train_dir), "--criterion", s["SELECT"], "--out", str(run / "selection.json"))
        return
    # Each candidate beam-searched on SELECT_SPLIT (VALID_LIMIT contexts) with the test settings,
    # decoded and scored by the suite; finished candidates (select/checkpoint-N/.done-beam) are kept.
    try:
        listed = nlg(s, "select", str(train_dir), "--list", stdout=subprocess.PIPE, text=True).stdout
    except StageFailed:
        raise StageFailed(2) from None
    candidates = [Path(line) for line in listed.splitlines() if line]
    if not candidates:
        raise StageFailed(2)
    (run / "select").mkdir(parents=True, exist_ok=True)
    split = s["SELECT_SPLIT"]
    valid_data, valid_formatted = s.data_dir / f"{split}.jsonl", s.data_dir / f"{split}_formatted.jsonl"
    if s.number("VALID_LIMIT") > 0:
        limited = run / "select" / "valid.jsonl", run / "select" / "valid_formatted.jsonl"
        write_subset(valid_data, valid_formatted, s.number("VALID_LIMIT"), *limited)
        valid_data, valid_formatted = limited
    # A candidate's validation beam search is kept (select/checkpoint-N/.done-beam holds what it
    # was made from), so an interrupted selection does not search it again; decoding and scoring
    # are cheap and redone whenever the stage runs.
    from nlg.pipeline.stages import BEAM_NAMES, describe_identity

    made_from = record_text([*records.record("train", seed),
                             *((name, s[name]) for name in ("SELECT_SPLIT", "VALID_LIMIT", *BEAM_NAMES)),
                             *((path.name, describe_identity(path)) for path in BY_NAME["select"].inputs(s))])
    scores = []
    for checkpoint in candidates:
        directory = run / "select" / checkpoint.name
        done = directory / ".done-beam"
        if done.is_file() and done.read_text().rstrip("\n") != made_from.rstrip("\n"):
            remove([directory])
        if not done.is_file():
            log(f"select: beam-search {split} with {checkpoint} (beam {s['BEAM']})")
            directory.mkdir(parents=True, exist_ok=True)
            launch(s, "nlg.beam", "--data", str(valid_data), *beam_model_args(s, base, checkpoint), *beam_args(s),
                   "--no_progress", "--output_file", str(directory / "predict.jsonl"))
            done.write_text(made_from)
        decode_subsets(s, directory, valid_formatted, ["all"])
        score_subsets(s, directory, ["all"], quiet=True)
        scores.append(f"{checkpoint.name.removeprefix('checkpoint-')}={scores_path(directory, 'all')}")
    nlg(s, "select", str(train_dir), "--criterion", "valid_metric", "--metric", s["SELECT_METRIC"], "--scores",
        *scores, "--out", str(run / "selection.json"))


def chosen(run: Path) -> Path:
    from nlg.select import chosen_checkpoint

    try:
        return chosen_checkpoint(run / "selection.json")
    except InputError as error:
        raise Failed(f"{error}: rerun with --from select") from None


@dataclass(frozen=True)
class Run:
    """One run directory: its settings and records, the base model it trains on, its seed."""

    s: Settings
    records: Records
    base: str
    dir: Path
    seed: int

    def done(self, stage: str) -> bool:
        return is_done(self.records, stage, self.dir, self.seed)

    def mark(self, stage: str) -> None:
        mark_done(self.records, stage, self.dir, self.seed)

    def test_files(self) -> tuple[Path, Path]:
        """The test split as beam searches it: whole, or the TEST_LIMIT subset the beam stage makes."""
        if self.s.number("TEST_LIMIT") > 0:
            return self.dir / "test_subset.jsonl", self.dir / "test_subset_formatted.jsonl"
        return self.s.data_dir / "test.jsonl", self.s.data_dir / "test_formatted.jsonl"


def train(r: Run) -> None:
    s = r.s
    log(f"train: {s.method} ({s.describe_method()}, seed {r.seed}), {s['NPROC']} process(es)")
    valid = [arg for split in s.words("VALID_SPLIT") for arg in ("--valid_data", str(s.data_dir / f"{split}.jsonl"))]
    steps = ["--max_step", s["MAX_STEP"]] if s.number("MAX_STEP") > 0 else []
    launch(s, "nlg.train", "--model_card", s["MODEL_CARD"], "--init_checkpoint", r.base,
           "--train_data", str(s.data_dir / f"{s['TRAIN_SPLIT']}.jsonl"), *valid,
           "--train_batch_size", s["BATCH"], "--grad_acc", s["GRAD_ACC"], "--seq_len", s["SEQ_LEN"],
           "--lr", s["LR"], "--weight_decay", s["WEIGHT_DECAY"], "--adam_beta2", s["ADAM_BETA2"],
           "--clip", s["CLIP"], "--scheduler", s["SCHEDULER"], "--warmup_step", s["WARMUP"],
           "--max_epoch", s["EPOCHS"], *steps, "--label_smooth", s["LABEL_SMOOTH"], *s.method_args(),
           "--random_seed", str(r.seed), "--save_interval", s["SAVE_INTERVAL"],
           "--eval_interval", s["EVAL_INTERVAL"], "--work_dir", str(r.dir / s.method), "--resume", "latest")
    plot(s, r.dir / s.method)


def select(r: Run) -> None:
    s = r.s
    if s["SELECT"] == "last":
        log("select: the checkpoint to decode, the last one")
    else:
        metric = f" ({s['SELECT_METRIC']})" if s["SELECT"] == "valid_metric" else ""
        log(f"select: the checkpoint to decode, by {s['SELECT']}{metric} on validation")
    select_checkpoint(s, r.records, r.base, r.dir, r.seed)


def beam(r: Run, checkpoint: Path) -> None:
    s = r.s
    log(f"beam: beam {s['BEAM']}, length penalty {s['LENGTH_PENALTY']}, checkpoint {checkpoint}")
    test_data, test_formatted = r.test_files()
    if s.number("TEST_LIMIT") > 0:  # the test subset is made here only; decode reads what beam searched
        write_subset(s.data_dir / "test.jsonl", s.data_dir / "test_formatted.jsonl", s.number("TEST_LIMIT"),
                     test_data, test_formatted)
    launch(s, "nlg.beam", "--data", str(test_data), *beam_model_args(s, r.base, checkpoint), *beam_args(s),
           "--output_file", str(r.dir / "predict.jsonl"))


def untrained(r: Run) -> None:
    """The demo's yardstick: the same card with random weights, beam-searched alike."""
    s = r.s
    log(f"untrained (demo): a random {s['MODEL_CARD']} beam-searched alike, what learning has to beat")
    (r.dir / "untrained").mkdir(parents=True, exist_ok=True)
    launch(s, "nlg.beam", "--data", str(r.test_files()[0]), "--model_card", s["MODEL_CARD"], "--seed", str(r.seed),
           *beam_args(s), "--no_progress", "--output_file", str(r.dir / "untrained" / "predict.jsonl"))


def decode(r: Run) -> None:
    """The one prediction file, once per subset (WebNLG: all, seen, unseen)."""
    s = r.s
    log(f"decode: predictions and references to the scorer's files ({s['SUBSETS']})")
    decode_subsets(s, r.dir, r.test_files()[1], s.subsets)
    if s.demo:
        log(f"decode (demo): the untrained {s['MODEL_CARD']}")
        decode_subsets(s, r.dir / "untrained", r.test_files()[1], s.subsets)


def subset_files(s: Settings, run: Path) -> list[list[str]]:
    """[SUBSET, SCORES, REFERENCES, PREDICTIONS] of each subset, as run.json lists them."""
    return [[subset, str(scores_path(run, subset)), str(ref_path(s, run, subset)), str(pred_path(s, run, subset))]
            for subset in s.subsets]


def score(r: Run, checkpoint: Path) -> None:
    """Scores, run.json, results.md and results.json."""
    s = r.s
    log(f"score: nlg score {s['SCORE_ARGS']} ({s['SUBSETS']})")
    score_subsets(s, r.dir, s.subsets)
    scores = ["--scores", *(f"{subset}={scores_path(r.dir, subset)}" for subset in s.subsets)]
    untrained_files: list[list[str]] = []
    if s.demo:
        log(f"score (demo): the untrained {s['MODEL_CARD']}")
        score_subsets(s, r.dir / "untrained", s.subsets, quiet=True)
        untrained_files = subset_files(s, r.dir / "untrained")
        scores += ["--untrained", *(f"{subset}={scores_path(r.dir / 'untrained', subset)}" for subset in s.subsets)]
    write_run_record(r.dir, run_record(r.dir, s.dataset, s["MODEL_CARD"], r.seed,
                                       dict(r.records.record("score", r.seed)), subset_files(s, r.dir),
                                       untrained_files, checkpoint))
    outputs = ["--md", str(r.dir / "results.md"), "--json", str(r.dir / "results.json")]
    if s.own_recipe():  # the run beside the paper's rows of the dataset's own recipe
        nlg(s, "results", s.dataset, "--card", s["MODEL_CARD"], *scores, *outputs)
    else:  # a baseline: labelled by method and size, beside every row of the paper's table
        nlg(s, "results", s.dataset, "--runs", str(r.dir), *outputs)


def run_chain(s: Settings, run: Path, seed: int, records: Records | None = None, base: str | None = None) -> bool:
    """Every stage of one run directory `run`, seeded with `seed`: the shared ones first where
    they are not done (data, the base model) unless `base` is given, then train -> select ->
    beam -> untrained (--demo) -> decode -> score, each skipped when finished with these
    settings. True when this call scored the run (a finished run's table is printed instead,
    without seeds). One settings object, one directory: a sweep calls it once per point."""
    records = records or Records(s)
    if base is None:
        run_data(s, records)
        base = base_model(s, records)
    run.mkdir(parents=True, exist_ok=True)
    r = Run(s, records, base, run, seed)
    if s.seeds:
        log(f"seed {seed}: {run}")
    if not r.done("train"):
        train(r)
        r.mark("train")
    if not r.done("select"):
        select(r)
        r.mark("select")
    checkpoint = chosen(run)
    if not r.done("beam"):
        beam(r, checkpoint)
        r.mark("beam")
    if s.demo and not r.done("untrained"):
        untrained(r)
        r.mark("untrained")
    if not r.done("decode"):
        decode(r)
        r.mark("decode")
    if not r.done("score"):
        score(r, checkpoint)
        r.mark("score")
        return True
    if not s.seeds:
        sys.stdout.write((run / "results.md").read_text())
        sys.stdout.flush()
    return False


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------


def run_dirs(s: Settings) -> list[tuple[Path, int]]:
    """(run directory, seed): WORK_DIR with SEED, or WORK_DIR/seed-SEED for each of SEEDS."""
    if s.seeds:
        return [(s.work_dir / f"seed-{seed}", seed) for seed in s.seeds]
    return [(s.work_dir, int(s["SEED"]))]


def reproduce(s: Settings, start: str = "") -> None:
    """Check every finished stage, apply --from `start`, then run the chain."""
    records = Records(s)
    runs = run_dirs(s)
    # Before any work (and before --from removes anything): every finished stage of every run
    # directory that is kept fits the current settings.
    for run, seed in runs:
        check_run(records, run, seed, start)
    if start:
        remove(removals(s, start, [run for run, _ in runs]))
    run_data(s, records)
    for run, _ in runs:
        run.mkdir(parents=True, exist_ok=True)
    base = base_model(s, records)
    for run, seed in runs:
        run_chain(s, run, seed, records, base)
    # the seeds' table, made again by every invocation: over exactly this invocation's seeds
    if s.seeds:
        log(f"results: {s.dataset} over seeds {' '.join(map(str, s.seeds))}")
        nlg(s, "results", s.dataset, "--runs", *(str(run) for run, _ in runs), "--md", str(s.work_dir / "results.md"),
            "--json", str(s.work_dir / "results.json"))
    print(f"\nresults: {s.work_dir / 'results.md'} (results.json, run.json beside it)", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse, with the script's one-line messages (Refusal) for what it does not accept."""

    def error(self, message: str):
        extra = message.removeprefix("unrecognized arguments: ")
        if extra != message:
            first = extra.split()[0]
            raise Refusal(f"unknown argument {first} (see --help)" if first.startswith("-")
                          else "one DATASET only (see --help)")
        raise Refusal(f"{message} (see --help)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line as the script always read it: DATASET, --demo, --method NAME, --seeds N,
    --from STAGE (each also --flag=VALUE), --help, and a sweep's --sweep SWEEP (repeatable),
    --points, --point K, --gather (nlg.pipeline.sweep); Refusal for anything else. The usage text
    (nlg.pipeline.usage, --help) is the documentation."""
    parser = _Parser(prog=PROG, add_help=False, allow_abbrev=False)
    parser.add_argument("dataset", nargs="?", default="")
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--method", default="")
    parser.add_argument("--seeds", default="")
    parser.add_argument("--from", dest="start", default="")
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--sweep", action="append", default=[])
    parser.add_argument("--points", action="store_true")
    parser.add_argument("--point", default="")
    parser.add_argument("--gather", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`nlg reproduce ...`: the pipeline's own problems are `reproduce.sh: ...` lines (exit 2 before
    any work, 1 for a failure); a failed stage's exit status is the run's; a file the pipeline
    itself reads or writes that fails is `reproduce.sh: error: FILE: reason` (nlg.cli.run_main)."""
    from nlg.cli import run_main

    return run_main(_main, argv, prog=PROG)


def _main(argv: list[str] | None = None) -> int:
    from nlg.pipeline.settings import DATASETS

    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.help:
            from nlg.pipeline.usage import usage

            try:
                print(usage(), flush=True)
            except BrokenPipeError:  # `--help | head`: the reader has what it wanted
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if not args.dataset:
            raise Refusal("which dataset? e2e, webnlg or dart (see --help)")
        if args.dataset not in DATASETS:
            raise Refusal(f"unknown dataset '{args.dataset}' (one of: {', '.join(DATASETS)})")
        if args.start and args.start not in NAMES:
            raise Refusal(f"unknown stage '{args.start}' (one of: {' '.join(NAMES)})")
        if args.sweep:
            from nlg.pipeline.sweep import run_sweep

            return run_sweep(args.dataset, os.environ, args, sys.argv[1:] if argv is None else list(argv))
        for flag in ("point", "points", "gather"):
            if getattr(args, flag) not in ("", False):
                raise Refusal(f"--{flag} is of a sweep: give --sweep NAME=V1,V2,... with it (see --help)")
        settings = resolve(args.dataset, os.environ, demo=args.demo, method_flag=args.method,
                           seed_count=args.seeds)
        reproduce(settings, args.start)
    except Refusal as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except Failed as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except StageFailed as error:
        return error.code
    except KeyboardInterrupt:
        return 130
    return 0
