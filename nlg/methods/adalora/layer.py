"""AdaLoRA's layer: a frozen projection plus an update in SVD form, ΔW = P Λ Q (the paper's Eq. 3).

    y = W x + b + (α / (r + 1e-5)) · P (Λ ⊙ (Q dropout(x)))        P: lora_B (out x r),
                                                                    Λ: lora_E (r x 1), Q: lora_A (r x in)

exactly PEFT 0.22's SVDLinear.forward (`dropout(x) @ (lora_A * lora_E).T @ lora_B.T * scaling /
(ranknum + 1e-5)`, scaling = lora_alpha, ranknum = init_r: PEFT never changes it, not even for a
file whose rank_pattern pruned the module, nor do we). Initialisation as PEFT's
reset_lora_parameters: Λ zeros (so a fresh layer computes the base model exactly), P and Q
normal with std 0.02.

Masking (the budget schedule, nlg.methods.adalora.allocator) zeroes entries of Λ in place; the
layer keeps every one of its r triplets (P's column, Λ's entry, Q's row) and records the last
allocation in `kept` (a bool vector of r, None before the first), which a checkpoint writes as
PEFT's rank_pattern, pruning the triplets that are not kept (PEFT's save_pretrained does the same).

`merge` folds ΔW into W for decoding at the base model's speed; `unmerge` takes it out again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlg.methods.layers import DeltaLinear, replace_in_blocks

PARAMETERS = ("lora_A", "lora_E", "lora_B")  # PEFT's tensor names (without its adapter name)
RANK_EPSILON = 1e-5  # PEFT's `ranknum + 1e-5`


class SVDLinear(DeltaLinear):
    """An nn.Linear (the base's `weight` and `bias`, shared, not copied) plus `lora_A` (r x in),
    `lora_E` (r x 1) and `lora_B` (out x r), in float32."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        super().__init__(base)
        self.rank, self.alpha = rank, float(alpha)
        self.scale = self.alpha / (float(rank) + RANK_EPSILON)  # PEFT's scaling / (ranknum + 1e-5)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        device = self.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=device, dtype=torch.float32))
        self.lora_E = nn.Parameter(torch.zeros(rank, 1, device=device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, rank, device=device, dtype=torch.float32))
        nn.init.normal_(self.lora_A, mean=0.0, std=0.02)  # PEFT's reset_lora_parameters
        nn.init.normal_(self.lora_B, mean=0.0, std=0.02)
        self.kept: Tensor | None = None  # the last allocation's kept triplets (bool, r), None: none yet

    def delta_weight(self) -> Tensor:
        """α/(r + 1e-5) · P (Λ ⊙ Q) as one (out x in) matrix, fp32 (PEFT's get_delta_weight, untransposed:
        our weight is nn.Linear's (out x in), PEFT's Conv1D one (in x out))."""
        return self.lora_B.float() @ (self.lora_A.float() * self.lora_E.float()) * self.scale

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        scaled_A = (self.lora_A * self.lora_E).to(x.dtype)
        return out + F.linear(F.linear(self.lora_dropout(x), scaled_A), self.lora_B.to(x.dtype)) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, adalora r={self.rank}, alpha={self.alpha:g}"


def modules(model: nn.Module) -> dict[str, SVDLinear]:
    """Every SVDLinear of `model` by name (`transformer.h.0.attn.c_attn`), in model order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SVDLinear)}


def add(model: nn.Module, paths: tuple[str, ...], rank: int, alpha: float, dropout: float) -> None:
    """SVDLinear on block-relative module `paths` of every block; everything else frozen (in place).
    The layers draw P and Q from torch's global generator, block by block, path by path."""
    if modules(model):
        raise ValueError("model already has AdaLoRA layers")
    replace_in_blocks(model, paths, lambda base, _: SVDLinear(base, rank, alpha, dropout))
