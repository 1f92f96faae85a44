"""Training throughput: `nlg train`'s step vs the paper's fixed 512 padding vs transformers + PEFT.

    python bench/train_throughput.py                           # CPU: gpt2.sm, a few minutes
    python bench/train_throughput.py --device cuda --card gpt2.md --steps 50 --warmup 5

All three train the same LoRA (r=4, alpha=32, dropout 0.1, q and v; PEFT adapts the fused
c_attn with r=4, which has the same 2·4·(d+d) parameters per layer) on the same GPT-2 shape
with the same random weights (no pretrained weights exist on these machines; speed does not
depend on them), with AdamW, label smoothing 0.1 and bf16 autocast on GPU, on the same
batches of real E2E pairs (the shared valid split, BPE-encoded, shuffled with a fixed seed):

  ours      `nlg.train.train_step`: each batch padded to its longest pair, the softmax only
            over completion tokens.
  padded    the same step with every batch padded to 512 tokens, as the paper's FT_Dataset
            pads (--seq_len 512 in its E2E command).
  hf        transformers' GPT2LMHeadModel (sdpa attention) + peft LoRA, given the same
            dynamically padded batches (no attention mask: right padding under a causal mask
            needs none, the same work as ours), the loss over its full logits with ignore_index
            and label_smoothing, as a Trainer with label_smoothing_factor computes it.

tokens/s counts real (non-pad) input tokens. The three run in one process, one step each in
turn (rotating who goes first), so a change in machine load hits all of them alike; the ratios
are ours over each baseline, from the same run; on CPU also per CPU second of this process,
which other processes on a shared machine do not disturb as much. Peak memory is measured separately, each
method alone in a fresh process for two steps: peak RSS on CPU (so it includes the process's
torch and model), torch.cuda.max_memory_allocated on GPU.
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

from nlg.batching import Batch, collate, epoch_batches, make_examples
from nlg.datasets.e2e import read_raw
from nlg.distributed import Runtime
from nlg.lora import add_lora, count_trainable, lora_parameters
from nlg.loss import CompletionLM, autocast
from nlg.model import GPT, card_config, to_transformers
from nlg.pairs import encode_pairs
from nlg.tokenizer import load_tokenizer
from nlg.train import build_optimizer, train_step
from nlg.train_args import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NLG_SHARED_DIR", REPO.parent / "shared"))
METHODS = ("ours", "padded", "hf")
PAPER_PAD = 512


def load_batches(args) -> list[list]:
    """The first warmup+steps shuffled batches of the encoded valid split, as Example lists."""
    tokenizer = load_tokenizer(args.vocab or SHARED / "vocab" / "gpt2")
    pairs = encode_pairs(read_raw(Path(args.data or SHARED / "data" / "e2e" / "valid.txt")), tokenizer)
    examples, _ = make_examples(pairs, PAPER_PAD)
    plan = epoch_batches([len(e.tokens) for e in examples], args.batch_size, epoch=0, seed=0)
    needed = args.warmup + args.steps
    if len(plan) < needed:
        raise SystemExit(f"only {len(plan)} batches of {args.batch_size}; ask for fewer steps")
    return [[examples[i] for i in batch] for batch in plan[:needed]]


def base_model(card: str) -> GPT:
    torch.manual_seed(0)
    return GPT(card_config(card))


def hf_peft_model(model: GPT):
    """transformers GPT2LMHeadModel (sdpa attention) with `model`'s weights, wrapped by peft LoRA on c_attn."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"],
                      fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(to_transformers(model, attn_implementation="sdpa"), lora)


def make_step(method: str, args) -> tuple[Callable[[list], int], int]:
    """(one training step on a list of Examples -> real tokens trained, trainable count)."""
    device = torch.device(args.device)
    config = TrainConfig(train_data="", label_smooth=0.1, lora_dropout=0.1)
    rt = Runtime(device=device)
    model = base_model(args.card)
    if method == "hf":
        model = hf_peft_model(model).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        add_lora(model, rank=4, alpha=32, dropout=0.1, targets=("q", "v"))
        model = CompletionLM(model.to(device))
        params = list(lora_parameters(model.gpt).values())
    optimizer = build_optimizer(params, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    pad_to = PAPER_PAD if method == "padded" else None

    def hf_step(batch: Batch) -> None:
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

    def step(examples: list) -> int:
        batch = collate(examples, pad_to=pad_to).to(device)  # batching is part of the cost
        if method == "hf":
            hf_step(batch)
        else:
            train_step(model, [batch], optimizer, scheduler, params, config, rt)
        return batch.n_tokens

    return step, count_trainable(model)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(methods: list[str], args) -> dict[str, dict]:
    """tokens/s of each method, steps interleaved round-robin so load changes hit all alike."""
    batches = load_batches(args)
    steps = {m: make_step(m, args) for m in methods}
    tokens = dict.fromkeys(methods, 0)
    seconds = dict.fromkeys(methods, 0.0)
    cpu_seconds = dict.fromkeys(methods, 0.0)
    for i, examples in enumerate(batches):
        order = methods[i % len(methods):] + methods[:i % len(methods)]  # nobody always goes first
        for method in order:
            synchronize(args.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            n = steps[method][0](examples)
            synchronize(args.device)
            if i >= args.warmup:
                tokens[method] += n
                seconds[method] += time.perf_counter() - start
                cpu_seconds[method] += time.process_time() - cpu_start
    return {m: {"tokens": tokens[m], "seconds": seconds[m], "tokens_per_s": tokens[m] / seconds[m],
                "tokens_per_cpu_s": tokens[m] / cpu_seconds[m], "trainable": steps[m][1]}
            for m in methods}


def peak_memory(method: str, args) -> int:
    """Peak bytes of `method` alone over its first two steps (run in a fresh process)."""
    batches = load_batches(args)[:2]
    step, _ = make_step(method, args)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for examples in batches:
        step(examples)
    if args.device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return peak_rss()


def peak_rss() -> int:
    """This process's peak resident memory in bytes.

    VmHWM where Linux has it: ru_maxrss would also count the parent's size at fork time.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--card", default=None, help="model shape (default gpt2.md on GPU, gpt2.sm on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 50 GPU, 5 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 GPU, 1 CPU)")
    parser.add_argument("--batch_size", type=int, default=8, help="pairs per step (the paper's 8)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--data", default=None, help="raw E2E text split (default: shared valid.txt)")
    parser.add_argument("--vocab", default=None, help="GPT-2 vocabulary folder (default: shared)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    args.card = args.card or ("gpt2.md" if on_gpu else "gpt2.sm")
    args.steps = args.steps or (50 if on_gpu else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)

    if args.worker:  # peak memory of one method, in a process of its own
        print(json.dumps({"peak_bytes": peak_memory(args.worker, args)}))
        return 0

    methods = [m for m in args.methods.split(",") if m]
    print(f"{args.card} on {args.device}, batch {args.batch_size}, {args.warmup} warm-up + "
          f"{args.steps} timed steps per method (interleaved), threads {torch.get_num_threads()}")
    peaks = {}
    for method in methods:  # first, while this process is small
        command = [sys.executable, __file__, "--worker", method, "--device", args.device, "--card", args.card,
                   "--batch_size", str(args.batch_size), "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]
        command += ["--data", args.data] if args.data else []
        command += ["--vocab", args.vocab] if args.vocab else []
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        peaks[method] = json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]
    results = throughput(methods, args)
    for method in methods:
        r = {**results[method], "method": method, "peak_bytes": peaks[method]}
        results[method] = r
        print(f"  {method:<7} {r['tokens_per_s']:>10,.0f} tokens/s  {r['tokens']:>7} tokens in "
              f"{r['seconds']:6.1f}s  peak {r['peak_bytes'] / 2**30:5.2f} GiB  "
              f"trainable {r['trainable']:,}")
    if "ours" in results:
        ours = results["ours"]
        for other in (results[m] for m in methods if m != "ours"):
            line = (f"ours / {other['method']}: {ours['tokens_per_s'] / other['tokens_per_s']:.2f}x tokens/s, "
                    f"{ours['peak_bytes'] / other['peak_bytes']:.2f}x peak memory")
            if not on_gpu:  # CPU time ignores what other processes on a shared machine take
                line += f" ({ours['tokens_per_cpu_s'] / other['tokens_per_cpu_s']:.2f}x tokens per CPU second)"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
