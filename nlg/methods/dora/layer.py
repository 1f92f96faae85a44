"""DoRA's layer and files: LoRA's layer (nlg.methods.lora.layer.LoRALinear) plus a magnitude
vector, and LoRA's PEFT files (nlg.methods.lora.peft_files) plus `lora_magnitude_vector`.

    add_dora(model, settings)          DoRALinear on the targets, everything else frozen
    save_dora(model, directory)        adapter_config.json (use_dora: true) + adapter_model.safetensors
    read_dora(directory)               (config, tensors, metadata), checked as LoRA's are
    load_dora(model, directory)        strictly: every tensor of the model, each of its shape
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlg.methods.dora import MAGNITUDE, PEFT_MAGNITUDE
from nlg.methods.lora.layer import LoRAConfig, LoRALinear, add_lora
from nlg.methods.lora.peft_files import AdapterError, load_adapter, read_adapter, save_adapter


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

    def extra_tensors(self) -> dict[str, nn.Parameter]:
        return {PEFT_MAGNITUDE: self.dora_magnitude}  # in PEFT's files beside lora_A / lora_B

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
    return add_lora(model, rank=settings.rank, alpha=settings.alpha, dropout=settings.dropout,
                    targets=tuple(settings.targets), layer_class=DoRALinear)


def dora_modules(model: nn.Module) -> dict[str, DoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, DoRALinear)}


# ---------------------------------------------------------------------------------------------
# PEFT's files
# ---------------------------------------------------------------------------------------------


def save_dora(model: nn.Module, directory: str | os.PathLike, base_model: str | None = None) -> Path:
    """LoRA's tensors and config (nlg.methods.lora.peft_files' layout) with use_dora and each
    module's `lora_magnitude_vector` (DoRALinear.extra_tensors)."""
    if not dora_modules(model):
        raise AdapterError("model has no DoRA adapters to save")
    return save_adapter(model, directory, base_model, config_keys={"use_dora": True})


def read_dora(directory: str | os.PathLike) -> tuple[dict, dict[str, Tensor], dict[str, str]]:
    """(adapter_config.json, tensors by module-relative name, metadata) of a DoRA directory,
    checked as LoRA's reader checks its own (nlg.methods.lora.peft_files.read_adapter) and with
    a magnitude beside every lora_A; AdapterError (an InputError) naming the file and key otherwise."""
    config, tensors, metadata = read_adapter(directory, dora=True)
    for name in tensors:
        magnitude = name.replace(".lora_A.weight", f".{PEFT_MAGNITUDE}")
        if name.endswith(".lora_A.weight") and magnitude not in tensors:
            raise AdapterError(f"{Path(directory) / 'adapter_model.safetensors'}: tensor {magnitude}: "
                               "missing (every DoRA module has a magnitude vector)")
    return config, tensors, metadata


def load_dora(model: nn.Module, directory: str | os.PathLike) -> LoRAConfig:
    """A DoRA directory into `model` (DoRA added first if it has none), strictly (LoRA's
    load_adapter with DoRA's layer and reader)."""
    return load_adapter(model, directory, read=read_dora, layer_class=DoRALinear)


__all__ = ["MAGNITUDE", "DoRALinear", "add_dora", "dora_modules", "load_dora", "read_dora", "save_dora"]
