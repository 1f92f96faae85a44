"""The training loss: label-smoothed cross-entropy on the completion tokens (see nlg.training.batching
for which positions those are).

Over the N completion tokens of an optimiser step (all micro-batches, all ranks),

    loss = 1/N · Σ_t [ (1-ε) · (-log p(y_t)) + ε · 1/V · Σ_v (-log p(v)) ]

the paper's label-smoothed NLL, averaged over tokens. `CompletionLM` returns the SUM over a
batch's tokens; nlg.training.trainer divides by the step's token count after all-reducing it, so the
update does not depend on how the step is split into micro-batches or ranks. Validation uses
ε = 0: the plain NLL per completion token.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlg.model import GPT
from nlg.training.batching import IGNORE_INDEX


def autocast(device: torch.device):
    """bf16 autocast on GPU (weights stay fp32, the loss is computed in fp32); fp32 on CPU.

    Without autocast's weight-cast cache: each weight is cast once per forward anyway, and CUDA
    graph capture (`nlg train --compile graphs`) requires the cache off.
    """
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def completion_loss(logits: Tensor, targets: Tensor, label_smooth: float = 0.0) -> Tensor:
    """SUM over rows of (1-ε)·(-log p(target)) + ε·mean_v(-log p_v), in fp32.

    logits: (N, vocab) at the loss positions only; targets: (N,). `F.cross_entropy` with
    `label_smoothing=ε` computes exactly the paper's smoothed term per token. Rows whose target
    is IGNORE_INDEX (-100, cross_entropy's default ignore_index: the padded slots of a
    static-shape batch, nlg.training.batching) add nothing to either term, nor to any gradient.
    """
    return F.cross_entropy(logits.float(), targets, reduction="sum", label_smoothing=label_smooth,
                           ignore_index=IGNORE_INDEX)


class CompletionLM(nn.Module):
    """GPT plus the training loss, with the LM head run only where the loss reads it.

    The (tied, vocab-wide) head and softmax see the N loss rows (N, C) instead of every context
    and padding position: on E2E over half the positions, and the head is a third of GPT-2
    small's work.
    """

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt

    def forward(self, input_ids: Tensor, loss_index: Tensor, loss_targets: Tensor,
                label_smooth: float = 0.0) -> Tensor:
        with autocast(input_ids.device):
            hidden = self.gpt(input_ids, return_hidden=True)  # (B, T, C)
            rows = hidden.reshape(-1, hidden.size(-1)).index_select(0, loss_index)
            logits = self.gpt.lm_head(rows)  # (N, vocab)
        return completion_loss(logits, loss_targets, label_smooth)
