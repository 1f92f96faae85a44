"""The prefixes of prefix tuning as modules a GPT carries in `model.prefix` (nlg.model.GPT.forward):
each has `length` n and `past(model)`, the keys and values, (1, n_head, n, head_dim) per layer,
that every real token attends to before its own. The model puts them before the tokens (no
cache) or in the first n slots of a fresh KV cache (beam search), and shifts the caller's
positions by n.

    PrefixMLP      PreLayer as Li & Liang (2021) train it: P = MLP(E), E an (n, d) embedding,
                   MLP = Linear(d, h) -> tanh -> Linear(h, L·2·d)
    FoldedPrefix   PreLayer stored as the past itself: P, an (n, L·2·d) parameter (PEFT's file)
    PromptEmbeds   PreEmbed: n trainable input embeddings (n, d) at positions 0..n-1; its past is
                   what the frozen model computes for them (a prompt before every context sees
                   only itself, so its keys and values do not depend on the context)

The flat (n, L·2·d) layout is PEFT's and Li & Liang's: column ((l·2 + kind)·n_head + h)·hs + e
holds layer l's key (kind 0) or value (kind 1) of head h, dimension e.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def split_past(flat: Tensor, n_layer: int, n_head: int) -> list[tuple[Tensor, Tensor]]:
    """(n, L·2·d) -> per layer (key, value), each (1, n_head, n, head_dim)."""
    n = flat.shape[0]
    per = flat.view(n, n_layer * 2, n_head, -1).permute(1, 2, 0, 3)  # (L·2, nh, n, hs)
    return [(per[2 * layer].unsqueeze(0), per[2 * layer + 1].unsqueeze(0)) for layer in range(n_layer)]


def join_past(past: list[tuple[Tensor, Tensor]]) -> Tensor:
    """split_past's inverse: per layer (key, value) (1, n_head, n, head_dim) -> (n, L·2·d)."""
    per = torch.stack([t[0] for kv in past for t in kv])  # (L·2, nh, n, hs)
    return per.permute(2, 0, 1, 3).reshape(per.shape[2], -1)


class PrefixMLP(nn.Module):
    """Li & Liang's reparametrisation: the past is MLP(embedding), retrained end to end."""

    def __init__(self, n_layer: int, n_head: int, d: int, length: int, hidden: int):
        super().__init__()
        self.length, self.n_layer, self.n_head = length, n_layer, n_head
        self.embedding = nn.Embedding(length, d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, n_layer * 2 * d))

    def flat(self) -> Tensor:
        return self.mlp(self.embedding.weight)

    def past(self, model) -> list[tuple[Tensor, Tensor]]:
        return split_past(self.flat(), self.n_layer, self.n_head)


class FoldedPrefix(nn.Module):
    """The past itself, (n, L·2·d): what PEFT stores and what decoding needs."""

    def __init__(self, n_layer: int, n_head: int, flat: Tensor):
        super().__init__()
        self.length, self.n_layer, self.n_head = flat.shape[0], n_layer, n_head
        self.weight = nn.Parameter(flat.detach().clone())

    def flat(self) -> Tensor:
        return self.weight

    def past(self, model) -> list[tuple[Tensor, Tensor]]:
        return split_past(self.weight, self.n_layer, self.n_head)


class PromptEmbeds(nn.Module):
    """PreEmbed: n input embeddings before the context. Their keys and values come from running
    the model's blocks on them (with positions 0..n-1, as transformers adds wpe to
    inputs_embeds), so every layer sees them as it would see n real tokens."""

    def __init__(self, d: int, length: int):
        super().__init__()
        self.length = length
        self.weight = nn.Parameter(torch.randn(length, d) * 0.02)  # as GPT-2's wte starts

    def past(self, model) -> list[tuple[Tensor, Tensor]]:
        from nlg.model import KVCache

        t = model.transformer
        x = t.drop(self.weight.unsqueeze(0) + t.wpe(torch.arange(self.length, device=self.weight.device)))
        # The blocks fill a one-row cache with the prompt's keys and values (they keep autograd's
        # graph, so the embeddings train through them); the output itself is not needed.
        cache = KVCache(model.config, 1, self.length, device=self.weight.device, dtype=self.weight.dtype)
        for layer, block in enumerate(t.h):
            x = block(x, None, cache, layer)
        return list(zip(cache.keys, cache.values, strict=True))
