"""What scaled_dot_product_attention's kernel choice costs on a GPU at E2E's varying lengths.

    python bench/attention_backends.py [--card gpt2.md] [--steps 20]

PyTorch picks an attention kernel per call. Where it picks cuDNN's (bf16 on Hopper), a plan
is built for every new shape, and E2E batches change shape at every training step (each
batch is padded to its own longest pair) and at every decoding step (the KV cache grows).
This times, in one run, with all kernels allowed (PyTorch's default) and with nlg.model's
set (cuDNN's left out): LoRA training steps on real E2E batches (bf16 autocast) padded to
their longest pair and padded to 512, and beam search over test contexts in fp32 and bf16.
Random weights (no pretrained ones here); speed does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend

import nlg.model
from nlg.beam import BeamConfig, distinct_contexts, generate
from nlg.datasets.e2e import read_raw
from nlg.methods.lora.layer import add_lora, lora_parameters
from nlg.model import GPT, card_config
from nlg.pairs import encode_pairs
from nlg.tokenizer import BLANK_LINE_ID, EOS_ID, load_tokenizer
from nlg.training.batching import collate, epoch_batches, make_examples
from nlg.training.distributed import Runtime
from nlg.training.loss import CompletionLM
from nlg.training.settings import TrainConfig
from nlg.training.step import Stepper, train_step

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NLG_SHARED_DIR", REPO.parent / "shared"))
SETTINGS = {  # the kernels nlg.model lets SDPA choose from
    "all": [SDPBackend.CUDNN_ATTENTION, *nlg.model.ATTENTION_BACKENDS],  # PyTorch's default
    "nlg": nlg.model.ATTENTION_BACKENDS,  # cuDNN's left out
}


def seconds(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--card", default="gpt2.md")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per setting")
    parser.add_argument("--contexts", type=int, default=64, help="test contexts decoded per setting")
    parser.add_argument("--eval_len", type=int, default=32)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    device = torch.device("cuda")
    tokenizer = load_tokenizer(SHARED / "vocab" / "gpt2")
    train_pairs = encode_pairs(read_raw(SHARED / "data" / "e2e" / "valid.txt"), tokenizer)
    examples, _ = make_examples(train_pairs, 512)
    plan = epoch_batches([len(e.tokens) for e in examples], 8, epoch=0, seed=0)
    batches = [[examples[i] for i in b] for b in plan[: 5 + 2 * args.steps * len(SETTINGS)]]
    lines = [p.context for p in encode_pairs(read_raw(SHARED / "data" / "e2e" / "test.txt"), tokenizer)]
    contexts = [lines[i] for i in distinct_contexts(lines)[: args.contexts]]

    torch.manual_seed(0)
    with device:  # initialising on the GPU: seconds instead of minutes for gpt2.lg
        model = GPT(card_config(args.card))
    add_lora(model, rank=4, alpha=32, dropout=0.1, targets=("q", "v"))
    config = TrainConfig(train_data="", label_smooth=0.1, lora_dropout=0.1)
    stepper = Stepper(CompletionLM(model), list(lora_parameters(model).values()), config, Runtime(device=device),
                      lambda step: 1.0, mode="none")
    beam = BeamConfig(beam=10, eval_len=args.eval_len, length_penalty=0.8, no_repeat_ngram_size=4,
                      eos_ids=(EOS_ID, BLANK_LINE_ID))

    def train(chunk: list, pad_to: int | None) -> None:
        for group in chunk:
            train_step(stepper, [collate(group, pad_to=pad_to).to(device)])

    print(f"{args.card} on {torch.cuda.get_device_name()}, torch {torch.__version__}; training batch 8, "
          f"{args.steps} timed steps; beam 10 over {len(contexts)} contexts, eval_len {args.eval_len}")
    train(batches[:5], None)  # warm-up: allocator, kernels, lazy initialisation
    used = 5
    for name, backends in SETTINGS.items():
        nlg.model.ATTENTION_BACKENDS = backends  # read by every forward call
        row = []
        for pad_to in (None, 512):  # fresh batches for each: new shapes, as in real training
            chunk = batches[used : used + args.steps]
            used += args.steps
            row.append(f"{1000 * seconds(lambda c=chunk, p=pad_to: train(c, p)) / args.steps:6.1f} ms/step")
        for dtype in (torch.float32, torch.bfloat16):
            model.to(dtype).eval()
            with torch.no_grad():
                row.append(f"{seconds(lambda: generate(model, contexts, beam, batch_size=64)):5.2f} s")
            model.float()
        print(f"{name:<4} train longest-pair {row[0]}, padded-512 {row[1]}; "
              f"beam fp32 {row[2]}, bf16 {row[3]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
