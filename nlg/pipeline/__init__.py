"""Helpers of scripts/reproduce.sh: its numeric settings checked, a split cut to N contexts, and
each run's run.json.

    python -m nlg.pipeline check NAME=VALUE ...       exit 2 with one line on the first bad value
    python -m nlg.pipeline subset ENCODED FORMATTED N OUT_ENCODED OUT_FORMATTED
    python -m nlg.pipeline record RUN_DIR --dataset webnlg --card gpt2.md --seed 110 \\
        --settings RUN_DIR/.done-score --subset all scores.json webnlg_ref webnlg_pred.txt ...

`check` knows every numeric setting of the script (NUMBERS) and what it may hold: a whole
number (at least 0 or at least 1), a float (positive, non-negative, or a fraction in [0, 1)),
or a space-separated list of whole numbers. Empty values are allowed where the script reads
empty as "none" (e.g. TOP_LAYERS unset).

`record` writes RUN_DIR/run.json atomically, the run record shared with `nlg results --runs`
and `nlg compare`:

    {"dataset", "model_card", "method", "seed", "params", "settings", "checkpoint",
     "selection", "subsets", "untrained"}

paths relative to RUN_DIR; `method` and `params` come from the train_config.json beside the checkpoint
(`method`, default nlg.methods.DEFAULT; `trainable_params` or `trainable_parameters`, else null);
`settings` are the script's NAME=value lines from the score stage's record (every setting that
shapes the result, after overrides), less the locations of files (DATA_DIR, RAW_DIR,
NLG_VOCAB_DIR) and the recorded input identities (lower-case names); `selection` is selection.json (`nlg select`) less its
checkpoint path, null when the criterion was `last`; `untrained` is null outside the demos.
Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from nlg import methods
from nlg.files import (
    InputError,
    atomic_files,
    atomic_write,
    check_outputs,
    file_identity,
    read_jsonl,
    read_lines,
    read_text,
)

PROG = "reproduce.sh"


@dataclass(frozen=True)
class Number:
    """What a numeric setting may hold."""

    kind: str  # "int", "float" or "ints" (space-separated whole numbers)
    low: float  # the smallest allowed value
    below: float | None = None  # values must be < this (a fraction's 1), None: no bound
    strict: bool = False  # low itself is not allowed (LR > 0)
    empty: bool = False  # "" is allowed (the setting is off)

    def describe(self) -> str:
        what = {"int": "a whole number", "float": "a number", "ints": "whole numbers"}[self.kind]
        bound = f"{'>' if self.strict else '>='} {self.low:g}"
        if self.below is not None:
            bound += f" and < {self.below:g}"
        return f"{what} {bound}"


WHOLE, POSITIVE = Number("int", 0), Number("int", 1)
NUMBERS: dict[str, Number] = {
    **dict.fromkeys(("MAX_STEP", "TEST_LIMIT", "VALID_LIMIT", "WARMUP", "SEED", "PRETRAIN_SEED",
                     "NO_REPEAT_NGRAM", "PRETRAIN_STEPS"), WHOLE),
    **dict.fromkeys(("BATCH", "GRAD_ACC", "SEQ_LEN", "EPOCHS", "LORA_DIM", "SAVE_INTERVAL",
                     "EVAL_INTERVAL", "BEAM_BATCH", "BEAM", "EVAL_LEN", "BEAM_SEQ_LEN",
                     "PRETRAIN_EPOCHS", "NPROC"), POSITIVE),
    **dict.fromkeys(("ADAPTER_DIM", "TOP_LAYERS", "PREFIX_LEN"), Number("int", 1, empty=True)),
    "SEEDS": Number("ints", 0, empty=True),
    "EOS_IDS": Number("ints", 0),
    **dict.fromkeys(("LR", "PRETRAIN_LR", "LORA_ALPHA", "REPETITION_PENALTY"), Number("float", 0, strict=True)),
    **dict.fromkeys(("WEIGHT_DECAY", "CLIP", "LENGTH_PENALTY"), Number("float", 0)),
    **dict.fromkeys(("ADAM_BETA2", "LORA_DROPOUT", "LABEL_SMOOTH"), Number("float", 0, below=1)),
}
_INT = re.compile(r"^[0-9]+$")


def check_number(name: str, value: str) -> str | None:
    """Why `value` is not a valid NAME, or None when it is (NAME must be in NUMBERS)."""
    spec = NUMBERS[name]
    if value == "" and spec.empty:
        return None
    if spec.kind in ("int", "ints"):
        words = value.split() if spec.kind == "ints" else [value]
        if not words or not all(_INT.match(word) for word in words):
            return f"{name}={value!r} is not {spec.describe()}"
        numbers = [float(word) for word in words]
    else:
        try:
            numbers = [float(value)]
        except ValueError:
            return f"{name}={value!r} is not {spec.describe()}"
        if not math.isfinite(numbers[0]) or value.strip() != value:
            return f"{name}={value!r} is not {spec.describe()}"
    for number in numbers:
        if number < spec.low or (spec.strict and number == spec.low) or (spec.below is not None
                                                                           and number >= spec.below):
            return f"{name}={value!r} is not {spec.describe()}"
    return None


def check(pairs: list[str]) -> list[str]:
    """The problems of NAME=VALUE pairs, in order (unknown names are a bug of the script)."""
    problems = []
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in NUMBERS:
            raise ValueError(f"no rule for the setting {name}")
        problem = check_number(name, value)
        if problem:
            problems.append(problem)
    return problems


# ---------------------------------------------------------------------------------------------
# A split cut to N contexts (TEST_LIMIT, VALID_LIMIT)
# ---------------------------------------------------------------------------------------------


def spread_contexts(contexts: list[str], limit: int) -> list[int]:
    """Indices of the lines whose context is one of `limit` distinct contexts spread evenly over
    the split (distinct context i * n // limit for i < limit, so WebNLG's seen and unseen
    categories are both there), every line of them, in the file's order."""
    distinct = list(dict.fromkeys(contexts))
    count = min(limit, len(distinct))
    chosen = {distinct[i * len(distinct) // count] for i in range(count)}
    return [i for i, context in enumerate(contexts) if context in chosen]


def write_subset(encoded: Path, formatted: Path, limit: int, out_encoded: Path, out_formatted: Path) -> int:
    """Both files of a split (`nlg data`'s SPLIT.jsonl and SPLIT_formatted.jsonl, line for line)
    cut to `limit` contexts, written atomically; returns the lines kept."""
    check_outputs({"ENCODED": encoded, "FORMATTED": formatted}, {"OUT_ENCODED": out_encoded,
                                                                 "OUT_FORMATTED": out_formatted})
    encoded_lines, formatted_lines = read_lines(encoded), read_lines(formatted)
    if len(encoded_lines) != len(formatted_lines):
        raise InputError(f"{encoded} has {len(encoded_lines)} lines, {formatted} {len(formatted_lines)}; "
                         "they are one split's two files, line for line (rerun `nlg data`)")
    contexts = []
    for number, record in read_jsonl(formatted):
        if not isinstance(record, dict) or not isinstance(record.get("context"), str):
            raise InputError(f"{formatted}:{number}: no \"context\" string")
        contexts.append(record["context"])
    keep = spread_contexts(contexts, limit)
    with atomic_files() as open_atomic:  # both or neither: the pair stays line for line
        open_atomic(out_encoded).writelines(encoded_lines[i] + "\n" for i in keep)
        open_atomic(out_formatted).writelines(formatted_lines[i] + "\n" for i in keep)
    return len(keep)


# ---------------------------------------------------------------------------------------------
# run.json
# ---------------------------------------------------------------------------------------------

LOCATIONS = frozenset({"DATA_DIR", "RAW_DIR", "NLG_VOCAB_DIR"})
_SETTING = re.compile(r"^[A-Z][A-Z0-9_]*$")


def read_settings(path: Path) -> dict[str, str]:
    """NAME=value lines of a stage record, without file locations and input identities."""
    settings = {}
    for line in read_text(path).splitlines():
        name, sep, value = line.partition("=")
        if sep and _SETTING.match(name) and name not in LOCATIONS:
            settings[name] = value
    return settings


def read_json(path: Path) -> dict:
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object")
    return value


def files_entry(run_dir: Path, scores: str, references: str, predictions: str) -> dict[str, str]:
    return {key: os.path.relpath(Path(path), run_dir) for key, path in
            (("scores", scores), ("references", references), ("predictions", predictions))}


def run_record(run_dir: Path, dataset: str, card: str, seed: int, settings_file: Path,
               subsets: list[list[str]], untrained: list[list[str]], checkpoint: Path) -> dict:
    """The run.json record of one run directory (module docstring)."""
    config_file = checkpoint.parent / "train_config.json"  # the training run the checkpoint is of
    config = read_json(config_file) if config_file.is_file() else {}
    selection_file = run_dir / "selection.json"
    selection = None
    if selection_file.is_file():
        chosen = read_json(selection_file)
        if chosen.get("criterion") != "last":
            selection = {key: chosen.get(key) for key in ("criterion", "metric", "chosen_step", "candidates")}
    # `nlg train` writes trainable_parameters; the run-record contract names trainable_params
    params = config.get("trainable_params", config.get("trainable_parameters"))
    return {
        "dataset": dataset, "model_card": card, "method": config.get("method") or methods.DEFAULT, "seed": seed,
        "params": params if isinstance(params, int) else None,
        "settings": read_settings(settings_file),
        "checkpoint": os.path.relpath(checkpoint, run_dir),
        "selection": selection,
        "subsets": {name: files_entry(run_dir, *files) for name, *files in subsets},
        "untrained": {name: files_entry(run_dir, *files) for name, *files in untrained} or None,
    }


def prune_checkpoints(directory: Path) -> Path | None:
    """Remove every checkpoint-N of `directory` but the newest (nlg.training.checkpoints'
    latest_checkpoint): the demo's pre-training needs only the model it ends with. Returns it."""
    import shutil

    from nlg.training.checkpoints import latest_checkpoint

    newest = latest_checkpoint(directory)
    if newest is None:
        return None
    for path in directory.glob("checkpoint-*"):
        if path.is_dir() and path.resolve() != Path(newest).resolve():
            shutil.rmtree(path)
    return Path(newest)


def describe_identity(path: Path) -> str:
    """A stage record's identity of one input: `N bytes, sha256 HEX` (nlg.files.file_identity), or
    `missing`."""
    if not path.is_file():
        return "missing"
    identity = file_identity(path)
    return f"{identity['bytes']} bytes, sha256 {identity['sha256']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlg.pipeline",
                                     description="helpers of scripts/reproduce.sh (see the module docstring)")
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="check numeric NAME=VALUE settings")
    checking.add_argument("pairs", nargs="*")
    other = commands.add_parser("settings", help="check splits and method sizes (nlg.pipeline.settings)")
    other.add_argument("pairs", nargs="*")
    prune = commands.add_parser("prune", help="keep only the newest checkpoint-N of a directory")
    prune.add_argument("directory", type=Path)
    subset = commands.add_parser("subset", help="cut a split's two files to N contexts")
    subset.add_argument("encoded", type=Path)
    subset.add_argument("formatted", type=Path)
    subset.add_argument("limit", type=int)
    subset.add_argument("out_encoded", type=Path)
    subset.add_argument("out_formatted", type=Path)
    identity = commands.add_parser("identity", help="a file's size and SHA-256 (nlg.files.file_identity)")
    identity.add_argument("file", type=Path)
    chosen = commands.add_parser("chosen", help="the checkpoint a selection.json chose (nlg.select)")
    chosen.add_argument("selection", type=Path)
    commands.add_parser("nproc", help="processes per run by default: one per GPU, else one")
    record = commands.add_parser("record", help="write RUN_DIR/run.json")
    record.add_argument("run_dir", type=Path)
    record.add_argument("--dataset", required=True)
    record.add_argument("--card", required=True)
    record.add_argument("--seed", type=int, required=True)
    record.add_argument("--settings", type=Path, required=True, help="the stage record (NAME=value lines)")
    record.add_argument("--checkpoint", type=Path, required=True, help="the checkpoint decoded on test")
    record.add_argument("--subset", nargs=4, action="append", default=[],
                        metavar=("NAME", "SCORES", "REFERENCES", "PREDICTIONS"))
    record.add_argument("--untrained", nargs=4, action="append", default=[],
                        metavar=("NAME", "SCORES", "REFERENCES", "PREDICTIONS"))
    args = parser.parse_args(argv)
    if args.command == "check":
        problems = check(args.pairs)
        for problem in problems[:1]:  # one line: the first bad setting
            print(f"{PROG}: {problem}; nothing was run", file=sys.stderr)
        return 2 if problems else 0
    if args.command == "settings":
        from nlg.pipeline.settings import problems as setting_problems

        found = setting_problems(dict(pair.partition("=")[::2] for pair in args.pairs))
        for problem in found[:1]:
            print(f"{PROG}: {problem}; nothing was run", file=sys.stderr)
        return 2 if found else 0
    if args.command == "identity":
        print(describe_identity(args.file))
        return 0
    if args.command == "chosen":
        from nlg.select import chosen_checkpoint

        try:
            print(chosen_checkpoint(args.selection))
        except InputError as error:  # the script's own failure (exit 1), as its other stages' are
            print(f"{PROG}: {error}: rerun with --from select", file=sys.stderr)
            return 1
        return 0
    if args.command == "nproc":
        try:
            from nlg.training.distributed import default_nproc
        except ModuleNotFoundError:  # no torch: one process (the stages then say what is missing)
            print(1)
            return 0
        print(default_nproc())
        return 0
    if args.command == "prune":
        print(prune_checkpoints(args.directory))
        return 0
    if args.command == "subset":
        write_subset(args.encoded, args.formatted, args.limit, args.out_encoded, args.out_formatted)
        return 0
    record_json = run_record(args.run_dir, args.dataset, args.card, args.seed, args.settings,
                             args.subset, args.untrained, args.checkpoint)
    with atomic_write(args.run_dir / "run.json") as handle:
        json.dump(record_json, handle, indent=1)
        handle.write("\n")
    return 0


if __name__ == "__main__":
    from nlg.cli import run_main

    sys.exit(run_main(main, prog="reproduce.sh"))
