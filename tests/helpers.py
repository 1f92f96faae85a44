"""Helpers shared by the test files (`from helpers import ...`: pytest puts tests/ on sys.path).

Test files import from here, never from each other: tiny model shapes and checkpoints, an
adapter that looks trained, copy-task data, small training steps in every --compile mode, a
counter of host reads, ranks started by hand, and the training log's records. (Our model
as a transformers one is `nlg.weights.to_transformers`, in the library: the benchmarks use it too.)
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nlg.methods.lora import LoRASettings
from nlg.methods.lora.layer import add_lora, lora_parameters
from nlg.model import GPT, GPTConfig
from nlg.training.batching import Example
from nlg.training.distributed import Runtime
from nlg.training.log import METRICS_FILE
from nlg.training.loss import CompletionLM
from nlg.training.settings import TrainConfig
from nlg.training.step import Stepper, train_step
from nlg.weights import save_pretrained

# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

TINY = GPTConfig(n_layer=2, n_head=4, n_embd=64, vocab_size=300, n_positions=64)


def tiny_config(**changes) -> GPTConfig:
    """A GPT-2 of 2 layers, 4 heads, width 64, vocabulary 300 and 64 positions, but for `changes`."""
    return replace(TINY, **changes)


def trained_like(model: GPT, seed: int = 1) -> GPT:
    """Give every LoRA parameter a nonzero value, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in lora_parameters(model).values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def trainable_base(directory: Path, config: GPTConfig, seed: int, scale: float = 25) -> Path:
    """A random GPT-2 saved as a Hugging Face directory, for runs of `nlg train` to start from.
    GPT-2's 0.02 initialisation leaves the logits too flat for a few steps to fit anything, so
    the (tied) embeddings are widened `scale` times."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(scale)
    return save_pretrained(model, directory)


def write_copy_task(path: Path, count: int, seed: int, vocab: int = 512, lengths: tuple[int, int] = (4, 11)) -> Path:
    """`count` encoded pairs whose completion repeats the context (ids 10..vocab-1, between
    lengths[0] and lengths[1] tokens, each half ending in id 0): learnable from scratch in a few
    steps. Equal lengths give batches that all share one shape."""
    gen = torch.Generator().manual_seed(seed)
    with path.open("w") as out:
        for _ in range(count):
            n = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=gen))
            context = torch.randint(10, vocab, (n,), generator=gen).tolist()
            out.write(json.dumps({"context": context + [0], "completion": context + [0]}) + "\n")
    return path


def hf_gpt2_dir(directory: Path, config: GPTConfig = TINY, seed: int = 0) -> Path:
    """A random transformers GPT-2 of `config`'s shape (transformers' own initialisation), saved
    as a Hugging Face directory. Skips the test without transformers."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    hf_config = transformers.GPT2Config(n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                                        vocab_size=config.vocab_size, n_positions=config.n_positions,
                                        bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(hf_config).save_pretrained(directory)
    return directory


def perturbed_gpt(config: GPTConfig, seed: int = 0) -> GPT:
    """A random GPT of `config` in eval mode, every parameter moved by noise away from its init."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def hf_gpt2(seed: int, n_layer=2, n_head=2, n_embd=128, vocab_size=1000, n_positions=64):
    """A random HF GPT-2 in eval mode whose every parameter is perturbed away from its init.
    Skips the test without transformers."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size,
                                     n_positions=n_positions, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """A transformers model's logits for `ids`."""
    with torch.no_grad():
        return model(ids).logits


def our_logits(model: GPT, ids: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, **kwargs)


def random_ids(vocab: int, batch: int = 2, length: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# Fine-tuning methods (nlg.methods)
# ---------------------------------------------------------------------------------------------

# Small settings of every method, as `nlg train` flags' values: top2 trains one of two blocks.
METHOD_SETTINGS: dict[str, dict] = {
    "lora": {"lora_dim": 2, "lora_alpha": 8.0, "lora_dropout": 0.0, "lora_targets": ("q", "v")},
    "full": {},
    "top2": {"top_layers": 1},
    "adapter-l": {"adapter_dim": 3},
    "adapter-h": {"adapter_dim": 5},
    "prefix": {"prefix_len": 3, "prefix_hidden": 16},
    "prefix-embed": {"prefix_len": 6},
    "vera": {"vera_rank": 32},
    "vblora": {"vblora_rank": 2, "vblora_num_vectors": 16, "vblora_vector_length": 16},
    # tinit 0, tfinal 1: a budget phase in runs of 2 steps and more (tests/methods/test_method_runs.py)
    "adalora": {"adalora_init_r": 4, "adalora_target_r": 2, "adalora_tinit": 0, "adalora_tfinal": 1},
}


def method_flags(name: str) -> list[str]:
    """`nlg train` flags for method `name` with METHOD_SETTINGS' values."""
    flags = ["--method", name]
    for flag, value in METHOD_SETTINGS[name].items():
        flags += [f"--{flag}", ",".join(value) if isinstance(value, tuple) else str(value)]
    return flags


def with_method(model: GPT, name: str, seed: int | None = 1) -> GPT:
    """`model` changed by method `name` (METHOD_SETTINGS); with a seed, every trainable
    parameter moved by noise, as training would (LoRA's B and the adapters' up leave zero)."""
    from nlg import methods

    method = methods.get(name)
    method.apply(model, methods.settings_of(name, METHOD_SETTINGS[name]))
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in method.trainable(model).values():
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
                param.add_((noise * 0.05).to(param.dtype))
    return model


# ---------------------------------------------------------------------------------------------
# Training steps
# ---------------------------------------------------------------------------------------------

STEP_CONFIG = tiny_config(n_layer=1, vocab_size=64)  # one layer: Inductor compiles it fastest


def random_examples(count: int, seed: int, vocab: int = STEP_CONFIG.vocab_size, completion: int = 14) -> list[Example]:
    """Random pairs of 55-62 tokens with `completion`-token completions: batches of 4 share one
    static shape (width 64, 64 loss slots), so a compiled step compiles once."""
    gen = torch.Generator().manual_seed(seed)
    return [Example(tuple(torch.randint(1, vocab, (n,), generator=gen).tolist()), n - completion)
            for n in torch.randint(55, 63, (count,), generator=gen).tolist()]


def write_examples(path: Path, examples: list[Example]) -> Path:
    """`examples` as an encoded jsonl file (`nlg data`'s {split}.jsonl), for `nlg train`."""
    with path.open("w") as out:
        for e in examples:
            out.write(json.dumps({"context": list(e.tokens[:e.n_context]), "completion": list(e.tokens[e.n_context:])}) + "\n")
    return path


def tiny_stepper(mode: str, *, device: str = "cpu", config: GPTConfig = STEP_CONFIG, dropout: float = 0.0,
                 clip: float = 0.0, grad_acc: int = 1) -> Stepper:
    """A Stepper of --compile `mode` over a seeded random GPT of `config` with LoRA (r 4, q and
    v), batches of 4, lr 1e-2 (no schedule), label smoothing 0.1."""
    torch.manual_seed(0)
    gpt = GPT(config).to(device)
    add_lora(gpt, rank=4, alpha=32, dropout=dropout, targets=("q", "v"))
    train = TrainConfig(train_data="", train_batch_size=4, grad_acc=grad_acc, seq_len=64, lr=1e-2,
                        clip=clip, label_smooth=0.1, method_settings=LoRASettings(dropout=dropout))
    return Stepper(CompletionLM(gpt), list(lora_parameters(gpt).values()), train,
                   Runtime(device=torch.device(device)), lambda step: 1.0, mode=mode)


def run_steps(stepper: Stepper, data: list[Example], steps: int, grad_acc: int = 1) -> None:
    """`steps` optimiser steps on consecutive groups of `grad_acc` batches of 4 of `data`."""
    for k in range(steps):
        group = data[4 * grad_acc * k:4 * grad_acc * (k + 1)]
        train_step(stepper, [stepper.batch(group[i:i + 4]) for i in range(0, len(group), 4)])


def adapter_of(stepper: Stepper) -> dict[str, torch.Tensor]:
    """The LoRA weights of a stepper's model, on the CPU."""
    return {n: p.detach().cpu().clone() for n, p in lora_parameters(stepper.lm.gpt).items()}


# ---------------------------------------------------------------------------------------------
# Host reads
# ---------------------------------------------------------------------------------------------


class HostReads(TorchDispatchMode):
    """Counts the operators, run inside it, that make the host wait for a tensor's value
    (.item(), int(), bool(), nonzero, boolean-mask indexing, ...): on a GPU each one stalls the
    queue of work. `counts` holds them by name."""

    READS = {"item", "_local_scalar_dense", "nonzero", "is_nonzero", "equal", "masked_select", "allclose"}

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.READS:
            self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def run_without_torch(code: str) -> str:
    """Run `code` in a fresh interpreter; its stdout, after checking it imported no torch module
    (the scoring-only install has none)."""
    check = "\nimport sys as _sys\nprint(sorted(m for m in _sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run([sys.executable, "-c", code + check], capture_output=True, text=True, check=True)
    *output, imported = result.stdout.splitlines()
    assert imported == "[]", f"torch was imported: {imported}"
    return "".join(line + "\n" for line in output)


def start_ranks(script: Path, argv: list[str], world_size: int = 2) -> list[subprocess.Popen]:
    """`python script *argv` once per rank, started by hand with torchrun's environment but no
    torchrun agent: nothing kills the survivors when a rank dies, so only the process group's
    own timeout can stop them. The caller must reap the processes (see `reap`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen([sys.executable, str(script), *argv], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def reap(procs: list[subprocess.Popen]) -> None:
    """Kill whichever of `procs` still runs and collect every one's output."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# ---------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------


def killed_run(argv: list[str], kill_at: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """`nlg train argv` killed as its `kill_at`-th step starts (a KeyboardInterrupt, as Ctrl-C
    raises: the run ends with exit code 130); the caller then resumes it, or looks at what it
    left."""
    import nlg.training.trainer as train_module

    real_step, calls = train_module.train_step, []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == kill_at:
            raise KeyboardInterrupt("simulated kill")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", dies)
    from nlg.train import main

    assert main(argv) == 130
    monkeypatch.setattr(train_module, "train_step", real_step)


def metrics(work_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    return [json.loads(line) for line in (work_dir / METRICS_FILE).read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    """The records without tokens_per_s, which no two runs share."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def assert_same_log(a: list[dict], b: list[dict], rel: float) -> None:
    """Two metrics logs hold the same records, numbers equal to `rel`, timing aside."""
    a, b = without_timing(a), without_timing(b)
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=rel), (x, y)


# ---------------------------------------------------------------------------------------------
# Beam search reference: the paper's algorithm, one context, plain Python, no cache, no early stop
# ---------------------------------------------------------------------------------------------


def reference_beam(model: GPT, context: list[int], cfg) -> list[int]:
    """nlg.beam's search for one context (cfg: a BeamConfig), as its docstring states it:
    every step recomputes the whole sequence, no cache, no batching, no early stop."""
    V = model.config.vocab_size
    eos = set(cfg.eos_ids)
    hyps = [([], 0.0)] + [([], -math.inf)] * (cfg.beam - 1)
    best, best_tokens = None, None

    def offer(tokens: list[int], score: float) -> None:
        nonlocal best, best_tokens
        final = score / len(tokens) ** cfg.length_penalty
        if best is None or final > best:
            best, best_tokens = final, tokens

    for step in range(cfg.eval_len):
        candidates = []
        for h, (tokens, score) in enumerate(hyps):
            if score == -math.inf:  # dead slot: every child is -inf too
                candidates += [(-math.inf, h, v) for v in range(V)]
                continue
            with torch.no_grad():
                logits = model(torch.tensor([context + tokens]))[0, -1].tolist()
            p = cfg.repetition_penalty
            for v in set(tokens):
                logits[v] = logits[v] * p if logits[v] < 0 else logits[v] / p
            if step < cfg.min_length:
                for e in eos:
                    logits[e] = -math.inf
            n = cfg.no_repeat_ngram_size
            if n > 0:
                prefix = tuple(tokens[len(tokens) - n + 1:]) if n > 1 else ()
                for j in range(len(tokens) - n + 1):
                    if tuple(tokens[j:j + n - 1]) == prefix:
                        logits[tokens[j + n - 1]] = -math.inf
            top = max(logits)
            log_z = top + math.log(sum(math.exp(x - top) for x in logits))
            candidates += [(score + logits[v] - log_z, h, v) for v in range(V)]
        candidates.sort(key=lambda c: -c[0])
        new = []
        for score, h, v in candidates[:cfg.beam]:
            tokens = hyps[h][0] + [v]
            if v in eos and score > -math.inf:
                offer(tokens, score)
                score = -math.inf
            new.append((tokens, score))
        hyps = new
    for tokens, score in hyps:
        if score > -math.inf:
            offer(tokens, score)
    return best_tokens


def cli_result(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """`nlg ARGV`'s exit status and stderr, run in this process (argparse-level errors exit
    through SystemExit)."""
    from nlg.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip()


# ---------------------------------------------------------------------------------------------
# Commands as a user runs them: exit codes, stderr lines, untouched files; the tiny LoRA run
# ---------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
BOM = b"\xef\xbb\xbf"
RUN_CONFIG = tiny_config(vocab_size=300)  # the base of conftest's `lora_run`
RUN_EOS = 299


def nlg(*argv: object) -> int:
    """`nlg ARGV` in this process: its exit code (argparse's exits included)."""
    from nlg import cli

    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as done:
        return int(done.code or 0)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def error_line(capsys) -> str:
    """stderr, asserted to be exactly one line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err


def write_encoded(path: Path, n: int = 24) -> Path:
    """`n` random encoded pairs (6 context tokens and RUN_EOS, 5 completion tokens and RUN_EOS)."""
    generator = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(n):
        context = torch.randint(0, RUN_EOS, (6,), generator=generator).tolist() + [RUN_EOS]
        completion = torch.randint(0, RUN_EOS, (5,), generator=generator).tolist() + [RUN_EOS]
        lines.append(json.dumps({"context": context, "completion": completion}) + "\n")
    path.write_text("".join(lines))
    return path


def train_argv(lora_run: dict[str, Path], work: Path, *extra: object) -> list[object]:
    """`nlg train` as conftest's `lora_run` ran it (LoRA, a checkpoint every step), into `work`."""
    return ["train", "--train_data", lora_run["data"], "--init_checkpoint", lora_run["base"], "--work_dir", work,
            "--train_batch_size", 4, "--seq_len", 32, "--warmup_step", 0, "--lora_dropout", 0,
            "--log_interval", 1, "--save_interval", 1, "--device", "cpu", *extra]


def damage(path: Path, how: str) -> None:
    """Cut `path` to half its size ("truncate") or flip a bit of its last byte ("flip")."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))
