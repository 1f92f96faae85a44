"""(IA)³'s layers: learned vectors that rescale a projection's output rows or its input.

    attention   k ↦ l_k ⊙ k,  v ↦ l_v ⊙ v     the k and v rows of GPT-2's fused c_attn (bias included)
    feed-forward  γ(W1 x) ↦ l_ff ⊙ γ(W1 x)      the input of mlp.c_proj

`IA3Linear` keeps the frozen nn.Linear (its `weight`/`bias`) and holds one vector per slice of
the output rows (`ia3_l.q|k|v`, each n_embd long), or one over the input (`ia3_l.ff`). Rows of
no slice are scaled by 1. `merge` folds the vectors into W's rows (and b) or columns, exactly
as PEFT's IA3 Linear.merge does, for decoding at the base model's speed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlg.methods.layers import SharedLinear, replace_in_blocks


class IA3Linear(SharedLinear):
    def __init__(self, base: nn.Linear, slices: dict[str, tuple[int, int]], feedforward: bool):
        super().__init__(base)
        self.feedforward = feedforward
        self.slices = dict(sorted(slices.items(), key=lambda item: item[1]))
        device = self.weight.device
        self.ia3_l = nn.ParameterDict({name: nn.Parameter(torch.ones(end - start, device=device, dtype=torch.float32))
                                       for name, (start, end) in self.slices.items()})

    def scale(self) -> Tensor:
        """The whole vector this layer multiplies by: (in,) for the feed-forward, else (out,),
        ones outside the slices."""
        width = self.in_features if self.feedforward else self.out_features
        parts, at = [], 0
        for name, (start, end) in self.slices.items():
            vector = self.ia3_l[name]
            if start > at:
                parts.append(vector.new_ones(start - at))
            parts.append(vector)
            at = end
        if at < width:
            parts.append(parts[-1].new_ones(width - at))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:
            return F.linear(x, self.weight, self.bias)
        scale = self.scale().to(x.dtype)
        if self.feedforward:
            return F.linear(x * scale, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias) * scale

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        scale = self.scale()
        if self.feedforward:
            self.weight.copy_((self.weight * scale[None, :]).to(self.weight.dtype))
        else:
            self.weight.copy_((self.weight * scale[:, None]).to(self.weight.dtype))
            if self.bias is not None:
                self.bias.copy_((self.bias * scale).to(self.bias.dtype))
        self.merged = True

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ia3={list(self.slices)}, feedforward={self.feedforward}"


def modules(model: nn.Module) -> dict[str, IA3Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, IA3Linear)}


def add(model: nn.Module, plan: dict[str, tuple[dict[str, tuple[int, int]], bool]]) -> None:
    """(IA)³ vectors on every block: plan = {module path: (slices, feedforward)}; all else frozen."""
    if modules(model):
        raise ValueError("model already has (IA)³ vectors")
    replace_in_blocks(model, plan, lambda base, path: IA3Linear(base, *plan[path]))
