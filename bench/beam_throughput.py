"""Beam-search throughput: `nlg beam` vs the paper's setting and vs Hugging Face `generate`.

    python bench/beam_throughput.py                                  # CPU, gpt2.sm: ~3 minutes
    python bench/beam_throughput.py --device cuda --card gpt2.md --contexts 630 --eval_len 64 \\
        --batch_size 64 --sample_lines 20 --hf_contexts 128          # GPU, bigger settings

All three decode contexts of the shared E2E test split with the same random weights (no
pretrained weights exist here, so a random model: it rarely emits an eos, which makes every
run go the full eval_len; early stopping cannot help, as with a model that never finishes):

  ours      `nlg.beam.generate`: each distinct context once, `--batch_size` contexts per batch,
            KV cache, early stopping.
  paper     the paper's README setting: batch 1 and every line of the test split (4693 lines
            for 630 distinct contexts), without early stopping. Run here as `beam_search` on
            one line at a time for `--sample_lines` lines spread over the split, and
            extrapolated: time/line x 4693 lines for the 630 contexts. (The paper's own script
            is slower still: it loops over hypotheses in Python for the n-gram ban.)
  hf        transformers' GPT2LMHeadModel.generate with num_beams, length_penalty,
            no_repeat_ngram_size and both eos ids, on the same distinct contexts and batch size
            (left padding with an attention mask). Its beam search differs in details (n-gram
            bans also see the context, its own stopping rule), so only speed is compared.

Reported: contexts/s of each and ours' speed-up ratios over both, measured in the same run.

    python bench/beam_throughput.py --methods lora,prefix --prefix_len 5

compares fine-tuning methods instead: ours' search with each (same random base, the method's
weights moved off their initialisation and made ready to decode as `nlg beam` does: LoRA merged,
the prefix folded into the first --prefix_len slots of every row's cache), timed in turn
--rounds times, each keeping its fastest; contexts/s and each one's time relative to the first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from nlg import methods
from nlg.beam import BeamConfig, beam_search, distinct_contexts, generate
from nlg.datasets.e2e import read_raw
from nlg.model import GPT, card_config
from nlg.pairs import encode_pairs
from nlg.tokenizer import BLANK_LINE_ID, EOS_ID, load_tokenizer
from nlg.weights import to_transformers

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NLG_SHARED_DIR", REPO.parent / "shared"))


@torch.inference_mode()
def hf_generate(hf, contexts: list[list[int]], cfg: BeamConfig, batch_size: int, device) -> list[list[int]]:
    out = []
    for start in range(0, len(contexts), batch_size):
        batch = contexts[start:start + batch_size]
        width = max(len(c) for c in batch)
        ids = torch.tensor([[0] * (width - len(c)) + c for c in batch], device=device)
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in batch], device=device)
        result = hf.generate(input_ids=ids, attention_mask=mask, num_beams=cfg.beam, do_sample=False,
                             length_penalty=cfg.length_penalty, no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                             eos_token_id=list(cfg.eos_ids), pad_token_id=0, max_new_tokens=cfg.eval_len,
                             num_return_sequences=1)
        out += [cut_at_eos(row[width:].tolist(), cfg.eos_ids) for row in result]
    return out


def cut_at_eos(tokens: list[int], eos_ids: tuple[int, ...]) -> list[int]:
    """Tokens up to and including the first eos (generate pads finished rows after it)."""
    for index, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:index + 1]
    return tokens


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def method_model(name: str, card: str, prefix_len: int, device, dtype) -> GPT:
    """The random base with method `name` (its defaults; --prefix_len for the prefixes), its
    weights moved as training would, ready to decode."""
    torch.manual_seed(0)
    model = GPT(card_config(card))
    method = methods.get(name)
    method.apply(model, methods.settings_of(name, {"prefix_len": prefix_len}))
    with torch.no_grad():
        for param in method.trainable(model).values():
            param.add_(torch.randn_like(param) * 0.02)
    method.prepare_inference(model)
    return model.to(device=device, dtype=dtype).eval()


def compare_methods(args, contexts: list[list[int]], cfg: BeamConfig, device, dtype) -> None:
    """Contexts/s of ours' search with each of --methods, interleaved rounds, fastest kept."""
    names = args.methods.split(",")
    models = {name: method_model(name, args.card, args.prefix_len, device, dtype) for name in names}
    short = replace(cfg, eval_len=2)
    for model in models.values():
        generate(model, contexts[:2], short, args.batch_size)  # warm-up
    best = dict.fromkeys(names, float("inf"))
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            _, seconds = timed(lambda model=models[name]: generate(model, contexts, cfg, args.batch_size), device)
            best[name] = min(best[name], seconds)
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {t:.1f}s" for n, t in best.items()) + " (best so far)",
              flush=True)
    first = names[0]
    for name in names:
        print(f"{name:<13} {len(contexts)} contexts, batch {args.batch_size}: {best[name]:.1f}s -> "
              f"{len(contexts) / best[name]:.3f} contexts/s, {best[name] / best[first]:.3f}x {first}'s time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--card", default="gpt2.sm")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--contexts", type=int, default=16, help="distinct contexts decoded by ours and hf")
    parser.add_argument("--sample_lines", type=int, default=3, help="lines timed for the paper setting")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds; each method keeps its fastest")
    parser.add_argument("--hf_contexts", type=int, default=None, help="contexts for hf (default: --contexts)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1 on cpu: on a shared machine a busy second core "
                             "stalls every multi-threaded op for a scheduler tick, which swamps the timings)")
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--eval_len", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--data", default=str(SHARED / "data" / "e2e" / "test.txt"))
    parser.add_argument("--vocab", default=os.environ.get("NLG_VOCAB_DIR", str(SHARED / "vocab" / "gpt2")))
    parser.add_argument("--methods", default=None,
                        help="e.g. lora,prefix: time ours with each fine-tuning method instead (no paper, no hf)")
    parser.add_argument("--prefix_len", type=int, default=5, help="with --methods: the prefixes' length")
    args = parser.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    tokenizer = load_tokenizer(args.vocab)
    lines = [p.context for p in encode_pairs(read_raw(args.data), tokenizer)]
    firsts = distinct_contexts(lines)
    contexts = [lines[i] for i in firsts[:args.contexts]]
    step = max(1, len(lines) // args.sample_lines)
    sample = [lines[i] for i in range(0, len(lines), step)][:args.sample_lines]

    if args.methods:
        print(f"{args.card} random weights on {device} ({args.dtype}, {torch.get_num_threads()} threads), "
              f"beam {args.beam}, eval_len {args.eval_len}, methods {args.methods}", flush=True)
        compare_methods(args, contexts, BeamConfig(beam=args.beam, eval_len=args.eval_len, length_penalty=0.8,
                                                   no_repeat_ngram_size=4, eos_ids=(EOS_ID, BLANK_LINE_ID)),
                        device, dtype)
        return 0
    torch.manual_seed(0)
    model = GPT(card_config(args.card)).to(device=device, dtype=dtype).eval()
    hf = to_transformers(model).to(device=device, dtype=dtype)
    cfg = BeamConfig(beam=args.beam, eval_len=args.eval_len, length_penalty=0.8, no_repeat_ngram_size=4,
                     eos_ids=(EOS_ID, BLANK_LINE_ID))
    paper_cfg = replace(cfg, early_stop=False)
    print(f"{args.card} random weights on {device} ({args.dtype}, {torch.get_num_threads()} threads), "
          f"beam {cfg.beam}, eval_len {cfg.eval_len}; test split: {len(lines)} lines, {len(firsts)} "
          f"distinct contexts", flush=True)

    # Warm-up (allocator, kernels, lazy imports) on one short run each.
    short = replace(cfg, eval_len=2)
    generate(model, contexts[:2], short, args.batch_size)
    hf_generate(hf, contexts[:2], short, args.batch_size, device)

    # The three are timed in turn, `--rounds` times, and each keeps its fastest round: on a
    # shared machine that is the least disturbed measurement, and no method gets all the quiet.
    hf_contexts = contexts[:args.hf_contexts or len(contexts)]
    t_ours = t_paper = t_hf = float("inf")
    for round_ in range(args.rounds):
        ours, seconds = timed(lambda: generate(model, contexts, cfg, args.batch_size), device)
        t_ours = min(t_ours, seconds)
        _, seconds = timed(lambda: [beam_search(model, [c], paper_cfg) for c in sample], device)
        t_paper = min(t_paper, seconds)
        theirs, seconds = timed(lambda: hf_generate(hf, hf_contexts, cfg, args.batch_size, device), device)
        t_hf = min(t_hf, seconds)
        print(f"round {round_ + 1}: ours {t_ours:.1f}s, paper {t_paper:.1f}s, hf {t_hf:.1f}s (best so far)",
              flush=True)

    ours_rate = len(contexts) / t_ours
    print(f"ours   {len(contexts)} contexts, batch {args.batch_size}: {t_ours:.1f}s -> {ours_rate:.3f} contexts/s")
    per_line = t_paper / len(sample)
    paper_rate = len(firsts) / (per_line * len(lines))
    print(f"paper  {len(sample)} sampled lines at batch 1, no early stop: {per_line:.2f}s/line; "
          f"x {len(lines)} lines for {len(firsts)} contexts -> {paper_rate:.4f} contexts/s (extrapolated)")
    hf_rate = len(hf_contexts) / t_hf
    same = sum(a == b for a, b in zip(ours, theirs, strict=False))
    print(f"hf     {len(hf_contexts)} contexts, batch {args.batch_size}: {t_hf:.1f}s -> {hf_rate:.3f} contexts/s "
          f"(same output as ours for {same}/{len(hf_contexts)})")
    print(f"speed-up of ours: {ours_rate / paper_rate:.1f}x over the paper setting (batch 1, every line), "
          f"{ours_rate / hf_rate:.2f}x over transformers generate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
