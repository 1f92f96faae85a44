"""Bottleneck adapters as GPT-2 residual hooks (nlg.model.Residual's call: out, x -> stream).

    bottleneck(h) = up(ReLU(down(h)))          down: Linear(d, r), up: Linear(r, d)

`up` starts at zero (weight and bias), so an untrained adapter adds nothing and the model
computes what the base model does; `down` starts as nn.Linear does (Kaiming-uniform) with a
zero bias. This is AdapterHub's "mam_adapter" initialisation.

    Houlsby (adapter-h), after attention and after the MLP, before the residual addition:
        x + (out + bottleneck(out))
    Lin (adapter-l), after the MLP's residual addition, with its own layer norm:
        h = x + out;  h + bottleneck(LayerNorm(h))

Parameters per adapter: 2·d·r + r + d, plus 2·d for Lin's layer norm.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, as AdapterHub builds its adapter norm


class Bottleneck(nn.Module):
    def __init__(self, d: int, r: int, layer_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS) if layer_norm else None
        self.down = nn.Linear(d, r)
        self.up = nn.Linear(r, d)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def bottleneck(self, h: Tensor) -> Tensor:
        if self.norm is not None:
            h = self.norm(h)
        return self.up(F.relu(self.down(h)))


class HoulsbyResidual(Bottleneck):
    """x + (out + bottleneck(out)): the adapter acts on the sublayer's output."""

    def __init__(self, d: int, r: int):
        super().__init__(d, r, layer_norm=False)

    def forward(self, out: Tensor, x: Tensor) -> Tensor:
        return (self.bottleneck(out) + out) + x


class LinResidual(Bottleneck):
    """h + bottleneck(LN(h)) with h = x + out: the adapter acts on the block's output."""

    def __init__(self, d: int, r: int):
        super().__init__(d, r, layer_norm=True)

    def forward(self, out: Tensor, x: Tensor) -> Tensor:
        h = out + x
        return self.bottleneck(h) + h
