"""Training throughput: `nlg train`'s step in its --compile modes vs the paper's 512 padding vs
transformers + PEFT, with ms/step, model FLOP utilisation and the paper's run projected.

    python bench/train_throughput.py                                    # CPU: gpt2.sm, a few minutes
    python bench/train_throughput.py --device cuda --card gpt2.md \\
        --methods eager,graphs,hf,padded --steps 60 --json out.json       # GPU

All methods train the same LoRA (r=4, alpha=32, dropout 0.1, q and v; PEFT adapts the fused
c_attn with r=4, which has the same 2·4·(d+d) parameters per layer) on the same GPT-2 shape
with the same random weights (no pretrained weights exist on these machines; speed does not
depend on them), with AdamW, label smoothing 0.1 and bf16 autocast on GPU, on the same
batches of real E2E pairs (the shared valid split, BPE-encoded, shuffled with a fixed seed):

  eager     `nlg.training.step.train_step`, --compile none: each batch padded to its longest
            pair, the head and softmax only at completion tokens (`nlg train`'s default).
  static    --compile static: the same on bucketed static shapes (nlg.training.batching.collate_static).
  graphs    --compile graphs: static, each micro-batch shape a captured CUDA graph (GPU only).
  inductor  --compile inductor: static, forward and backward compiled by torch.compile.
  padded    eager with every batch padded to 512 tokens, as the paper's FT_Dataset pads
            (--seq_len 512 in its E2E command).
  lora, full, top2, adapter-l, adapter-h
            the fine-tuning methods (nlg.methods, at their default settings: LoRA r=4 on q,v,
            the top 2 blocks, adapter-l r=6, adapter-h r=112), each as `nlg train --method`
            runs it in eager mode (`lora` is `eager`); --methods ft picks all five, and each
            is reported beside LoRA's (ms/step and peak memory ratios). Their FLOPs count the
            full step's 3·F for `full` and LoRA's formula otherwise (frozen weights), so MFU is
            approximate for top2 and the adapters.
  hf        transformers' GPT2LMHeadModel (sdpa attention) + peft LoRA, given the same
            dynamically padded batches (no attention mask: right padding under a causal mask
            needs none, the same work as eager), the loss over its full logits with ignore_index
            and label_smoothing, as a Trainer with label_smoothing_factor computes it.

Timing: every method first runs --warmup steps plus, for the static modes, one step on each
batch shape the timed steps will meet (that is where graphs are captured and Inductor compiles;
reported as "first use"). Then the methods take turns, --block consecutive steps each (the host
may run ahead of the device within a block, as in training; the device is synchronised at the
block's ends), rotating who goes first, so a change in machine load hits all of them alike.
tokens/s counts real (non-pad) input tokens; the ratios are from the same run.

Model FLOPs (counted on real tokens only, so padding is waste, never work; bf16 matmuls on GPU):

    forward   F = Σ_tokens 24·L·C²                    the blocks' weights (12·C² per layer)
              + Σ_sequences 2·L·C·n·(n+1)             causal attention, QKᵀ and AV (n tokens)
              + N_loss · 2·C·V                        the head, at completion tokens only
              + Σ_tokens Σ_adapted 2·r·(in + out)     LoRA's A and B
    LoRA step     2·blocks + 3·attention + 2·head + 3·LoRA    frozen weights need gradients
                                                              for their inputs, not themselves
    full step     3·F                                  (the familiar 6·N·tokens, plus attention
                                                        and the head)

MFU = FLOPs per second / the card's dense bf16 peak (`PEAK_BF16`, by device name; --peak_tflops
overrides). The paper's E2E run is 26,290 steps (42,061 pairs, batch 8, 5 epochs); its
projected time is steps × ms/step, validation not included (see --eval_batches).

Peak memory: on CPU each method alone in a fresh process for two steps (peak RSS, so it
includes the process's torch and model); on GPU in this process, the method's own tensors plus
the peak its warm-up adds (torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from nlg.datasets.e2e import read_raw
from nlg.methods.lora.layer import add_lora, count_trainable, lora_parameters
from nlg.model import GPT, GPTConfig, card_config
from nlg.pairs import encode_pairs
from nlg.tokenizer import load_tokenizer
from nlg.training.batching import collate, collate_static, epoch_batches, make_examples
from nlg.training.distributed import Runtime
from nlg.training.loss import CompletionLM, autocast
from nlg.training.settings import TrainConfig
from nlg.training.step import Stepper, build_optimizer, train_step
from nlg.training.trainer import evaluate
from nlg.weights import to_transformers

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NLG_SHARED_DIR", REPO.parent / "shared"))
MODES = {"eager": "none", "static": "static", "graphs": "graphs", "inductor": "inductor", "padded": "none"}
FINE_TUNING = ("lora", "full", "top2", "adapter-l", "adapter-h")  # nlg.methods, in eager mode
METHODS = (*MODES, "hf", *FINE_TUNING)
PAPER_PAD = 512
PAPER_STEPS = 26_290  # E2E: ceil(42,061 / 8) = 5,258 steps per epoch, 5 epochs
PAPER_EVALS = 18  # validation every 2,000 steps (13) and at each epoch's end (5)
LORA_RANK, LORA_TARGETS = 4, ("q", "v")
# Dense (no sparsity) bf16 peak FLOP/s by device name, first match wins (NVIDIA data sheets).
PEAK_BF16 = (("H200 NVL", 835e12), ("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12),
             ("H100", 989e12), ("A100", 312e12))


def load_examples(args) -> list:
    tokenizer = load_tokenizer(args.vocab or SHARED / "vocab" / "gpt2")
    pairs = encode_pairs(read_raw(Path(args.data or SHARED / "data" / "e2e" / "valid.txt")), tokenizer)
    return make_examples(pairs, PAPER_PAD)[0]


def load_batches(args, examples: list) -> list[list]:
    """The first warmup+steps shuffled batches of the encoded valid split, as Example lists."""
    plan = epoch_batches([len(e.tokens) for e in examples], args.batch_size, epoch=0, seed=0)
    needed = args.warmup + args.steps
    if len(plan) < needed:
        raise SystemExit(f"only {len(plan)} batches of {args.batch_size}; ask for fewer steps")
    return [[examples[i] for i in batch] for batch in plan[:needed]]


def base_model(card: str, device: torch.device) -> GPT:
    torch.manual_seed(0)
    with device:  # initialised where it runs: seconds instead of minutes for big cards on a GPU
        return GPT(card_config(card))


def hf_peft_model(model: GPT):
    """transformers GPT2LMHeadModel (sdpa attention) with `model`'s weights, wrapped by peft LoRA on c_attn."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=LORA_RANK, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"],
                      fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(to_transformers(model.cpu(), attn_implementation="sdpa"), lora)


def make_step(method: str, args) -> tuple[Callable[[list], int], int]:
    """(one training step on a list of Examples -> real tokens trained, trainable count)."""
    device = torch.device(args.device)
    config = TrainConfig(train_data="", label_smooth=0.1, lora_dropout=0.1, train_batch_size=args.batch_size,
                         seq_len=PAPER_PAD)
    model = base_model(args.card, device)
    if method == "hf":
        model = hf_peft_model(model).to(device)
        return make_hf_step(model, config, device), count_trainable(model)
    if method in FINE_TUNING:
        from nlg import methods

        values = {"lora_dim": LORA_RANK, "lora_alpha": 32, "lora_dropout": 0.1, "lora_targets": LORA_TARGETS}
        fine_tuning = methods.get(method)
        fine_tuning.apply(model, methods.settings_of(method, values))
        params = list(fine_tuning.trainable(model).values())
    else:
        add_lora(model, rank=LORA_RANK, alpha=32, dropout=0.1, targets=LORA_TARGETS)
        params = list(lora_parameters(model).values())
    stepper = Stepper(CompletionLM(model), params, config, Runtime(device=device),
                      lambda step: 1.0, mode=MODES.get(method, "none"))

    def step(examples: list) -> int:  # batching is part of the cost
        batch = collate(examples, pad_to=PAPER_PAD).to(device) if method == "padded" else stepper.batch(examples)
        train_step(stepper, [batch])
        return batch.n_tokens

    return step, count_trainable(model)


def make_hf_step(model, config: TrainConfig, device: torch.device) -> Callable[[list], int]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, config, fused=device.type == "cuda")

    def step(examples: list) -> int:
        batch = collate(examples).to(device)
        model.train()
        labels = torch.full(batch.input_ids.shape, -100, device=device).view(-1)
        labels[batch.loss_index] = batch.loss_targets
        with autocast(device):
            logits = model(input_ids=batch.input_ids).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels, ignore_index=-100,
                               label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch.n_tokens

    return step


# ---------------------------------------------------------------------------------------------
# Model FLOPs
# ---------------------------------------------------------------------------------------------


def step_flops(examples: list, config: GPTConfig, lora: bool = True) -> float:
    """Model FLOPs of one training step on `examples` (the module docstring's count)."""
    L, C, V = config.n_layer, config.n_embd, config.vocab_size
    lengths = [len(e.tokens) - 1 for e in examples]
    tokens = sum(lengths)
    n_loss = sum(len(e.tokens) - e.n_context for e in examples)  # completion tokens (clm)
    blocks = tokens * 24 * L * C * C
    attention = sum(2 * L * C * n * (n + 1) for n in lengths)
    head = n_loss * 2 * C * V
    if not lora:
        return 3 * (blocks + attention + head)
    adapters = tokens * L * len(LORA_TARGETS) * 2 * LORA_RANK * (C + C)
    return 2 * blocks + 3 * attention + 2 * head + 3 * adapters


def peak_flops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    if not args.device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def static_shapes(batches: list[list], args) -> dict[tuple, list]:
    """One batch per static shape among `batches` (what the static modes capture or compile)."""
    shapes: dict[tuple, list] = {}
    for examples in batches:
        shape = collate_static(examples, "clm", rows=args.batch_size, max_width=PAPER_PAD - 1).shape
        shapes.setdefault(shape, examples)
    return shapes


def warm_up(steps: dict, batches: list[list], args) -> dict[str, dict]:
    """Each method's untimed steps: --warmup batches, and every static shape of the timed ones.
    Returns per method its first-use seconds and (GPU) peak memory estimate."""
    shapes = static_shapes(batches[args.warmup:], args)
    out = {}
    for method, (step, _, persistent) in steps.items():
        firsts = batches[:args.warmup] + (list(shapes.values()) if MODES.get(method) in ("static", "graphs", "inductor") else [])
        synchronize(args.device)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        for examples in firsts:
            step(examples)
        synchronize(args.device)
        out[method] = {"first_use_s": time.perf_counter() - start, "shapes": len(shapes)}
        if args.device.startswith("cuda"):
            out[method]["peak_bytes"] = persistent + torch.cuda.max_memory_allocated() - before
    return out


def throughput(steps: dict, batches: list[list], args) -> dict[str, dict]:
    """Timed steps: the methods take turns, --block steps each, in rotating order."""
    methods = list(steps)
    timed = batches[args.warmup:]
    totals = {m: {"tokens": 0, "seconds": 0.0, "cpu_seconds": 0.0, "steps": 0, "flops": 0.0} for m in methods}
    config = card_config(args.card)
    for turn, start in enumerate(range(0, len(timed), args.block)):
        block = timed[start:start + args.block]
        order = methods[turn % len(methods):] + methods[:turn % len(methods)]
        for method in order:
            synchronize(args.device)
            wall, cpu = time.perf_counter(), time.process_time()
            tokens = sum(steps[method][0](examples) for examples in block)
            synchronize(args.device)
            t = totals[method]
            t["seconds"] += time.perf_counter() - wall
            t["cpu_seconds"] += time.process_time() - cpu
            t["tokens"] += tokens
            t["steps"] += len(block)
            t["flops"] += sum(step_flops(examples, config, lora=method != "full") for examples in block)
    return totals


def report(method: str, t: dict, peak: float | None) -> dict:
    ms = 1000 * t["seconds"] / t["steps"]
    r = {"method": method, "ms_per_step": ms, "tokens_per_s": t["tokens"] / t["seconds"],
         "tokens_per_cpu_s": t["tokens"] / max(t["cpu_seconds"], 1e-9), "flops_per_s": t["flops"] / t["seconds"],
         "paper_run_minutes": PAPER_STEPS * ms / 60_000, **{k: t[k] for k in ("tokens", "seconds", "steps")}}
    r["mfu"] = r["flops_per_s"] / peak if peak else None
    return r


# ---------------------------------------------------------------------------------------------
# Memory (CPU: a process per method) and validation time
# ---------------------------------------------------------------------------------------------


def peak_rss() -> int:
    """This process's peak resident memory in bytes.

    VmHWM where Linux has it: ru_maxrss would also count the parent's size at fork time.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def cpu_peak_memory(method: str, args) -> int:
    """Peak RSS of `method` alone over two steps, in a fresh process."""
    command = [sys.executable, __file__, "--worker", method, "--device", args.device, "--card", args.card,
               "--batch_size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--data", args.data] if args.data else []
    command += ["--vocab", args.vocab] if args.vocab else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"memory worker for {method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def validation_seconds(examples: list, args) -> float:
    """Seconds of one eager validation pass over the E2E valid split (batch 4, as --valid_batch_size),
    extrapolated from its first --eval_batches batches (longest first, as nlg.training.trainer orders them)."""
    from nlg.training.trainer import eval_batches

    device = torch.device(args.device)
    model = base_model(args.card, device)
    add_lora(model, rank=LORA_RANK, alpha=32, dropout=0.1, targets=LORA_TARGETS)
    batches = eval_batches(examples, 4, Runtime(device=device))
    spread = batches[:: max(1, len(batches) // args.eval_batches)][:args.eval_batches]
    config = TrainConfig(train_data="")
    lm = CompletionLM(model)
    evaluate(lm, spread[:2], config, Runtime(device=device))  # warm-up
    synchronize(args.device)
    start = time.perf_counter()
    evaluate(lm, spread, config, Runtime(device=device))
    synchronize(args.device)
    return (time.perf_counter() - start) * len(batches) / len(spread)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--card", default=None, help="model shape (default gpt2.md on GPU, gpt2.sm on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per method (default 60 GPU, 5 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 GPU, 1 CPU)")
    parser.add_argument("--block", type=int, default=None, help="consecutive steps per turn (default 10 GPU, 1 CPU)")
    parser.add_argument("--batch_size", type=int, default=8, help="pairs per step (the paper's 8)")
    parser.add_argument("--methods", default=None, help=f"from {','.join(METHODS)}, or ft for every fine-tuning method "
                                                        "(default: eager,padded,hf, and graphs on GPU)")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the device's bf16 peak, if not in PEAK_BF16")
    parser.add_argument("--eval_batches", type=int, default=0,
                        help="also time validation on this many batches of 4, extrapolated to the split")
    parser.add_argument("--json", default=None, help="write the results here too")
    parser.add_argument("--data", default=None, help="raw E2E text split (default: shared valid.txt)")
    parser.add_argument("--vocab", default=None, help="GPT-2 vocabulary folder (default: shared)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    args.card = args.card or ("gpt2.md" if on_gpu else "gpt2.sm")
    args.steps = args.steps or (60 if on_gpu else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    args.block = args.block or (10 if on_gpu else 1)
    args.methods = args.methods or ("eager,graphs,padded,hf" if on_gpu else "eager,padded,hf")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True  # as nlg train sets it
    examples = load_examples(args)
    batches = load_batches(args, examples)
    if args.worker:  # CPU peak memory of one method, in a process of its own
        step, _ = make_step(args.worker, args)
        for batch in batches[:2]:
            step(batch)
        print(json.dumps({"peak_bytes": peak_rss()}))
        return 0

    methods = [m for item in args.methods.split(",") for m in (FINE_TUNING if item == "ft" else [item]) if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {','.join(METHODS)}")
    print(f"{args.card} on {torch.cuda.get_device_name() if on_gpu else 'cpu'}, batch {args.batch_size}, "
          f"{args.warmup} warm-up + {args.steps} timed steps per method in turns of {args.block}, torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    peaks = {} if on_gpu else {m: cpu_peak_memory(m, args) for m in methods}  # first, while this process is small
    steps = {}
    for method in methods:
        synchronize(args.device)
        before = torch.cuda.memory_allocated() if on_gpu else 0
        step, trainable = make_step(method, args)
        steps[method] = (step, trainable, (torch.cuda.memory_allocated() - before) if on_gpu else 0)
    first_use = warm_up(steps, batches, args)
    totals = throughput(steps, batches, args)
    peak = peak_flops(args)
    results = {}
    for method in methods:
        r = {**report(method, totals[method], peak), **first_use[method], "trainable": steps[method][1]}
        r["peak_bytes"] = r.get("peak_bytes", peaks.get(method))
        results[method] = r
        mfu = f"MFU {100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "MFU n/a"
        print(f"  {method:<8} {r['ms_per_step']:8.1f} ms/step {r['tokens_per_s']:>10,.0f} tokens/s  {mfu}  "
              f"peak {r['peak_bytes'] / 2**30:5.2f} GiB  first use {r['first_use_s']:5.1f}s  "
              f"paper's run {r['paper_run_minutes']:6.1f} min", flush=True)
    ratios = []
    for method in (m for m in FINE_TUNING if m in results and m != "lora" and "lora" in results):
        a, b = results[method], results["lora"]
        line = (f"{method} / lora: {a['ms_per_step'] / b['ms_per_step']:.2f}x ms/step, "
                f"{a['trainable'] / b['trainable']:,.2f}x trainable parameters")
        if a["peak_bytes"] and b["peak_bytes"]:
            line += f", {a['peak_bytes'] / b['peak_bytes']:.2f}x peak memory"
        ratios.append(line)
        print(line)
    for ours in (m for m in ("graphs", "inductor", "static", "eager") if m in results):
        for other in (m for m in ("eager", "padded", "hf") if m in results and m != ours):
            a, b = results[ours], results[other]
            line = f"{ours} / {other}: {a['tokens_per_s'] / b['tokens_per_s']:.2f}x tokens/s"
            if a["peak_bytes"] and b["peak_bytes"]:
                line += f", {a['peak_bytes'] / b['peak_bytes']:.2f}x peak memory"
            if not on_gpu:  # CPU time ignores what other processes on a shared machine take
                line += f" ({a['tokens_per_cpu_s'] / b['tokens_per_cpu_s']:.2f}x tokens per CPU second)"
            ratios.append(line)
            print(line)
    summary = {"device": torch.cuda.get_device_name() if on_gpu else "cpu", "card": args.card,
               "torch": torch.__version__, "peak_flops": peak, "methods": results, "ratios": ratios,
               "static_shapes": first_use[methods[0]]["shapes"]}
    if args.eval_batches:
        seconds = validation_seconds(examples, args)
        summary["validation_pass_s"] = seconds
        print(f"validation pass over the valid split (eager, batch 4): {seconds:.1f}s; the paper's run has "
              f"{PAPER_EVALS}: {PAPER_EVALS * seconds / 60:.1f} min on top of its steps")
    per_step = totals[methods[0]]["flops"] / totals[methods[0]]["steps"]
    summary["flops_per_step"] = per_step
    print(f"model FLOPs per step (LoRA, counted on real tokens, bench docstring): {per_step / 1e9:,.1f} GFLOP "
          f"on average; peak bf16 {'%.0f TFLOP/s' % (peak / 1e12) if peak else 'unknown (pass --peak_tflops)'}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
