"""The pipeline: `nlg reproduce DATASET` (scripts/reproduce.sh fronts it) runs data -> pretrain
(--demo) -> train -> select -> beam -> untrained (--demo) -> decode -> score for one of the LoRA
paper's datasets.

    nlg.pipeline.settings   every setting, resolved (environment, demo, recipe) and checked
    nlg.pipeline.stages     each stage's settings, inputs, outputs; its record, differences, marker
    nlg.pipeline.chain      the stages run in order (run_chain: one run directory), the command
    nlg.pipeline.usage      the usage text (--help)

and here the pieces the stages share: a split cut to N contexts (TEST_LIMIT, VALID_LIMIT), each
run's run.json, and the demo's pre-training pruned to its last checkpoint.

run.json, written atomically, is the run record shared with `nlg results --runs` and `nlg compare`:

    {"dataset", "model_card", "method", "seed", "params", "settings", "checkpoint",
     "selection", "subsets", "untrained"}

paths relative to RUN_DIR; `method` and `params` come from the train_config.json beside the checkpoint
(`method`, default nlg.methods.DEFAULT; `trainable_params` or `trainable_parameters`, else null);
`settings` are the score stage's record (every setting that shapes the result, after overrides),
less the locations of files (DATA_DIR, RAW_DIR, NLG_VOCAB_DIR) and the recorded input identities
(lower-case names); `selection` is selection.json (`nlg select`) less its checkpoint path, null
when the criterion was `last`; `untrained` is null outside the demos. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from nlg import methods
from nlg.files import (
    InputError,
    atomic_files,
    atomic_write,
    check_outputs,
    read_jsonl,
    read_lines,
    read_text,
)
from nlg.pipeline.settings import NUMBERS, Number, check, check_number  # noqa: F401 (the pipeline's API)

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


def record_settings(pairs: Mapping[str, str]) -> dict[str, str]:
    """A stage record's settings, without file locations and input identities."""
    return {name: value for name, value in pairs.items() if _SETTING.match(name) and name not in LOCATIONS}


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


def run_record(run_dir: Path, dataset: str, card: str, seed: int, settings: Mapping[str, str],
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
        "settings": record_settings(settings),
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


def write_run_record(run_dir: Path, record: dict) -> None:
    with atomic_write(run_dir / "run.json") as handle:
        json.dump(record, handle, indent=1)
        handle.write("\n")
