"""LoRA fine-tuning of GPT-2 on encoded (context, completion) pairs: one CPU, one GPU or many.

    nlg train --train_data data/e2e/train.jsonl --valid_data data/e2e/valid.jsonl \\
        --model_card gpt2.md --init_checkpoint gpt2-medium-pytorch_model.bin --work_dir runs/e2e
    torchrun --nproc_per_node=8 -m nlg.train ...same flags...

Flags follow the paper's `gpt2_ft.py` (both `--train_data` and `--train-data` spellings), and
the defaults are its E2E recipe: AdamW lr 2e-4, betas (0.9, 0.999), eps 1e-6, weight decay
0.01, batch 8, linear schedule with 500 warmup steps, 5 epochs, LoRA r=4 alpha=32 dropout 0.1
on q and v, label smoothing 0.1. The paper's published command runs unchanged; its flags
that mean nothing here (--platform, --local_rank, --fp16, --roll_*, --i_steps, ...) are
accepted and ignored with a warning.

Objective (see nlg.batching for which positions are predicted): over the N completion tokens
of an optimiser step (all micro-batches, all ranks),

    loss = 1/N · Σ_t [ (1-ε) · (-log p(y_t)) + ε · 1/V · Σ_v (-log p(v)) ]

i.e. the paper's label-smoothed NLL, averaged over tokens. The paper averages per micro-batch
and rank; we divide by the step's total token count, so the update does not depend on how
the step is split into micro-batches or ranks (equal when every batch has as many tokens).
Validation reports the plain NLL (ε = 0) per completion token and its exp (perplexity).

Differences from the paper's trainer, on purpose: batches are padded to their longest pair,
not to --seq_len; --max_step and the schedule count optimiser updates (the paper counts
micro-batches, the same with --grad_acc 1); bf16 autocast on GPU instead of apex fp16;
validation loss is averaged over tokens, not over batches.

Files in --work_dir:
    train_config.json              the run's settings, model shape, trainable parameter count
    metrics.jsonl                  every --log_interval steps {"step", "epoch", "loss", "lr",
                                   "tokens_per_s", "tokens"}: the training loss (smoothed, per
                                   completion token) since the previous record, the lr of the
                                   last update, real input tokens per second; every
                                   --eval_interval steps and at each epoch end {"step", "epoch",
                                   "valid_loss", "valid_ppl"}
    checkpoint-STEP/               adapter_model.safetensors + adapter_config.json (PEFT layout,
                                   for `nlg beam --lora_checkpoint`; with --full_finetune the
                                   whole model, config.json + model.safetensors, instead) and
                                   training_state.pt (optimiser, scheduler, step, data
                                   position, RNG states of every rank, config; tensors and plain
                                   values only, read with torch.load(weights_only=True));
                                   written atomically.

--resume latest (or a checkpoint path) continues exactly where the checkpoint was taken: same
data order, same dropout masks, and metrics.jsonl is cut back to the checkpoint's step. It
needs the same data, batch size, grad_acc, seq_len, seed, LoRA shape and process count, and
says which differ; `latest` with no checkpoint yet starts afresh. A run without --resume
refuses a work_dir that already holds checkpoints.

Faults: bad input files stop with FILE:LINE before training (exit 2); a non-finite loss stops
before the bad update with an error (exit 1), checkpoints already written stay valid; when a
rank dies, torchrun stops the others, and any collective that waits longer than --dist_timeout
seconds (default $NLG_DIST_TIMEOUT or 600) raises instead of hanging.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from nlg.adapter_files import load_adapter, save_adapter
from nlg.batching import Batch, Example, batches_per_epoch, collate, epoch_batches, make_examples
from nlg.cli import run_main
from nlg.data import load_encoded
from nlg.distributed import (
    Runtime,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    close_runtime,
    init_runtime,
)
from nlg.files import InputError, atomic_dir, atomic_write, read_lines, write_jsonl
from nlg.lora import add_lora, count_trainable, lora_parameters
from nlg.model import (
    GPT,
    card_config,
    from_pretrained,
    load_base_weights,
    read_state_dict,
    save_pretrained,
)
from nlg.train_args import TrainConfig, parse_args

STATE_FILE = "training_state.pt"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

# Settings a resumed run must share with the checkpoint, or the data order / model differ.
RESUME_MUST_MATCH = ("train_batch_size", "grad_acc", "seq_len", "random_seed", "group_by_length",
                     "obj", "lora_dim", "lora_alpha", "lora_targets", "full_finetune")


# ---------------------------------------------------------------------------------------------
# Processes and devices (the process group itself: nlg.distributed)
# ---------------------------------------------------------------------------------------------


def enable_tf32(rt: Runtime) -> None:
    """Let training's fp32 matmuls round through TF32 on GPUs (beam search keeps true fp32)."""
    if rt.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device):
    """bf16 autocast on GPU (weights stay fp32, the loss is computed in fp32); fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def log(rt: Runtime, message: str) -> None:
    if rt.is_main:
        tqdm.write(message, file=sys.stdout)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_examples(path: str, seq_len: int, vocab_size: int) -> tuple[list[Example], int]:
    """Examples of an encoded jsonl file, and how many were truncated.

    `load_encoded` validates every line (keys, integer ids within the vocabulary) and names
    FILE:LINE on the first bad one.
    """
    return make_examples(load_encoded(path, vocab_size=vocab_size), seq_len)


def eval_batches(examples: list[Example], batch_size: int, rt: Runtime) -> list[list[Example]]:
    """Validation batches of this rank: longest first (little padding), batches dealt round-robin."""
    ordered = sorted(examples, key=lambda e: -len(e.tokens))
    batches = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    return batches[rt.rank::rt.world_size]


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def build_model(config: TrainConfig) -> GPT:
    """The base GPT-2 (pretrained or random), frozen, with LoRA on the chosen projections
    (with --full_finetune: no LoRA, every parameter trainable)."""
    if config.init_checkpoint:
        try:
            model = from_pretrained(config.init_checkpoint, card=config.model_card)
        except (OSError, ValueError) as error:  # CheckpointError is a ValueError
            raise InputError(f"--init_checkpoint {config.init_checkpoint}: {error}") from None
    else:
        model = GPT(card_config(config.model_card or "gpt2.md"))
    if not config.full_finetune:
        add_lora(model, rank=config.lora_dim, alpha=config.lora_alpha, dropout=config.lora_dropout,
                 targets=config.lora_targets)
    return model


def trainable_parameters(model: GPT, config: TrainConfig) -> list[nn.Parameter]:
    return list(model.parameters()) if config.full_finetune else list(lora_parameters(model).values())


# ---------------------------------------------------------------------------------------------
# Objective and one optimiser step
# ---------------------------------------------------------------------------------------------


def completion_loss(logits: Tensor, targets: Tensor, label_smooth: float = 0.0) -> Tensor:
    """SUM over rows of (1-ε)·(-log p(target)) + ε·mean_v(-log p_v), in fp32.

    logits: (N, vocab) at the loss positions only; targets: (N,). `F.cross_entropy` with
    `label_smoothing=ε` computes exactly the paper's smoothed term per token.
    """
    return F.cross_entropy(logits.float(), targets, reduction="sum", label_smoothing=label_smooth)


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


@dataclass
class StepStats:
    loss_sum: float  # summed over every rank's completion tokens
    n_loss: int
    n_tokens: int  # real input tokens, all ranks

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.n_loss, 1)


class NonFiniteLoss(RuntimeError):
    pass


def train_step(model: CompletionLM | nn.Module, micro_batches: list[Batch], optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, params: list[nn.Parameter],
               config: TrainConfig, rt: Runtime) -> StepStats:
    """Forward/backward every micro-batch, then one update with the token-averaged gradient.

    Gradients are accumulated from loss *sums* and divided by the step's total token count
    afterwards (DDP averages over ranks, hence the world_size factor). DDP synchronises only on
    the last micro-batch (`no_sync` before). A non-finite loss raises before the update, on
    every rank alike (the check reads the all-reduced sum).
    """
    model.train()
    loss_sum = torch.zeros((), device=rt.device)
    n_loss = n_tokens = 0
    for i, batch in enumerate(micro_batches):
        final = i == len(micro_batches) - 1
        sync = model.no_sync() if rt.distributed and not final else contextlib.nullcontext()
        with sync:
            loss = model(batch.input_ids, batch.loss_index, batch.loss_targets, config.label_smooth)
            loss.backward()
        loss_sum += loss.detach()
        n_loss += batch.n_loss
        n_tokens += batch.n_tokens
    total_loss, total_n, total_tokens = all_reduce_sum([loss_sum.item(), n_loss, n_tokens], rt)
    if not math.isfinite(total_loss):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(f"loss is {total_loss}")
    scale = rt.world_size / max(total_n, 1)
    grads = [p.grad for p in params if p.grad is not None]
    torch._foreach_mul_(grads, scale)
    if config.clip > 0:
        nn.utils.clip_grad_norm_(params, config.clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepStats(total_loss, int(total_n), int(total_tokens))


# ---------------------------------------------------------------------------------------------
# Optimiser and schedule
# ---------------------------------------------------------------------------------------------


def build_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay, bias-corrected) over `params` (the trainable ones)."""
    return torch.optim.AdamW(params, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                             eps=config.adam_epsilon, weight_decay=config.weight_decay)


def lr_factor(step: int, schedule: str, warmup: int, total: int) -> float:
    """Multiplier of the peak lr for the update after `step` updates (the paper's formulas).

    warmup: step / warmup.  linear: then down to 0 at `total`.  constant: then 1.
    cosine: then 0.5·(1 + cos(π·step/total)) -- over the whole run, as the paper's code has it.
    """
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))
    return 1.0


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: CompletionLM, batches: list[list[Example]], config: TrainConfig,
             rt: Runtime) -> tuple[float, float]:
    """(mean NLL per completion token over the whole validation set, its perplexity)."""
    model.eval()
    loss_sum, n_loss = torch.zeros((), device=rt.device, dtype=torch.float64), 0
    for examples in batches:
        batch = collate(examples, obj=config.obj).to(rt.device)
        loss_sum += model(batch.input_ids, batch.loss_index, batch.loss_targets).double()
        n_loss += batch.n_loss
    total, n = all_reduce_sum([loss_sum.item(), n_loss], rt)
    model.train()
    mean = total / max(n, 1)
    return mean, math.exp(min(mean, 700.0))


# ---------------------------------------------------------------------------------------------
# Checkpoints and the metrics log
# ---------------------------------------------------------------------------------------------


def rng_state() -> dict:
    """This process's RNG states as tensors and plain lists (loadable with weights_only=True)."""
    np_state = list(np.random.get_state())
    np_state[1] = np_state[1].tolist()
    return {
        "python": random.getstate(),
        "numpy": np_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np_state = list(state["numpy"])
    np_state[1] = np.array(np_state[1], dtype=np.uint32)
    np.random.set_state(tuple(np_state))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(rt: Runtime) -> list[dict]:
    return all_gather_objects(rng_state(), rt)


def save_checkpoint(model: GPT, state: dict, path: Path, base_model: str | None) -> None:
    """`path` (work_dir/checkpoint-STEP/): the adapter (PEFT files) and training_state.pt, atomically.

    After --full_finetune the checkpoint holds the whole model (config.json + model.safetensors)
    instead of an adapter.
    """
    with atomic_dir(path) as tmp:
        if state["config"].get("full_finetune"):
            save_pretrained(model, tmp)
        else:
            save_adapter(model, tmp, base_model=base_model)
        torch.save(state, tmp / STATE_FILE)


def list_checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in work_dir by step (atomic_dir leaves only complete ones named so)."""
    found = []
    if work_dir.is_dir():
        for entry in work_dir.iterdir():
            match = CHECKPOINT_RE.match(entry.name)
            if match and (entry / STATE_FILE).is_file():
                found.append((int(match.group(1)), entry))
    return sorted(found)


def resolve_resume(config: TrainConfig) -> Path | None:
    """The checkpoint to resume from, or None to start fresh."""
    work_dir = Path(config.work_dir)
    if config.resume is None:
        if list_checkpoints(work_dir):
            raise InputError(f"{work_dir} already holds checkpoints of a run; pass --resume latest "
                             "to continue it, or choose another --work_dir")
        return None
    if config.resume == "latest":
        found = list_checkpoints(work_dir)
        return found[-1][1] if found else None
    path = Path(config.resume)
    if not (path / STATE_FILE).is_file():
        raise InputError(f"--resume {path}: not a checkpoint directory (no {STATE_FILE})")
    return path


def load_training_state(path: Path) -> dict:
    try:
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable state is the same user error
        raise InputError(f"{path / STATE_FILE}: cannot read training state ({error})") from None


def check_resumable(state: dict, config: TrainConfig, rt: Runtime, n_train: int, path: Path) -> None:
    saved = state["config"]
    current = config.to_json()
    changed = [f"{k}: checkpoint {saved.get(k)!r}, now {current[k]!r}"
               for k in RESUME_MUST_MATCH if saved.get(k) != current[k]]
    if state["world_size"] != rt.world_size:
        changed.append(f"processes: checkpoint {state['world_size']}, now {rt.world_size}")
    if state["n_train"] != n_train:
        changed.append(f"training pairs: checkpoint {state['n_train']}, now {n_train}")
    if changed:
        raise InputError(f"{path}: cannot resume exactly, settings differ: " + "; ".join(changed))


def empty_log_window() -> dict:
    """Sums over the training steps since the last loss record (checkpointed as they stand)."""
    return {"loss_sum": 0.0, "n_loss": 0, "n_tokens": 0, "seconds": 0.0}


class MetricsLog:
    """Rank 0's JSON-lines log; every record is flushed at once (a crash loses nothing written)."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path = path
        self.enabled = enabled
        if enabled:
            write_jsonl(path, [] if resume_step is None else self._records_up_to(resume_step))

    def _records_up_to(self, step: int) -> list[dict]:
        """Records of the interrupted run up to `step`; later ones will be written again."""
        if not self.path.is_file():
            return []
        kept = []
        for line in read_lines(self.path):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
            if isinstance(record, dict) and record.get("step", math.inf) <= step:
                kept.append(record)
        return kept

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def train(config: TrainConfig) -> Path:
    """Fine-tune; returns the final checkpoint directory."""
    # Data first: bad input stops here, before any process group or model exists.
    vocab_size = card_config(config.model_card).vocab_size if config.model_card else 50257
    train_examples, n_cut = load_examples(config.train_data, config.seq_len, vocab_size)
    valid_examples, n_cut_valid = ([], 0) if not config.valid_data else load_examples(
        config.valid_data, config.seq_len, vocab_size)

    rt = init_runtime(config.device, config.dist_timeout)
    enable_tf32(rt)
    try:
        return _train(config, rt, train_examples, n_cut, valid_examples, n_cut_valid)
    finally:
        close_runtime(rt)


def _train(config: TrainConfig, rt: Runtime, train_examples: list[Example], n_cut: int,
           valid_examples: list[Example], n_cut_valid: int) -> Path:
    work_dir = Path(config.work_dir)
    resume_from = resolve_resume(config)

    # Same seed everywhere: every rank builds the identical model and LoRA initialisation.
    random.seed(config.random_seed)
    np.random.seed(config.random_seed)
    torch.manual_seed(config.random_seed)
    model = build_model(config).to(rt.device)
    if model.config.n_positions < config.seq_len:
        raise InputError(f"--seq_len {config.seq_len} exceeds the model's {model.config.n_positions} positions")
    for path, examples in ((config.train_data, train_examples), (config.valid_data, valid_examples)):
        top = max((max(e.tokens) for e in examples), default=0)
        if top >= model.config.vocab_size:
            raise InputError(f"{path}: token id {top} is outside the model's vocabulary "
                             f"({model.config.vocab_size} ids)")
    params = trainable_parameters(model, config)
    torch.manual_seed(config.random_seed + rt.rank)  # distinct dropout masks per rank

    n_train = len(train_examples)
    per_epoch = math.ceil(batches_per_epoch(n_train, config.train_batch_size, rt.world_size) / config.grad_acc)
    max_epoch = config.max_epoch if config.max_epoch or config.max_step else 5
    total_steps = config.max_step or max_epoch * per_epoch
    if config.max_step and config.max_epoch:
        total_steps = min(config.max_step, config.max_epoch * per_epoch)
    optimizer = build_optimizer(params, config)
    schedule_length = config.max_step or total_steps  # the paper's horizon: max_step if given
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.scheduler, config.warmup_step, schedule_length))

    step, epoch, position, last_eval_step = 0, 0, 0, -1
    window = empty_log_window()
    if resume_from is not None:
        state = load_training_state(resume_from)
        check_resumable(state, config, rt, n_train, resume_from)
        if config.full_finetune:
            load_base_weights(model, read_state_dict(resume_from / "model.safetensors"), str(resume_from))
        else:
            load_adapter(model, resume_from)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, position = state["step"], state["epoch"], state["batch_in_epoch"]
        last_eval_step = step  # whatever validation belonged to this step ran before it was saved
        window = dict(state["log_window"])
        set_rng_state(state["rng"][rt.rank])
        log(rt, f"resumed from {resume_from} at step {step} (epoch {epoch + 1})")

    if not config.init_checkpoint:
        log(rt, "no --init_checkpoint: training a randomly initialised model (for tests and demos)")
    trainable = count_trainable(model)
    what = ("full fine-tuning" if config.full_finetune
            else f"LoRA r={config.lora_dim} on {','.join(config.lora_targets)}")
    log(rt, f"model: {model.config.n_layer} layers, width {model.config.n_embd}, "
            f"{model.num_parameters():,} parameters, {trainable:,} trainable ({what}, "
            f"{100 * trainable / model.num_parameters():.3f}%)")
    log(rt, f"data: {n_train} training pairs ({n_cut} cut to --seq_len {config.seq_len}), "
            f"{len(valid_examples)} validation pairs ({n_cut_valid} cut); {rt.world_size} process(es) on "
            f"{rt.device.type}, {per_epoch} steps per epoch, {total_steps} steps")
    if rt.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(work_dir / CONFIG_FILE) as handle:
            json.dump({**config.to_json(), "model": model.config.to_dict(), "world_size": rt.world_size,
                       "trainable_parameters": trainable, "n_train": n_train,
                       "steps_per_epoch": per_epoch, "total_steps": total_steps}, handle, indent=2)
    metrics = MetricsLog(work_dir / METRICS_FILE, rt.is_main, step if resume_from else None)

    lm = CompletionLM(model)
    wrapped: nn.Module = lm
    if rt.distributed:
        wrapped = nn.parallel.DistributedDataParallel(
            lm, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
            gradient_as_bucket_view=True)
    valid = eval_batches(valid_examples, config.valid_batch_size, rt) if valid_examples else []
    lengths = [len(e.tokens) for e in train_examples]
    base_model = config.init_checkpoint or (config.model_card or "gpt2.md")
    last_saved = resume_from if resume_from is not None and step == total_steps else None

    def checkpoint() -> Path:
        rngs = gather_rng_states(rt)
        path = work_dir / f"checkpoint-{step}"
        if rt.is_main:
            state = {"format": 1, "step": step, "epoch": epoch, "batch_in_epoch": position,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "rng": rngs, "log_window": window, "config": config.to_json(),
                     "world_size": rt.world_size, "n_train": n_train}
            save_checkpoint(model, state, path, base_model)
        barrier(rt)  # nobody runs ahead of a checkpoint that may be resumed
        return path

    def validate() -> None:
        nonlocal last_eval_step
        if not valid or last_eval_step == step:
            return
        start = time.perf_counter()
        loss, ppl = evaluate(lm, valid, config, rt)
        last_eval_step = step
        metrics.write({"step": step, "epoch": epoch + 1, "valid_loss": loss, "valid_ppl": ppl})
        log(rt, f"step {step:>7} | valid loss {loss:.4f} | valid ppl {ppl:.3f} | "
                f"{time.perf_counter() - start:.1f}s")

    start_epoch = epoch
    bar = tqdm(total=total_steps, initial=step, disable=None if rt.is_main else True,
               dynamic_ncols=True, desc="train", file=sys.stderr)
    try:
        for epoch in itertools.count(start_epoch):
            if step >= total_steps:
                break
            batches = epoch_batches(lengths, config.train_batch_size, epoch=epoch, seed=config.random_seed,
                                    world_size=rt.world_size, rank=rt.rank,
                                    group_by_length=config.group_by_length)
            while position < len(batches) and step < total_steps:
                start = time.perf_counter()
                group = batches[position:position + config.grad_acc]
                micro = [collate([train_examples[i] for i in idx], obj=config.obj).to(rt.device)
                         for idx in group]
                lr = optimizer.param_groups[0]["lr"]
                try:
                    stats = train_step(wrapped, micro, optimizer, scheduler, params, config, rt)
                except NonFiniteLoss as error:
                    saved = list_checkpoints(work_dir)
                    last = saved[-1][1] if saved else "none written yet"
                    raise NonFiniteLoss(f"{error} at step {step + 1} (epoch {epoch + 1}); stopped before "
                                        f"updating; last good checkpoint: {last}") from None
                seconds = time.perf_counter() - start
                step += 1
                position += len(group)
                window["loss_sum"] += stats.loss_sum
                window["n_loss"] += stats.n_loss
                window["n_tokens"] += stats.n_tokens
                window["seconds"] += seconds
                bar.update(1)
                bar.set_postfix(loss=f"{stats.loss:.3f}", lr=f"{lr:.2e}",
                                tok_s=f"{stats.n_tokens / max(seconds, 1e-9):,.0f}", refresh=False)

                if step % config.log_interval == 0:
                    mean = window["loss_sum"] / max(window["n_loss"], 1)
                    speed = window["n_tokens"] / max(window["seconds"], 1e-9)
                    metrics.write({"step": step, "epoch": epoch + 1, "loss": mean, "lr": lr,
                                   "tokens_per_s": speed, "tokens": window["n_tokens"]})
                    if bar.disable:
                        log(rt, f"step {step:>7} | epoch {epoch + 1} | loss {mean:.4f} | lr {lr:.3e} | "
                                f"{speed:,.0f} tokens/s")
                    window = empty_log_window()
                if step % config.eval_interval == 0 or position >= len(batches):
                    validate()
                if step % config.save_interval == 0:
                    last_saved = checkpoint()
            if step >= total_steps:
                break
            position = 0
        validate()
        if last_saved is None or last_saved.name != f"checkpoint-{step}":
            last_saved = checkpoint()
    finally:
        bar.close()
    log(rt, f"final checkpoint: {last_saved}")
    return last_saved


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        train(config)
    except NonFiniteLoss as error:
        print(f"error: non-finite training loss: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
