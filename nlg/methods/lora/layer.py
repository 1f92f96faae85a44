"""LoRA: low-rank adapters on GPT-2's projections (Hu et al., 2021).

A frozen projection W (out x in) gets a trainable low-rank update::

    x ↦ W x + b + (alpha / r) · B A dropout(x)        A: (r x in), B: (out x r)

A starts Kaiming-uniform and B at zero (as in the paper's loralib), so an adapted model
computes exactly what the base model does until training moves B.

GPT-2 fuses query, key and value into one `c_attn` projection (out = 3·n_embd). The paper
adapts q and v separately, so one `LoRALinear` can carry several *slices*, each with its own
A and B acting on its block of output rows. Targets:

    q, k, v  -> rows [0:d], [d:2d], [2d:3d] of attn.c_attn
    qkv      -> all of attn.c_attn, one shared A (how PEFT adapts the fused matrix)
    o        -> attn.c_proj          fc -> mlp.c_fc          proj -> mlp.c_proj

`merge` folds (alpha/r)·B A into W for inference at the base model's speed; `unmerge` takes
it out again.

Saving and loading adapters (Hugging Face PEFT's file layout) is `nlg.methods.lora.peft_files`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlg.methods.layers import DeltaLinear, replace_in_blocks, submodule
from nlg.methods.lora import DEFAULTS

# target -> (module path inside a Block, index of its slice of the fused c_attn or None)
TARGETS: dict[str, tuple[str, int | None]] = {
    "q": ("attn.c_attn", 0),
    "k": ("attn.c_attn", 1),
    "v": ("attn.c_attn", 2),
    "qkv": ("attn.c_attn", None),
    "o": ("attn.c_proj", None),
    "fc": ("mlp.c_fc", None),
    "proj": ("mlp.c_proj", None),
}


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = DEFAULTS.rank  # one set of defaults: nlg.methods.lora.LoRASettings
    alpha: float = DEFAULTS.alpha
    dropout: float = DEFAULTS.dropout
    targets: tuple[str, ...] = DEFAULTS.targets

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ValueError(f"unknown LoRA targets {unknown}; choose from {', '.join(TARGETS)}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"LoRA targets repeat: {self.targets}")
        if "qkv" in self.targets and set(self.targets) & {"q", "k", "v"}:
            raise ValueError("target qkv already covers q, k and v; use either qkv or the slices")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class LoRALinear(DeltaLinear):
    """An `nn.Linear` (same `weight`/`bias` names, so checkpoints still load) plus LoRA slices.

    slices: name -> (first row, end row) of the output that the slice's B writes to.
    Parameters: `lora_A.<name>` (r x in) and `lora_B.<name>` (rows x r).
    """

    def __init__(self, base: nn.Linear, slices: dict[str, tuple[int, int]], config: LoRAConfig):
        super().__init__(base)
        self.rank = config.rank
        self.alpha = config.alpha
        self.scaling = config.scaling
        self.slices = dict(slices)
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for name, (start, end) in self.slices.items():
            a = torch.empty(config.rank, self.in_features, device=self.weight.device, dtype=torch.float32)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # loralib's initialisation
            self.lora_A[name] = nn.Parameter(a)
            self.lora_B[name] = nn.Parameter(
                torch.zeros(end - start, config.rank, device=self.weight.device, dtype=torch.float32))

    def stacked_A(self) -> Tensor:
        """All slices' A stacked: (n_slices·r x in)."""
        return torch.cat([self.lora_A[name] for name in self.slices], dim=0)

    def block_B(self) -> Tensor:
        """All slices' B placed in their output rows: (out x n_slices·r), zero elsewhere."""
        names = list(self.slices)
        if len(names) == 1 and self.slices[names[0]] == (0, self.out_features):
            return self.lora_B[names[0]]
        first = self.lora_B[names[0]]
        full = first.new_zeros(self.out_features, len(names) * self.rank)
        for index, name in enumerate(names):
            start, end = self.slices[name]
            full[start:end, index * self.rank : (index + 1) * self.rank] = self.lora_B[name]
        return full

    def extra_tensors(self) -> dict[str, nn.Parameter]:
        """Parameters this layer keeps in PEFT's file beside lora_A / lora_B, by their PEFT name
        after the module's: none for LoRA (DoRA's layer: its magnitude)."""
        return {}

    def delta_weight(self) -> Tensor:
        """(alpha/r) · B A as one (out x in) matrix, in fp32."""
        return self.scaling * (self.block_B().float() @ self.stacked_A().float())

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        A = self.stacked_A().to(x.dtype)
        B = self.block_B().to(x.dtype)
        return out + self.scaling * F.linear(F.linear(self.lora_dropout(x), A), B)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lora_slices={list(self.slices)}, r={self.rank}, alpha={self.alpha}"


def target_rows(target: str, out_features: int, width: int) -> tuple[int, int]:
    """The output rows [start, end) of its module that `target`'s B writes: q, k, v take their
    block of the fused c_attn (`width` = n_embd rows each), every other target all the rows."""
    index = TARGETS[target][1]
    return (0, out_features) if index is None else (index * width, (index + 1) * width)


def _module_slices(model: nn.Module, targets: tuple[str, ...]) -> dict[str, dict[str, tuple[int, int]]]:
    """For each block-relative module path, the slices to adapt, in target order."""
    plan: dict[str, dict[str, tuple[int, int]]] = {}
    for target in targets:
        path = TARGETS[target][0]
        out_features = submodule(model.transformer.h[0], path).out_features
        plan.setdefault(path, {})[target] = target_rows(target, out_features, model.config.n_embd)
    return plan


def add_lora(model: nn.Module, rank: int = DEFAULTS.rank, alpha: float = DEFAULTS.alpha,
             dropout: float = DEFAULTS.dropout,
             targets: tuple[str, ...] | list[str] = DEFAULTS.targets,
             layer_class: type[LoRALinear] = LoRALinear) -> nn.Module:
    """Put LoRA slices (`layer_class`: LoRALinear or a subclass, e.g. DoRA's) on `targets` of
    every block and freeze everything else (in place)."""
    config = LoRAConfig(rank=rank, alpha=alpha, dropout=dropout, targets=tuple(targets))
    if lora_modules(model):
        raise ValueError("model already has LoRA or DoRA adapters")
    plan = _module_slices(model, config.targets)
    replace_in_blocks(model, plan, lambda base, path: layer_class(base, plan[path], config))
    model.lora_config = config
    return model


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter's parameters by name, e.g. `transformer.h.0.attn.c_attn.lora_A.q`."""
    return {name: p for name, p in model.named_parameters() if ".lora_A." in name or ".lora_B." in name}


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach() for name, p in lora_parameters(model).items()}


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight: no extra cost at inference."""
    for module in lora_modules(model).values():
        module.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo `merge`, so training can go on."""
    for module in lora_modules(model).values():
        module.unmerge()
    return model
