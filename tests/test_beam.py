"""Beam search: equal to a plain reference implementation of the paper's algorithm, batch-size
independent, and the `nlg beam` command's file (one line per distinct context)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import HostReads, reap, reference_beam, start_ranks

from nlg.beam import (
    BeamConfig,
    apply_repetition_penalty_,
    ban_repeated_ngrams_,
    beam_search,
    distinct_contexts,
    generate,
    load_model,
    main,
)
from nlg.model import GPT, GPTConfig, card_config
from nlg.weights import published_layout

V = 64  # small vocabulary: the reference below loops over it
EOS = 7


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_model(eos_pull: float = 7.0, seed: int = 0) -> GPT:
    """A 2-layer float64 GPT with peaked next-token distributions that likes to emit EOS.

    float64 and large logits make near-ties (where cache vs. recompute rounding could flip a
    choice) practically impossible. `eos_pull` adds that much to EOS's logit at every
    position, through ln_f's bias along EOS's (tied) embedding.
    """
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=V, n_positions=128))
    model = model.double().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(3)
        model.transformer.ln_f.weight.fill_(20.0)
        w = model.transformer.wte.weight[EOS]
        model.transformer.ln_f.bias.copy_(eos_pull * w / w.norm() ** 2)
    return model


def random_contexts(count: int, seed: int = 1, low: int = 3, high: int = 12) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (count,), generator=gen).tolist()
    return [torch.randint(0, V, (n,), generator=gen).tolist() for n in lengths]


SETTINGS = {
    "paper": BeamConfig(beam=4, eval_len=16, length_penalty=0.8, no_repeat_ngram_size=3, eos_ids=(EOS,)),
    "bigram_reppen_minlen": BeamConfig(beam=4, eval_len=14, length_penalty=1.0, no_repeat_ngram_size=2,
                                       repetition_penalty=1.3, min_length=3, eos_ids=(EOS,)),
    "two_eos_reppen_below_1": BeamConfig(beam=5, eval_len=12, length_penalty=0.0, no_repeat_ngram_size=0,
                                         repetition_penalty=0.7, eos_ids=(EOS, 28)),
    "unigram_ban_negative_lp": BeamConfig(beam=3, eval_len=12, length_penalty=-0.5, no_repeat_ngram_size=1,
                                          min_length=5, eos_ids=(EOS,)),
    "greedy_long_lp": BeamConfig(beam=1, eval_len=12, length_penalty=2.0, no_repeat_ngram_size=4,
                                 repetition_penalty=1.5, eos_ids=(EOS,)),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_beam_search_equals_reference(name: str) -> None:
    cfg = SETTINGS[name]
    model = tiny_model()
    contexts = random_contexts(10)
    expected = [reference_beam(model, c, cfg) for c in contexts]
    got = beam_search(model, contexts, cfg)  # one batch, left-padded, cached, early stop
    assert got == expected
    # The settings really exercise eos: some results end in one, at different lengths.
    ended = [len(p) for p in expected if p[-1] in cfg.eos_ids]
    assert ended and len(set(ended)) > 1 or cfg.beam == 1
    assert beam_search(model, contexts, replace(cfg, early_stop=False)) == expected


@pytest.mark.parametrize("eos_pull", [7.0, 11.0])
def test_early_stop_changes_work_not_results(eos_pull: float) -> None:
    """Stopping a context early is exact for any length penalty (the bound's sign matters)."""
    model = tiny_model(eos_pull=eos_pull)
    rows = []
    model.register_forward_hook(lambda module, args, output: rows.append(output.shape[0]))
    contexts = random_contexts(10, seed=2)
    for lp in (-1.0, 0.0, 0.8, 1.5, 3.0):
        cfg = BeamConfig(beam=4, eval_len=16, length_penalty=lp, no_repeat_ngram_size=3, eos_ids=(EOS,))
        rows.clear()
        early = beam_search(model, contexts, cfg)
        early_rows = sum(rows)
        rows.clear()
        full = beam_search(model, contexts, replace(cfg, early_stop=False))
        assert early == full, f"length_penalty {lp}"
        if lp <= 0.8:
            assert early_rows < sum(rows)  # finished contexts really left the batch


def test_batch_size_does_not_change_results() -> None:
    model = tiny_model(eos_pull=6.0)
    contexts = random_contexts(16, seed=5, low=2, high=20)
    cfg = SETTINGS["paper"]
    one = generate(model, contexts, cfg, batch_size=1)
    eight = generate(model, contexts, cfg, batch_size=8)
    assert one == eight
    assert one == [reference_beam(model, c, cfg) for c in contexts[:4]] + one[4:]


@pytest.mark.parametrize("check_every", [2, 5, 64])
def test_checking_early_stop_every_k_steps_changes_work_not_results(check_every: int) -> None:
    """A done context may run on until the next check: it finishes nothing better, so results
    equal checking every step (and the reference), at any batch size and length penalty."""
    model = tiny_model(eos_pull=6.0)
    rows = []
    model.register_forward_hook(lambda module, args, output: rows.append(output.shape[0]))
    contexts = random_contexts(12, seed=5, low=2, high=20)
    for name in ("paper", "two_eos_reppen_below_1", "unigram_ban_negative_lp"):
        cfg = SETTINGS[name]
        rows.clear()
        expected = generate(model, contexts, cfg, batch_size=12, check_every=1)
        every_step = sum(rows)
        assert expected[:3] == [reference_beam(model, c, cfg) for c in contexts[:3]]
        for batch_size in (1, 5, 12):
            rows.clear()
            assert generate(model, contexts, cfg, batch_size=batch_size, check_every=check_every) == expected
        checked = sum(rows)
        rows.clear()
        generate(model, contexts, replace(cfg, early_stop=False), batch_size=12)
        if check_every < cfg.eval_len:  # rows still leave the batch, only later
            assert every_step <= checked < sum(rows), name


def test_a_search_waits_for_the_device_only_at_its_checks() -> None:
    model, contexts = tiny_model(), random_contexts(6)
    cfg = SETTINGS["paper"]  # eval_len 16
    with HostReads() as reads:
        beam_search(model, contexts, replace(cfg, early_stop=False))
    assert reads.total == 0  # the best-so-far bookkeeping stays on the device
    with HostReads() as reads:
        beam_search(model, contexts, cfg, check_every=4)
    assert 1 <= reads.counts["item"] <= 16 // 4  # one read per check; shrinking the batch adds one
    assert reads.total - reads.counts["item"] <= reads.counts["item"]


def test_generated_sequences_respect_bans_and_min_length() -> None:
    model = tiny_model(eos_pull=9.0)
    for n in (1, 2, 3):
        cfg = BeamConfig(beam=4, eval_len=16, no_repeat_ngram_size=n, min_length=4, eos_ids=(EOS,))
        for predict in beam_search(model, random_contexts(6, seed=n), cfg):
            ngrams = [tuple(predict[i:i + n]) for i in range(len(predict) - n + 1)]
            assert len(ngrams) == len(set(ngrams))
            assert EOS not in predict[:4]  # eos blocked while fewer than 4 tokens exist


def test_every_token_banned_gives_no_candidates_not_nan() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=6, n_positions=32)).eval()
    # 5 non-eos tokens, each usable once (unigram ban), eos blocked for 8 steps: every
    # hypothesis runs out of tokens at step 5 and nothing can finish.
    blocked = BeamConfig(beam=3, eval_len=10, no_repeat_ngram_size=1, min_length=8, eos_ids=(0,))
    assert beam_search(model, [[1, 2], [3]], blocked) == [[], []]
    allowed = replace(blocked, min_length=3)
    for predict in beam_search(model, [[1, 2], [3]], allowed):
        assert predict[-1] == 0 and len(predict) == len(set(predict)) >= 4


def test_repetition_penalty_matches_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 20, generator=gen, dtype=torch.float64)
    history = torch.randint(0, 20, (6, 9), generator=gen)
    expected = logits.clone()
    for row in range(6):
        for v in set(history[row].tolist()):
            x = expected[row, v]
            expected[row, v] = x * 1.7 if x < 0 else x / 1.7
    assert torch.equal(apply_repetition_penalty_(logits.clone(), history, 1.7), expected)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 12])
def test_ngram_ban_matches_loop(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    logits = torch.randn(8, 5, generator=gen)
    history = torch.randint(0, 5, (8, 10), generator=gen)  # 5 tokens: repeats are common
    expected = logits.clone()
    for row in range(8):
        tokens = history[row].tolist()
        seen: dict[tuple, list[int]] = {}
        for j in range(len(tokens) - n + 1):
            seen.setdefault(tuple(tokens[j:j + n - 1]), []).append(tokens[j + n - 1])
        if len(tokens) >= n:
            for v in seen.get(tuple(tokens[len(tokens) - n + 1:]) if n > 1 else (), []):
                expected[row, v] = -math.inf
    got = ban_repeated_ngrams_(logits.clone(), history, n)
    assert torch.equal(got, expected)
    assert (got == -math.inf).any() or n == 12


def test_distinct_contexts_first_occurrence() -> None:
    assert distinct_contexts([[1, 2], [3], [1, 2], [3], [4], [1, 2]]) == [0, 1, 4]


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def write_encoded(path: Path, contexts: list[list[int]]) -> None:
    with open(path, "w") as handle:
        for context in contexts:
            handle.write(json.dumps({"context": context + [50256], "completion": [11, 50256]}) + "\n")


def cli_contexts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(3)
    distinct = [torch.randint(0, 50000, (n,), generator=gen).tolist() for n in (5, 9, 3, 7)]
    return [distinct[i] for i in (0, 0, 1, 0, 2, 1, 3, 3)]


def read_output(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


CLI_SETTINGS = ["--beam", "3", "--eval_len", "6", "--no_progress"]


def test_cli_one_line_per_distinct_context(tmp_path: Path) -> None:
    data = tmp_path / "test.jsonl"
    write_encoded(data, cli_contexts())
    out = tmp_path / "out"
    assert main(["--data", str(data), "--model-card", "gpt2.tiny", "--batch-size", "2",
                 "--work-dir", str(out), "--output-file", "predict.jsonl", *CLI_SETTINGS]) == 0
    records = read_output(out / "predict.jsonl")
    assert [r["id"] for r in records] == [0, 2, 4, 6]
    contexts = [c + [50256] for c in cli_contexts()]
    assert [r["context"] for r in records] == [contexts[i] for i in (0, 2, 4, 6)]
    model = load_model(None, "gpt2.tiny", None, seed=0)
    cfg = BeamConfig(beam=3, eval_len=6, eos_ids=(50256, 628))
    assert [r["predict"] for r in records] == generate(model, [contexts[i] for i in (0, 2, 4, 6)], cfg)


def test_cli_merges_adapter(tmp_path: Path) -> None:
    from nlg.methods.lora.layer import add_lora, lora_parameters, merge
    from nlg.methods.lora.peft_files import save_adapter

    torch.manual_seed(11)
    base = GPT(card_config("gpt2.tiny"))
    torch.save(published_layout(base.state_dict()), tmp_path / "base.bin")
    add_lora(base, rank=2, alpha=8, targets=("q", "v"))
    with torch.no_grad():
        for param in lora_parameters(base).values():
            param.normal_(0, 0.5)
    save_adapter(base, tmp_path / "adapter")
    merge(base)
    data = tmp_path / "test.jsonl"
    write_encoded(data, cli_contexts())
    out = tmp_path / "predict.jsonl"
    argv = ["--data", str(data), "--init_checkpoint", str(tmp_path / "base.bin"),
            "--model_card", "gpt2.tiny", "--lora_checkpoint", str(tmp_path / "adapter"),
            "--eos_token_id", "628", "--eos_token_id", "50256", "--output_file", str(out), *CLI_SETTINGS]
    assert main(argv) == 0
    contexts = [c + [50256] for c in cli_contexts()]
    cfg = BeamConfig(beam=3, eval_len=6, eos_ids=(50256, 628))
    expected = generate(base.eval(), [contexts[i] for i in (0, 2, 4, 6)], cfg)
    assert [r["predict"] for r in read_output(out)] == expected
    # Without the adapter the outputs differ, so the adapter really was applied.
    plain = load_model(str(tmp_path / "base.bin"), "gpt2.tiny", None)
    assert generate(plain, [contexts[i] for i in (0, 2, 4, 6)], cfg) != expected


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nlg.cli import main as nlg

    data = tmp_path / "test.jsonl"
    write_encoded(data, cli_contexts())
    assert nlg(["beam", "--data", str(data), "--output_file", str(tmp_path / "x.jsonl")]) == 2
    assert "--model_card" in capsys.readouterr().err
    assert nlg(["beam", "--data", str(data), "--model_card", "gpt2.tiny", "--eos_token_id", "60000",
                "--output_file", str(tmp_path / "x.jsonl")]) == 2
    assert "vocabulary" in capsys.readouterr().err
    assert nlg(["beam", "--data", str(data), "--model_card", "gpt2.tiny", "--eos_token_id", "-1",
                "--output_file", str(tmp_path / "x.jsonl")]) == 2
    assert "vocabulary" in capsys.readouterr().err
    data.write_text('{"context": [1, 2], "completion": [3]}\nnot json\n')
    assert nlg(["beam", "--data", str(data), "--model_card", "gpt2.tiny"]) == 2
    assert f"{data}:2" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_torchrun_two_processes_match_one(tmp_path: Path) -> None:
    data = tmp_path / "test.jsonl"
    write_encoded(data, cli_contexts())
    single = tmp_path / "single.jsonl"
    assert main(["--data", str(data), "--model_card", "gpt2.tiny", "--output_file", str(single),
                 *CLI_SETTINGS]) == 0
    double = tmp_path / "double.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         "-m", "nlg.beam", "--data", str(data), "--model_card", "gpt2.tiny", "--output_file", str(double),
         *CLI_SETTINGS],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert double.read_text() == single.read_text()


STUCK_RANK = """
import os, sys, time
import nlg.beam as beam
real_generate = beam.generate

def stuck(*args, **kwargs):  # rank 1 stops answering: alive, but it never reaches the gather
    if os.environ["RANK"] == "1":
        time.sleep(3600)
    return real_generate(*args, **kwargs)

beam.generate = stuck
sys.exit(beam.main(sys.argv[1:]))
"""


def test_a_stuck_rank_makes_the_other_fail_instead_of_hanging(tmp_path: Path) -> None:
    # Two processes started by hand (no torchrun agent to stop the survivor): rank 0 must give up
    # on the gather after --dist_timeout seconds (the default would be 600), not wait forever.
    data = tmp_path / "test.jsonl"
    write_encoded(data, cli_contexts())
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_RANK)
    output = tmp_path / "predict.jsonl"
    procs = start_ranks(script, ["--data", str(data), "--model_card", "gpt2.tiny", "--device", "cpu",
                                 "--dist_timeout", "5", "--output_file", str(output), *CLI_SETTINGS])
    try:
        assert procs[0].wait(timeout=120) != 0
        assert not output.exists()
    finally:
        reap(procs)



def test_another_base_than_the_checkpoints_is_refused_naming_both(tmp_path: Path, capsys) -> None:
    """Issue 29 case 4: method.json records the base's identity; nlg beam refuses another base
    of the same shape (one line naming both) unless --allow_other_base, which says so."""
    from helpers import METHOD_SETTINGS, tiny_config, with_method

    from nlg import methods
    from nlg.beam import load_model
    from nlg.files import InputError
    from nlg.weights import save_pretrained

    bases = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        bases.append(save_pretrained(GPT(tiny_config()), tmp_path / f"base{seed}"))
    model = with_method(GPT(tiny_config()), "lora")
    checkpoint = tmp_path / "ck"
    settings = methods.settings_of("lora", METHOD_SETTINGS["lora"])
    methods.get("lora").save(model, checkpoint, settings, str(bases[0]))
    methods.write_record(checkpoint, methods.Record(
        method="lora", settings=METHOD_SETTINGS["lora"], model=model.config.to_dict(), trainable_params=1,
        base_model=str(bases[0]), base_identity=methods.base_identity(bases[0])))
    load_model(str(bases[0]), None, str(checkpoint))  # its own base: fine
    with pytest.raises(InputError) as error:
        load_model(str(bases[1]), None, str(checkpoint))
    text = str(error.value)
    assert "\n" not in text and str(bases[0]) in text and str(bases[1]) in text and "--allow_other_base" in text
    load_model(str(bases[1]), None, str(checkpoint), allow_other_base=True)
    assert "warning: --allow_other_base:" in capsys.readouterr().err
    with pytest.raises(InputError, match=r"the base given is a model card \(random weights\)"):
        methods.check_base(methods.read_record(checkpoint), str(checkpoint), None, allow=False)
