"""PEFT's adapter directory for methods other than LoRA (FourierFT, (IA)³): writing one, and
reading one back with every key and tensor checked (one-line InputErrors naming the file).

    adapter_config.json          {"peft_type": ..., "target_modules": [...], "fan_in_fan_out": true, ...}
    adapter_model.safetensors    base_model.model.<module>.<tensor>  (what PEFT's save_pretrained writes)

The safetensors metadata of a directory we write carries `nlg.*` entries (the settings PEFT's
config cannot hold, e.g. (IA)³'s k/v slices); a directory PEFT wrote has none. Tensors are read
with nlg.methods.lora.peft_files' reader (the same prefix handling and non-finite check as LoRA's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nlg.files import InputError, atomic_write, read_json, verify_manifest

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
PEFT_VERSION = "0.22.0"  # the PEFT release whose files these match (0.21 reads them too)

# our module paths inside a block <-> the names PEFT's target_modules use for them (suffixes)
MODULES = {"qkv": "attn.c_attn", "o": "attn.c_proj", "fc": "mlp.c_fc", "proj": "mlp.c_proj"}


def peft_type(directory: Path) -> str | None:
    """adapter_config.json's peft_type, None when there is no such file or key (InputError for
    a file that is no JSON object)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        return None
    config = read_json(path)
    if not isinstance(config, dict):
        raise InputError(f"{path}: not an adapter config (a JSON object)")
    kind = config.get("peft_type")
    return kind if isinstance(kind, str) else None


def read_config(directory: Path, kind: str, method: str) -> dict:
    """adapter_config.json of a PEFT `kind` adapter; InputError naming the file otherwise."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{directory}: no {CONFIG_FILE}; not a PEFT {kind} adapter")
    verify_manifest(directory, (CONFIG_FILE, WEIGHTS_FILE))
    config = read_json(path)
    if not isinstance(config, dict):
        raise InputError(f"{path}: not an adapter config (a JSON object)")
    if config.get("peft_type") != kind:
        raise InputError(f"{path}: peft_type {config.get('peft_type')!r}; --method {method} reads PEFT {kind} adapters")
    for key in ("modules_to_save", "layers_to_transform", "layers_pattern", "exclude_modules"):
        if config.get(key):
            raise InputError(f"{path}: {key}: {json.dumps(config[key])} is not supported (must be null)")
    return config


def target_paths(config: dict, path: Path, allowed: tuple[str, ...]) -> list[str]:
    """config["target_modules"] as our block-relative module paths (from `allowed`), in the
    order of `allowed`; InputError naming the key for a regex, an unknown module or an empty list."""
    targets = config.get("target_modules")
    if isinstance(targets, str) or not isinstance(targets, list) or not targets \
            or not all(isinstance(t, str) for t in targets):
        raise InputError(f"{path}: target_modules: {json.dumps(targets)} must be a list of GPT-2 module names "
                         f"(from {', '.join(allowed)})")
    found = []
    for target in targets:
        matches = [p for p in allowed if p == target or p.endswith("." + target)]
        if len(matches) != 1:
            raise InputError(f"{path}: target_modules: {target!r} names none (or several) of {', '.join(allowed)}")
        found.append(matches[0])
    return [p for p in allowed if p in found]


def read_tensors(directory: Path) -> tuple[dict[str, Any], dict[str, str], Path]:
    """adapter_model.safetensors' tensors by module-relative name (PEFT's prefix and adapter
    name dropped), its metadata, and its path; InputError naming the file for a damaged one or
    a tensor with NaN/inf."""
    from nlg.methods.lora.peft_files import _read_tensors

    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise InputError(f"{directory}: no {WEIGHTS_FILE}")
    tensors, metadata = _read_tensors(path)
    return {name.replace(".default", ""): t for name, t in tensors.items()}, metadata, path


def check_tensors(tensors: dict, expected: dict[str, tuple[int, ...]], path: Path) -> None:
    """Exactly the `expected` tensors (name -> shape) in the file; InputError naming the first
    missing, unexpected or misshapen one."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise InputError(f"{path}: tensor {missing[0]} missing (the model needs {len(expected)} tensors)")
    if unexpected:
        raise InputError(f"{path}: tensor {unexpected[0]}: not one the model has (another model depth or method?)")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise InputError(f"{path}: tensor {name} has shape {tuple(tensors[name].shape)}, the model needs "
                             f"{tuple(shape)} (another model size or setting?)")


def write(directory: Path, config: dict, tensors: dict, metadata: dict[str, str]) -> None:
    """Both files, atomically: `tensors` (module-relative names) under PEFT's prefix."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stored = {PEFT_PREFIX + name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    with atomic_write(directory / WEIGHTS_FILE, "wb") as handle:
        handle.write(save(stored, metadata={"format": "pt", **metadata}))
    with atomic_write(directory / CONFIG_FILE) as handle:
        handle.write(json.dumps(dict(sorted(config.items())), indent=2) + "\n")


def common_config(kind: str, base_model: str | None, targets: list[str]) -> dict:
    """The keys every PEFT tuner config of ours has."""
    return {"peft_type": kind, "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "inference_mode": True, "fan_in_fan_out": True,  # published GPT-2 is Conv1D, (in, out)
            "target_modules": targets, "modules_to_save": None, "exclude_modules": None,
            "revision": None, "auto_mapping": None, "peft_version": PEFT_VERSION}
