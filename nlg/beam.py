"""Beam search for E2E: the best completion of every distinct context, batched on a KV cache.

    nlg beam --data data/e2e/test.jsonl --init_checkpoint BASE [--model_card gpt2.md]
             [--checkpoint DIR] --beam 10 --length_penalty 0.8
             --no_repeat_ngram_size 4 --repetition_penalty 1.0 --eos_token_id 628
             --eval_len 64 --batch_size 32 --output_file predict.jsonl
    torchrun --nproc_per_node N -m nlg.beam ...     # contexts split over ranks, rank 0 writes

Under torchrun (see nlg.training.distributed) every rank decodes every N-th distinct context and rank 0
gathers the results and writes the file; a rank that dies or stops answering makes the others
fail after --dist_timeout seconds (default $NLG_DIST_TIMEOUT or 600) instead of waiting forever.

The algorithm is the one of the LoRA paper's `gpt2_beam.py`, so its settings mean the same
here. For each context, `beam` hypotheses; hypothesis h has generated tokens y_h (the context
is not part of y_h) and a score s_h, the sum of the log-probabilities of y_h. At step t
(t = |y_h| tokens generated so far, t = 0 .. eval_len-1), for every hypothesis:

  1. logits z = model(context + y_h)[-1]                         (raw logits, not log-probs)
  2. repetition penalty p (CTRL): for every token v in y_h, z_v <- z_v * p if z_v < 0 else z_v / p
  3. t < min_length: z_e <- -inf for every eos id e
  4. no-repeat n-gram n: if the last n-1 tokens of y_h followed by v form an n-gram already in
     y_h, z_v <- -inf (bans act on logits, so the softmax renormalises over what is left)
  5. candidate score s_h + log_softmax(z)_v for every token v

and the best `beam` of the beam x vocab candidates are kept (at t = 0 only the first
hypothesis is expanded: the others start at score -inf). A kept candidate whose last token
is an eos id is finished: its final score is s / |y| ** length_penalty, |y| counting the eos;
the best final score per context is kept (ties keep the earlier one) and the candidate's
score becomes -inf, so it never grows again and its slot refills from the live hypotheses at
the next step. After eval_len steps every live hypothesis is finished the same way (without
an eos). The output is the best finished sequence.

Two deliberate differences in arithmetic, not in the algorithm: log_softmax instead of the
paper's log(softmax) (identical except where softmax underflows to 0 and the paper gets
-inf), and the search may stop early where that cannot change the result:

  Early stopping bound. A live hypothesis with score s <= 0 after t tokens can only finish
  at a length L in [t+1, eval_len] with a score s' <= s (log-probabilities are <= 0), i.e.
  with final score s' / L**lp <= s / L**lp. For s <= 0 that is increasing in L when lp >= 0
  (best case L = eval_len) and decreasing when lp < 0 (best case L = t+1), so
      bound(s, t) = max(s / (t+1)**lp, s / eval_len**lp)
  bounds everything the hypothesis can still become. When every live hypothesis of a
  context has bound <= the context's best final score, nothing can replace the best
  (replacement needs a strictly greater score) and the context is done; its rows leave the
  batch. A context whose hypotheses have all finished is done too.

  Checking every k steps instead of every step changes no result: a done context stays done
  (its bounds only fall as scores fall, its best only rises), and the steps it runs on until
  the next check finish nothing better than its best, by the same bound. The check is the
  one point where the host waits for the device (it must know which rows to keep), so on a
  GPU it runs every `GPU_CHECK_EVERY` steps; on a CPU, where waiting costs nothing, every
  step. Everything else in a step, the best-so-far bookkeeping included, stays on the device.

Batching. Contexts are left-padded to the longest in the batch (`position_ids` restart at 0
after the padding and `key_mask` hides it), so a context's logits do not depend on its
neighbours except for floating-point rounding; the batch size changes results only at
floating-point ties. The per-step work is tensor operations over all (context, hypothesis)
rows at once; the cache is reordered with `KVCache.reorder`.

Output (`--output_file`, written atomically), one JSON line per distinct context of `--data`,
in order of first occurrence:

    {"id": <index of the context's first line in --data>, "context": [ids], "predict": [ids]}

`context` is the context exactly as in --data (`nlg decode` checks it against the formatted
file); `predict` is the generated tokens, ending with the eos id when one was produced.
The E2E test split has 4693 lines but 630 distinct contexts, and every line of a context
would get the same prediction, so each is decoded once (the paper decodes every line).

End of sequence: like the paper (whose `--eos_token_id` appends to a default of [50256]),
50256 (<|endoftext|>, which ends every training completion) always ends a sequence, and each
`--eos_token_id` adds one more id; the paper's README passes 628 ("\\n\\n").

Without --init_checkpoint, --model_card gives a model with random weights (seeded by --seed):
for tests and demos only.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from nlg.cli import run_main, show_progress, spellings
from nlg.files import InputError, check_outputs, write_jsonl
from nlg.model import CARDS, GPT, KVCache, card_config
from nlg.tokenizer import BLANK_LINE_ID, EOS_ID
from nlg.training.distributed import (
    TIMEOUT_ENV,
    all_gather_objects,
    close_runtime,
    default_timeout,
    init_runtime,
)
from nlg.weights import checkpoint_files, from_pretrained

NEG_INF = float("-inf")
GPU_CHECK_EVERY = 8  # early-stop checks on a GPU: every 8th step (see the module docstring)


@dataclass(frozen=True)
class BeamConfig:
    """Decoding settings; the defaults are the paper's README settings for E2E."""

    beam: int = 10
    eval_len: int = 64  # tokens generated at most
    length_penalty: float = 0.8
    no_repeat_ngram_size: int = 4  # 0 disables
    repetition_penalty: float = 1.0  # 1.0 disables
    min_length: int = 0  # eos is blocked while fewer tokens than this were generated
    eos_ids: tuple[int, ...] = (EOS_ID, BLANK_LINE_ID)  # EOS_ID always ends a sequence, as in the paper
    early_stop: bool = True  # stop a context once its result is final (see module docstring)

    def __post_init__(self) -> None:
        for name in ("length_penalty", "repetition_penalty"):
            if not math.isfinite(getattr(self, name)):  # NaN passes every comparison: scores would be NaN
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")
        if self.eval_len < 1:
            raise ValueError(f"eval_len must be >= 1, got {self.eval_len}")
        if self.no_repeat_ngram_size < 0 or self.min_length < 0:
            raise ValueError("no_repeat_ngram_size and min_length must be >= 0")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not self.eos_ids:
            raise ValueError("at least one eos id is needed")


# ---------------------------------------------------------------------------------------------
# One step's score processing, for all hypotheses at once
# ---------------------------------------------------------------------------------------------


def apply_repetition_penalty_(logits: Tensor, history: Tensor, penalty: float) -> Tensor:
    """CTRL repetition penalty, in place: every token in a row's history gets
    z <- z * penalty if z < 0 else z / penalty (once per token, however often it occurs).

    logits: (N, V); history: (N, t) generated token ids.
    """
    if penalty == 1.0 or history.shape[1] == 0:
        return logits
    picked = logits.gather(1, history)
    # A repeated token writes the same value several times: the result does not depend on order.
    logits.scatter_(1, history, torch.where(picked < 0, picked * penalty, picked / penalty))
    return logits


def ban_repeated_ngrams_(logits: Tensor, history: Tensor, n: int) -> Tensor:
    """No-repeat n-gram ban, in place: z_v <- -inf where (last n-1 tokens of the row, v) is an
    n-gram that already occurs in the row's history.

    logits: (N, V); history: (N, t). Every window of n tokens is compared with the row's last
    n-1 tokens at once; a match bans the window's last token.
    """
    t = history.shape[1]
    if n <= 0 or t < n:  # fewer than n tokens: no complete n-gram yet
        return logits
    windows = history.unfold(1, n, 1)  # (N, t-n+1, n)
    prefix = history[:, t - n + 1 :]  # (N, n-1), empty for n = 1 (then every seen token is banned)
    match = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(dim=2)  # (N, t-n+1)
    # amin with +inf for non-matches: order-independent, so duplicate indices are harmless.
    ban = torch.full(match.shape, float("inf"), dtype=logits.dtype, device=logits.device)
    ban.masked_fill_(match, NEG_INF)
    logits.scatter_reduce_(1, windows[:, :, -1], ban, reduce="amin", include_self=True)
    return logits


def next_token_logprobs(logits: Tensor, history: Tensor, config: BeamConfig, eos: Tensor,
                        out: Tensor) -> Tensor:
    """Steps 2-4 of the module docstring on raw logits (N, V), then log_softmax into `out`
    (N, V, float32 or wider), which is returned; history (N, t). `logits` is changed in place."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    apply_repetition_penalty_(logits, history, config.repetition_penalty)
    if history.shape[1] < config.min_length:
        logits.index_fill_(1, eos, NEG_INF)
    ban_repeated_ngrams_(logits, history, config.no_repeat_ngram_size)
    logprobs = torch.log_softmax(logits, dim=-1, out=out)
    # Bans remove at most t + len(eos) tokens, so only a tiny vocabulary can lose them all; such a
    # row would be NaN (which topk ranks first) and must instead have no candidates.
    if logits.shape[1] <= history.shape[1] + len(eos):
        logprobs.nan_to_num_(nan=NEG_INF)
    return logprobs


def final_score(score: Tensor, length: int, length_penalty: float) -> Tensor:
    """Summed log-probability normalised by length ** length_penalty (the paper's formula)."""
    return score / (length**length_penalty)


# ---------------------------------------------------------------------------------------------
# Beam search over a batch of contexts
# ---------------------------------------------------------------------------------------------


def _left_pad(contexts: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(ids (B, P), positions (B, P), real (B, P) bool) for contexts left-padded to length P."""
    P = max(len(c) for c in contexts)
    ids = torch.zeros(len(contexts), P, dtype=torch.long)
    real = torch.zeros(len(contexts), P, dtype=torch.bool)
    for row, context in enumerate(contexts):
        ids[row, P - len(context) :] = torch.tensor(context, dtype=torch.long)
        real[row, P - len(context) :] = True
    positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # 0 at the first real token
    return ids.to(device), positions.to(device), real.to(device)


def _prefill(model: GPT, contexts: list[list[int]], K: int, T: int) -> tuple[KVCache, Tensor, Tensor, Tensor]:
    """Run each context once, then copy its cache row to its K hypotheses.

    Returns the cache (room for T more tokens) and, per hypothesis row (B*K rows, context b's
    at b*K .. b*K+K-1): the last position's logits (B*K, V), the key mask (B*K, P+T) and the
    position of the next token (B*K,).
    """
    param = next(model.parameters())
    B = len(contexts)
    ids, positions, real = _left_pad(contexts, param.device)
    P = ids.shape[1]
    key_mask = torch.ones(B, P + T, dtype=torch.bool, device=param.device)
    key_mask[:, :P] = real
    cache = KVCache(model.config, B, P + T, device=param.device, dtype=param.dtype)
    # Only the last position's logits are needed: run the vocabulary-wide head there alone.
    hidden = model(ids, cache=cache, position_ids=positions, key_mask=key_mask, return_hidden=True)
    logits = model.lm_head(hidden[:, -1])
    rows = torch.arange(B, device=param.device).repeat_interleave(K)
    cache.reorder(rows)
    return cache, logits[rows], key_mask[rows], positions[:, -1][rows] + 1


class _BestFinished:
    """The best finished sequence of every context so far: its final score, tokens and length."""

    def __init__(self, B: int, K: int, T: int, device: torch.device, dtype: torch.dtype):
        self.K, self.T = K, T
        self.score = torch.full((B,), NEG_INF, device=device, dtype=dtype)
        self.tokens = torch.zeros(B, T, dtype=torch.long, device=device)
        self.length = torch.zeros(B, dtype=torch.long, device=device)

    def offer(self, final: Tensor, candidates: Tensor, length: int, context_of: Tensor) -> None:
        """final (Ba, K) final scores (-inf: not finishing); candidates (Ba*K, T) their tokens;
        context_of (Ba,) the context each active row group belongs to. Tensor operations only:
        the host never waits here."""
        value, index = final.max(dim=1)  # the first of equal maxima: ties keep the earlier one
        score = self.score[context_of]
        better = value > score
        chosen = candidates.view(-1, self.K, self.T)[torch.arange(index.shape[0], device=index.device), index]
        self.score[context_of] = torch.where(better, value, score)
        self.tokens[context_of] = torch.where(better.unsqueeze(1), chosen, self.tokens[context_of])
        self.length[context_of] = torch.where(better, length, self.length[context_of])

    def sequences(self) -> list[list[int]]:
        tokens, lengths = self.tokens.tolist(), self.length.tolist()  # one copy to the host
        return [row[:n] for row, n in zip(tokens, lengths, strict=True)]


@torch.inference_mode()
def beam_search(model: GPT, contexts: list[list[int]], config: BeamConfig,
                check_every: int | None = None) -> list[list[int]]:
    """The best generated sequence for each context (batched; see the module docstring).

    check_every: steps between early-stop checks (default 1 on CPU, GPU_CHECK_EVERY on GPU);
    it changes the work done, never the result.

    One function on purpose, though longer than the rest: the step loop is the module
    docstring's steps in their order, and each part of it updates the same few tensors (scores,
    history, the rows kept); in separate functions they would travel through every call.
    """
    if not contexts:
        return []
    if any(len(c) == 0 for c in contexts):
        raise ValueError("empty context")
    V, K, T = model.config.vocab_size, config.beam, config.eval_len
    if K > V:
        raise ValueError(f"beam {K} exceeds the vocabulary size {V}")
    if max(config.eos_ids) >= V or min(config.eos_ids) < 0:
        raise ValueError(f"eos ids {config.eos_ids} outside the vocabulary [0, {V})")
    cache, logits, key_mask, next_position = _prefill(model, contexts, K, T)
    device, B = logits.device, len(contexts)
    if check_every is None:
        check_every = 1 if device.type == "cpu" else GPU_CHECK_EVERY
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    eos = torch.tensor(sorted(set(config.eos_ids)), device=device)

    # Per active context: which original context it is; per row: score and generated tokens.
    context_of = torch.arange(B, device=device)  # (Ba,)
    scores = torch.full((B, K), NEG_INF, device=device, dtype=torch.promote_types(logits.dtype, torch.float32))
    scores[:, 0] = 0.0  # step 0 expands only the first hypothesis
    history = torch.zeros(B * K, T, dtype=torch.long, device=device)
    best = _BestFinished(B, K, T, device, scores.dtype)
    # Every step's (rows, V) tensors go to these two buffers: they are tens of MB, and on a CPU a
    # fresh tensor that size costs a page fault per 4 KiB (measured: 26 of a step's ~150 ms each).
    logit_buffer = torch.empty(B * K, V, device=device, dtype=logits.dtype)
    logprob_buffer = torch.empty(B * K, V, device=device, dtype=scores.dtype)

    for step in range(T):
        if step > 0:
            token = history[:, step - 1 : step]
            hidden = model(token, cache=cache, position_ids=next_position.unsqueeze(1),
                           key_mask=key_mask, return_hidden=True)[:, -1]
            logits = torch.mm(hidden, model.lm_head.weight.t(), out=logit_buffer[: hidden.shape[0]])
            next_position = next_position + 1
        Ba = context_of.shape[0]
        logprobs = next_token_logprobs(logits, history[:, :step], config, eos, out=logprob_buffer[: Ba * K])
        candidates = logprobs.view(Ba, K, V).add_(scores.unsqueeze(2)).view(Ba, K * V)
        scores, flat = candidates.topk(K, dim=1, largest=True, sorted=True)  # (Ba, K)
        parent = torch.div(flat, V, rounding_mode="floor")
        token = flat % V
        rows = (parent + K * torch.arange(Ba, device=device).unsqueeze(1)).view(-1)
        history = history[rows]
        history[:, step] = token.view(-1)

        # Candidates ending in eos are finished; their slots are dead from now on.
        finished = torch.isin(token, eos) & torch.isfinite(scores)
        length = step + 1
        best.offer(final_score(scores, length, config.length_penalty).masked_fill(~finished, NEG_INF),
                   history, length, context_of)
        scores = scores.masked_fill(finished, NEG_INF)
        if length == T:  # the live hypotheses end here, without an eos
            best.offer(final_score(scores, T, config.length_penalty), history, T, context_of)
            break

        if config.early_stop and length % check_every == 0:  # contexts whose result is final leave
            bound = torch.maximum(final_score(scores, length + 1, config.length_penalty),
                                  final_score(scores, T, config.length_penalty))
            done = (bound <= best.score[context_of].unsqueeze(1)).all(dim=1)
            n_done = int(done.sum())  # the step's one wait for the device
            if n_done == Ba:
                break
            if n_done:
                active = (~done).nonzero().squeeze(1)  # indices, so the rows below cost no more waits
                rows = rows.view(Ba, K)[active].view(-1)
                keep = (active.unsqueeze(1) * K + torch.arange(K, device=device)).view(-1)
                context_of, scores = context_of[active], scores[active]
                history, next_position, key_mask = history[keep], next_position[keep], key_mask[keep]
        cache.reorder(rows)

    return best.sequences()


def generate(model: GPT, contexts: list[list[int]], config: BeamConfig, batch_size: int = 16,
             progress: tqdm | None = None, check_every: int | None = None) -> list[list[int]]:
    """`beam_search` over all contexts in batches of `batch_size`; results in input order.

    Batches are formed longest context first, so similar lengths share a batch (less padding)
    and an out-of-memory error shows at the first batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    results: list[list[int]] = [[] for _ in contexts]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        found = beam_search(model, [contexts[i] for i in chunk], config, check_every)
        for index, predict in zip(chunk, found, strict=True):
            results[index] = predict
        if progress is not None:
            progress.update(len(chunk))
    return results


def distinct_contexts(contexts: list[list[int]]) -> list[int]:
    """Index of the first line of every distinct context, in order of first occurrence."""
    first: dict[tuple[int, ...], int] = {}
    for index, context in enumerate(contexts):
        first.setdefault(tuple(context), index)
    return list(first.values())


def truncate_context(context: list[int], max_len: int) -> list[int]:
    """The last `max_len` tokens, as the paper's data loader keeps them."""
    return context[-max_len:] if len(context) > max_len else context


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(init_checkpoint: str | None, model_card: str | None, checkpoint: str | None,
               seed: int = 0, flag: str = "--checkpoint", allow_other_base: bool = False) -> GPT:
    """Base weights (or random ones from a card, for demos) with a fine-tuned checkpoint of any
    method (nlg.methods: read from its method.json, or recognised by its files) loaded and made
    ready to decode: LoRA merged, adapters unmerged on the cache, a full checkpoint is the model.
    flag: the option that named `checkpoint` (--lora_checkpoint takes LoRA only). Another base
    than the one the checkpoint records (method.json's base_identity) is refused, naming both,
    unless `allow_other_base` (then a warning says so)."""
    from nlg import methods

    method, settings, record = (None, None, None) if checkpoint is None else methods.detect(checkpoint)
    owner = methods.checkpoint_flag_owner(flag)  # --lora_checkpoint takes LoRA's checkpoints only
    if method is not None and owner is not None and method is not owner:
        raise InputError(f"{flag} {checkpoint}: holds a checkpoint of method {method.name}, not {owner.label}; "
                         "give it as --checkpoint")
    if method is not None and not method.needs_base:
        # The checkpoint is the whole model: no base to load.
        if init_checkpoint is not None:
            print(f"note: {flag} {checkpoint} is a whole model ({method.name}); --init_checkpoint "
                  f"{init_checkpoint} is not read", file=sys.stderr)
        model = _from_pretrained(checkpoint, model_card)
    elif init_checkpoint is None:
        if model_card is None:
            raise InputError("give --init_checkpoint (and optionally --model_card), or --model_card "
                             "alone for a model with random weights")
        torch.manual_seed(seed)
        model = GPT(card_config(model_card))
        model.random_base = True  # for main's note: for tests and demos only
    else:
        model = _from_pretrained(init_checkpoint, model_card)
    if method is None:
        return model.eval()
    if record is not None:
        check_same_shape(record.model, model, f"{flag} {checkpoint}", init_checkpoint or model_card)
        other = methods.check_base(record, checkpoint, init_checkpoint, allow_other_base)  # after the shape: more basic
        if other is not None:
            print(f"warning: {other}", file=sys.stderr)
    try:
        method.load(model, Path(checkpoint), settings)
    except ValueError as error:  # not only CheckpointError/AdapterError: LoRAConfig's checks (r = 0)
        raise InputError(str(error)) from None
    method.prepare_inference(model)  # LoRA: zero extra cost per token while decoding
    return model.eval()


def _from_pretrained(path: str, model_card: str | None) -> GPT:
    try:
        return from_pretrained(path, card=model_card)
    except (FileNotFoundError, ValueError) as error:  # not only CheckpointError: a missing file, a bad card
        raise InputError(str(error)) from None


def check_same_shape(trained: dict, model: GPT, what: str, base: str | None) -> None:
    """The model a checkpoint was trained on (its method.json) must have the base's shape."""
    keys = ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")
    have = model.config.to_dict()
    if any(trained.get(key) != have[key] for key in keys):
        def shape(c: dict) -> str:
            return ", ".join(f"{key} {c.get(key)}" for key in keys)
        raise InputError(f"{what} was trained on a GPT-2 of {shape(trained)}; the base model "
                         f"({base}) has {shape(have)}")


def checkpoint_inputs(directory: str | None) -> list[Path]:
    """The files of a checkpoint directory (for check_outputs: no output may overwrite them)."""
    if directory is None or not Path(directory).is_dir():
        return [] if directory is None else [Path(directory)]
    return sorted(path for path in Path(directory).iterdir() if path.is_file())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nlg beam", description=__doc__.split("\n\n")[0])
    arg = parser.add_argument
    arg("--data", required=True, help="encoded jsonl from `nlg data` (e.g. data/e2e/test.jsonl)")
    arg(*spellings("init_checkpoint"), dest="init_checkpoint", default=None,
        help="base GPT-2: Hugging Face directory or bare .bin/.safetensors file")
    arg(*spellings("model_card"), dest="model_card", choices=list(CARDS), default=None,
        help="model shape; required without --init_checkpoint (then the weights are random)")
    arg("--checkpoint", default=None,
        help="a checkpoint of `nlg train`, any --method (its method.json says which), or a PEFT, "
             "AdapterHub or Hugging Face directory: LoRA is merged, adapters run unmerged, a full "
             "fine-tuning checkpoint is the whole model (no --init_checkpoint needed)")
    arg(*spellings("lora_checkpoint"), dest="lora_checkpoint", default=None,
        help="a LoRA adapter directory (adapter_config.json + adapter_model.safetensors), merged "
             "before decoding: --checkpoint for LoRA only")
    arg(*spellings("allow_other_base"), dest="allow_other_base", action="store_true",
        help="decode a checkpoint on another base model than the one its method.json records "
             "(refused without it); a warning names both")
    arg("--beam", type=int, default=10, help="beam size (default 10)")
    arg(*spellings("length_penalty"), dest="length_penalty", type=float, default=0.8,
        help="final score = log-prob sum / length ** this (default 0.8)")
    arg(*spellings("no_repeat_ngram_size"), dest="no_repeat_ngram_size", type=int, default=4,
        help="ban repeating any n-gram of the generated tokens; 0 disables (default 4)")
    arg(*spellings("repetition_penalty"), dest="repetition_penalty", type=float, default=1.0,
        help="CTRL repetition penalty on generated tokens; 1.0 disables (default 1.0)")
    arg(*spellings("eos_token_id"), dest="eos_token_id", type=int, action="append", default=None,
        help=f"an extra id that ends a sequence (repeatable); {EOS_ID} always does (default: {BLANK_LINE_ID})")
    arg(*spellings("eval_len"), dest="eval_len", type=int, default=64, help="tokens generated at most (default 64)")
    arg(*spellings("min_length"), dest="min_length", type=int, default=0,
        help="block eos until this many tokens were generated (default 0)")
    arg(*spellings("seq_len"), dest="seq_len", type=int, default=512,
        help="context + eval_len budget: longer contexts keep their last seq_len - eval_len tokens, "
             "as in the paper (default 512)")
    arg(*spellings("batch_size"), dest="batch_size", type=int, default=16,
        help="contexts per batch (each with `beam` hypotheses) (default 16)")
    arg(*spellings("output_file"), dest="output_file", default="beam_prediction.jsonl",
        help="where the predictions go (default beam_prediction.jsonl)")
    arg(*spellings("work_dir"), dest="work_dir", default=None,
        help="if given, --output_file is taken relative to it (the paper's layout)")
    arg("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    arg(*spellings("dist_timeout"), dest="dist_timeout", type=float, default=default_timeout(),
        help=f"under torchrun: seconds a collective may wait for a dead or stuck rank (env {TIMEOUT_ENV})")
    arg("--dtype", choices=list(DTYPES), default="float32", help="weights and cache dtype (default float32)")
    arg("--seed", type=int, default=0, help="seed for random weights (no --init_checkpoint)")
    arg(*spellings("no_early_stop"), dest="early_stop", action="store_false",
        help="run every context for eval_len steps (same results, slower; for checking)")
    arg(*spellings("no_progress"), dest="progress", action="store_false",
        help="no progress bar (none is drawn when stderr is not a terminal)")
    return parser.parse_args(argv)


def beam_config(args: argparse.Namespace) -> BeamConfig:
    """The decoding settings of the command line; bad ones are a one-line error (exit 2)."""
    eos_ids = tuple(dict.fromkeys([EOS_ID, *(args.eos_token_id or [BLANK_LINE_ID])]))
    try:
        return BeamConfig(beam=args.beam, eval_len=args.eval_len, length_penalty=args.length_penalty,
                          no_repeat_ngram_size=args.no_repeat_ngram_size,
                          repetition_penalty=args.repetition_penalty, min_length=args.min_length,
                          eos_ids=eos_ids, early_stop=args.early_stop)
    except ValueError as error:
        raise InputError(str(error)) from None


def context_budget(model: GPT, pairs: list, config: BeamConfig, data: str, seq_len: int) -> int:
    """The most context tokens a prompt may keep, after checking that the eos ids and every
    context's ids are inside the model's vocabulary."""
    V, n_positions = model.config.vocab_size, model.config.n_positions
    if max(config.eos_ids) >= V or min(config.eos_ids) < 0:
        raise InputError(f"eos ids {list(config.eos_ids)} outside the model's vocabulary [0, {V})")
    for pair in pairs:
        if max(pair.context) >= V:
            raise InputError(f"{data}:{pair.line}: token id {max(pair.context)} outside the model's "
                             f"vocabulary of {V}")
    prefix = model.prefix.length if model.prefix is not None else 0  # prefix tuning's positions
    budget = min(seq_len, n_positions - prefix) - config.eval_len
    if budget < 1:
        what = f" and the prefix's {prefix} positions leave" if prefix else " leaves"
        raise InputError(f"eval_len {config.eval_len}{what} no room for a context in "
                         f"min(seq_len, n_positions) = {min(seq_len, n_positions)} positions")
    return budget


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.checkpoint and args.lora_checkpoint:
        raise InputError(f"give --checkpoint {args.checkpoint} or --lora_checkpoint {args.lora_checkpoint}, not both")
    config = beam_config(args)
    if args.batch_size < 1:
        raise InputError(f"--batch_size must be >= 1, got {args.batch_size}")
    output = Path(args.work_dir) / args.output_file if args.work_dir else Path(args.output_file)
    check_outputs(inputs={"--data": args.data, "--init_checkpoint": checkpoint_files(args.init_checkpoint),
                          "--lora_checkpoint": checkpoint_inputs(args.lora_checkpoint),
                          "--checkpoint": checkpoint_inputs(args.checkpoint)},
                  outputs={"--output_file": output})

    from nlg.pairs import load_encoded

    pairs = load_encoded(args.data)  # bad input stops here, before any process group exists
    rt = init_runtime(args.device or "auto", args.dist_timeout)
    try:
        model = load_model(args.init_checkpoint, args.model_card, args.checkpoint or args.lora_checkpoint,
                           args.seed, "--checkpoint" if args.checkpoint else "--lora_checkpoint",
                           args.allow_other_base)
        if getattr(model, "random_base", False) and rt.is_main:
            print(f"no --init_checkpoint: {args.model_card} with random weights (seed {args.seed}); "
                  "for tests and demos only", file=sys.stderr)
        max_context = context_budget(model, pairs, config, args.data, args.seq_len)
        model = model.to(device=rt.device, dtype=DTYPES[args.dtype])
        contexts = [pair.context for pair in pairs]
        firsts = distinct_contexts(contexts)
        mine = firsts[rt.rank::rt.world_size]  # strided, so every rank gets short and long contexts alike
        if rt.is_main:
            print(f"{len(pairs)} lines, {len(firsts)} distinct contexts; beam {config.beam}, "
                  f"eval_len {config.eval_len}, batch {args.batch_size}, eos {list(config.eos_ids)}, "
                  f"{rt.world_size} process(es) on {rt.device}", file=sys.stderr)
        start = time.perf_counter()
        with tqdm(total=len(mine), unit="ctx", desc="beam", file=sys.stderr,
                  disable=not (rt.is_main and show_progress(args.progress))) as bar:
            predicts = generate(model, [truncate_context(contexts[i], max_context) for i in mine], config,
                                args.batch_size, bar)
        results: dict[int, list[int]] = {}
        for part in all_gather_objects(dict(zip(mine, predicts, strict=True)), rt):
            results.update(part)
    finally:
        close_runtime(rt)
    if rt.is_main:
        seconds = time.perf_counter() - start
        write_jsonl(output, [{"id": i, "context": contexts[i], "predict": results[i]} for i in firsts])
        print(f"decoded {len(firsts)} contexts in {seconds:.1f}s ({len(firsts) / seconds:.2f} contexts/s); "
              f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
