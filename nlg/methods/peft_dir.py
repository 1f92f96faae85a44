"""PEFT's adapter directory, the one reader and writer every method in PEFT's format uses
(LoRA and DoRA through nlg.methods.lora.peft_files, VeRA, VB-LoRA, FourierFT, (IA)³): writing
one, and reading one back with every key and tensor checked (one-line AdapterErrors, which are
InputErrors, naming the file and the key or tensor).

    adapter_config.json          {"peft_type": ..., "target_modules": [...], "fan_in_fan_out": true, ...}
    adapter_model.safetensors    base_model.model.<module>.<tensor>  (what PEFT's save_pretrained writes;
                                 tensors shared by all layers, e.g. VeRA's, as base_model.<tensor>)

Tensors are read by module-relative name: PEFT's `base_model.model.` prefix and the adapter name
(a `.default` part, which PEFT's in-memory state dict has and its files do not) are dropped, and
a NaN or inf anywhere is an error. The safetensors metadata of a directory we write carries
`nlg.*` entries (the settings PEFT's config cannot hold, e.g. LoRA's q/v slices, (IA)³'s k/v);
a directory PEFT wrote has none.

    peft_type(directory)                     the config's peft_type (None without one), for detection
    read_config(directory, kind, method)     adapter_config.json of a PEFT `kind` adapter, checked
    target_paths(config, path, allowed)      target_modules as our module paths
    read_tensors(directory)                  (tensors by module-relative name, metadata, path)
    check_tensors(tensors, expected, path)   exactly the expected names, each of its shape
    write(directory, config, tensors, ...)   both files, atomically
    common_config(kind, base_model, ...)     the keys every tuner config of ours has
    load_checked(...)                        the skeleton of a tuner's load (FourierFT, (IA)³)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nlg.files import InputError, atomic_write, read_json, verify_manifest

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
SHARED_PREFIX = "base_model."  # tensors of no one module, e.g. base_model.vera_A
PEFT_VERSION = "0.22.0"  # the PEFT release whose files these match (0.21 reads them too)

# our module paths inside a block <-> the names PEFT's target_modules use for them (suffixes)
MODULES = {"qkv": "attn.c_attn", "o": "attn.c_proj", "fc": "mlp.c_fc", "proj": "mlp.c_proj"}


class AdapterError(InputError):
    """An adapter file that does not fit the model; the message names the file and tensor or key."""


def peft_type(directory: Path) -> str | None:
    """adapter_config.json's peft_type, None when there is no such file or key (InputError for
    a file that is no JSON object)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        return None
    config = read_json(path)
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: not an adapter config (a JSON object)")
    kind = config.get("peft_type")
    return kind if isinstance(kind, str) else None


def read_config(directory: Path, kind: str, method: str) -> dict:
    """adapter_config.json of a PEFT `kind` adapter; InputError naming the file otherwise."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise AdapterError(f"{directory}: no {CONFIG_FILE}; not a PEFT {kind} adapter")
    verify_manifest(directory, (CONFIG_FILE, WEIGHTS_FILE))
    config = read_json(path)
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: not an adapter config (a JSON object)")
    if config.get("peft_type") != kind:
        raise AdapterError(f"{path}: peft_type {config.get('peft_type')!r}; --method {method} reads PEFT {kind} adapters")
    for key in ("modules_to_save", "layers_to_transform", "layers_pattern", "exclude_modules"):
        if config.get(key):
            raise AdapterError(f"{path}: {key}: {json.dumps(config[key])} is not supported (must be null)")
    return config


def target_paths(config: dict, path: Path, allowed: tuple[str, ...]) -> list[str]:
    """config["target_modules"] as our block-relative module paths (from `allowed`), in the
    order of `allowed`; InputError naming the key for a regex, an unknown module or an empty list."""
    targets = config.get("target_modules")
    if isinstance(targets, str) or not isinstance(targets, list) or not targets \
            or not all(isinstance(t, str) for t in targets):
        raise AdapterError(f"{path}: target_modules: {json.dumps(targets)} must be a list of GPT-2 module names "
                         f"(from {', '.join(allowed)})")
    found = []
    for target in targets:
        matches = [p for p in allowed if p == target or p.endswith("." + target)]
        if len(matches) != 1:
            raise AdapterError(f"{path}: target_modules: {target!r} names none (or several) of {', '.join(allowed)}")
        found.append(matches[0])
    return [p for p in allowed if p in found]


def read_tensors(directory: Path) -> tuple[dict[str, Any], dict[str, str], Path]:
    """adapter_model.safetensors' tensors by module-relative name (PEFT's prefix and adapter
    name dropped), its metadata, and its path; AdapterError naming the file for a missing or
    damaged one or a tensor with NaN/inf."""
    import torch
    from safetensors import safe_open

    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise AdapterError(f"{directory}: no {WEIGHTS_FILE}")
    tensors = {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            for key in handle.keys():
                name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
                tensors[".".join(part for part in name.split(".") if part != "default")] = handle.get_tensor(key)
    except OSError:
        raise  # no permission and the like: the machine's state, reported as such
    except Exception as error:  # noqa: BLE001 - safetensors' own SafetensorError (and others) for a damaged file
        raise AdapterError(f"{path}: not a readable safetensors file ({error})") from None
    for name, tensor in tensors.items():  # the message every method's load gives (nlg.weights.check_finite)
        bad = int(torch.count_nonzero(~torch.isfinite(tensor)))
        if bad:
            raise AdapterError(f"{path}: tensor {name} has {bad} non-finite values (NaN/inf): "
                               "the adapter is broken (diverged training?)")
    return tensors, metadata, path


def check_tensors(tensors: dict, expected: dict[str, tuple[int, ...]], path: Path) -> None:
    """Exactly the `expected` tensors (name -> shape) in the file; InputError naming the first
    missing, unexpected or misshapen one."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise AdapterError(f"{path}: tensor {missing[0]} missing (the model needs {len(expected)} tensors)")
    if unexpected:
        raise AdapterError(f"{path}: tensor {unexpected[0]}: not one the model has (another model depth or method?)")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise AdapterError(f"{path}: tensor {name} has shape {tuple(tensors[name].shape)}, the model needs "
                             f"{tuple(shape)} (another model size or setting?)")


def write(directory: Path, config: dict, tensors: dict, metadata: dict[str, str]) -> None:
    """Both files, atomically: `tensors` (module-relative names) under PEFT's prefix, but for a
    name that starts with `base_model.` (a tensor shared by all layers: VeRA's projections,
    VB-LoRA's bank), which is written as it is; float32 stays float32."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stored = {(name if name.startswith(SHARED_PREFIX) else PEFT_PREFIX + name): t.detach().cpu().contiguous().clone()
              for name, t in tensors.items()}
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


def load_checked(method, model, directory: Path, found, settings, modules: Callable[[Any], dict],
                 shapes: Callable[[Any], dict[str, tuple[int, ...]]]) -> tuple[dict, dict[str, Any], Path]:
    """The steps a tuner's load takes before it copies tensors (FourierFT's, (IA)³'s): `method`
    applied at the file's settings `found` to a model without it (`modules(model)` empty), or
    an AdapterError naming the config when the model's `settings` differ; then the file's
    tensors, checked (`check_tensors`) against `shapes(module)` (tensor name after the module's
    -> shape) of every adapted module. Returns (the adapted modules by name, the tensors, the
    weights file's path)."""
    present = modules(model)
    if not present:
        method.apply(model, found)
        present = modules(model)
    elif settings is not None and found != settings:
        raise AdapterError(f"{Path(directory) / CONFIG_FILE}: {method.describe(found)}; the model has "
                           f"{method.describe(settings)}")
    tensors, _, path = read_tensors(directory)
    check_tensors(tensors, {f"{name}.{key}": shape for name, module in present.items()
                            for key, shape in shapes(module).items()}, path)
    return present, tensors, path
