"""The pipeline's stages and their records: what each stage's output was made from.

    data -> pretrain -> train -> select -> beam -> untrained -> decode -> score

Each stage says which settings it adds to those of the stages before it (`names`), which files
it reads besides earlier stages' outputs (`inputs`), what it writes in its run directory
(`outputs`, removed by --from), whether it is shared by every seed (data and the demo's
pre-training live in WORK_DIR) and whether a run has it (`applies`: pretrain only in a demo
without INIT_CHECKPOINT, untrained only in demos).

A finished stage leaves WORK_DIR/.done-STAGE (or RUN/.done-STAGE), written atomically: its
record, one NAME=value line per setting of it and of every earlier stage, then `FILE=N bytes,
sha256 HEX` for each input (nlg.files.file_identity, the one identity scheme of every recorded
input). Untrained runs beside beam with beam's settings, not before it. A finished stage whose
record differs from the current settings is never reused: `check_run` stops (Refusal) naming
each difference, the recorded and the current value, and the stage to redo from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nlg.files import atomic_write, file_identity
from nlg.pipeline.settings import Refusal, Settings

BEAM_NAMES = ("BEAM", "LENGTH_PENALTY", "NO_REPEAT_NGRAM", "REPETITION_PENALTY", "EOS_IDS", "EVAL_LEN",
              "BEAM_SEQ_LEN")
PRETRAIN_PLACEHOLDER = "(the pretrain stage)"
OLD_MARKER = "no settings recorded (made by an older reproduce.sh)"


@dataclass(frozen=True)
class Stage:
    name: str
    names: Callable[[Settings], list[str]]  # the settings it adds to the earlier stages'
    inputs: Callable[[Settings], list[Path]] = lambda s: []  # files it reads
    outputs: Callable[[Settings], list[str]] = lambda s: []  # what it writes in its directory (globs)
    shared: bool = False  # in WORK_DIR, once for every seed
    applies: Callable[[Settings], bool] = lambda s: True


def _train_names(s: Settings) -> list[str]:
    return ["METHOD", "MODEL_CARD", "INIT_CHECKPOINT", "BASE", "TRAIN_SPLIT", "VALID_SPLIT", "BATCH", "GRAD_ACC",
            "SEQ_LEN", "LR", "WEIGHT_DECAY", "ADAM_BETA2", "SCHEDULER", "WARMUP", "EPOCHS", "MAX_STEP", "CLIP",
            *s.method_names, "LABEL_SMOOTH", "SEED", "SAVE_INTERVAL", "EVAL_INTERVAL", "NPROC"]


def _select_names(s: Settings) -> list[str]:
    if s["SELECT"] != "valid_metric":
        return ["SELECT", "SELECT_METRIC"]
    return ["SELECT", "SELECT_METRIC", "SELECT_SPLIT", "VALID_LIMIT", *BEAM_NAMES, "DECODE_ARGS", "SCORE_ARGS"]


def _split(s: Settings, name: str) -> Path:
    return s.data_dir / f"{name}.jsonl"


STAGES: tuple[Stage, ...] = (
    Stage("data", lambda s: ["DATASET", "DATA_DIR", "RAW_DIR", "NLG_VOCAB_DIR"], shared=True),
    Stage("pretrain", lambda s: ["MODEL_CARD", "TRAIN_SPLIT", "BATCH", "PRETRAIN_LR", "PRETRAIN_EPOCHS",
                                 "PRETRAIN_STEPS", "WARMUP", "SEQ_LEN", "PRETRAIN_SEED", "SAVE_INTERVAL"],
          inputs=lambda s: [_split(s, s["TRAIN_SPLIT"])], outputs=lambda s: ["pretrain"], shared=True,
          applies=lambda s: s.pretrain),
    Stage("train", _train_names,
          inputs=lambda s: [_split(s, s["TRAIN_SPLIT"]), *(_split(s, v) for v in s.words("VALID_SPLIT"))],
          # the candidates' validation searches (select/) belong to these checkpoints
          outputs=lambda s: [s.method, "select"]),
    Stage("select", _select_names,
          inputs=lambda s: [_split(s, s["SELECT_SPLIT"]), s.data_dir / f"{s['SELECT_SPLIT']}_formatted.jsonl"]
          if s["SELECT"] == "valid_metric" else [],
          # select/checkpoint-N/ are kept: each records what it was made from
          outputs=lambda s: ["selection.json"]),
    Stage("beam", lambda s: [*BEAM_NAMES, "TEST_LIMIT"], inputs=lambda s: [_split(s, "test")],
          outputs=lambda s: ["predict.jsonl", "test_subset.jsonl", "test_subset_formatted.jsonl"]),
    Stage("untrained", lambda s: [*BEAM_NAMES, "TEST_LIMIT"], inputs=lambda s: [_split(s, "test")],
          outputs=lambda s: ["untrained"], applies=lambda s: s.demo),
    Stage("decode", lambda s: ["SUBSETS", "DECODE_ARGS"], inputs=lambda s: [s.data_dir / "test_formatted.jsonl"],
          outputs=lambda s: [f"{s.dataset}_ref*", f"{s.dataset}_pred*.txt", f"untrained/{s.dataset}_*"]),
    Stage("score", lambda s: ["SCORE_ARGS"],
          outputs=lambda s: ["scores*.json", "untrained/scores*.json", "results.md", "results.json", "run.json"]),
)
BY_NAME = {stage.name: stage for stage in STAGES}
NAMES = tuple(BY_NAME)


# ---------------------------------------------------------------------------------------------
# Identities and records
# ---------------------------------------------------------------------------------------------

_IDENTITIES: dict[tuple, str] = {}  # hashed once per file version in a process


def describe_identity(path: Path) -> str:
    """A record's identity of one input: `N bytes, sha256 HEX` (nlg.files.file_identity), or `missing`."""
    if not path.is_file():
        return "missing"
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _IDENTITIES:
        identity = file_identity(path)
        _IDENTITIES[key] = f"{identity['bytes']} bytes, sha256 {identity['sha256']}"
    return _IDENTITIES[key]


def base_identity(s: Settings) -> str:
    """BASE= of the train stage's record: the identity of each file of the base model
    (nlg.methods.base_identity: a directory's config and weights, or the file), or the pretrain
    stage when the demo makes it."""
    if s.pretrain:
        return PRETRAIN_PLACEHOLDER
    from nlg import methods

    path = Path(s.base_path)
    if not path.exists():
        return "missing"
    entries = methods.base_identity(path)
    if path.is_dir():
        return "".join(f"{e['file']}: {e['bytes']} bytes, sha256 {e['sha256']}; " for e in entries) or "missing"
    return f"{entries[0]['bytes']} bytes, sha256 {entries[0]['sha256']}"


class Records:
    """The records of one settings object (the base's identity computed once, `forget_base` after
    the base is downloaded)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._base: str | None = None

    def forget_base(self) -> None:
        self._base = None

    def value(self, name: str, seed: int) -> str:
        s = self.settings
        if name == "INIT_CHECKPOINT":
            return PRETRAIN_PLACEHOLDER if s.pretrain else s.base_path
        if name == "BASE":
            if self._base is None:
                self._base = base_identity(s)
            return self._base
        if name == "SEED":
            return str(seed)
        return s[name]

    def record(self, stage: str, seed: int) -> list[tuple[str, str]]:
        """(NAME, value) of `stage`'s record: the settings and inputs of it and the stages before it."""
        s, pairs, seen = self.settings, [], set()
        for each in STAGES:
            if not each.applies(s):
                if each.name == stage:
                    break
                continue
            # untrained runs beside beam (with the same settings), not before it
            if (each.name == "untrained" and stage != "untrained") or (each.name == "beam" and stage == "untrained"):
                continue
            for name in each.names(s):
                if name not in seen:
                    seen.add(name)
                    pairs.append((name, self.value(name, seed)))
            for path in each.inputs(s):
                if str(path) not in seen:
                    seen.add(str(path))
                    pairs.append((path.name, describe_identity(path)))
            if each.name == stage:
                break
        return pairs


def record_text(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"{name}={value}\n" for name, value in pairs)


def read_record(text: str) -> dict[str, str]:
    """NAME -> value of a record's lines (the value is the rest of the line)."""
    found = {}
    for line in text.splitlines():
        if line:
            name, _, value = line.partition("=")
            found[name] = value
    return found


def differences(recorded: str, pairs: list[tuple[str, str]]) -> str:
    """`NAME=old (now new)` for each change between a record and the current one, `; `-joined:
    new names first, in order, then those the current settings no longer use. A recorded empty
    setting that is no longer used (another method's size, written by older versions) is none."""
    old, new = read_record(recorded), dict(pairs)
    found = []
    for name, value in pairs:
        if name not in old:
            found.append(f"{name}={value} (not in the record)")
        elif old[name] != value:
            found.append(f"{name}={old[name]} (now {value})")
    found += [f"{name}={value} (now not used)" for name, value in old.items() if name not in new and value != ""]
    return "; ".join(found)


def stage_dir(s: Settings, stage: str, run: Path) -> Path:
    return s.work_dir if BY_NAME[stage].shared else run


def marker(s: Settings, stage: str, run: Path) -> Path:
    return stage_dir(s, stage, run) / f".done-{stage}"


def stage_differences(records: Records, stage: str, run: Path, seed: int) -> str:
    """How `stage`'s finished output in `run` differs from the current settings; "" when it fits
    or is not finished."""
    path = marker(records.settings, stage, run)
    if not path.is_file():
        return ""
    text = path.read_text()
    if not text:
        return OLD_MARKER
    return differences(text, records.record(stage, seed))


def refusal(s: Settings, stage: str, run: Path, found: str) -> Refusal:
    return Refusal(f"{marker(s, stage, run)} was made with other settings: {found}; redo it and every later "
                   f"stage with --from {stage}, or use another WORK_DIR")


def is_done(records: Records, stage: str, run: Path, seed: int) -> bool:
    """Whether `stage` is finished in `run`, made with these settings; Refusal when it was made
    with others."""
    found = stage_differences(records, stage, run, seed)
    if found:
        raise refusal(records.settings, stage, run, found)
    return marker(records.settings, stage, run).is_file()


def mark_done(records: Records, stage: str, run: Path, seed: int) -> None:
    with atomic_write(marker(records.settings, stage, run)) as handle:
        handle.write(record_text(records.record(stage, seed)))


def check_run(records: Records, run: Path, seed: int, until: str = "", shared: bool = True) -> None:
    """Refusal unless every finished stage of `run` before `until` fits the settings: the first
    stage that differs is where to redo from; the last finished one's record (it holds every
    earlier stage's settings too) names every difference. `shared=False` checks only the run
    directory's own stages (a sweep's point: its shared stages are made with the unswept settings)."""
    first, found = "", ""
    for stage in STAGES:
        if stage.name == until:
            break
        if not stage.applies(records.settings) or (stage.shared and not shared):
            continue
        here = stage_differences(records, stage.name, run, seed)
        if here:
            first = first or stage.name
            found = here
    if first:
        raise refusal(records.settings, first, run, found)


def removals(s: Settings, start: str, runs: list[Path]) -> list[Path]:
    """What --from `start` removes: the marker and outputs of `start` and every later stage (in
    WORK_DIR for shared stages, else in every run directory), and with seeds the seeds' table."""
    found: list[Path] = []
    for stage in STAGES[NAMES.index(start):]:
        for directory in [s.work_dir] if stage.shared else runs:
            found.append(directory / f".done-{stage.name}")
            if directory.is_dir():
                for pattern in stage.outputs(s):
                    matches = sorted(directory.glob(pattern))
                    found += matches or [directory / pattern]
    if s.seeds:
        found += [s.work_dir / "results.md", s.work_dir / "results.json"]
    return found


def remove(paths: list[Path]) -> None:
    import shutil

    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            os.remove(path)
