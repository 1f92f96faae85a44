"""Training checkpoints: where they are written, found and read back (for `--resume`).

    WORK_DIR/checkpoint-STEP/
        adapter_config.json + adapter_model.safetensors    the adapter (nlg.adapter_files), or
        config.json + model.safetensors                    with --full_finetune the whole model
        training_state.pt                                  TrainingState: optimiser, scheduler,
                                                           step, data position, every rank's RNG
                                                           states, the loss window, the config

A checkpoint directory is written under a temporary name and renamed into place when complete
(`save_checkpoint`, the only writer), so a kill at any moment leaves whole checkpoints only.
`list_checkpoints` is the only place that decides which directories count as checkpoints;
`checkpoint_to_resume` chooses the one `--resume` means. training_state.pt holds tensors and
plain values only and is read with torch.load(weights_only=True): a checkpoint cannot run code.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nlg.adapter_files import load_adapter, save_adapter
from nlg.distributed import Runtime, all_gather_objects
from nlg.files import InputError, atomic_dir
from nlg.model import load_base_weights, read_state_dict, save_pretrained
from nlg.train_args import TrainConfig
from nlg.train_log import LossWindow

STATE_FILE = "training_state.pt"
STATE_FORMAT = 1
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")

# Settings a resumed run must share with the checkpoint, or the data order / model differ.
RESUME_MUST_MATCH = ("train_batch_size", "grad_acc", "seq_len", "random_seed", "group_by_length",
                     "obj", "lora_dim", "lora_alpha", "lora_targets", "full_finetune")


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

    def to_file(self) -> dict:
        """The dict torch.save writes (the loss window as a plain dict)."""
        state = {field.name: getattr(self, field.name) for field in fields(self)}
        return {"format": STATE_FORMAT, **state, "log_window": asdict(self.log_window)}

    @classmethod
    def from_file(cls, state: dict) -> TrainingState:
        values = {field.name: state[field.name] for field in fields(cls)}
        return cls(**{**values, "log_window": LossWindow(**state["log_window"])})


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, model: nn.Module, state: TrainingState, base_model: str | None) -> None:
    """Write checkpoint `path` (WORK_DIR/checkpoint-STEP) atomically: the adapter, or the whole
    model after --full_finetune, then training_state.pt."""
    with atomic_dir(path) as tmp:
        if state.config.get("full_finetune"):
            save_pretrained(model, tmp)
        else:
            save_adapter(model, tmp, base_model=base_model)
        torch.save(state.to_file(), tmp / STATE_FILE)


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


def checkpoint_to_resume(work_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint `--resume` names: None to start afresh (no --resume, or `latest` with no
    checkpoint yet). A fresh run refuses a work_dir that already holds checkpoints."""
    if resume is None:
        if list_checkpoints(work_dir):
            raise InputError(f"{work_dir} already holds checkpoints of a run; pass --resume latest "
                             "to continue it, or choose another --work_dir")
        return None
    if resume == "latest":
        return latest_checkpoint(work_dir)
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise InputError(f"--resume {path}: not a checkpoint directory (no {STATE_FILE})")
    return path


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def load_training_state(path: Path) -> TrainingState:
    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        return TrainingState.from_file(state)
    except Exception as error:  # noqa: BLE001 - any unreadable state is the same user error
        raise InputError(f"{path / STATE_FILE}: cannot read training state ({error})") from None


def check_resumable(state: TrainingState, config: TrainConfig, world_size: int, n_train: int,
                    path: Path) -> None:
    """A run resumes exactly only with the checkpoint's data order and model: say what differs."""
    current = config.to_json()
    changed = [f"{k}: checkpoint {state.config.get(k)!r}, now {current[k]!r}"
               for k in RESUME_MUST_MATCH if state.config.get(k) != current[k]]
    if state.world_size != world_size:
        changed.append(f"processes: checkpoint {state.world_size}, now {world_size}")
    if state.n_train != n_train:
        changed.append(f"training pairs: checkpoint {state.n_train}, now {n_train}")
    if changed:
        raise InputError(f"{path}: cannot resume exactly, settings differ: " + "; ".join(changed))


def load_checkpoint_weights(model: nn.Module, path: Path, full_finetune: bool) -> None:
    """The trained weights of checkpoint `path` into `model` (built as the run builds it)."""
    if full_finetune:
        load_base_weights(model, read_state_dict(path / "model.safetensors"), str(path))
    else:
        load_adapter(model, path)


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
