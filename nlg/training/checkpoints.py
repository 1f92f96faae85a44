"""Training checkpoints: where they are written, found and read back (for `--resume`).

    WORK_DIR/checkpoint-STEP/
        the method's files (nlg.methods)                   LoRA: adapter_config.json +
                                                           adapter_model.safetensors (PEFT);
                                                           full: config.json + model.safetensors
        method.json                                        the method, its settings, the model's
                                                           shape, the trainable count
        training_state.pt                                  TrainingState: optimiser, scheduler,
                                                           step, data position, every rank's RNG
                                                           states, the loss window, the config,
                                                           its inputs' identities and the method's
                                                           training-hook state (nlg.methods.TrainingHook)
        manifest.json                                      size and SHA-256 of each file above,
                                                           written last (nlg.files.write_manifest)
    WORK_DIR/train.lock                                    held by the run's rank 0 (lock_work_dir)

A checkpoint directory is written under a temporary name and renamed into place when complete
(`save_checkpoint`, the only writer), so a kill at any moment leaves whole checkpoints only.
`list_checkpoints` is the only place that decides which directories count as checkpoints;
`checkpoint_to_resume` chooses the one `--resume` means, and takes only one that verifies
(`verify_checkpoint`): its files match its manifest, so a checkpoint damaged after it was
written (a disk error, a cut-short copy) is skipped, with a warning, for the one before it.
Checkpoints written before manifests existed still load: for them, verifying means reading
every tensor and the training state. training_state.pt holds tensors and plain values only and
is read with torch.load(weights_only=True): a checkpoint cannot run code.

Resuming: what a run was made from, and whether `--resume` may continue a checkpoint.

What a training run was made from, and whether `--resume` may continue a checkpoint.

Every checkpoint's training_state.pt records the run's whole TrainConfig (`config`, as
TrainConfig.to_json) and the identity of the files it read (`inputs`, `input_identities`):

    {"train_data":      [{"path": "data/e2e/train.jsonl", "file": "", "bytes": N, "sha256": HEX}],
     "valid_data":      [...] or None,
     "init_checkpoint": [{"path": ".../gpt2-md/model.safetensors", "file": "model.safetensors",
                          "bytes": N, "sha256": HEX}, {... config.json ...}] or None}

`file` is the name inside a Hugging Face directory ("" for a file given by itself); two inputs are
the same when their (file, bytes, sha256) lists are, wherever they lie now (a moved or copied
file resumes). Hashing reads each file once per run, about 1 GB/s (GPT-2 medium's 1.4 GB: ~1.5 s).

`resume_differences` compares a checkpoint's record with the new run's, field by field over
TrainConfig, so a setting added to TrainConfig is compared without any change here:

  * RESUME_MAY_DIFFER: how the run is executed or reported, not what it computes: log, eval and
    save intervals, the validation batch size (the loss is averaged per token), the device and
    --compile mode (rounding only; the README's GPU section), the collective timeout, the
    work_dir, --resume and --allow_changed themselves;
  * INPUT_SETTINGS (--train_data, --valid_data, --init_checkpoint): compared by content;
  * every other field: compared by value; a field the checkpoint predates is taken at its
    default (the behaviour the checkpoint was trained with).

A difference is refused unless `--allow_changed` names it; RESUME_FIXED settings (the data
order, its position within the epoch, the shape of the trained weights) cannot be allowed, as
no resumed run could mean the same with another value. Checkpoints written before inputs were
recorded resume after their settings are compared, with a warning that their inputs cannot be.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import random
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nlg import files, methods
from nlg.files import (
    InputError,
    Locked,
    atomic_dir,
    atomic_write,
    lock_file,
    verify_manifest,
    write_manifest,
)
from nlg.methods.lora.peft_files import is_adapter_dir, read_adapter
from nlg.training.distributed import Runtime, all_gather_objects
from nlg.training.log import LossWindow
from nlg.training.settings import INPUT_SETTINGS, RESUME_FIXED, RESUME_MAY_DIFFER, TrainConfig
from nlg.weights import read_state_dict

STATE_FILE = "training_state.pt"
STATE_FORMAT = 1
LOCK_FILE = "train.lock"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(work_dir: Path, step: int) -> Path:
    """WORK_DIR/checkpoint-STEP: where the checkpoint taken after `step` updates goes."""
    return work_dir / f"checkpoint-{step}"


def checkpoint_step(path: Path) -> int | None:
    """STEP of a directory named checkpoint-STEP, None for any other name."""
    match = _CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match else None


@dataclass
class TrainingState:
    """training_state.pt: everything besides the weights that an exact resume needs."""

    step: int  # optimiser updates done
    epoch: int  # the epoch (from 0) the next update belongs to
    batch_in_epoch: int  # this rank's micro-batches of that epoch already trained
    optimizer: dict  # optimizer.state_dict()
    scheduler: dict  # scheduler.state_dict()
    rng: list[dict]  # every rank's RNG states (`rng_state`), by rank
    log_window: LossWindow  # the loss record in progress
    config: dict  # TrainConfig.to_json() of the run
    world_size: int
    n_train: int  # training pairs
    inputs: dict | None = None  # the files the run read (nlg.training.checkpoints.input_identities); None before they were recorded
    method_state: dict | None = None  # the method's TrainingHook.state_dict() (AdaLoRA's); None: it has no hook

    def to_file(self) -> dict:
        """The dict torch.save writes (the loss window as a plain dict)."""
        state = {field.name: getattr(self, field.name) for field in fields(self)}
        return {"format": STATE_FORMAT, **state, "log_window": asdict(self.log_window)}

    @classmethod
    def from_file(cls, state: dict) -> TrainingState:
        # A field with a default may be missing: the checkpoint predates it.
        values = {field.name: state[field.name] for field in fields(cls)
                  if field.name in state or field.default is MISSING}
        return cls(**{**values, "log_window": LossWindow(**state["log_window"])})


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, model: nn.Module, state: TrainingState, base_model: str | None) -> None:
    """Write checkpoint `path` (WORK_DIR/checkpoint-STEP) atomically: the method's files (the
    adapter, the whole model, ...: nlg.methods), its method.json, then training_state.pt, then
    the manifest of them all. A failed write (a full disk) raises an OSError naming the file and
    leaves no trace of `path`."""
    name = state.config["method"]
    method, settings = methods.get(name), methods.settings_of(name, state.config)
    base = (state.inputs or {}).get("init_checkpoint")
    record = methods.Record(method=name, settings=methods.flag_values(name, state.config),
                            model=model.config.to_dict(), base_model=base_model,
                            trainable_params=sum(p.numel() for p in method.trainable(model).values()),
                            base_identity=None if base is None else [
                                {key: entry[key] for key in ("file", "bytes", "sha256")} for entry in base])
    with atomic_dir(path) as tmp:
        method.save(model, tmp, settings, base_model)
        methods.write_record(tmp, record)
        with atomic_write(tmp / STATE_FILE, "wb") as handle:
            torch_save(state.to_file(), handle)
        write_manifest(tmp)


class _KeptWriteError(io.RawIOBase):
    """A writable stream around `handle` that keeps the OSError of a failed write."""

    def __init__(self, handle: io.BufferedIOBase):
        super().__init__()
        self.handle, self.error = handle, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise


def torch_save(obj: object, handle: io.BufferedIOBase) -> None:
    """torch.save into an open binary file. torch reports a failed write (a full disk) as a
    RuntimeError without the OS's reason ("unexpected pos ..."); this raises that OSError."""
    stream = _KeptWriteError(handle)
    try:
        torch.save(obj, stream)
    except RuntimeError:
        if stream.error is not None:
            raise stream.error from None
        raise


@contextlib.contextmanager
def lock_work_dir(work_dir: Path, is_main: bool) -> Iterator[None]:
    """Hold WORK_DIR/train.lock for the run, so a second `nlg train` on the same work_dir stops
    at once instead of interleaving checkpoints and metrics with this one. Only rank 0 locks:
    it writes every file of the work_dir, and when it refuses to start torchrun stops the other
    ranks. The lock goes with the process, however it ends."""
    if not is_main:
        yield
        return
    if work_dir.exists() and not work_dir.is_dir():
        raise InputError(f"--work_dir {work_dir}: is a file; give a folder")
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        with lock_file(work_dir / LOCK_FILE):
            yield
    except Locked as error:
        raise InputError(f"--work_dir {work_dir}: in use by another `nlg train` ({error.holder}, "
                         f"holding {error.path}); wait for it to end, or choose another --work_dir") from None


# ---------------------------------------------------------------------------------------------
# Finding
# ---------------------------------------------------------------------------------------------


def list_checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in work_dir by step (atomic_dir leaves only complete ones named so)."""
    found = []
    if work_dir.is_dir():
        for entry in work_dir.iterdir():
            step = checkpoint_step(entry)
            if step is not None and (entry / STATE_FILE).is_file():
                found.append((step, entry))
    return sorted(found)


def latest_checkpoint(work_dir: Path) -> Path | None:
    found = list_checkpoints(work_dir)
    return found[-1][1] if found else None


def verify_checkpoint(path: Path) -> None:
    """Raise InputError, naming the file, unless checkpoint `path` is whole and unchanged: every
    file matches its manifest.json. One written before manifests existed is checked as far as
    it can be: every tensor readable (and finite), the training state loadable."""
    if verify_manifest(path):
        return
    if is_adapter_dir(path):
        read_adapter(path)
    else:
        read_state_dict(path / "model.safetensors")
    load_training_state(path)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def checkpoint_to_resume(work_dir: Path, resume: str | None,
                         on_skip: Callable[[str], None] | None = warn) -> Path | None:
    """The checkpoint `--resume` names: None to start afresh (no --resume, or `latest` with no
    checkpoint yet). A fresh run refuses a work_dir that already holds checkpoints.

    `latest` is the newest checkpoint that verifies (`verify_checkpoint`); each newer one that
    does not is named, with why, through `on_skip` (None: silently). An explicit checkpoint that
    does not verify is an error."""
    if resume is None:
        if list_checkpoints(work_dir):
            raise InputError(f"{work_dir} already holds checkpoints of a run; pass --resume latest "
                             "to continue it, or choose another --work_dir")
        return None
    if resume != "latest":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise InputError(f"--resume {path}: not a checkpoint directory (no {STATE_FILE})")
        try:
            verify_checkpoint(path)
        except InputError as error:
            raise InputError(f"--resume {path}: damaged checkpoint: {error}") from None
        return path
    found = list_checkpoints(work_dir)
    for _, path in reversed(found):
        try:
            verify_checkpoint(path)
        except InputError as error:
            if on_skip is not None:
                on_skip(f"skipping checkpoint {path}: {error}")
            continue
        return path
    if found:
        raise InputError(f"{work_dir}: none of its {len(found)} checkpoints verifies (see the warnings); "
                         "nothing to resume from")
    return None


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def load_training_state(path: Path) -> TrainingState:
    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        config = state["config"]
        if "method" not in config:  # written before nlg.methods: --full_finetune or LoRA
            config["method"] = methods.legacy_name(config)
            config.pop("full_finetune", None)
        return TrainingState.from_file(state)
    except Exception as error:  # noqa: BLE001 - any unreadable state is the same user error
        raise InputError(f"{path / STATE_FILE}: cannot read training state ({error})") from None


def check_resumable(state: TrainingState, config: TrainConfig, world_size: int, n_train: int,
                    path: Path, inputs: dict | None = None) -> list[Difference]:
    """A run resumes exactly only with the checkpoint's settings, inputs, data order and model:
    one InputError names every difference (nlg.training.checkpoints) that --allow_changed does not allow.
    Returns the allowed differences, for the run's logs."""
    differences = resume_differences(state.config, state.inputs, config, inputs or {})
    # --allow_changed cannot allow these (nlg.training.settings.check_allowed refuses naming them)
    refused = [d for d in differences if d.name not in config.allow_changed or d.name in RESUME_FIXED]
    problems = [d.text for d in refused]
    if state.world_size != world_size:
        problems.append(f"processes: checkpoint {state.world_size}, now {world_size}")
    if state.n_train != n_train:
        problems.append(f"training pairs: checkpoint {state.n_train}, now {n_train}")
    if problems:
        hint = allow_hint(refused) if len(problems) == len(refused) else ""
        raise InputError(f"{path}: cannot resume exactly, settings differ: {'; '.join(problems)}{hint}")
    return differences


def load_checkpoint_weights(model: nn.Module, path: Path, config: dict) -> None:
    """The trained weights of checkpoint `path` into `model` (built as the run builds it, with
    method config["method"])."""
    name = config["method"]
    methods.get(name).load(model, path, methods.settings_of(name, config))


# ---------------------------------------------------------------------------------------------
# Random number generators
# ---------------------------------------------------------------------------------------------


def rng_state() -> dict:
    """This process's RNG states as tensors and plain lists (loadable with weights_only=True)."""
    np_state = list(np.random.get_state())
    np_state[1] = np_state[1].tolist()
    return {
        "python": random.getstate(),
        "numpy": np_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np_state = list(state["numpy"])
    np_state[1] = np.array(np_state[1], dtype=np.uint32)
    np.random.set_state(tuple(np_state))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(rt: Runtime) -> list[dict]:
    """Every rank's RNG states, by rank (a collective: every rank calls it)."""
    return all_gather_objects(rng_state(), rt)


# ---------------------------------------------------------------------------------------------
# Resuming: the inputs' identities and the settings' differences
# ---------------------------------------------------------------------------------------------
def file_identity(path: Path, name: str) -> dict[str, Any]:
    """{"path", "file" (its name inside an input directory, "" for a bare file), "bytes", "sha256"}."""
    return {"path": str(path), "file": name, **files.file_identity(path)}


def input_identities(config: Any) -> dict[str, list[dict[str, Any]] | None]:
    """The identity of every file the run reads, by setting (None for one not given). A
    directory given as --init_checkpoint counts with each model file it holds."""
    from nlg.weights import checkpoint_files  # torch: only `nlg train` calls this

    identities: dict[str, list[dict[str, Any]] | None] = {}
    for name in INPUT_SETTINGS:
        value = getattr(config, name)
        if value is None:
            identities[name] = None
        elif not Path(value).exists():  # said here as the model loader says it, exit 2
            raise InputError(f"--{name} {value}: no such checkpoint file or directory")
        elif name == "init_checkpoint" and Path(value).is_dir():
            identities[name] = [file_identity(path, path.name) for path in checkpoint_files(value)
                                if path.is_file()]
        else:
            identities[name] = [file_identity(Path(value), "")]
    return identities


def _content(identity: list[dict[str, Any]] | None) -> list[tuple] | None:
    if identity is None:
        return None
    return sorted((entry["file"], entry["bytes"], entry["sha256"]) for entry in identity)


def _describe(identity: list[dict[str, Any]] | None, other: list[dict[str, Any]] | None) -> str:
    """One side of an input difference: the first file whose content the other side lacks."""
    if identity is None:
        return "none"
    others = set(_content(other) or [])
    entry = next((e for e in identity if (e["file"], e["bytes"], e["sha256"]) not in others), identity[0])
    return f"{entry['path']} ({entry['bytes']:,} bytes, sha256 {entry['sha256'][:12]})"


def _defaults(config: Any) -> dict[str, Any]:
    """Each setting's default, as to_json writes it (None for a required one): TrainConfig's
    fields and the method's own flags."""
    method = methods.get(config.method) if getattr(config, "method", None) else None
    defaults = {flag: list(v) if isinstance(v, tuple) else v for flag, v in (method.defaults if method else {}).items()}
    for field in dataclasses.fields(config):
        value = (field.default if field.default is not dataclasses.MISSING
                 else field.default_factory() if field.default_factory is not dataclasses.MISSING else None)
        defaults[field.name] = list(value) if isinstance(value, tuple) else value
    return defaults


@dataclasses.dataclass
class Difference:
    """One setting in which a checkpoint and the new run differ, as the user reads it."""

    name: str  # the TrainConfig field
    before: Any  # the checkpoint's value (for an input: its identity)
    after: Any
    text: str  # "--lr: checkpoint 0.0002, now 0.5"


def resume_differences(recorded: dict[str, Any], recorded_inputs: dict[str, Any] | None, config: Any,
                       inputs: dict[str, Any]) -> list[Difference]:
    """Every setting in which the new run (`config`, `inputs`) differs from a checkpoint's
    record, in TrainConfig's order; inputs are compared only when the checkpoint recorded them."""
    current, defaults = config.to_json(), _defaults(config)
    found = []
    for name, now in current.items():
        if name in RESUME_MAY_DIFFER:
            continue
        if name in INPUT_SETTINGS:
            if recorded_inputs is None or name not in recorded_inputs or name not in inputs:
                continue  # a checkpoint from before inputs were recorded (the caller warns)
            before = recorded_inputs[name]
            if _content(before) != _content(inputs[name]):
                found.append(Difference(name, before, inputs[name], f"--{name}: checkpoint "
                                        f"{_describe(before, inputs[name])}, now {_describe(inputs[name], before)}"))
            continue
        before = recorded.get(name, defaults[name])
        if before != now:
            found.append(Difference(name, before, now, f"--{name}: checkpoint {before!r}, now {now!r}"))
    return found


def allow_hint(refused: list[Difference]) -> str:
    """How to continue anyway, when --allow_changed can allow every refused difference."""
    names = [d.name for d in refused]
    if not names or any(name in RESUME_FIXED for name in names):
        return ""
    return f" (to continue with the new values, add --allow_changed {','.join(names)})"


def changes_record(differences: list[Difference]) -> dict[str, dict[str, Any]]:
    """{setting: {"checkpoint": value, "now": value}}: the allowed changes, for the run's logs."""
    return {d.name: {"checkpoint": d.before, "now": d.after} for d in differences}
