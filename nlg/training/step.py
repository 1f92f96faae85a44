"""One optimiser step, queued on the device without waiting for it: `nlg train --compile MODE`.

    stepper = Stepper(lm, params, config, rt, schedule)
    train_step(stepper, [stepper.batch(examples) for examples in group])   # once per step
    reading = stepper.ledger.read()                                          # at log/eval/save points

A step is `forward_backward` on each of its --grad_acc micro-batches (the loss SUM over the
batch's completion tokens, backpropagated; gradients accumulate), with several processes the
all-reduce, then the update (`Stepper.update`):

    g <- g · F / N      N: completion tokens of the step, all ranks; F: the world size when DDP
                        has averaged g over the ranks, else 1 (the static modes sum them). This
                        is GradScaler's unscale kernel, which also flags a non-finite gradient
    flag the step if its loss sum is not finite
    the method's TrainingHook, if it has one: regularise() (its extra loss term's gradient)
    clip to --clip, AdamW, the hook's after_update(step) (AdaLoRA's budget schedule), zero the
    gradients, book the step in the ledger

Nothing in it waits for the device. The loss and token counts are summed on the device
(`Ledger`); the host reads them only at log, validation and checkpoint points (`Ledger.read`, one
copy). A non-finite loss or gradient does not stop the step either: it sets the ledger's
`found_inf` flag, which stays set, and AdamW skips its whole update while it is set. The fused
AdamW reads the flag on the device (GradScaler's `found_inf` mechanism); the single-tensor AdamW
that eager CPU runs keep (for bit-identical results) is skipped by the host, which on a CPU is
the device, so reading the flag there costs nothing. From the first bad step on no update
happens, the weights stay those of the last good step, and the host stops at its next read,
before writing any checkpoint (nlg.training.trainer).

Modes:

    none      eager PyTorch, each batch padded to its longest pair (`collate`), DDP with several
              processes. Its results on CPU are bit-identical to those of earlier versions
              (single-tensor AdamW there; fused AdamW on GPUs).
    static    eager PyTorch on static shapes (`collate_static`: a fixed row count, bucketed widths
              and loss slots); the gradients are views of one flat buffer, summed over the ranks
              by one all-reduce per step instead of DDP (whose hooks a CUDA graph cannot hold);
              fused AdamW. Exactly what `graphs` captures, runnable anywhere: the CPU tests of the
              graphs path, and the thing to compare with if a capture misbehaves.
    graphs    static, with `forward_backward` captured as a CUDA graph once per batch shape (E2E
              batches of 8: about 14 shapes) and replayed: one launch per micro-batch instead of
              about 1,500 kernel launches. The update, a dozen kernels, runs uncaptured. CUDA only.
    inductor  static, with the model's forward and backward compiled by torch.compile (Inductor;
              the first shape compiled as it is, then one dynamic-shape version for the rest):
              fused element-wise kernels, on CPU and GPU. Compiling takes minutes for GPT-2 M.
    auto      none on CPU. On GPU `GPU_DEFAULT`, which stays none until bench/gpu_check.sh has
              measured graphs on a GPU and tests/test_gpu.py has passed there: a mode that cannot
              be tried on this project's machines is not a safe default.

Static shapes do not change the loss or the gradients beyond float rounding (padded rows and
slots contribute exact zeros; tests/training/test_step.py), and the batches hold the same pairs in
the same order. Dropout, though, draws its masks over the padded grid, so with dropout a static
mode draws other masks than none: the same distribution, other samples. Every mode is
deterministic and resumes exactly; a run may resume in another mode, correctly but not
bit-for-bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from nlg.files import InputError
from nlg.methods import TrainingHook
from nlg.training.batching import Batch, Example, collate, collate_static
from nlg.training.distributed import Runtime
from nlg.training.log import LossWindow
from nlg.training.loss import CompletionLM
from nlg.training.settings import TrainConfig

GPU_DEFAULT = "none"  # becomes "graphs" once bench/gpu_check.sh has verified it on a GPU
STATIC_MODES = ("static", "graphs", "inductor")


def resolve_mode(mode: str, device: torch.device) -> str:
    """The mode `--compile MODE` means on `device` (auto resolved; graphs refused off CUDA)."""
    if mode == "auto":
        return GPU_DEFAULT if device.type == "cuda" else "none"
    if mode == "graphs" and device.type != "cuda":
        raise InputError("--compile graphs captures CUDA graphs and needs a CUDA device; on a CPU "
                         "use static (the same steps, uncaptured) or inductor")
    return mode


def build_optimizer(params: list[nn.Parameter], config: TrainConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay, bias-corrected) over `params` (the trainable ones); fused:
    one kernel per step, able to skip its update on the device (see the module docstring)."""
    return torch.optim.AdamW(params, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                             eps=config.adam_epsilon, weight_decay=config.weight_decay,
                             fused=True if fused else None)


# ---------------------------------------------------------------------------------------------
# The sums on the device
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """What the ledger held when the host read it."""

    window: tuple[float, int, int]  # loss sum, completion tokens, input tokens since the last record
    bad_step: int | None  # the first step whose loss or gradient was not finite
    bad_loss: float  # that step's loss sum (finite when only a gradient was not)


class Ledger:
    """The run's sums, kept on the device and read by the host only in `read`.

        step_loss  fp32: the loss sum of the step's micro-batches so far, added in order (as
                   the eager loop always added it)
        step       fp64 [loss sum, completion tokens, input tokens] of the step; all ranks'
                   once the step is all-reduced
        window     fp64, `step` summed over the steps since the last loss record, one step at
                   a time from the record's start (or from a checkpoint's `LossWindow`)
        found_inf  fp32 0/1, sticky: set by the first step with a non-finite loss or gradient;
                   AdamW skips every update while it is set
        marks      fp64 [steps done, the first bad step (0: none), its loss sum]
    """

    def __init__(self, device: torch.device):
        self.step_loss = torch.zeros((), device=device)
        self.step = torch.zeros(3, dtype=torch.float64, device=device)
        self.window = torch.zeros(3, dtype=torch.float64, device=device)
        self.found_inf = torch.zeros((), device=device)
        self.marks = torch.zeros(3, dtype=torch.float64, device=device)

    def start(self, steps_done: int, window: LossWindow) -> None:
        """Continue from `steps_done` steps with `window` (a checkpoint's) half full."""
        self.marks.zero_()
        self.marks[0] = steps_done
        self.window.copy_(torch.tensor([window.loss_sum, window.n_loss, window.n_tokens], dtype=torch.float64))

    def add(self, loss: Tensor, counts: Tensor) -> None:
        """A micro-batch's loss sum (fp32 scalar) and counts ([completion, input] tokens)."""
        self.step_loss += loss
        self.step[0] = self.step_loss
        self.step[1:] += counts

    def flag_nonfinite_loss(self) -> None:
        self.found_inf.copy_(torch.maximum(self.found_inf, (~torch.isfinite(self.step[0])).float()))

    def book(self) -> None:
        """End the step: add it to the window, count it, remember it if it is the first bad one."""
        self.window += self.step
        self.marks[0] += 1
        first_bad = (self.found_inf > 0) & (self.marks[1] == 0)
        self.marks[1:] = torch.where(first_bad, torch.stack([self.marks[0], self.step[0]]), self.marks[1:])
        self.step.zero_()
        self.step_loss.zero_()

    def read(self) -> Reading:
        """The sums, copied to the host: the one place the host waits for the device."""
        loss_sum, n_loss, n_tokens, _, bad_step, bad_loss = torch.cat([self.window, self.marks]).tolist()
        return Reading((loss_sum, int(n_loss), int(n_tokens)), int(bad_step) or None, bad_loss)

    def clear_window(self) -> None:
        self.window.zero_()


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------


def flat_gradients(params: Sequence[nn.Parameter]) -> Tensor:
    """One zeroed buffer that holds every parameter's `.grad` as a view. Backward accumulates
    into the views in place, so one all-reduce sums every gradient over the ranks and a captured
    graph finds them at the same address at every replay."""
    flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=params[0].dtype)
    offset = 0
    for param in params:
        param.grad = flat[offset:offset + param.numel()].view_as(param)
        offset += param.numel()
    return flat


class Stepper:
    """How this run's steps execute in its --compile mode: the batches' shapes, the model call,
    where the gradients live, the optimiser, its schedule and the device ledger."""

    def __init__(self, lm: CompletionLM, params: list[nn.Parameter], config: TrainConfig, rt: Runtime,
                 schedule: Callable[[int], float], mode: str | None = None, hook: TrainingHook | None = None):
        """`schedule`: the lr factor after n updates; `mode`: default config.compile; `hook`: the
        method's TrainingHook (nlg.methods), None for a method that needs none."""
        self.lm, self.params, self.config, self.rt, self.hook = lm, params, config, rt, hook
        self.mode = resolve_mode(mode or config.compile, rt.device)
        self.static = self.mode in STATIC_MODES
        self.fused = self.static or rt.device.type == "cuda"
        self.ledger = Ledger(rt.device)
        self.optimizer = build_optimizer(params, config, self.fused)
        if self.fused:
            self.optimizer.found_inf = self.ledger.found_inf  # read by fused AdamW, as GradScaler sets it
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.flat_grad = flat_gradients(params) if self.static else None
        self.ddp = rt.distributed and not self.static
        model: nn.Module = lm
        if self.ddp:
            model = nn.parallel.DistributedDataParallel(
                lm, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                gradient_as_bucket_view=True)
        elif self.mode == "inductor":
            model = torch.compile(lm, fullgraph=True)  # fullgraph: a graph break would be a host round trip
        self.model = model
        # DDP averages the gradients over the ranks; the static modes' all-reduce sums them.
        self.grad_factor = torch.full((), float(rt.world_size if self.ddp else 1), dtype=torch.float64,
                                      device=rt.device)
        self.run_micro: Callable[[Batch], None] = self.forward_backward
        if self.mode == "graphs":
            self.run_micro = CapturedSteps(self.forward_backward, rt.device)

    def batch(self, examples: Sequence[Example]) -> Batch:
        """A micro-batch of `examples`, shaped for this mode, where `accumulate` wants it (for
        graphs on the host: it is copied into the captured graph's inputs)."""
        if not self.static:
            return collate(examples, obj=self.config.obj).to(self.rt.device)
        batch = collate_static(examples, self.config.obj, rows=self.config.train_batch_size,
                               max_width=self.config.seq_len - 1)
        return batch if self.mode == "graphs" else batch.to(self.rt.device)

    def forward_backward(self, batch: Batch) -> None:
        """One micro-batch: its loss sum backpropagated (gradients accumulate), and added with its
        token counts to the ledger. Device work only: this is what graphs captures."""
        loss = self.model(batch.input_ids, batch.loss_index, batch.loss_targets, self.config.label_smooth)
        loss.backward()
        self.ledger.add(loss.detach(), batch.counts)

    def accumulate(self, batch: Batch, last: bool) -> None:
        """Run micro-batch `batch`; DDP synchronises the gradients on the step's `last` only."""
        sync = self.model.no_sync() if self.ddp and not last else contextlib.nullcontext()
        with sync:
            self.run_micro(batch)

    def update(self) -> None:
        """All-reduce (several processes), then the update of the module docstring."""
        ledger, params = self.ledger, self.params
        if self.rt.distributed:  # gloo and NCCL collectives: the host does not wait for NCCL's
            if self.static:
                dist.all_reduce(self.flat_grad)
            dist.all_reduce(ledger.step)
        grads = [p.grad for p in params if p.grad is not None]
        inv_scale = torch.div(self.grad_factor, ledger.step[1].clamp(min=1)).float()
        ledger.flag_nonfinite_loss()
        torch._amp_foreach_non_finite_check_and_unscale_(grads, ledger.found_inf, inv_scale)
        if self.hook is not None:
            self.hook.regularise()  # the method's own loss term (AdaLoRA's orthogonality), per step
        if self.config.clip > 0:
            nn.utils.clip_grad_norm_(params, self.config.clip)
        # Not fused only on a CPU in mode none: there the host reads the flag at no cost.
        if self.fused or not ledger.found_inf.item():
            self.optimizer.step()
        if self.hook is not None:
            self.hook.after_update(self.scheduler.last_epoch)  # the updates before this one
        if self.flat_grad is not None:
            self.flat_grad.zero_()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        ledger.book()
        self.scheduler.step()

    def load_state(self, optimizer: dict, scheduler: dict) -> None:
        """Continue from a checkpoint's optimiser and schedule. The optimiser keeps this run's
        implementation flags: `load_state_dict` would take the saved run's (say, a CPU run's
        single-tensor AdamW into a fused one, which would then refuse `found_inf`)."""
        keep = ("fused", "foreach", "capturable", "differentiable")
        fresh = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        groups = [{**saved, **{k: current[k] for k in keep if k in current}}
                  for saved, current in zip(optimizer["param_groups"], self.optimizer.param_groups, strict=True)]
        self.optimizer.load_state_dict({**optimizer, "param_groups": groups})
        self.scheduler.load_state_dict(scheduler)
        # The checkpoint gives the moments and the step; this run's settings give the
        # hyperparameters (betas, eps, weight decay, peak lr) and the schedule, so a setting that
        # --allow_changed let differ takes effect. Unchanged, each value is the one loaded: the
        # lr is recomputed by the formula LambdaLR.step uses, base lr × factor(step).
        for group, settings in zip(self.optimizer.param_groups, fresh, strict=True):
            group.update({k: v for k, v in settings.items() if k != "lr"})
        self.scheduler.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]
        step = self.scheduler.last_epoch
        lrs = [base * factor(step) for base, factor in zip(self.scheduler.base_lrs, self.scheduler.lr_lambdas,
                                                            strict=True)]
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self.scheduler._last_lr = lrs

    @property
    def lr(self) -> float:
        """The learning rate of the next update (a float on the host: reading it waits for nothing)."""
        return self.optimizer.param_groups[0]["lr"]


def train_step(stepper: Stepper, micro_batches: list[Batch]) -> None:
    """One optimiser update on `micro_batches` (made by `stepper.batch`), queued on the device."""
    for i, batch in enumerate(micro_batches):
        stepper.accumulate(batch, last=i == len(micro_batches) - 1)
    stepper.update()


# ---------------------------------------------------------------------------------------------
# CUDA graphs
# ---------------------------------------------------------------------------------------------


class CapturedSteps:
    """`fn(batch)` as CUDA graphs, one per batch shape, replayed.

    A shape's first batch is captured: `fn` first runs WARMUP times on an inert batch of that
    shape (all padding, every loss slot ignored: it adds exact zeros to the gradients and the
    ledger, and lets the libraries set up their workspaces before capture), then it is captured
    on the same inert batch, whose tensors stay the graph's inputs. The random-number state is
    put back afterwards, so a capture changes no dropout mask to come: a resumed run, which
    captures at other steps, draws the same masks. Every batch is copied into its shape's
    inputs (pinned, asynchronous) and the graph replayed. All graphs share one memory pool: they
    run one after another on one stream and none keeps an output, so each reuses the others'
    scratch memory.
    """

    WARMUP = 3

    def __init__(self, fn: Callable[[Batch], None], device: torch.device):
        self.fn = fn
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple[int, int, int], tuple[torch.cuda.CUDAGraph, Batch]] = {}

    def __call__(self, batch: Batch) -> None:
        if batch.shape not in self.graphs:
            self.graphs[batch.shape] = self.capture(batch.shape)
        graph, inputs = self.graphs[batch.shape]
        batch.copy_into(inputs)
        graph.replay()

    def capture(self, shape: tuple[int, int, int]) -> tuple[torch.cuda.CUDAGraph, Batch]:
        inputs = Batch.inert(shape, self.device)
        rng = torch.cuda.get_rng_state(self.device)
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            for _ in range(self.WARMUP):
                self.fn(inputs)
        current.wait_stream(self.stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            self.fn(inputs)
        torch.cuda.set_rng_state(rng, self.device)
        return graph, inputs


def describe(stepper: Stepper) -> str:
    """One line for the run's log: the mode and what it implies."""
    what = {"none": "eager, batches padded to their longest pair",
            "static": "eager on bucketed static shapes",
            "graphs": "CUDA graphs of bucketed static shapes",
            "inductor": "torch.compile (Inductor) on bucketed static shapes"}[stepper.mode]
    optimiser = "fused AdamW" if stepper.fused else "AdamW"
    return f"steps: --compile {stepper.mode} ({what}), {optimiser}"
