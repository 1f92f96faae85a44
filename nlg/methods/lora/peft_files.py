"""Adapter files: the one module that knows their layout, for saving, loading and analysing.

An adapter directory (what `nlg train` writes into every checkpoint-N/, what `nlg beam
--lora_checkpoint` and `nlg analyze` read) holds Hugging Face PEFT's two files, the
ecosystem's common format, so PEFT and spectral tools open ours unchanged::

    adapter_config.json          {"peft_type": "LORA", "r", "lora_alpha", "target_modules",
                                  "fan_in_fan_out": true, "rank_pattern", "alpha_pattern", ...}
    adapter_model.safetensors    base_model.model.<module>.lora_A.weight  (R x in)
                                 base_model.model.<module>.lora_B.weight  (out x R)

PEFT adapts the fused c_attn as one matrix, so n separate q/k/v slices of rank r (see
`nlg.methods.lora.layer`) are written as one c_attn adapter of rank R = n·r: A stacks the slices' A's (r rows
each, in target order) and B is block-structured (slice i's B in that slice's output rows and in
columns [i·r, (i+1)·r), zeros elsewhere), with lora_alpha multiplied by n to keep alpha/rank.
`split_blocks` takes such a pair apart again and refuses a B that is not zero outside its
blocks. The slice names travel in the safetensors metadata (`nlg.targets`, `nlg.rank`,
`nlg.alpha`, `nlg.dropout`); an adapter written by PEFT itself has none and loads as target
`qkv` (all of c_attn), `o`, `fc` or `proj`.

    save_adapter(model, directory)    write both files (atomically)
    read_adapter(directory)           (adapter_config.json, finite tensors by name, metadata)
    adapter_lora_config(...)          the LoRAConfig the adapter was trained with
    split_blocks(...)                 one module's stacked A / block B -> each slice's (A, B)
    load_adapter(model, directory)    into a model, strictly (every tensor, every shape)

DoRA (nlg.methods.dora) uses the same functions: its layer is a LoRALinear subclass whose
`extra_tensors` (the magnitude) travel beside A and B, its config has use_dora. The reading of
the files themselves (prefix, adapter name, non-finite values, the atomic write's files) is
nlg.methods.peft_dir's, shared with every other method in PEFT's format.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from nlg.files import MANIFEST, InputError, read_json, verify_manifest
from nlg.methods import peft_dir
from nlg.methods.lora.layer import TARGETS, LoRAConfig, LoRALinear, add_lora, lora_modules
from nlg.methods.peft_dir import AdapterError  # LoRA's callers import it from here too

ADAPTER_CONFIG = peft_dir.CONFIG_FILE
ADAPTER_WEIGHTS = peft_dir.WEIGHTS_FILE
# The largest scale alpha/r the model's float32 arithmetic can hold (bf16 has the same range).
MAX_SCALE = float(torch.finfo(torch.float32).max)


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_paths(directory: str | os.PathLike | None) -> list[Path]:
    """The files an adapter directory is read from (for commands to check that no output would
    overwrite them); none without a directory."""
    if directory is None:
        return []
    return [Path(directory) / name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST)]


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _peft_targets(config: LoRAConfig) -> tuple[list[str] | str, dict[str, int], dict[str, float], int, float]:
    """PEFT's target_modules, rank_pattern, alpha_pattern, r and lora_alpha for our config."""
    fused = [t for t in config.targets if TARGETS[t][0] == "attn.c_attn" and TARGETS[t][1] is not None]
    paths = sorted({TARGETS[t][0] for t in config.targets})
    leaves = [path.rsplit(".", 1)[1] for path in paths]
    # PEFT matches target names as suffixes, and "c_proj" names both attn.c_proj (o) and
    # mlp.c_proj (proj): adapting only one of them needs a full-path pattern.
    if "c_proj" not in leaves or {"o", "proj"} <= set(config.targets):
        target_modules: list[str] | str = sorted(set(leaves))
    else:
        target_modules = r".*\.h\.\d+\.(" + "|".join(p.replace(".", r"\.") for p in paths) + ")$"
    r, alpha = config.rank, config.alpha
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    if fused:
        n = len(fused)
        if len(paths) == 1:
            r, alpha = n * config.rank, n * config.alpha
        else:
            rank_pattern["c_attn"] = n * config.rank
            alpha_pattern["c_attn"] = n * config.alpha
    return target_modules, rank_pattern, alpha_pattern, r, alpha


def _peft_config(config: LoRAConfig, base_model: str | None) -> dict:
    target_modules, rank_pattern, alpha_pattern, r, alpha = _peft_targets(config)
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": config.dropout,
        "target_modules": target_modules,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "fan_in_fan_out": True,  # published GPT-2 weights are Conv1D, (in, out)
        "bias": "none",
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
    }


def save_adapter(model: nn.Module, directory: str | os.PathLike, base_model: str | None = None,
                 config_keys: dict | None = None) -> Path:
    """Write the LoRA weights (and each layer's `extra_tensors`, e.g. DoRA's magnitude) and
    settings only, in PEFT's layout, `config_keys` added to the config (DoRA's use_dora);
    returns the directory."""
    config: LoRAConfig | None = getattr(model, "lora_config", None)
    modules = lora_modules(model)
    if config is None or not modules:
        raise AdapterError("model has no LoRA adapters to save")
    tensors = {}
    with torch.no_grad():
        for name, module in modules.items():
            tensors[f"{name}.lora_A.weight"] = module.stacked_A()
            tensors[f"{name}.lora_B.weight"] = module.block_B()
            tensors.update({f"{name}.{key}": t for key, t in module.extra_tensors().items()})
    metadata = {"nlg.targets": ",".join(config.targets), "nlg.rank": str(config.rank),
                "nlg.alpha": repr(float(config.alpha)), "nlg.dropout": repr(float(config.dropout))}
    peft_dir.write(directory, {**_peft_config(config, base_model), **(config_keys or {})}, tensors, metadata)
    return Path(directory)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_adapter(directory: str | os.PathLike, dora: bool = False) -> tuple[dict, dict[str, Tensor], dict[str, str]]:
    """(adapter_config.json, tensors by module-relative name, safetensors metadata) of a
    directory: a LoRA adapter, or with `dora` a DoRA one (use_dora true).

    Tensor names lose PEFT's `base_model.model.` prefix and adapter name, e.g.
    `transformer.h.0.attn.c_attn.lora_A.weight`. Errors (AdapterError, naming the file): a file
    that differs from the directory's manifest.json (a checkpoint of `nlg train`), a damaged
    safetensors file, a tensor with NaN or inf values, a config that disagrees with the tensors
    (`check_config_agrees`).
    """
    directory = Path(directory)
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise AdapterError(f"{directory}: not an adapter directory (no {path.name})")
    verify_manifest(directory, (ADAPTER_CONFIG, ADAPTER_WEIGHTS))
    try:
        config = read_json(config_path)
    except InputError as error:
        raise AdapterError(str(error)) from None
    if not isinstance(config, dict):
        raise AdapterError(f"{config_path}: expected a JSON object")
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{config_path}: peft_type {config.get('peft_type')!r} is not LORA")
    if dora and config.get("use_dora") is not True:
        raise AdapterError(f"{config_path}: use_dora: not a DoRA adapter (PEFT's LoRA with use_dora true)")
    for key in ("use_rslora",) if dora else ("use_dora", "use_rslora"):
        if config.get(key):
            raise AdapterError(f"{config_path}: {key}=true is not supported")
    check_scales(config, config_path)
    tensors, metadata, _ = peft_dir.read_tensors(directory)
    check_config_agrees(config, tensors, metadata, config_path, weights_path)
    return config, tensors, metadata


def _is_count(value: object) -> bool:
    """A positive integer (JSON's 8, not 8.7, "8" or true)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_positive(value: object) -> bool:
    """A finite positive number (not NaN, inf, a string, a list or true)."""
    return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0)


def check_rank_alpha(rank: object, alpha: object, rank_key: str, alpha_key: str, where: object) -> None:
    """AdapterError naming `where` and the key unless `rank` is a positive integer, `alpha` a
    finite positive number and the scale alpha/r, by which every update B·A is multiplied, a
    positive number float32 can hold (1 <= r, 0 < alpha/r <= 3.4e38): a NaN or huge scale makes
    every logit NaN, and beam search then decodes empty texts without a word."""
    if not _is_count(rank):
        raise AdapterError(f"{where}: {rank_key} is {rank!r}: must be a positive integer (the LoRA rank)")
    if not _is_positive(alpha):
        raise AdapterError(f"{where}: {alpha_key} is {alpha!r}: must be a finite positive number")
    scale = alpha / rank
    if not 0 < scale <= MAX_SCALE or float(torch.tensor(scale, dtype=torch.float32)) == 0:
        raise AdapterError(f"{where}: {alpha_key}/{rank_key} is {alpha!r}/{rank!r} = {scale:.6g}: the "
                           f"scale must be a positive number float32 can hold (at most {MAX_SCALE:.3g})")


def check_scales(config: dict, config_path: Path) -> None:
    """Every rank and alpha of adapter_config.json checked (`check_rank_alpha`): `r` and
    `lora_alpha`, and each module of `rank_pattern` / `alpha_pattern` with its partner (the
    pattern's own entry, else the global one)."""
    for key in ("r", "lora_alpha"):
        if key not in config:
            raise AdapterError(f"{config_path}: no {key!r} key (every LoRA adapter_config.json has one)")
    check_rank_alpha(config["r"], config["lora_alpha"], "r", "lora_alpha", config_path)
    dropout = config.get("lora_dropout", 0.0)
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, (int, float))
                                or not 0 <= dropout < 1):
        raise AdapterError(f"{config_path}: lora_dropout: {json.dumps(dropout)} must be a number in [0, 1)")
    patterns = {}
    for key in ("rank_pattern", "alpha_pattern"):
        patterns[key] = config.get(key) or {}
        if not isinstance(patterns[key], dict):
            raise AdapterError(f"{config_path}: {key} is {patterns[key]!r}: must be an object of module: value")
    ranks, alphas = patterns["rank_pattern"], patterns["alpha_pattern"]
    for module in sorted(set(ranks) | set(alphas)):
        rank_key = f"rank_pattern[{module!r}]" if module in ranks else "r"
        alpha_key = f"alpha_pattern[{module!r}]" if module in alphas else "lora_alpha"
        check_rank_alpha(ranks.get(module, config["r"]), alphas.get(module, config["lora_alpha"]),
                         rank_key, alpha_key, config_path)


def _matches(module: str, key: str) -> bool:
    """PEFT's rule for a target_modules / rank_pattern name: the module's name or its last parts."""
    return module == key or module.endswith("." + key)


def check_config_agrees(config: dict, tensors: dict[str, Tensor], metadata: dict[str, str],
                        config_path: Path, weights_path: Path) -> None:
    """adapter_config.json must describe the tensors beside it, or the adapter would load (in
    PEFT, in another tool) as something other than what was trained. Every lora_A has as many
    rows as the config's rank for its module (`r`, or its `rank_pattern` entry), and every
    adapted module is one `target_modules` selects. An adapter written by nlg also records its
    settings in the safetensors metadata: `r`, `lora_alpha`, `target_modules`, `rank_pattern`
    and `alpha_pattern` must then be exactly what they imply. Errors name both values."""
    try:
        ranks, targets = config.get("rank_pattern") or {}, config.get("target_modules")
        for name, tensor in sorted(tensors.items()):
            module, _, kind = name.rpartition(".lora_")
            if kind != "A.weight":
                continue
            rank = next((int(r) for key, r in ranks.items() if _matches(module, key)), None)
            key = "r" if rank is None else f"rank_pattern[{module.rsplit('.', 1)[-1]!r}]"
            rank = int(config["r"]) if rank is None else rank
            if tensor.shape[0] != rank:
                raise AdapterError(f"{config_path}: {key} is {rank}, but {weights_path} holds rank "
                                   f"{tensor.shape[0]} ({name} has {tensor.shape[0]} rows)")
            selected = (re.fullmatch(targets, module) is not None if isinstance(targets, str)
                        else targets is None or any(_matches(module, t) for t in targets))
            if not selected:
                raise AdapterError(f"{config_path}: target_modules is {targets!r}, but {weights_path} "
                                   f"adapts {module}, which it does not select")
    except AdapterError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, re.error) as error:
        raise AdapterError(f"{config_path}: unreadable r, rank_pattern or target_modules ({error!r})") from None
    if "nlg.targets" not in metadata:
        return
    try:
        expected = _peft_config(adapter_lora_config(config, tensors, metadata), None)
    except (KeyError, ValueError) as error:
        raise AdapterError(f"{weights_path}: unreadable nlg.* metadata ({error})") from None
    for key in ("r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern"):
        if config.get(key) != expected[key]:
            raise AdapterError(f"{config_path}: {key} is {config.get(key)!r}, but {weights_path} was "
                               f"written with {key} {expected[key]!r} (its metadata: rank "
                               f"{metadata['nlg.rank']}, alpha {metadata['nlg.alpha']}, targets "
                               f"{metadata['nlg.targets']})")


def _leaf_target(module_path: str) -> str:
    for target, (path, index) in TARGETS.items():
        if index is None and module_path.endswith("." + path):
            return target
    raise AdapterError(f"adapter tensor on {module_path!r}: not a GPT-2 projection LoRA can adapt")


def adapter_lora_config(config: dict, tensors: dict[str, Tensor], metadata: dict[str, str]) -> LoRAConfig:
    """The LoRAConfig an adapter was trained with (ours), or the one a PEFT adapter implies."""
    if "nlg.targets" in metadata:
        rank, alpha = int(metadata["nlg.rank"]), float(metadata["nlg.alpha"])
        check_rank_alpha(rank, alpha, "nlg.rank", "nlg.alpha", "adapter metadata")
        return LoRAConfig(rank=rank, alpha=alpha, dropout=float(metadata.get("nlg.dropout", 0.0)),
                          targets=tuple(metadata["nlg.targets"].split(",")))
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise AdapterError("PEFT adapters with rank_pattern/alpha_pattern are only read when written by nlg")
    modules = sorted({name.rsplit(".lora_", 1)[0] for name in tensors})
    targets = tuple(dict.fromkeys(_leaf_target(path) for path in modules))
    return LoRAConfig(rank=int(config["r"]), alpha=float(config["lora_alpha"]),
                      dropout=float(config.get("lora_dropout") or 0.0), targets=targets)


def split_blocks(A: Tensor, B: Tensor, rows: dict[str, tuple[int, int]], rank: int,
                 where: str) -> dict[str, tuple[Tensor, Tensor]]:
    """Each slice's (A_i (r x in), B_i (end - start x r)) from one module's adapter tensors.

    A (n·r x in) stacks the n slices' A's in `rows` order; B (out x n·r) holds slice i's B in
    its output rows rows[i] = [start, end) and columns [i·r, (i+1)·r). Everything else in B must
    be zero: those entries would be an update no set of slices can carry (AdapterError, naming
    `where`, the B tensor). The pieces are views of A and B.
    """
    outside = B.clone()
    parts = {}
    for index, (name, (start, end)) in enumerate(rows.items()):
        cols = slice(index * rank, (index + 1) * rank)
        parts[name] = (A[cols], B[start:end, cols])
        outside[start:end, cols] = 0
    if torch.count_nonzero(outside):
        raise AdapterError(f"{where} is not zero outside the blocks of slices {list(rows)}")
    return parts


# ---------------------------------------------------------------------------------------------
# Loading into a model
# ---------------------------------------------------------------------------------------------


def _fit_lora(model: nn.Module, lora_config: LoRAConfig, directory: str | os.PathLike,
              layer_class: type[LoRALinear] = LoRALinear) -> None:
    """Add the adapter's LoRA (in `layer_class`) to a model without any, or check an existing one matches it."""
    existing: LoRAConfig | None = getattr(model, "lora_config", None)
    if existing is None:
        add_lora(model, rank=lora_config.rank, alpha=lora_config.alpha,
                 dropout=lora_config.dropout, targets=lora_config.targets, layer_class=layer_class)
    elif (existing.rank, existing.alpha, existing.targets) != (lora_config.rank, lora_config.alpha,
                                                               lora_config.targets):
        raise AdapterError(f"{directory}: adapter has rank {lora_config.rank}, alpha {lora_config.alpha}, "
                           f"targets {lora_config.targets}; the model has rank {existing.rank}, "
                           f"alpha {existing.alpha}, targets {existing.targets}")


def _expected_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every adapter tensor the model's file must hold (name -> shape): each module's stacked A,
    block B and `extra_tensors`."""
    expected = {}
    for name, module in lora_modules(model).items():
        expected[f"{name}.lora_A.weight"] = (len(module.slices) * module.rank, module.in_features)
        expected[f"{name}.lora_B.weight"] = (module.out_features, len(module.slices) * module.rank)
        expected.update({f"{name}.{key}": tuple(t.shape) for key, t in module.extra_tensors().items()})
    return expected


def load_adapter(model: nn.Module, directory: str | os.PathLike, read=read_adapter,
                 layer_class: type[LoRALinear] = LoRALinear) -> LoRAConfig:
    """Load an adapter directory into `model` (adding LoRA in `layer_class` first if it has
    none), strictly; `read` reads the directory (DoRA's: nlg.methods.dora.layer.read_dora).

    Every adapter tensor of the model (`_expected_shapes`) must be in the file with the right
    shape and nothing else may be; a block-structured c_attn B must be zero outside its slices.
    Returns the config.
    """
    config, tensors, metadata = read(directory)
    lora_config = adapter_lora_config(config, tensors, metadata)
    _fit_lora(model, lora_config, directory, layer_class)
    peft_dir.check_tensors(tensors, _expected_shapes(model), Path(directory) / ADAPTER_WEIGHTS)
    with torch.no_grad():
        for name, module in lora_modules(model).items():
            parts = split_blocks(tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"],
                                 module.slices, module.rank, f"{directory}: tensor {name}.lora_B.weight")
            for slice_name, (A, B) in parts.items():
                module.lora_A[slice_name].copy_(A)
                module.lora_B[slice_name].copy_(B)
            for key, extra in module.extra_tensors().items():
                extra.copy_(tensors[f"{name}.{key}"])
    return lora_config
