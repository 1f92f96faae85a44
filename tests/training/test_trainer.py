"""nlg.training.trainer: learning, gradient accumulation, DDP equivalence, exact resume and faults.

Every run trains a 2-layer, 32-wide GPT on real E2E pairs (a slice of the shared valid split,
BPE-encoded, then token ids renumbered densely so the vocabulary is ~1k instead of 50257:
the same sequences, a much cheaper softmax).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    REPO,
    RUN_EOS,
    assert_same_log,
    error_line,
    killed_run,
    metrics,
    nlg,
    reap,
    start_ranks,
    train_argv,
    trainable_base,
    without_timing,
)

from nlg.cli import main as nlg_main
from nlg.cli import run_main
from nlg.datasets.e2e import parse_pairs
from nlg.files import read_lines
from nlg.methods.lora.peft_files import read_adapter
from nlg.model import GPTConfig
from nlg.pairs import encode_pairs
from nlg.tokenizer import load_tokenizer
from nlg.train import main
from nlg.training.checkpoints import verify_checkpoint
from nlg.training.trainer import lr_factor

N_TRAIN, N_VALID = 240, 48


# ---------------------------------------------------------------------------------------------
# Fixtures: real pairs with a dense vocabulary, and a tiny random base checkpoint
# ---------------------------------------------------------------------------------------------


def write_pairs(path: Path, pairs: list[tuple[list[int], list[int]]]) -> Path:
    path.write_text("".join(json.dumps({"context": c, "completion": r}) + "\n" for c, r in pairs))
    return path


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, e2e_raw_dir, vocab_dir) -> dict:
    """train.jsonl / valid.jsonl / small.jsonl from the first 288 valid pairs, ids renumbered."""
    lines = read_lines(e2e_raw_dir / "valid.txt")[: N_TRAIN + N_VALID]
    pairs = encode_pairs(parse_pairs(lines, "valid.txt"), load_tokenizer(vocab_dir))
    used = sorted({t for p in pairs for t in p.context + p.completion})
    dense = {token: i for i, token in enumerate(used)}
    renumbered = [([dense[t] for t in p.context], [dense[t] for t in p.completion]) for p in pairs]
    root = tmp_path_factory.mktemp("e2e")
    return {
        "train": write_pairs(root / "train.jsonl", renumbered[:N_TRAIN]),
        "valid": write_pairs(root / "valid.jsonl", renumbered[N_TRAIN:]),
        "small": write_pairs(root / "small.jsonl", renumbered[:36]),
        "vocab": len(used),
        "eos": dense[50256],
    }


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, e2e) -> Path:
    """A Hugging Face-style directory (config.json + model.safetensors) of a tiny random GPT-2."""
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=e2e["vocab"], n_positions=128)
    return trainable_base(tmp_path_factory.mktemp("base"), config, seed=0)


def args(e2e, base_dir, work_dir, *extra, train="train", valid=True) -> list[str]:
    """A small, fast run: no warmup, no dropout, short seq_len cap, logs every step."""
    out = ["--train_data", str(e2e[train]), "--init_checkpoint", str(base_dir),
           "--work_dir", str(work_dir), "--train_batch_size", "8", "--seq_len", "96",
           "--warmup_step", "0", "--lr", "2e-3", "--log_interval", "1",
           "--eval_interval", "1000", "--save_interval", "1000", "--device", "cpu"]
    if "--full_finetune" not in extra:  # a LoRA flag with another method is refused
        out += ["--lora_dropout", "0"]
    if valid:
        out += ["--valid_data", str(e2e["valid"])]
    return out + [str(x) for x in extra]


def adapter(checkpoint: Path) -> dict[str, torch.Tensor]:
    return read_adapter(checkpoint)[1]


# ---------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------


def test_schedules():
    assert [lr_factor(s, "linear", 4, 12) for s in (0, 2, 4, 8, 12, 20)] == [0, 0.5, 1, 0.5, 0, 0]
    assert [lr_factor(s, "constant", 2, 10) for s in (1, 2, 9)] == [0.5, 1, 1]
    assert lr_factor(5, "cosine", 0, 10) == pytest.approx(0.5)
    assert lr_factor(10, "cosine", 0, 10) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------


def test_loss_falls_on_real_pairs(e2e, base_dir, tmp_path, capsys):
    work = tmp_path / "run"
    code = nlg_main(["train", *args(e2e, base_dir, work, "--max_epoch", 2, "--lr", "1e-2",
                                    "--lora_targets", "q,k,v,o,fc,proj", "--lora_dim", 8,
                                    "--label_smooth", 0.1, "--group_by_length")])
    assert code == 0
    out = capsys.readouterr().out
    assert "trainable" in out and f"final checkpoint: {work / 'checkpoint-60'}" in out
    records = metrics(work)
    train = [r["loss"] for r in records if "loss" in r]
    valid = [r for r in records if "valid_loss" in r]
    assert len(train) == 60 and [r["step"] for r in valid] == [30, 60]  # each epoch's end
    assert sum(train[-10:]) / 10 < sum(train[:10]) / 10 - 0.3
    first_valid = valid[0]["valid_loss"]
    assert valid[-1]["valid_loss"] < first_valid
    assert valid[-1]["valid_ppl"] == pytest.approx(math.exp(valid[-1]["valid_loss"]))
    assert all({"step", "epoch", "lr", "tokens_per_s"} <= set(r) for r in records if "loss" in r)
    config = json.loads((work / "train_config.json").read_text())
    assert config["trainable_parameters"] == 2 * (3 * 2 * 8 * 32 + 8 * (32 + 32) + 8 * (32 + 128)
                                                  + 8 * (128 + 32))


def test_grad_accumulation_matches_larger_batch(e2e, base_dir, tmp_path):
    assert main(args(e2e, base_dir, tmp_path / "big", "--max_step", 3, valid=False)) == 0
    assert main(args(e2e, base_dir, tmp_path / "acc", "--max_step", 3, "--train_batch_size", 4,
                     "--grad_acc", 2, valid=False)) == 0
    big, acc = adapter(tmp_path / "big/checkpoint-3"), adapter(tmp_path / "acc/checkpoint-3")
    for name in big:
        torch.testing.assert_close(acc[name], big[name], atol=1e-6, rtol=0)
    assert_same_log(metrics(tmp_path / "acc"), metrics(tmp_path / "big"), rel=1e-6)


@pytest.mark.parametrize("mode", ["none", "static"])  # DDP, or one all-reduce of the flat gradients
def test_two_process_ddp_matches_one_process_with_double_batch(e2e, base_dir, tmp_path, mode):
    assert main(args(e2e, base_dir, tmp_path / "one", "--max_step", 3, "--clip", 0.5, "--compile", mode)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "nlg.train", *args(e2e, base_dir, tmp_path / "two", "--max_step", 3, "--clip", 0.5,
                                  "--train_batch_size", 4, "--compile", mode)],
        env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    one, two = adapter(tmp_path / "one/checkpoint-3"), adapter(tmp_path / "two/checkpoint-3")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=0)
    # The same loss log, validation included (evaluated in shards across both ranks).
    assert_same_log(metrics(tmp_path / "two"), metrics(tmp_path / "one"), rel=1e-5)


@pytest.mark.parametrize("mode", ["none", "static"])
def test_killed_and_resumed_run_equals_uninterrupted(e2e, base_dir, tmp_path, monkeypatch, mode):
    # 36 pairs / batch 8 = 5 steps per epoch: the run crosses an epoch boundary after resuming.
    # Dropout on, so restoring the RNG state matters; log every 2 steps, saved every 3, so the
    # checkpoint also has to carry a half-filled loss window.
    settings = ["--max_step", 9, "--lora_dropout", 0.1, "--log_interval", 2, "--save_interval", 3,
                "--eval_interval", 4, "--warmup_step", 2, "--compile", mode]
    full = tmp_path / "full"
    assert main(args(e2e, base_dir, full, *settings, train="small")) == 0

    broken = tmp_path / "broken"
    killed_run(args(e2e, base_dir, broken, *settings, train="small"), 5, monkeypatch)  # after checkpoint-3
    assert [r["step"] for r in metrics(broken)][-1] == 4
    assert sorted(p.name for p in broken.glob("checkpoint-*")) == ["checkpoint-3"]
    state = torch.load(broken / "checkpoint-3/training_state.pt", weights_only=True)
    assert state["step"] == 3 and state["batch_in_epoch"] == 3

    assert main(args(e2e, base_dir, broken, *settings, "--resume", "latest", train="small")) == 0
    expected, got = adapter(full / "checkpoint-9"), adapter(broken / "checkpoint-9")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0)
    assert without_timing(metrics(broken)) == without_timing(metrics(full))

    # Resuming under settings that change the data order is refused, by name.
    assert run_main(main, args(e2e, base_dir, broken, *settings, "--resume", str(broken / "checkpoint-3"),
                               "--train_batch_size", 4, train="small")) == 2


def test_fresh_run_refuses_a_work_dir_with_checkpoints(e2e, base_dir, tmp_path, capsys):
    work = tmp_path / "run"
    assert main(args(e2e, base_dir, work, "--max_step", 1, train="small", valid=False)) == 0
    assert run_main(main, args(e2e, base_dir, work, "--max_step", 1, train="small", valid=False)) == 2
    assert "--resume latest" in capsys.readouterr().err


def test_full_finetune_learns_writes_a_model_and_resumes_exactly(e2e, base_dir, tmp_path, capsys):
    """--full_finetune (the CPU demo's pre-training) trains everything and saves whole models."""
    from nlg.weights import from_pretrained

    settings = ["--full_finetune", "--max_step", 6, "--save_interval", 3, "--lr", "3e-3"]
    full = tmp_path / "full"
    assert main(args(e2e, base_dir, full, *settings, train="small")) == 0
    assert "full fine-tuning" in capsys.readouterr().out
    train = [r["loss"] for r in metrics(full) if "loss" in r]
    assert train[-1] < train[0]
    model = from_pretrained(full / "checkpoint-6")  # a plain model directory, no adapter
    base = from_pretrained(base_dir)
    assert not torch.equal(model.transformer.h[0].mlp.c_fc.weight, base.transformer.h[0].mlp.c_fc.weight)

    # Resume from the run's own step-3 checkpoint in a fresh work_dir: the same step 6 must come out.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    assert main(args(e2e, base_dir, resumed, *settings, "--resume", "latest", train="small")) == 0
    x = torch.randint(0, e2e["vocab"], (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(resumed / "checkpoint-6")(x), model(x), atol=1e-6, rtol=0)

    # Static shapes hold every gradient (the tied embedding's too) in their flat buffer: the
    # same training up to float rounding.
    static = tmp_path / "static"
    assert main(args(e2e, base_dir, static, *settings, "--compile", "static", train="small")) == 0
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(static / "checkpoint-6")(x), model(x), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, where", [
    ('{"context": [1, 2], "completion": [3]}\n{"context": [1], "completion": [2]}\nnot json\n', ":3:"),
    ('{"context": [1, 2], "completion": [3]}\n{"context": [1, "a"], "completion": [2]}\n', ":2:"),
    ('{"context": [1, 2], "completion": [3, 99999999]}\n', ":1:"),
    ("", "no pairs"),
])
def test_bad_input_fails_before_training_with_file_and_line(e2e, base_dir, tmp_path, capsys, content, where):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    work = tmp_path / "run"
    argv = args(e2e, base_dir, work, "--max_step", 1)
    argv[argv.index("--train_data") + 1] = str(bad)
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err
    assert f"{bad}" in err and where in err
    assert not work.exists()  # nothing was trained or written


def test_missing_valid_file_is_named(e2e, base_dir, tmp_path, capsys):
    argv = args(e2e, base_dir, tmp_path / "run", "--max_step", 1)
    argv[argv.index("--valid_data") + 1] = str(tmp_path / "nope.jsonl")
    assert run_main(main, argv) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(e2e, base_dir, tmp_path, capsys):
    # An absurd learning rate makes the first update ~1e30; the next forward overflows.
    work = tmp_path / "run"
    code = run_main(main, args(e2e, base_dir, work, "--max_step", 5, "--lr", "1e30",
                               "--weight_decay", 0, "--save_interval", 1, train="small", valid=False))
    assert code == 1
    err = capsys.readouterr().err
    assert "non-finite" in err and "step 2" in err and str(work / "checkpoint-1") in err
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-1"]
    state = torch.load(work / "checkpoint-1/training_state.pt", weights_only=True)
    assert state["step"] == 1
    assert all(torch.isfinite(t).all() for t in adapter(work / "checkpoint-1").values())


DYING_RANK = """
import os, sys
import nlg.training.trainer as train
real_step, calls = train.train_step, []

def dying(*args, **kwargs):  # rank 1 vanishes (no cleanup at all) during its second step
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 2:
        os._exit(3)
    return real_step(*args, **kwargs)

train.train_step = dying
import nlg.train
sys.exit(nlg.train.main(sys.argv[1:]))
"""


def test_a_dead_rank_makes_the_other_exit(e2e, base_dir, tmp_path):
    # Two processes started by hand (no torchrun agent to kill the survivor): when rank 1 dies,
    # rank 0 must fail its next collective (or time out after --dist_timeout), not hang.
    import time

    script = tmp_path / "dying.py"
    script.write_text(DYING_RANK)
    argv = args(e2e, base_dir, tmp_path / "run", "--max_step", 20, "--train_batch_size", 4,
                "--dist_timeout", 15, valid=False)
    procs = start_ranks(script, argv)
    try:
        assert procs[1].wait(timeout=120) == 3
        died = time.monotonic()
        assert procs[0].wait(timeout=60) != 0
        assert time.monotonic() - died < 45  # well before anything like "forever"
    finally:
        reap(procs)


# ---------------------------------------------------------------------------------------------
# A --seq_len that cuts away every completion token
# ---------------------------------------------------------------------------------------------


def test_a_seq_len_that_leaves_no_completion_token_stops_before_training(lora_run, tmp_path, capsys):
    """Contexts of 7 tokens (6 and the separator) under --seq_len 7: the loss would be 0.0000
    at every step, and an adapter that learnt nothing would be saved."""
    work = tmp_path / "w"
    assert nlg(*train_argv(lora_run, work, "--seq_len", 7, "--max_step", 2)) == 2
    assert error_line(capsys) == (f"nlg train: error: {lora_run['data']}: no pair keeps a completion token: all 24 "
                                  "pairs' contexts fill --seq_len 7 (contexts of 7 to 7 tokens: --seq_len 8 "
                                  "keeps a completion token of every pair)\n")
    assert not work.exists()


def test_a_seq_len_that_empties_some_pairs_says_how_many(lora_run, tmp_path, capsys):
    records = [json.loads(line) for line in lora_run["data"].read_text().splitlines()]
    for record in records[::3]:  # 8 of 24 contexts become 21 tokens long
        record["context"] *= 3
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = train_argv(lora_run, tmp_path / "w", "--seq_len", 10, "--max_step", 1)
    argv[argv.index(lora_run["data"])] = data
    assert nlg(*argv) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0] == (f"warning: {data}: 8 of 24 pairs lose every completion token to --seq_len 10 "
                                   "(contexts of 7 to 21 tokens: --seq_len 22 keeps a completion token of every "
                                   "pair); they add nothing to the loss")
    assert "data: 24 training pairs (24 cut to --seq_len 10, 8 with no completion token left)" in out


def test_a_validation_file_without_completion_tokens_is_refused_too(lora_run, tmp_path, capsys):
    valid = tmp_path / "valid.jsonl"
    valid.write_text(json.dumps({"context": list(range(1, 40)), "completion": [5, RUN_EOS]}) + "\n")
    assert nlg(*train_argv(lora_run, tmp_path / "w", "--valid_data", valid, "--max_step", 1)) == 2
    assert error_line(capsys) == (f"nlg train: error: {valid}: no pair keeps a completion token: all 1 pairs' "
                                  "contexts fill --seq_len 32 (contexts of 39 to 39 tokens: --seq_len 40 keeps "
                                  "a completion token of every pair)\n")


# ---------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM end training with one line, exit 130 / 143
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_training_with_one_line_and_whole_checkpoints(lora_run, tmp_path, sig, code):
    """A real process, signalled mid-run (a checkpoint every step, so mostly while one is written)."""
    from nlg.files import lock_file
    from nlg.training.checkpoints import list_checkpoints

    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    argv = [str(a) for a in train_argv(lora_run, work, "--max_step", 100_000, "--log_interval", 100_000)[1:]]
    proc = subprocess.Popen([sys.executable, "-m", "nlg.train", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(list_checkpoints(work)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code
    latest = list_checkpoints(work)[-1]
    step = int(err.split("interrupted at step ")[-1].split(";")[0]) if "interrupted at step " in err else -1
    assert err == f"nlg train: interrupted at step {step}; {latest[1]} is the latest\n"
    assert latest[0] <= step
    for _, checkpoint in list_checkpoints(work):
        verify_checkpoint(checkpoint)  # every checkpoint whole: the one being written went whole
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]  # nor left a temporary one
    with lock_file(work / "train.lock"):  # released
        pass


def test_an_interrupt_before_any_checkpoint_says_so(lora_run, tmp_path, monkeypatch, capsys):
    from helpers import killed_run

    work = tmp_path / "work"
    killed_run([str(a) for a in train_argv(lora_run, work, "--max_step", 3)[1:]], 1, monkeypatch)
    assert capsys.readouterr().err == "nlg train: interrupted at step 0; no checkpoint was written\n"
