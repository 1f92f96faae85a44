"""What a training run was made from, and whether `--resume` may continue a checkpoint.

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

import dataclasses
from pathlib import Path
from typing import Any

from nlg.files import InputError, sha256_file

RESUME_MAY_DIFFER = ("resume", "allow_changed", "work_dir", "log_interval", "eval_interval",
                     "save_interval", "valid_batch_size", "device", "compile", "dist_timeout")
INPUT_SETTINGS = ("train_data", "valid_data", "init_checkpoint")
RESUME_FIXED = ("train_batch_size", "grad_acc", "seq_len", "random_seed", "group_by_length", "obj",
                "lora_dim", "lora_alpha", "lora_targets", "method", "top_layers", "adapter_dim",
                "prefix_len", "prefix_hidden")


def file_identity(path: Path, name: str) -> dict[str, Any]:
    """{"path", "file" (its name inside an input directory, "" for a bare file), "bytes", "sha256"}."""
    return {"path": str(path), "file": name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def input_identities(config: Any) -> dict[str, list[dict[str, Any]] | None]:
    """The identity of every file the run reads, by setting (None for one not given). A
    directory given as --init_checkpoint counts with each model file it holds."""
    from nlg.model import checkpoint_files  # torch: only `nlg train` calls this

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
    """Each TrainConfig field's default, as to_json writes it (None for a required one)."""
    defaults = {}
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


def check_allowed(names: tuple[str, ...], field_names: list[str]) -> list[str]:
    """What is wrong with --allow_changed (one phrase per problem, empty when nothing is)."""
    problems = []
    for name in names:
        if name not in field_names:
            problems.append(f"--allow_changed {name}: not a setting of nlg train")
        elif name in RESUME_FIXED:
            problems.append(f"--allow_changed {name}: cannot change on --resume (the checkpoint's data "
                            "order, its position in the epoch or its weights' shape depend on it)")
    return problems


def allow_hint(refused: list[Difference]) -> str:
    """How to continue anyway, when --allow_changed can allow every refused difference."""
    names = [d.name for d in refused]
    if not names or any(name in RESUME_FIXED for name in names):
        return ""
    return f" (to continue with the new values, add --allow_changed {','.join(names)})"


def changes_record(differences: list[Difference]) -> dict[str, dict[str, Any]]:
    """{setting: {"checkpoint": value, "now": value}}: the allowed changes, for the run's logs."""
    return {d.name: {"checkpoint": d.before, "now": d.after} for d in differences}
