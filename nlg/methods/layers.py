"""What the layer-adding methods (LoRA, DoRA, AdaLoRA, FourierFT, (IA)³) share: a layer that takes
the place of one of GPT-2's nn.Linear modules, sharing its weight and bias, and the loop that puts
such layers on the same modules of every block.

A merged additive layer computes x Wᵀ + b with W = W0 + ΔW folded in (`merge`); unmerged it
computes x W0ᵀ + b plus its method's ΔW path. `unmerge` subtracts ΔW again, so training can go on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class SharedLinear(nn.Linear):
    """An nn.Linear whose `weight` and `bias` are the base module's own (the same names, so
    checkpoints still load). nn.Linear.__init__ would allocate and randomly fill a full weight
    only to drop it (GBs of work on gpt2.lg, and it would consume global random numbers)."""

    def __init__(self, base: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.merged = False


class DeltaLinear(SharedLinear):
    """A SharedLinear whose method adds ΔW = `delta_weight()` (out x in) to the base weight."""

    def delta_weight(self) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight += self.delta_weight().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight -= self.delta_weight().to(self.weight.dtype)
            self.merged = False


def submodule(module: nn.Module, dotted: str) -> nn.Module:
    """`module`'s submodule at the dotted path (`attn.c_attn`)."""
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def replace_in_blocks(model: nn.Module, paths, make: Callable[[nn.Module, str], nn.Module]) -> None:
    """Freeze every parameter of `model`, then replace each block's module at each of the
    block-relative `paths` by `make(module, path)`, block by block, path by path (the order the
    new layers draw their random numbers in). A layer added to a model in eval mode is in eval
    mode too (no dropout while decoding)."""
    for param in model.parameters():
        param.requires_grad_(False)
    for block in model.transformer.h:
        for path in paths:
            parent_path, _, leaf = path.rpartition(".")
            parent = submodule(block, parent_path) if parent_path else block
            setattr(parent, leaf, make(getattr(parent, leaf), path).train(model.training))
