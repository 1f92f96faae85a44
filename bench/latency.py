"""Inference latency of one forward pass, as the LoRA paper's Table 1 measures it: GPT-2 M (random
weights) at batch × length 32 × 512, 16 × 256 and 1 × 128, for

    base          the model alone
    NAME          every method of nlg.methods.names() that adds parameters, at its defaults, its
                  added parameters nonzero (as trained): as `nlg beam` decodes it when it does
                  not merge (adapters unmerged by nature, prefix tuning folded into a past its
                  tokens attend to), else unmerged, as it trains (LoRA: two extra small matmuls
                  per adapted projection)
    NAME:merged   for a method that merges (`Method.merges`): after its prepare_inference, the
                  update folded into W; the base model's cost, up to what merging leaves

A method that adds nothing (full, top2) decodes as the base model and has no row; one that
cannot be applied at the card (a setting that does not fit its width) is named and skipped.
The methods of the paper's Table 1 (adapter-l, adapter-h) are at the paper's sizes: |Θ| 0.5M at
32 × 512 and 11M at the two others (their size flag chosen so that the count is nearest;
`adapter_width`). Each setting runs --trials timed passes per variant after --warmup untimed
ones, the variants taking turns pass by pass so that machine load hits them alike; mean ± std
in ms, and the slowdown against base in percent beside the paper's.

    python bench/latency.py --device cuda --json latency.json        # the paper's shapes, GPT-2 M
    python bench/latency.py                                          # CPU: smaller card and shapes

On a CPU the default is gpt2.sm at 2 × 64, 1 × 32 and 1 × 16 with |Θ| scaled by the cards'
sizes (it says so): GPT-2 M at 32 × 512 takes seconds per pass there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from nlg import methods
from nlg.model import GPT, card_config

# Table 1 of the LoRA paper (GPT-2 M, Quadro RTX8000, ms over 100 trials): base, AdapterL, AdapterH.
PAPER_SHAPES = ((32, 512, 0.5e6), (16, 256, 11e6), (1, 128, 11e6))
PAPER_MS = {"base": (1449.4, 338.0, 19.8), "adapter-l": (1482.0, 354.8, 23.9), "adapter-h": (1492.2, 366.3, 25.8)}
CPU_SHAPES = ((2, 64, 0.5e6), (1, 32, 11e6), (1, 16, 11e6))
MERGED = ":merged"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Setting:
    batch: int
    length: int
    params: float  # the adapters' |Θ| on GPT-2 M


def adapter_width(method: str, card: str, params: float) -> int:
    """The value of `method`'s size flag (adapter_dim) whose count on `card` is nearest `params`."""
    flag = methods.get(method).sizes[0]
    return min(range(1, 2048), key=lambda r: abs(methods.card_count(method, card, {flag: r}) - params))


def variants_of(card: str) -> tuple[list[str], dict[str, str]]:
    """(the rows: base, then each method that adds parameters, and NAME:merged after each that
    merges, in nlg.methods' order; {method: why it has no row})."""
    rows, skipped = ["base"], {}
    config = replace(card_config(card), n_layer=min(card_config(card).n_layer, 2), vocab_size=64)
    for name in methods.names():
        method = methods.get(name)
        model = GPT(config)
        before = sum(p.numel() for p in model.parameters())
        try:
            method.apply(model, methods.settings_of(name, {}))
        except (methods.InputError, ValueError) as error:
            skipped[name] = f"cannot be applied at {card} ({error})"
            continue
        if sum(p.numel() for p in model.parameters()) == before:
            skipped[name] = "adds no parameters: decodes as the base model"
            continue
        rows += [name, name + MERGED] if method.merges else [name]
    return rows, skipped


def build(variant: str, card: str, params: float, device: torch.device, dtype: torch.dtype) -> tuple[GPT, int]:
    """(the variant's model in eval mode, its added parameters); same random base weights for all."""
    torch.manual_seed(0)
    with device:
        model = GPT(card_config(card))
    base_count = sum(p.numel() for p in model.parameters())
    if variant != "base":
        name = variant.removesuffix(MERGED)
        method = methods.get(name)
        values = {method.sizes[0]: adapter_width(name, card, params)} if name in PAPER_MS else {}
        method.apply(model, methods.settings_of(name, values))
        with torch.no_grad():  # nonzero, as trained (an untrained up-projection is zero, not free)
            for param in method.trainable(model).values():
                param.normal_(0, 0.02)
        if variant.endswith(MERGED) or not method.merges:
            method.prepare_inference(model)  # merged, or as decoding runs it (prefix tuning: folded)
    return model.to(dtype=dtype).eval(), sum(p.numel() for p in model.parameters()) - base_count


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_setting(models: dict[str, GPT], setting: Setting, args, device: torch.device) -> dict[str, list[float]]:
    """Milliseconds of each timed pass per variant, the variants taking turns."""
    vocab = next(iter(models.values())).config.vocab_size
    x = torch.randint(0, vocab, (setting.batch, setting.length), device=device)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for trial in range(args.warmup + args.trials):
            order = list(models)[trial % len(models):] + list(models)[:trial % len(models)]
            for name in order:
                synchronize(device)
                start = time.perf_counter()
                models[name](x)
                synchronize(device)
                if trial >= args.warmup:
                    times[name].append(1000 * (time.perf_counter() - start))
    return times


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--card", default=None, help="model shape (default gpt2.md on GPU, gpt2.sm on CPU)")
    parser.add_argument("--shapes", default=None,
                        help="BATCHxLENGTH,... (default the paper's 32x512,16x256,1x128 on GPU; 2x64,1x32,1x16 on CPU)")
    parser.add_argument("--trials", type=int, default=None, help="timed passes per variant (default 100 GPU, 10 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed passes first (default 10 GPU, 2 CPU)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--variants", default=None,
                        help="comma-separated rows, from base, every method that adds parameters and METHOD:merged "
                             "for those that merge (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default torch's)")
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(max(args.threads, 1))
    on_gpu = args.device.startswith("cuda")
    args.card = args.card or ("gpt2.md" if on_gpu else "gpt2.sm")
    args.trials = args.trials or (100 if on_gpu else 10)
    args.warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 2)
    return args


def settings_for(args) -> list[Setting]:
    """The shapes with the adapters' |Θ| for each, scaled to the card when it is not GPT-2 M."""
    scale = methods.card_count("full", args.card) / methods.card_count("full", "gpt2.md")
    defaults = PAPER_SHAPES if args.device.startswith("cuda") else CPU_SHAPES
    if args.shapes:
        shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
        params = [defaults[min(i, len(defaults) - 1)][2] for i in range(len(shapes))]
        defaults = tuple((b, n, p) for (b, n), p in zip(shapes, params, strict=True))
    return [Setting(b, n, p * scale) for b, n, p in defaults]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    every, skipped = variants_of(args.card)
    variants = [v for v in args.variants.split(",") if v] if args.variants else every
    unknown = [v for v in variants if v not in every]
    if unknown:
        print(f"--variants: {', '.join(unknown)}: not a row at {args.card}; choose from {', '.join(every)}",
              file=sys.stderr)
        return 2
    settings = settings_for(args)
    paper_like = args.card == "gpt2.md" and [(s.batch, s.length) for s in settings] == [s[:2] for s in PAPER_SHAPES]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{args.card} on {name}, {args.dtype}, {args.warmup} warm-up + {args.trials} timed passes per variant, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if not paper_like:
        print(f"not the paper's setting: {args.card} at {', '.join(f'{s.batch}x{s.length}' for s in settings)} "
              "(the paper: gpt2.md at 32x512, 16x256, 1x128), adapter sizes scaled by the cards' parameter counts")
    for name, reason in skipped.items():
        print(f"{name}: no row, {reason}")
    width = max(10, *map(len, variants))
    rows = []
    for index, setting in enumerate(settings):
        models, added = {}, {}
        for variant in variants:
            models[variant], added[variant] = build(variant, args.card, setting.params, device, DTYPES[args.dtype])
        times = time_setting(models, setting, args, device)
        base = statistics.mean(times["base"]) if "base" in times else None
        print(f"batch {setting.batch} x {setting.length} tokens, adapters |Θ| ~{setting.params / 1e6:.2f}M:")
        for variant in variants:
            mean, std = statistics.mean(times[variant]), statistics.stdev(times[variant]) if len(times[variant]) > 1 else 0.0
            slowdown = 100 * (mean / base - 1) if base else None
            paper = PAPER_MS.get(variant)
            paper_slowdown = (100 * (paper[index] / PAPER_MS["base"][index] - 1)
                              if paper and variant != "base" and paper_like else None)
            rows.append({"batch": setting.batch, "length": setting.length, "variant": variant,
                         "added_params": added[variant], "mean_ms": mean, "std_ms": std, "slowdown_pct": slowdown,
                         "paper_ms": paper[index] if paper and paper_like else None,
                         "paper_slowdown_pct": paper_slowdown})
            line = f"  {variant:<{width}} {mean:9.2f} ± {std:6.2f} ms  {added[variant]:>11,} added"
            if slowdown is not None and variant != "base":
                line += f"  {slowdown:+6.1f}%"
            if paper_slowdown is not None:
                line += f"  (paper {paper_slowdown:+.1f}%)"
            elif paper and not paper_like and variant != "base":
                line += f"  (paper, GPT-2 M {PAPER_SHAPES[index][0]}x{PAPER_SHAPES[index][1]}: " \
                        f"{100 * (paper[index] / PAPER_MS['base'][index] - 1):+.1f}%)"
            print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "card": args.card, "dtype": args.dtype,
                                               "trials": args.trials, "paper_setting": paper_like,
                                               "skipped": skipped, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
