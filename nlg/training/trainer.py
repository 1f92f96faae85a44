"""Fine-tuning of GPT-2 on encoded (context, completion) pairs: one CPU, one GPU or many.

--method (nlg.methods) chooses what trains: lora (default), full (--full_finetune), top2
(--top_layers), adapter-l / adapter-h (--adapter_dim), prefix / prefix-embed (--prefix_len,
--prefix_hidden); the run prints its trainable count (prefix tuning: also what it stores).

    nlg train --train_data data/e2e/train.jsonl --valid_data data/e2e/valid.jsonl \\
        --model_card gpt2.md --init_checkpoint gpt2-medium-pytorch_model.bin --work_dir runs/e2e
    torchrun --nproc_per_node=8 -m nlg.train ...same flags...

Flags follow the paper's `gpt2_ft.py` (both `--train_data` and `--train-data` spellings), and
the defaults are its E2E recipe: AdamW lr 2e-4, betas (0.9, 0.999), eps 1e-6, weight decay
0.01, batch 8, linear schedule with 500 warmup steps, 5 epochs, LoRA r=4 alpha=32 dropout 0.1
on q and v, label smoothing 0.1 (nlg.training.settings). The paper's published command runs
unchanged; its flags that mean nothing here (--platform, --local_rank, --fp16, --roll_*,
--i_steps, ...) are accepted and ignored with a warning.

Objective (nlg.training.loss; nlg.training.batching says which positions are predicted): the paper's
label-smoothed NLL, averaged over the completion tokens of the whole optimiser step. The paper
averages per micro-batch and rank; we divide by the step's total token count, so the update
does not depend on how the step is split into micro-batches or ranks (equal when every batch
has as many tokens). Validation reports the plain NLL per completion token and its exp
(perplexity).

Differences from the paper's trainer, on purpose: batches are padded to their longest pair,
not to --seq_len; --max_step and the schedule count optimiser updates (the paper counts
micro-batches, the same with --grad_acc 1); bf16 autocast on GPU instead of apex fp16;
validation loss is averaged over tokens, not over batches.

Files in --work_dir:
    train_config.json     the run's settings, model shape, trainable parameter count
    metrics.jsonl         training loss, lr and tokens/s every --log_interval steps; validation
                          loss and perplexity every --eval_interval steps and at each epoch end
                          (nlg.training.log)
    checkpoint-STEP/      the method's files (LoRA: the adapter in PEFT's layout; full: the
                          whole model; top2: its blocks; adapters: AdapterHub's layout) for
                          `nlg beam --checkpoint`, method.json, and training_state.pt
                          (optimiser, scheduler, step, data position, RNG states of every rank,
                          config), written atomically with a manifest.json of sizes and SHA-256
                          that --resume checks (nlg.training.checkpoints)
    train.lock            held by rank 0 while the run lives: a second run here stops at once

--resume latest (or a checkpoint path) continues exactly where the checkpoint was taken: same
data order, same dropout masks, and metrics.jsonl is cut back to the checkpoint's step. It
needs the checkpoint's settings (all of TrainConfig, the method and its settings among them, but how the run is executed or reported),
the same input files by SHA-256 and the same process count, and names each difference with
both values; `--allow_changed NAME,...` lets named settings differ, takes their new values and
logs them (nlg.training.checkpoints). `latest` with no checkpoint yet starts afresh. A run without --resume
refuses a work_dir that already holds checkpoints. Ctrl-C or SIGTERM end the run with one line,
`interrupted at step N; CHECKPOINT is the latest`, exit 130 / 143 (`stop_signals`).

Faults: bad input files stop with FILE:LINE before training (exit 2), and so does an output in
--work_dir that is an input; a non-finite loss, or a failed write (a full disk), stops with a
one-line error (exit 1), checkpoints already written stay valid; when a
rank dies, torchrun stops the others, and any collective that waits longer than --dist_timeout
seconds (default $NLG_DIST_TIMEOUT or 600) raises instead of hanging (nlg.training.distributed).

The code follows a run (`train`) in its phases:
    load_data           read and check both files, before any process group or model exists
    Trainer()           set up: model (+ the method), optimiser, schedule, how many steps
    Trainer.restore     with --resume: weights, optimiser, schedule, position, RNG, loss window
    Trainer.run         the loop: `train_step` on each group of --grad_acc micro-batches, the
                        loss record, `Trainer.validate` and `Trainer.save` on their intervals

How a step runs, per --compile mode, is nlg.training.step: steps are queued on the device and the
host reads the loss sums only where it logs, validates or saves (`Trainer.sync`); a non-finite
loss or gradient makes every later update a no-op on the device, and the next read stops the run
with the step's number and the last good checkpoint, before any checkpoint is written.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nlg import methods
from nlg.cli import show_progress
from nlg.files import InputError, atomic_write, check_outputs
from nlg.model import GPT, card_config
from nlg.pairs import load_encoded
from nlg.tokenizer import VOCAB_SIZE
from nlg.training.batching import Example, batches_per_epoch, collate, epoch_batches, make_examples
from nlg.training.checkpoints import (
    LOCK_FILE,
    TrainingState,
    changes_record,
    check_resumable,
    checkpoint_dir,
    checkpoint_to_resume,
    gather_rng_states,
    input_identities,
    latest_checkpoint,
    load_checkpoint_weights,
    load_training_state,
    lock_work_dir,
    save_checkpoint,
    set_rng_state,
    warn,
)
from nlg.training.distributed import Runtime, all_reduce_sum, barrier, close_runtime, init_runtime
from nlg.training.log import METRICS_FILE, LossWindow, MetricsLog
from nlg.training.loss import CompletionLM
from nlg.training.settings import TrainConfig, foreign_problems
from nlg.training.step import Stepper, describe, train_step
from nlg.weights import checkpoint_files, from_pretrained

CONFIG_FILE = "train_config.json"


def train(config: TrainConfig) -> Path:
    """Fine-tune; returns the final checkpoint directory."""
    check_paths(config)
    data = load_data(config)  # bad input stops here, before any process group or model exists
    with lock_work_dir(Path(config.work_dir), is_main=int(os.environ.get("RANK", 0)) == 0):
        rt = init_runtime(config.device, config.dist_timeout)
        enable_tf32(rt)
        try:
            resume_from = checkpoint_to_resume(Path(config.work_dir), config.resume,
                                               on_skip=warn if rt.is_main else None)
            config = resolve_method(config, resume_from)
            trainer = Trainer(config, rt, data)
            if resume_from is not None:
                trainer.restore(resume_from)
            return trainer.run()
        finally:
            close_runtime(rt)


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------


class Terminated(BaseException):
    """SIGTERM arrived (`stop_signals`); like KeyboardInterrupt, no `except Exception` takes it."""


def interrupted(stop: BaseException, work_dir: Path) -> tuple[str, int]:
    """What `main` says when a signal stopped the run (`stop`: KeyboardInterrupt or Terminated,
    carrying the step `Trainer.run` reached as `.step`), and its exit code: 128 + the signal's
    number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process the signal killed."""
    step = getattr(stop, "step", None)
    where = "before training started" if step is None else f"at step {step}"
    latest = latest_checkpoint(work_dir)
    latest_text = f"{latest} is the latest" if latest is not None else "no checkpoint was written"
    signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
    return f"interrupted {where}; {latest_text}", 128 + signum


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """While the block runs, SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated, so the
    run unwinds as from any error: a checkpoint being written is removed whole (atomic_dir), the
    work_dir lock is released, the process group closed. The first signal also restores both
    signals' default action, so a second one ends the process at once (the kernel still drops
    the lock). Only the main thread can set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def resolve_method(config: TrainConfig, resume_from: Path | None) -> TrainConfig:
    """`--resume` without --method continues the checkpoint's method (its method.json;
    training_state.pt for checkpoints older than method.json): a method flag given is judged
    against that method and takes its value (check_resumable then compares it); a fresh run
    without one is LoRA's. A method given on the command line stays."""
    if config.method is not None:
        return config
    given = dict(config.method_settings or {})
    if resume_from is None:
        name = methods.DEFAULT
        values = {}
    else:
        record = methods.read_record(resume_from)
        if record is None:
            saved = load_training_state(resume_from).config
            name = saved["method"]
            values = methods.flag_values(name, saved)
        else:
            name, values = record.method, record.settings
    method = methods.get(name)
    problems = foreign_problems(name, list(given))
    if problems:
        where = f" (the method of --resume {resume_from})" if resume_from is not None else ""
        raise InputError("; ".join(problems) + where)
    values = {**method.defaults, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}, **given}
    problems = method.check(values)
    if problems:
        raise InputError(f"{resume_from}: " + "; ".join(problems))
    return replace(config, method=name, method_settings=method.settings(values))


def check_paths(config: TrainConfig) -> None:
    """Before anything else: no file the run writes in --work_dir may be one it reads."""
    work_dir = Path(config.work_dir)
    check_outputs(inputs={"--train_data": config.train_data, "--valid_data": config.valid_data,
                          "--init_checkpoint": checkpoint_files(config.init_checkpoint)},
                  outputs={"--work_dir": [work_dir / name for name in (METRICS_FILE, CONFIG_FILE, LOCK_FILE)]},
                  folders={"--work_dir": work_dir})


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainData:
    """The run's examples, and how many pairs of each file were cut to --seq_len (n_cut) and,
    of those, how many lost every completion token (n_empty: they teach nothing to generate)."""

    train: list[Example]
    valid: list[Example]  # empty without --valid_data
    n_cut: int
    n_cut_valid: int
    n_empty: int = 0
    n_empty_valid: int = 0
    inputs: dict = field(default_factory=dict)  # what each input file is (nlg.training.checkpoints.input_identities)


def load_data(config: TrainConfig) -> TrainData:
    """Both files, every line checked (FILE:LINE on the first bad one); a file in which no pair
    keeps a completion token within --seq_len stops the run here, one in which some pairs keep
    none is a warning with their count (on rank 0)."""
    vocab_size = card_config(config.model_card).vocab_size if config.model_card else VOCAB_SIZE
    train, n_cut, n_empty = load_examples(config.train_data, config.seq_len, vocab_size)
    valid, n_cut_valid, n_empty_valid = ([], 0, 0) if not config.valid_data else load_examples(
        config.valid_data, config.seq_len, vocab_size)
    return TrainData(train, valid, n_cut, n_cut_valid, n_empty, n_empty_valid, input_identities(config))


def load_examples(path: str, seq_len: int, vocab_size: int) -> tuple[list[Example], int, int]:
    """Examples of an encoded jsonl file, how many were truncated, and how many of those kept
    no completion token.

    `load_encoded` validates every line (keys, integer ids within the vocabulary) and names
    FILE:LINE on the first bad one. A pair keeps a completion token when its context is shorter
    than --seq_len: with none kept anywhere, the loss would be 0 at every step and the adapter
    would learn nothing (InputError); with some, a warning says how many.
    """
    pairs = load_encoded(path, vocab_size=vocab_size)
    examples, n_cut = make_examples(pairs, seq_len)
    n_empty = sum(1 for e in examples if len(e.tokens) <= e.n_context)
    if n_empty:
        contexts = [len(pair.context) for pair in pairs]
        what = (f"--seq_len {seq_len} (contexts of {min(contexts)} to {max(contexts)} tokens: "
                f"--seq_len {max(contexts) + 1} keeps a completion token of every pair)")
        if n_empty == len(examples):
            raise InputError(f"{path}: no pair keeps a completion token: all {n_empty} pairs' contexts "
                             f"fill {what}")
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"warning: {path}: {n_empty} of {len(examples)} pairs lose every completion token to "
                  f"{what}; they add nothing to the loss", file=sys.stderr)
    return examples, n_cut, n_empty


def eval_batches(examples: list[Example], batch_size: int, rt: Runtime) -> list[list[Example]]:
    """Validation batches of this rank: longest first (little padding), batches dealt round-robin."""
    ordered = sorted(examples, key=lambda e: -len(e.tokens))
    batches = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    return batches[rt.rank::rt.world_size]


def check_data_fits(model: GPT, config: TrainConfig, data: TrainData) -> None:
    """--seq_len within the model's positions, every token id within its vocabulary."""
    if model.config.n_positions < config.seq_len:
        raise InputError(f"--seq_len {config.seq_len} exceeds the model's {model.config.n_positions} positions")
    for path, examples in ((config.train_data, data.train), (config.valid_data, data.valid)):
        top = max((max(e.tokens) for e in examples), default=0)
        if top >= model.config.vocab_size:
            raise InputError(f"{path}: token id {top} is outside the model's vocabulary "
                             f"({model.config.vocab_size} ids)")
    if model.prefix is not None:  # prefix tuning: the prefix's positions come before every pair
        n = model.prefix.length
        longest, where = max((len(e.tokens), path) for path, examples in
                             ((config.train_data, data.train), (config.valid_data, data.valid)) for e in examples)
        if config.compile in ("static", "graphs", "inductor") and config.seq_len - 1 > longest:  # static shapes pad to seq_len - 1
            longest, where = config.seq_len - 1, "--seq_len less one (static shapes)"
        if n + longest > model.config.n_positions:
            raise InputError(f"--prefix_len {n}: with the longest pair ({longest} tokens, {where}) it needs "
                             f"{n + longest} positions; the model has n_positions {model.config.n_positions}")


# ---------------------------------------------------------------------------------------------
# Model, optimiser, schedule, length of the run
# ---------------------------------------------------------------------------------------------


def build_model(config: TrainConfig) -> GPT:
    """The base GPT-2 (pretrained or random), changed by --method (nlg.methods): LoRA on the
    chosen projections and the rest frozen, every parameter trainable, ..."""
    if config.init_checkpoint:
        try:
            model = from_pretrained(config.init_checkpoint, card=config.model_card)
        except (OSError, ValueError) as error:  # CheckpointError is a ValueError
            raise InputError(f"--init_checkpoint {config.init_checkpoint}: {error}") from None
    else:
        model = GPT(card_config(config.model_card or "gpt2.md"))
    methods.get(config.method).apply(model, config.method_settings)
    return model


def trainable_parameters(model: GPT, config: TrainConfig) -> list[nn.Parameter]:
    return list(methods.get(config.method).trainable(model).values())


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


@dataclass(frozen=True)
class StepPlan:
    """How long the run is, in optimiser steps."""

    per_epoch: int  # each rank's micro-batches per epoch / grad_acc, rounded up
    total: int  # --max_step, else --max_epoch (default 5) epochs; the smaller when both are given
    schedule_length: int  # the lr schedule's horizon: --max_step when given (as in the paper), else total


def plan_steps(config: TrainConfig, n_train: int, world_size: int) -> StepPlan:
    per_epoch = math.ceil(batches_per_epoch(n_train, config.train_batch_size, world_size) / config.grad_acc)
    max_epoch = config.max_epoch if config.max_epoch or config.max_step else 5
    total = config.max_step or max_epoch * per_epoch
    if config.max_step and config.max_epoch:
        total = min(config.max_step, config.max_epoch * per_epoch)
    return StepPlan(per_epoch=per_epoch, total=total, schedule_length=config.max_step or total)


def enable_tf32(rt: Runtime) -> None:
    """Let training's fp32 matmuls round through TF32 on GPUs (beam search keeps true fp32)."""
    if rt.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def log(rt: Runtime, message: str) -> None:
    """Print on rank 0, above the progress bar."""
    if rt.is_main:
        tqdm.write(message, file=sys.stdout)


# ---------------------------------------------------------------------------------------------
# The run, in phases
# ---------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where the run stands; a checkpoint stores it (as step, epoch, batch_in_epoch)."""

    step: int = 0  # optimiser updates done
    epoch: int = 0  # the current epoch, from 0
    position: int = 0  # this rank's micro-batches of the current epoch already trained


class Trainer:
    """One training run: set up (the constructor), `restore` when resuming, then `run`, which
    calls `step`, `validate` and `save`."""

    def __init__(self, config: TrainConfig, rt: Runtime, data: TrainData):
        """Set up the model, its trainable parameters, the optimiser, the schedule and the plan."""
        self.config, self.rt, self.data = config, rt, data
        self.work_dir = Path(config.work_dir)
        # Same seed everywhere: every rank builds the identical model and LoRA initialisation.
        random.seed(config.random_seed)
        np.random.seed(config.random_seed)
        torch.manual_seed(config.random_seed)
        self.model = build_model(config).to(rt.device)
        check_data_fits(self.model, config, data)
        self.params = trainable_parameters(self.model, config)
        torch.manual_seed(config.random_seed + rt.rank)  # distinct dropout masks per rank
        self.plan = plan_steps(config, len(data.train), rt.world_size)
        length = self.plan.schedule_length
        self.lm = CompletionLM(self.model)
        # A method that changes training, not only the model (AdaLoRA), acts in every step.
        self.hook = methods.get(config.method).training_hook(self.model, config.method_settings, self.plan.total)
        self.stepper = Stepper(self.lm, self.params, config, rt,
                               lambda s: lr_factor(s, config.scheduler, config.warmup_step, length), hook=self.hook)
        self.lengths = [len(e.tokens) for e in data.train]
        self.valid = eval_batches(data.valid, config.valid_batch_size, rt) if data.valid else []
        self.base_model = config.init_checkpoint or (config.model_card or "gpt2.md")  # named in adapter_config.json
        self.metrics: MetricsLog | None = None  # opened in `run`: a resumed run first cuts it back
        self.progress = Progress()
        self.window = LossWindow()  # the device ledger's window as last read, and its seconds
        self.timer = time.perf_counter()  # since when the loop's time counts towards the window
        self.resumed_from: Path | None = None
        self.changed: dict = {}  # settings --allow_changed let differ from the checkpoint's, for the logs
        self.changed_text: list[str] = []  # the same, as the user reads them
        self.last_eval_step = -1
        self.last_saved: Path | None = None

    def restore(self, path: Path) -> None:
        """Continue exactly where checkpoint `path` was taken."""
        state = load_training_state(path)
        changed = check_resumable(state, self.config, self.rt.world_size, len(self.data.train), path,
                                  self.data.inputs)
        if state.inputs is None and self.rt.is_main:
            warn(f"{path} records no identity of its inputs (written before nlg recorded them): its "
                 "settings match, but whether --train_data, --valid_data and --init_checkpoint are the "
                 "files it was trained on cannot be checked")
        if state.step > self.plan.total:  # only a shorter --max_step/--max_epoch allowed to differ
            raise InputError(f"{path}: the checkpoint is at step {state.step}, past the {self.plan.total} "
                             "steps this run's --max_step/--max_epoch plan")
        self.changed = changes_record(changed)
        self.changed_text = [d.text for d in changed]
        load_checkpoint_weights(self.model, path, self.config.to_json())
        self.stepper.load_state(state.optimizer, state.scheduler)
        if self.hook is not None:
            if state.method_state is None:
                raise InputError(f"{path}: holds no state of method {self.config.method}'s training "
                                 "hook; it cannot be resumed exactly")
            self.hook.load_state_dict(state.method_state)
        self.progress = Progress(step=state.step, epoch=state.epoch, position=state.batch_in_epoch)
        self.window = state.log_window
        set_rng_state(state.rng[self.rt.rank])
        self.last_eval_step = state.step  # whatever validation belonged to this step ran before it was saved
        self.last_saved = path if state.step == self.plan.total else None
        self.resumed_from = path
        log(self.rt, f"resumed from {path} at step {state.step} (epoch {state.epoch + 1})")
        for text in self.changed_text:
            log(self.rt, f"changed on resume (--allow_changed): {text}")

    def run(self) -> Path:
        """Train to the planned step, then validate and checkpoint once more (unless that step's
        checkpoint exists); returns the final checkpoint directory."""
        self._start()
        p, total, config = self.progress, self.plan.total, self.config
        bar = tqdm(total=total, initial=p.step, disable=not (self.rt.is_main and show_progress()),
                   dynamic_ncols=True, desc="train", file=sys.stderr)
        try:
            while p.step < total:
                batches = epoch_batches(self.lengths, config.train_batch_size, epoch=p.epoch,
                                        seed=config.random_seed, world_size=self.rt.world_size,
                                        rank=self.rt.rank, group_by_length=config.group_by_length)
                while p.position < len(batches) and p.step < total:
                    lr = self.stepper.lr
                    self.step(batches[p.position:p.position + config.grad_acc])
                    bar.update(1)
                    if p.step % config.log_interval == 0:
                        record = self.log_loss(lr, echo=bool(bar.disable))
                        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}",
                                        tok_s=f"{record['tokens_per_s']:,.0f}", refresh=False)
                    if p.step % config.eval_interval == 0 or p.position >= len(batches):
                        self.validate()
                    if p.step % config.save_interval == 0:
                        self.last_saved = self.save()
                if p.step >= total:
                    break
                p.epoch, p.position = p.epoch + 1, 0
            self.validate()
            if self.last_saved is None or self.last_saved.name != checkpoint_dir(self.work_dir, p.step).name:
                self.last_saved = self.save()
        except (KeyboardInterrupt, Terminated) as stop:
            stop.step = p.step  # for main's line: the steps done when the signal came
            raise
        finally:
            bar.close()
        log(self.rt, f"final checkpoint: {self.last_saved}")
        return self.last_saved

    def step(self, group: list[list[int]]) -> None:
        """Queue one optimiser update on `group` (--grad_acc micro-batches of example indices,
        fewer at an epoch's end) and advance the progress; waits for nothing on the device."""
        micro = [self.stepper.batch([self.data.train[i] for i in indices]) for indices in group]
        train_step(self.stepper, micro)
        self.progress.step += 1
        self.progress.position += len(group)

    def sync(self) -> None:
        """Wait for the queued steps and read the device ledger into `self.window`; stop the run
        if a step's loss or gradient was not finite (its update and every later one were skipped
        on the device, so the last checkpoint holds the last good weights)."""
        reading = self.stepper.ledger.read()
        now = time.perf_counter()
        self.window = LossWindow(*reading.window, seconds=self.window.seconds + now - self.timer)
        self.timer = now
        if reading.bad_step is not None:
            what = (f"loss is {reading.bad_loss}" if not math.isfinite(reading.bad_loss)
                    else f"a gradient is not finite (loss sum {reading.bad_loss:.6g})")
            epoch = (reading.bad_step - 1) // self.plan.per_epoch + 1
            last = latest_checkpoint(self.work_dir) or "none written yet"
            raise NonFiniteLoss(f"{what} at step {reading.bad_step} (epoch {epoch}); that update and every "
                                f"later one were skipped; last good checkpoint: {last}")

    def log_loss(self, lr: float, echo: bool) -> dict:
        """Write the loss window's record and start a new window; `echo` prints it too."""
        self.sync()
        record = self.window.record(self.progress.step, self.progress.epoch + 1, lr)
        self.metrics.write(record)
        if echo:
            log(self.rt, f"step {record['step']:>7} | epoch {record['epoch']} | loss {record['loss']:.4f} | "
                         f"lr {lr:.3e} | {record['tokens_per_s']:,.0f} tokens/s")
        self.window = LossWindow()
        self.stepper.ledger.clear_window()
        return record

    def validate(self) -> None:
        """Validation loss and perplexity at this step, at most once per step (none without
        --valid_data)."""
        step = self.progress.step
        if not self.valid or self.last_eval_step == step:
            return
        self.sync()  # no validation of weights that a non-finite step has stopped
        start = time.perf_counter()
        loss, ppl = evaluate(self.lm, self.valid, self.config, self.rt)
        self.last_eval_step = step
        self.metrics.write({"step": step, "epoch": self.progress.epoch + 1, "valid_loss": loss, "valid_ppl": ppl})
        log(self.rt, f"step {step:>7} | valid loss {loss:.4f} | valid ppl {ppl:.3f} | "
                     f"{time.perf_counter() - start:.1f}s")
        self.timer = time.perf_counter()  # validation time is not training time

    def save(self) -> Path:
        """Checkpoint the run as it stands; every rank takes part (the RNG states are gathered),
        rank 0 writes. Returns the checkpoint directory."""
        self.sync()  # never a checkpoint after a non-finite step
        rngs = gather_rng_states(self.rt)
        path = checkpoint_dir(self.work_dir, self.progress.step)
        if self.rt.is_main:
            p = self.progress
            state = TrainingState(step=p.step, epoch=p.epoch, batch_in_epoch=p.position,
                                  optimizer=self.stepper.optimizer.state_dict(),
                                  scheduler=self.stepper.scheduler.state_dict(),
                                  rng=rngs, log_window=self.window, config=self.config.to_json(),
                                  world_size=self.rt.world_size, n_train=len(self.data.train),
                                  inputs=self.data.inputs,
                                  method_state=None if self.hook is None else self.hook.state_dict())
            save_checkpoint(path, self.model, state, self.base_model)
        barrier(self.rt)  # nobody runs ahead of a checkpoint that may be resumed
        self.timer = time.perf_counter()  # nor is saving
        return path

    def _resume_record(self) -> dict | None:
        """{"step", "resumed_from", "changed"} of a resumed run (None for a fresh one): the
        checkpoint it continues and the settings --allow_changed let differ from it."""
        if self.resumed_from is None:
            return None
        return {"step": self.progress.step, "resumed_from": str(self.resumed_from), "changed": self.changed}

    def _start(self) -> None:
        """Say what will run, write train_config.json, open the metrics log, wrap the model in
        DistributedDataParallel when there are several processes."""
        config, rt, model = self.config, self.rt, self.model
        if not config.init_checkpoint:
            log(rt, "no --init_checkpoint: training a randomly initialised model (for tests and demos)")
        trainable = sum(p.numel() for p in self.params)
        method = methods.get(config.method)
        what = method.describe(config.method_settings)
        log(rt, f"model: {model.config.n_layer} layers, width {model.config.n_embd}, "
                f"{model.num_parameters():,} parameters, {trainable:,} trainable ({what}, "
                f"{100 * trainable / model.num_parameters():.3f}%)")
        note = method.note(methods.Shape.of(model.config), config.method_settings)
        if note:  # prefix tuning: trained and stored counts differ
            log(rt, note)
        d = self.data
        log(rt, f"data: {len(d.train)} training pairs ({d.n_cut} cut to --seq_len {config.seq_len}, "
                f"{d.n_empty} with no completion token left), {len(d.valid)} validation pairs "
                f"({d.n_cut_valid} cut, {d.n_empty_valid} with no completion token left); "
                f"{rt.world_size} process(es) on {rt.device.type}, {self.plan.per_epoch} steps per epoch, "
                f"{self.plan.total} steps")
        if rt.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.work_dir / CONFIG_FILE) as handle:
                json.dump({**config.to_json(), "model": model.config.to_dict(), "world_size": rt.world_size,
                           "trainable_parameters": trainable, "trainable_params": trainable,
                           "n_train": len(self.data.train),
                           "steps_per_epoch": self.plan.per_epoch, "total_steps": self.plan.total,
                           "inputs": self.data.inputs, "resumed_from": self._resume_record()},
                          handle, indent=2)
        log(rt, describe(self.stepper))
        self.metrics = MetricsLog(self.work_dir / METRICS_FILE, rt.is_main,
                                  self.progress.step if self.resumed_from else None)
        if self.changed:  # the log says where its records start to follow other settings
            self.metrics.write(self._resume_record())
        self.stepper.ledger.start(self.progress.step, self.window)
        self.timer = time.perf_counter()


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


class NonFiniteLoss(RuntimeError):
    """A step's loss or gradient was NaN or infinite; raised at the next read of the ledger, on
    every rank alike (they all read the same all-reduced sums)."""


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
