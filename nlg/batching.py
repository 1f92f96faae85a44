"""Training batches for conditional generation: (context, completion) -> padded tensors.

One pair becomes one sequence, exactly as the paper's `FT_Dataset` builds it:

    tokens  = (context + completion)[:seq_len]     both halves already end in 50256
    input   = tokens[:-1]                          position t predicts tokens[t + 1]
    target  = tokens[1:]
    loss on target t  iff  t + 1 >= len(context)   (objective "clm": completion tokens only)

So the context's trailing 50256 is fed to the model (it marks where the completion starts)
but never predicted, and the completion's final 50256 *is* predicted (that is how the model
learns to stop). With `obj="jlm"` (the paper's joint LM objective) every target is in the
loss. A pair longer than `seq_len` loses its tail, as in the paper; it is counted, not an error.

Unlike the paper, which pads every sequence to `seq_len` (512) tokens though E2E pairs are
about 60, a batch is padded only to its own longest sequence. Padding goes on the right
with id 0 and is never in the loss; with causal attention a real token never attends to a
later pad, so no attention mask is needed.

Which pairs go into which batch, per rank and epoch (`epoch_batches`), depends only on
(seed, epoch, world size, batch size), never on global RNG state, so a resumed run replays
the same order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

PAD_ID = 0  # the paper's padding id; never attended to by real tokens, never in the loss


@dataclass(frozen=True)
class Example:
    """One training sequence: `tokens` (context then completion, truncated to seq_len)."""

    tokens: tuple[int, ...]
    n_context: int  # tokens[:n_context] is the context (possibly cut short by truncation)


def make_examples(pairs: Sequence, seq_len: int) -> tuple[list[Example], int]:
    """Examples from pairs with `.context`/`.completion` id lists; also how many were truncated."""
    examples, truncated = [], 0
    for pair in pairs:
        tokens = list(pair.context) + list(pair.completion)
        if len(tokens) > seq_len:
            truncated += 1
            tokens = tokens[:seq_len]
        examples.append(Example(tuple(tokens), min(len(pair.context), len(tokens))))
    return examples, truncated


@dataclass
class Batch:
    """A padded batch. input_ids (B, T); the loss reads `loss_index` positions of the (B*T) grid."""

    input_ids: Tensor  # (B, T) int64, right-padded with PAD_ID
    loss_index: Tensor  # (N,) int64 flat indices b*T + t of the positions in the loss
    loss_targets: Tensor  # (N,) int64 the token each of those positions must predict
    n_tokens: int  # real (non-pad) input tokens
    n_loss: int  # N, the number of predicted tokens

    def to(self, device: torch.device | str) -> Batch:
        non_blocking = torch.device(device).type == "cuda"
        return Batch(self.input_ids.to(device, non_blocking=non_blocking),
                     self.loss_index.to(device, non_blocking=non_blocking),
                     self.loss_targets.to(device, non_blocking=non_blocking),
                     self.n_tokens, self.n_loss)


def collate(examples: Sequence[Example], obj: str = "clm", pad_to: int | None = None) -> Batch:
    """Pad `examples` to their longest input (or to `pad_to`, the paper's fixed-length batching).

    Returns the input grid plus the flat positions and targets of the tokens in the loss.
    """
    width = max(len(e.tokens) - 1 for e in examples)
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest input ({width})")
        width = pad_to
    width = max(width, 1)
    grid = torch.full((len(examples), width), PAD_ID, dtype=torch.long)
    index, targets, n_tokens = [], [], 0
    for row, example in enumerate(examples):
        tokens = example.tokens
        n_input = len(tokens) - 1
        if n_input <= 0:  # a one-token sequence predicts nothing
            continue
        grid[row, :n_input] = torch.tensor(tokens[:-1], dtype=torch.long)
        n_tokens += n_input
        first = 0 if obj == "jlm" else max(example.n_context - 1, 0)
        index.extend(range(row * width + first, row * width + n_input))
        targets.extend(tokens[first + 1:n_input + 1])
    return Batch(grid, torch.tensor(index, dtype=torch.long), torch.tensor(targets, dtype=torch.long),
                 n_tokens, len(index))


def batches_per_epoch(n_examples: int, batch_size: int, world_size: int) -> int:
    """Micro-batches each rank sees per epoch (the last one may be smaller)."""
    return math.ceil(math.ceil(n_examples / world_size) / batch_size)


def epoch_batches(lengths: Sequence[int], batch_size: int, *, epoch: int, seed: int,
                  world_size: int = 1, rank: int = 0, group_by_length: bool = False) -> list[list[int]]:
    """This rank's micro-batches (lists of example indices) for one epoch, deterministically.

    Shuffled by `DistributedSampler` (seed + epoch; rank r takes every world_size-th index,
    the list padded by wrapping so every rank gets the same count). Batches are consecutive
    runs of `batch_size` of the rank's indices, so `world_size` ranks with batch b see, step
    for step, the same pairs as one process with batch world_size·b.

    group_by_length: shuffle, then sort by length inside windows of 64 global batches and
    shuffle the resulting batches, so a batch holds pairs of similar length (less padding)
    while the order stays random. Global batch k is split into contiguous per-rank slices.
    """
    n = len(lengths)
    if not group_by_length:
        sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        order = list(sampler)
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    order += order[: math.ceil(n / world_size) * world_size - n]  # as DistributedSampler pads
    global_batch = batch_size * world_size
    window = global_batch * 64
    globals_: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: -lengths[i])
        globals_ += [chunk[i:i + global_batch] for i in range(0, len(chunk), global_batch)]
    # Keep the last (possibly short) global batch last: shapes a rank sees stay predictable.
    head = [globals_[i] for i in torch.randperm(len(globals_) - 1, generator=generator).tolist()]
    globals_ = head + globals_[-1:]
    batches = []
    for batch in globals_:
        share = len(batch) // world_size  # len(order) is a multiple of world_size, so exact
        batches.append(batch[rank * share:(rank + 1) * share])
    return batches
