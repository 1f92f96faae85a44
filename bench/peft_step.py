"""One training step of each method in PEFT's format: ours against PEFT's implementation of the
same method, on the same model, the same adapter weights and the same batches (issue 27 item 7).

    python bench/peft_step.py                                    # CPU: 4 layers x 256, a minute or two
    python bench/peft_step.py --methods lora,vera --repeats 10
    python bench/peft_step.py --device cuda --n_layer 24 --n_embd 1024 --n_head 16 --vocab 50257

For every registered method (nlg.methods.names()) whose saved directory is one PEFT reads (an
adapter_config.json whose peft_type PEFT knows: lora, dora, vera, vblora, fourierft, ia3,
prefix, prefix-embed, and adalora once it is registered): a random GPT-2 of the flags' shape
(dropout off in the base, as `nlg train` runs it) gets the method at its defaults (but see
`SAME_AS_PEFT`: the same parameters train on both sides), its trainable parameters moved by
noise as training would, and is saved by the method's own `save`; `peft.PeftModel.from_pretrained(
GPT2LMHeadModel with the same weights, that directory, is_trainable=True)` opens it. PEFT
refuses is_trainable for prompt learning: prefix-embed's file goes in by get_peft_model +
set_peft_model_state_dict, and prefix's MLP (our prefix_reparametrisation.safetensors; PEFT's
file holds only the folded past) into PEFT's PrefixEncoder with prefix_projection, so that
both sides train Li & Liang's reparametrisation. Before timing, both models in eval mode must
agree on the logits of one batch (max |Δ| printed) and the trainable counts are compared.

A step, the same for both sides: logits for a (batch x length) batch of random token ids,
cross-entropy against the next tokens at every position (float32 softmax), backward, one AdamW
step over the side's trainable parameters, gradients set to None. The method's own dropout is
on (both models in train mode), at the same probability. Not timed: AdaLoRA's per-step budget
hook (ours: Method.training_hook; PEFT's: update_and_allocate), which is no part of the step.

Timing: --warmup untimed steps per side, then --repeats rounds; in each round every method
runs --steps steps of ours and --steps of PEFT's, the two sides and the methods taking turns in
rotating order, so a change in machine load hits all alike. Per method: ms/step (mean ± std
over rounds) ours and PEFT's, ours / PEFT of the means (below 1: ours is faster) and the range
of the rounds' own ratios (the two sides of a round ran back to back, under the same load), all
from the same run; no thresholds. torch's intra-op threads are fixed (--threads) for both sides.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nlg import methods
from nlg.model import GPT, GPTConfig
from nlg.weights import to_transformers

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Settings other than a method's defaults, so that both sides train the same parameters. PEFT
# adapts GPT-2's fused c_attn whole: our LoRA and DoRA slices q,v (the paper's) are one c_attn
# adapter of rank 2r in its files, whose off-block B entries PEFT trains too, so both sides run
# qkv (one A, rank r, on all of c_attn); our (IA)³ trains k, v, ff by default (the paper's),
# PEFT's vector covers q as well.
SAME_AS_PEFT = {"lora": {"lora_targets": "qkv"}, "dora": {"dora_targets": "qkv"}, "ia3": {"ia3_targets": "q,k,v,ff"}}
REPARAM_FILE = "prefix_reparametrisation.safetensors"  # nlg.methods.prefix: the MLP, ours only


def peft_type(directory: Path) -> str | None:
    """The peft_type of a saved directory when PEFT can read it, else None."""
    from peft import PeftType

    path = directory / "adapter_config.json"
    if not path.is_file():
        return None
    kind = json.loads(path.read_text()).get("peft_type")
    return kind if kind in {t.value for t in PeftType} else None


def build_pair(name: str, base: GPT, work: Path, device: torch.device, dtype: torch.dtype):
    """(ours, PEFT's, what our directory is) for method `name`, or a string saying why it is skipped."""
    from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict

    method = methods.get(name)
    settings = methods.settings_of(name, SAME_AS_PEFT.get(name, {}))
    ours = copy.deepcopy(base)
    try:
        method.apply(ours, settings)
    except (methods.InputError, ValueError) as error:
        return f"not at this shape ({error})"
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # nonzero, as trained (LoRA's B starts at zero)
        for param in method.trainable(ours).values():
            param.add_((0.02 * torch.randn(param.shape, generator=generator)).to(param.dtype))
    directory = work / name
    method.save(ours, directory, settings, None)
    kind = peft_type(directory)
    if kind is None:
        return "its files are not PEFT's"
    hf = to_transformers(base, attn_implementation="sdpa")
    config = PeftConfig.from_pretrained(str(directory))
    if config.is_prompt_learning:  # from_pretrained refuses is_trainable for these: PEFT's other way in
        from safetensors.torch import load_file

        config.inference_mode = False
        if kind == "PREFIX_TUNING" and (directory / REPARAM_FILE).is_file():
            # We train the prefix through Li & Liang's MLP, and so does PEFT with prefix_projection;
            # its PrefixEncoder's embedding and transform.{0,2} are our embedding and mlp.{0,2}.
            config.prefix_projection, config.encoder_hidden_size = True, settings.prefix_hidden
            theirs = get_peft_model(hf, config)
            state = load_file(str(directory / REPARAM_FILE))
            theirs.prompt_encoder["default"].load_state_dict({k.replace("mlp.", "transform."): v
                                                              for k, v in state.items()})
        else:
            theirs = get_peft_model(hf, config)
            set_peft_model_state_dict(theirs, load_file(str(directory / "adapter_model.safetensors")))
    else:
        theirs = PeftModel.from_pretrained(hf, str(directory), is_trainable=True)
    return ours.to(device=device, dtype=dtype), theirs.to(device=device, dtype=dtype), kind


def trainable(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def logits_of(model, x: torch.Tensor) -> torch.Tensor:
    """(B, T, vocab) at x's T positions: PEFT's prompt tuning returns its virtual tokens' too, first."""
    out = model(x)
    return (out if isinstance(out, torch.Tensor) else out.logits)[:, -x.shape[1]:]


class Side:
    """One model, its AdamW and its step."""

    def __init__(self, model, lr: float):
        self.model = model.train()
        self.params = trainable(model)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        logits = logits_of(self.model, x[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n_layer", type=int, default=4)
    parser.add_argument("--n_embd", type=int, default=256)
    parser.add_argument("--n_head", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024,
                        help="vocabulary (default 1024: small, so that the methods' layers, not the shared head, "
                             "carry the step; GPT-2's is 50257)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=64, help="tokens per sequence")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every method PEFT reads)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of timed steps")
    parser.add_argument("--steps", type=int, default=3, help="consecutive timed steps per side and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both sides")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args(argv)
    for key in ("n_layer", "n_embd", "n_head", "vocab", "batch", "batches", "repeats", "steps", "threads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} {getattr(args, key)}: must be at least 1")
    if args.length < 2 or args.warmup < 0 or args.n_embd % args.n_head:
        parser.error("--length must be at least 2, --warmup at least 0, --n_embd a multiple of --n_head")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()  # its GPT-2 config's token ids lie outside a small vocabulary
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    names = methods.names()
    chosen = [m for m in args.methods.split(",") if m] if args.methods else names
    unknown = [m for m in chosen if m not in names]
    if unknown:
        print(f"--methods: {', '.join(unknown)} not a method; choose from {', '.join(names)}", file=sys.stderr)
        return 2
    config = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, vocab_size=args.vocab,
                       n_positions=max(args.length + 64, 128))
    torch.manual_seed(0)
    base = GPT(config)
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"GPT-2 {args.n_layer} layers x {args.n_embd} ({args.n_head} heads), vocabulary {args.vocab}, "
          f"batch {args.batch} x {args.length}, {args.dtype} on {device_name}, threads {torch.get_num_threads()}, "
          f"{args.warmup} warm-up + {args.repeats} x {args.steps} timed steps per side")
    if "adalora" not in names:
        print("adalora: not registered in nlg.methods (not on this branch yet): no row")
    generator = torch.Generator().manual_seed(2)
    batches = [torch.randint(0, args.vocab, (args.batch, args.length), generator=generator).to(device)
               for _ in range(args.batches)]
    pairs, rows = {}, []
    with tempfile.TemporaryDirectory() as work:
        for name in chosen:
            built = build_pair(name, base, Path(work), device, dtype)
            if isinstance(built, str):
                print(f"{name}: skipped, {built}")
                continue
            ours, theirs, kind = built
            with torch.no_grad():
                diff = float((logits_of(ours.eval(), batches[0]).float()
                              - logits_of(theirs.eval(), batches[0]).float()).abs().max())
            pairs[name] = (Side(ours, args.lr), Side(theirs, args.lr), kind, diff)
    if not pairs:
        print("no method to time", file=sys.stderr)
        return 2
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in pairs}
    for ours, theirs, _, _ in pairs.values():
        for index in range(args.warmup):
            for side in (ours, theirs):
                side.step(batches[index % len(batches)])
    for round_ in range(args.repeats):
        order = list(pairs)[round_ % len(pairs):] + list(pairs)[:round_ % len(pairs)]
        for position, name in enumerate(order):
            sides = [0, 1] if (round_ + position) % 2 == 0 else [1, 0]  # who goes first alternates
            for which in sides:
                side = pairs[name][which]
                synchronize(device)
                start = time.perf_counter()
                for step in range(args.steps):
                    side.step(batches[(round_ * args.steps + step) % len(batches)])
                synchronize(device)
                times[name][which].append(1000 * (time.perf_counter() - start) / args.steps)
    width = max(len(name) for name in pairs)
    print(f"  {'method':<{width}}  {'ours ms/step':>16}  {'PEFT ms/step':>16}  {'ours/PEFT':>9}  "
          f"{'rounds':>11}  trainable")
    for name, (ours, theirs, kind, diff) in pairs.items():
        mine, peft_ms = times[name]
        mean, peft_mean = statistics.mean(mine), statistics.mean(peft_ms)
        std = statistics.stdev(mine) if len(mine) > 1 else 0.0
        peft_std = statistics.stdev(peft_ms) if len(peft_ms) > 1 else 0.0
        count, peft_count = sum(p.numel() for p in ours.params), sum(p.numel() for p in theirs.params)
        agree = "agree" if count == peft_count else "DIFFER"
        paired = [a / b for a, b in zip(mine, peft_ms, strict=True)]  # each round's two sides ran back to back
        print(f"  {name:<{width}}  {mean:8.2f} ± {std:5.2f}  {peft_mean:8.2f} ± {peft_std:5.2f}  {mean / peft_mean:9.2f}"
              f"  {min(paired):5.2f}–{max(paired):<5.2f}  {count:,} ours, {peft_count:,} PEFT's {kind}: {agree}; "
              f"logits max |Δ| {diff:.1e}", flush=True)
        rows.append({"method": name, "peft_type": kind, "ours_ms": mean, "ours_std_ms": std, "peft_ms": peft_mean,
                     "peft_std_ms": peft_std, "ratio": mean / peft_mean,
                     "round_ratios": paired, "ours_trainable": count,
                     "peft_trainable": peft_count, "counts_agree": count == peft_count, "logits_max_diff": diff})
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name, "dtype": args.dtype, "threads": args.threads,
                                               "shape": {"n_layer": args.n_layer, "n_embd": args.n_embd,
                                                         "n_head": args.n_head, "vocab": args.vocab,
                                                         "batch": args.batch, "length": args.length},
                                               "repeats": args.repeats, "steps": args.steps, "rows": rows},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
