"""DoRA's layer and files: LoRA's layer (nlg.methods.lora.layer.LoRALinear) plus a magnitude
vector, and LoRA's PEFT files (nlg.methods.lora.peft_files) plus `lora_magnitude_vector`.

    add_dora(model, settings)          DoRALinear on the targets, everything else frozen
    save_dora(model, directory)        adapter_config.json (use_dora: true) + adapter_model.safetensors
    read_dora(directory)               (config, tensors, metadata), checked as LoRA's are
    load_dora(model, directory)        strictly: every tensor of the model, each of its shape
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlg.files import atomic_write, read_json, verify_manifest
from nlg.methods.dora import MAGNITUDE, PEFT_MAGNITUDE
from nlg.methods.lora.layer import LoRAConfig, LoRALinear, _get, _module_slices, lora_modules
from nlg.methods.lora.peft_files import (
    _PEFT_PREFIX,
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterError,
    _peft_config,
    _read_tensors,
    adapter_lora_config,
    check_config_agrees,
    check_scales,
    split_blocks,
)


class DoRALinear(LoRALinear):
    """LoRALinear whose output rows are rescaled to a trained magnitude (nlg.methods.dora).

    Parameters: LoRA's `lora_A.<slice>`, `lora_B.<slice>` and `dora_magnitude` (out,), which
    starts at the row norms of the frozen weight."""

    def __init__(self, base: nn.Linear, slices: dict[str, tuple[int, int]], config: LoRAConfig):
        super().__init__(base, slices, config)
        with torch.no_grad():
            norm = torch.linalg.norm(self.weight.float(), dim=1)
        self.dora_magnitude = nn.Parameter(norm)
        self.merged_norm: Tensor | None = None  # n at merge time, to unmerge exactly

    def weight_norm(self) -> Tensor:
        """n = ||W0 + ΔW||_c per output row, fp32, detached (the paper's Section 4.3)."""
        with torch.no_grad():
            return torch.linalg.norm(self.weight.float() + self.delta_weight(), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:
            return F.linear(x, self.weight, self.bias)
        A = self.stacked_A().to(x.dtype)
        B = self.block_B().to(x.dtype)
        scale = (self.dora_magnitude / self.weight_norm()).to(x.dtype)
        base = F.linear(x, self.weight)
        if isinstance(self.lora_dropout, nn.Identity) or not self.training:  # y = (m/n)(W0 x + ΔW x) + b
            out = scale * (base + self.scaling * F.linear(F.linear(x, A), B))
        else:  # PEFT's form: W0 x + (m/n - 1) W0 x' + (m/n) ΔW x'
            dropped = self.lora_dropout(x)
            out = base + (scale - 1) * F.linear(dropped, self.weight) \
                + scale * self.scaling * F.linear(F.linear(dropped, A), B)
        return out if self.bias is None else out + self.bias

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            norm = self.weight_norm()
            merged = (self.dora_magnitude / norm)[:, None] * (self.weight.float() + self.delta_weight())
            self.weight.copy_(merged.to(self.weight.dtype))
            self.merged_norm = norm
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            factor = (self.dora_magnitude / self.merged_norm)[:, None]
            self.weight.copy_((self.weight.float() / factor - self.delta_weight()).to(self.weight.dtype))
            self.merged_norm = None
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dora"


def add_dora(model: nn.Module, settings) -> nn.Module:
    """DoRA on `settings.targets` of every block, everything else frozen (in place)."""
    config = LoRAConfig(rank=settings.rank, alpha=settings.alpha, dropout=settings.dropout,
                        targets=tuple(settings.targets))
    if lora_modules(model):
        raise ValueError("model already has LoRA or DoRA adapters")
    for param in model.parameters():
        param.requires_grad_(False)
    plan = _module_slices(model, config.targets)
    for block in model.transformer.h:
        for path, slices in plan.items():
            parent_path, _, leaf = path.rpartition(".")
            parent = _get(block, parent_path)
            setattr(parent, leaf, DoRALinear(getattr(parent, leaf), slices, config).train(model.training))
    model.lora_config = config
    return model


def dora_modules(model: nn.Module) -> dict[str, DoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, DoRALinear)}


# ---------------------------------------------------------------------------------------------
# PEFT's files
# ---------------------------------------------------------------------------------------------


def save_dora(model: nn.Module, directory: str | os.PathLike, base_model: str | None = None) -> Path:
    """LoRA's tensors and config (nlg.methods.lora.peft_files' layout) with use_dora and each
    module's `lora_magnitude_vector`."""
    from safetensors.torch import save

    config: LoRAConfig | None = getattr(model, "lora_config", None)
    modules = dora_modules(model)
    if config is None or not modules:
        raise AdapterError("model has no DoRA adapters to save")
    tensors = {}
    with torch.no_grad():
        for name, module in modules.items():
            tensors[f"{_PEFT_PREFIX}{name}.lora_A.weight"] = module.stacked_A().detach().contiguous().cpu()
            tensors[f"{_PEFT_PREFIX}{name}.lora_B.weight"] = module.block_B().detach().contiguous().cpu()
            tensors[f"{_PEFT_PREFIX}{name}.{PEFT_MAGNITUDE}"] = module.dora_magnitude.detach().contiguous().cpu()
    metadata = {"format": "pt", "nlg.targets": ",".join(config.targets), "nlg.rank": str(config.rank),
                "nlg.alpha": repr(float(config.alpha)), "nlg.dropout": repr(float(config.dropout))}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / ADAPTER_WEIGHTS, "wb") as handle:
        handle.write(save(tensors, metadata=metadata))
    with atomic_write(directory / ADAPTER_CONFIG) as handle:
        handle.write(json.dumps({**_peft_config(config, base_model), "use_dora": True}, indent=2) + "\n")
    return directory


def read_dora(directory: str | os.PathLike) -> tuple[dict, dict[str, Tensor], dict[str, str]]:
    """(adapter_config.json, tensors by module-relative name, metadata) of a DoRA directory,
    checked as LoRA's reader checks its own (nlg.methods.lora.peft_files.read_adapter); AdapterError
    (an InputError) naming the file and key otherwise."""
    directory = Path(directory)
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise AdapterError(f"{directory}: not an adapter directory (no {path.name})")
    verify_manifest(directory, (ADAPTER_CONFIG, ADAPTER_WEIGHTS))
    try:
        config = read_json(config_path)
    except Exception as error:  # noqa: BLE001 - read_json's InputError, said as an adapter's
        raise AdapterError(str(error)) from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA" or config.get("use_dora") is not True:
        raise AdapterError(f"{config_path}: use_dora: not a DoRA adapter (PEFT's LoRA with use_dora true)")
    if config.get("use_rslora"):
        raise AdapterError(f"{config_path}: use_rslora=true is not supported")
    check_scales(config, config_path)
    tensors, metadata = _read_tensors(weights_path)
    check_config_agrees(config, tensors, metadata, config_path, weights_path)
    for name in tensors:
        if name.endswith(".lora_A.weight") and name.replace(".lora_A.weight", f".{PEFT_MAGNITUDE}") not in tensors:
            raise AdapterError(f"{weights_path}: tensor {name.replace('.lora_A.weight', f'.{PEFT_MAGNITUDE}')}: "
                               "missing (every DoRA module has a magnitude vector)")
    return config, tensors, metadata


def load_dora(model: nn.Module, directory: str | os.PathLike) -> LoRAConfig:
    """A DoRA directory into `model` (DoRA added first if it has none), strictly."""
    config, tensors, metadata = read_dora(directory)
    lora_config = adapter_lora_config(config, {k: v for k, v in tensors.items() if ".lora_A." in k or ".lora_B." in k},
                                      metadata)
    existing: LoRAConfig | None = getattr(model, "lora_config", None)
    if existing is None:
        add_dora(model, lora_config)
    elif (existing.rank, existing.alpha, existing.targets) != (lora_config.rank, lora_config.alpha, lora_config.targets):
        raise AdapterError(f"{directory}: adapter has rank {lora_config.rank}, alpha {lora_config.alpha}, "
                           f"targets {lora_config.targets}; the model has rank {existing.rank}, "
                           f"alpha {existing.alpha}, targets {existing.targets}")
    expected = {}
    for name, module in dora_modules(model).items():
        expected[f"{name}.lora_A.weight"] = (len(module.slices) * module.rank, module.in_features)
        expected[f"{name}.lora_B.weight"] = (module.out_features, len(module.slices) * module.rank)
        expected[f"{name}.{PEFT_MAGNITUDE}"] = (module.out_features,)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(unexpected)}"] if unexpected else [])
        raise AdapterError(f"{directory}: adapter does not fit the model: " + "; ".join(parts))
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise AdapterError(f"{directory}: tensor {key} has shape {tuple(tensors[key].shape)}, "
                               f"the model needs {shape} (another model size or rank?)")
    with torch.no_grad():
        for name, module in dora_modules(model).items():
            parts = split_blocks(tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"],
                                 module.slices, module.rank, f"{directory}: tensor {name}.lora_B.weight")
            for slice_name, (A, B) in parts.items():
                module.lora_A[slice_name].copy_(A)
                module.lora_B[slice_name].copy_(B)
            module.dora_magnitude.copy_(tensors[f"{name}.{PEFT_MAGNITUDE}"])
    return lora_config


__all__ = ["MAGNITUDE", "DoRALinear", "add_dora", "dora_modules", "load_dora", "read_dora", "save_dora"]
