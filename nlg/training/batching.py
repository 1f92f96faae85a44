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

Static shapes (`collate_static`, for `nlg train --compile` other than none): a captured CUDA
graph or a compiled kernel serves one tensor shape, and E2E batches change shape at every step.
So each micro-batch is padded further, to one of a few shapes: `rows` rows (empty ones after the
pairs), a width from the `bucket` ladder, and the loss positions to a bucketed count whose extra
slots read position 0 with target IGNORE_INDEX, which the loss skips (nothing added to the loss
or to any gradient). The pairs, their order and their batches are unchanged.

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
IGNORE_INDEX = -100  # target of a padded loss slot: F.cross_entropy's default ignore_index


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
    loss_targets: Tensor  # (N,) int64 the token each of those positions must predict (IGNORE_INDEX: none)
    n_tokens: int  # real (non-pad) input tokens
    n_loss: int  # the number of predicted tokens (N, less any padded slots)
    counts: Tensor  # (2,) int64 [n_loss, n_tokens]: the same numbers, to be summed on the device

    @property
    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.input_ids, self.loss_index, self.loss_targets, self.counts

    @property
    def shape(self) -> tuple[int, int, int]:
        """(rows, width, loss slots): what a captured graph or compiled kernel is specialised to."""
        return (*self.input_ids.shape, self.loss_index.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """The batch on `device`. To a GPU through pinned memory, so the copies do not make the
        host wait for the GPU (a copy from pageable memory does)."""
        device = torch.device(device)
        if device.type != "cuda":
            moved = [t.to(device) for t in self.tensors]
        else:
            moved = [t.pin_memory().to(device, non_blocking=True) for t in self.tensors]
        return Batch(moved[0], moved[1], moved[2], self.n_tokens, self.n_loss, moved[3])

    def copy_into(self, static: Batch) -> None:
        """Copy this (host) batch into `static`, a device batch of the same shape (a captured
        graph's inputs), without making the host wait."""
        pin = static.input_ids.device.type == "cuda"
        for source, target in zip(self.tensors, static.tensors, strict=True):
            target.copy_(source.pin_memory() if pin else source, non_blocking=pin)

    @staticmethod
    def inert(shape: tuple[int, int, int], device: torch.device) -> Batch:
        """A batch of `shape` on `device` that trains nothing: all padding, every loss slot
        ignored, zero counts (a graph's warm-up input and, later, its input buffers)."""
        rows, width, slots = shape
        return Batch(torch.full((rows, width), PAD_ID, dtype=torch.long, device=device),
                     torch.zeros(slots, dtype=torch.long, device=device),
                     torch.full((slots,), IGNORE_INDEX, dtype=torch.long, device=device),
                     0, 0, torch.zeros(2, dtype=torch.long, device=device))


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
                 n_tokens, len(index), torch.tensor([len(index), n_tokens], dtype=torch.long))


def bucket(n: int, cap: int | None = None) -> int:
    """The smallest length of the bucket ladder that holds `n`, but at most `cap`.

    Ladder: multiples of 16 up to 64, then four steps per octave (80, 96, 112, 128, 160, 192,
    224, 256, 320, ...), so above 64 a bucket adds less than a quarter. E2E batches of 8
    (widths 54-124, 142-300 loss tokens) fall into 14 (width, slots) shapes: 10% more grid
    positions than padding each batch to its longest pair, 8% more head rows.
    """
    if n <= 64:
        size = max(16, -(-n // 16) * 16)
    else:
        step = (1 << ((n - 1).bit_length() - 1)) // 4  # a quarter of the octave below n
        size = -(-n // step) * step
    return size if cap is None else min(size, max(cap, n))


def collate_static(examples: Sequence[Example], obj: str, rows: int, max_width: int) -> Batch:
    """`collate`, padded to a static shape: `rows` rows (empty ones after the examples), width
    bucket(longest input, max_width), loss slots bucket(N, rows * width).

    The extra slots read position 0 and predict IGNORE_INDEX, which `completion_loss` skips, so
    the loss and every gradient are those of `collate(examples)` up to float rounding;
    n_tokens and n_loss count the real tokens only. `max_width` (seq_len - 1, the longest
    possible input) keeps positions inside the model.
    """
    if len(examples) > rows:
        raise ValueError(f"{len(examples)} examples do not fit in {rows} rows")
    longest = max(len(e.tokens) - 1 for e in examples)
    batch = collate(examples, obj=obj, pad_to=bucket(max(longest, 1), max_width))
    width = batch.input_ids.shape[1]
    slots = bucket(max(batch.n_loss, 1), rows * width)
    grid = torch.full((rows, width), PAD_ID, dtype=torch.long)
    grid[:len(examples)] = batch.input_ids
    index = torch.zeros(slots, dtype=torch.long)
    index[:batch.n_loss] = batch.loss_index
    targets = torch.full((slots,), IGNORE_INDEX, dtype=torch.long)
    targets[:batch.n_loss] = batch.loss_targets
    return Batch(grid, index, targets, batch.n_tokens, batch.n_loss, batch.counts)


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
