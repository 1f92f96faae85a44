"""Prefix tuning (nlg.methods.prefix): PreLayer and PreEmbed train only their prefix, PEFT reads
our files with our logits and we read PEFT's own with its logits, positions as transformers gives
them after a past, and bad input (a prefix too long, another model size, another PEFT method) is
one line, exit 2. (Counts, save/load, beam = batch-1 reference, resume: test_methods.py and
test_method_runs.py, parametrised over every method.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import METHOD_SETTINGS, cli_result, metrics, tiny_config, with_method

from nlg import methods
from nlg.cli import main as nlg
from nlg.files import InputError
from nlg.methods.prefix import REPARAM_FILE
from nlg.model import GPT
from nlg.weights import from_pretrained, save_pretrained, to_transformers

CONFIG = tiny_config(vocab_size=128, n_positions=32)
PREFIXES = ("prefix", "prefix-embed")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A random base whose attention is strong enough for a prompt to steer it (GPT-2's 0.02
    initialisation leaves attention outputs too small), and a task a prefix can learn: every
    completion is the same four tokens whatever the context."""
    root = tmp_path_factory.mktemp("prefix")
    torch.manual_seed(0)
    model = GPT(CONFIG)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(5)
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(10)
            block.attn.c_proj.weight.mul_(10)
    save_pretrained(model, root / "base")
    gen = torch.Generator().manual_seed(1)
    lines = [{"context": torch.randint(10, 128, (5,), generator=gen).tolist() + [0],
              "completion": [21, 42, 63, 84, 0]} for _ in range(24)]
    (root / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"base": root / "base", "train": root / "train.jsonl"}


def train_argv(files: dict, work: Path, name: str, *extra) -> list[str]:
    return ["train", "--train_data", str(files["train"]), "--init_checkpoint", str(files["base"]),
            "--work_dir", str(work), "--train_batch_size", "8", "--seq_len", "24", "--warmup_step", "0",
            "--lr", "3e-1" if name == "prefix-embed" else "3e-2", "--label_smooth", "0", "--log_interval", "1",
            "--save_interval", "9", "--eval_interval", "1000", "--device", "cpu", "--method", name,
            "--prefix_len", "6", *map(str, extra)]


@pytest.mark.parametrize("name", PREFIXES)
def test_the_loss_falls_and_only_the_prefix_trains(files, tmp_path, capsys, name: str) -> None:
    work = tmp_path / "run"
    assert nlg(train_argv(files, work, name, "--max_step", 9)) == 0
    losses = [r["loss"] for r in metrics(work) if "loss" in r]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    out = capsys.readouterr().out
    shape, settings = methods.Shape.of(CONFIG), methods.settings_of(name, {"prefix_len": 6})
    method = methods.get(name)
    assert f"{method.count(shape, settings):,} trainable" in out
    assert f"stores n·2·L·d = {6 * 2 * 2 * 64:,}" in out if name == "prefix" else "trains and stores n·d = 384" in out
    # The frozen model is bit-identical; the checkpoint holds the prefix only.
    checkpoint = work / "checkpoint-9"
    base = dict(from_pretrained(files["base"]).named_parameters())
    model = from_pretrained(files["base"])
    method.apply(model, settings)
    method.load(model, checkpoint, settings)
    for key, param in model.named_parameters():
        if key.startswith("prefix."):
            assert key not in base
        else:
            assert torch.equal(param, base[key]), key
    expected = {"adapter_config.json", "adapter_model.safetensors", "method.json", "training_state.pt", "manifest.json"}
    assert {p.name for p in checkpoint.iterdir()} == expected | ({REPARAM_FILE} if name == "prefix" else set())


def trained(name: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return with_method(GPT(tiny_config()).eval(), name).eval()


def peft_logits(peft_model, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PEFT's logits at the real tokens (prompt tuning returns the virtual tokens' too)."""
    with torch.no_grad():
        logits = peft_model(input_ids=x, attention_mask=mask).logits
    return logits[:, -x.shape[1]:]


@pytest.mark.parametrize("name", PREFIXES)
def test_peft_reads_our_files_with_our_logits(tmp_path, name: str) -> None:
    peft = pytest.importorskip("peft")
    model = trained(name)
    base = to_transformers(_base_of(model))
    settings = methods.settings_of(name, METHOD_SETTINGS[name])
    methods.get(name).save(model, tmp_path, settings, base_model="tiny")
    theirs = peft.PeftModel.from_pretrained(base, tmp_path).eval()
    x = torch.randint(0, 300, (3, 9))
    # A right-padded row too: its real tokens see the prefix and themselves only, in both.
    mask = torch.ones_like(x)
    mask[1, 6:] = 0
    with torch.no_grad():
        ours = model(x)
        padded = model(x, key_mask=mask.bool())
    torch.testing.assert_close(peft_logits(theirs, x), ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(peft_logits(theirs, x, mask)[1, :6], padded[1, :6], atol=1e-5, rtol=1e-5)


def _base_of(model: GPT) -> GPT:
    """A copy of `model`'s base weights (the prefix left out)."""
    base = GPT(model.config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("prefix.")}
    base.load_state_dict(state)
    return base.eval()


def peft_made(kind: str, hf, tmp_path: Path, projection: bool = True):
    """A prefix (PEFT PREFIX_TUNING, with or without its MLP) or prompt (PROMPT_TUNING) adapter
    built and saved by PEFT itself on transformers' GPT2LMHeadModel, its weights moved off their
    initialisation."""
    peft = pytest.importorskip("peft")
    if kind == "prefix":
        config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4,
                                         prefix_projection=projection, encoder_hidden_size=24)
    else:
        config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    model = peft.get_peft_model(hf, config).eval()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.prompt_encoder.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.save_pretrained(tmp_path)
    return model


@pytest.mark.parametrize(("kind", "projection"), [("prefix", True), ("prefix", False), ("prefix-embed", None)])
def test_we_read_a_peft_made_adapter_with_peft_logits(tmp_path, kind: str, projection) -> None:
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    base = GPT(tiny_config()).eval()
    theirs = peft_made(kind, to_transformers(base), tmp_path, bool(projection))
    found, settings, record = methods.detect(tmp_path)
    assert (found.name, settings.prefix_len, record) == (kind, 4, None)
    found.load(base, tmp_path, settings)
    found.prepare_inference(base)
    x = torch.randint(0, 300, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(base(x), peft_logits(theirs, x), atol=1e-5, rtol=1e-5)


def test_real_tokens_sit_after_the_prefix_as_transformers_places_them_after_a_past() -> None:
    """Our folded prefix as transformers' past_key_values (with the mask's prefix columns): the
    same logits, so the real tokens take positions n, n+1, ..."""
    transformers = pytest.importorskip("transformers")
    model = trained("prefix")
    methods.get("prefix").prepare_inference(model)
    hf = to_transformers(_base_of(model))
    past = model.prefix.past(model)
    cache = transformers.DynamicCache()
    for layer, (k, v) in enumerate(past):
        cache.update(k.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1), layer)
    x = torch.randint(0, 300, (2, 6))
    n = model.prefix.length
    with torch.no_grad():
        theirs = hf(input_ids=x, past_key_values=cache, attention_mask=torch.ones(2, n + 6, dtype=torch.long)).logits
        torch.testing.assert_close(model(x), theirs, atol=1e-5, rtol=1e-5)


def test_another_peft_method_or_model_size_is_named(tmp_path) -> None:
    torch.manual_seed(0)
    small = GPT(tiny_config()).eval()
    peft_made("prefix", to_transformers(small), tmp_path / "prefix", projection=False)
    other = GPT(tiny_config(n_embd=32, n_head=2))
    with pytest.raises(InputError) as error:
        methods.get("prefix").load(other, tmp_path / "prefix", None)
    message = str(error.value)
    assert "num_layers 2, token_dim 64, num_attention_heads 4; the model has num_layers 2, token_dim 32" in message
    with pytest.raises(InputError, match="peft_type 'PREFIX_TUNING'; --method prefix-embed reads PEFT PROMPT_TUNING"):
        methods.get("prefix-embed").load(small, tmp_path / "prefix", None)
    lora = with_method(GPT(tiny_config()), "lora")
    methods.get("lora").save(lora, tmp_path / "lora", methods.settings_of("lora", METHOD_SETTINGS["lora"]), None)
    with pytest.raises(InputError, match="peft_type 'LORA'; --method prefix reads PEFT PREFIX_TUNING"):
        methods.get("prefix").load(small, tmp_path / "lora", None)


def test_bad_prefix_input_is_one_line_exit_2(files, tmp_path, capsys) -> None:
    work = tmp_path / "never"
    argv = train_argv(files, work, "prefix", "--max_step", 1)
    code, err = cli_result([*argv, "--prefix_len", "25"], capsys)  # 25 + the longest pair's 11 > 32
    assert code == 2 and err.count("\n") == 0
    assert (f"--prefix_len 25: with the longest pair (11 tokens, {files['train']}) it needs 36 positions; "
            "the model has n_positions 32") in err
    code, err = cli_result([*argv, "--prefix_len", "40"], capsys)
    assert code == 2 and err.count("\n") == 0 and "--prefix_len 40: must be between 1 and the model's n_positions 32" in err
    code, err = cli_result([*train_argv(files, work, "prefix-embed"), "--prefix_hidden", "8"], capsys)
    assert code == 2 and "--prefix_hidden is a setting of --method prefix, not of --method prefix-embed" in err
    assert not list(work.glob("checkpoint-*")) and not (work / "train_config.json").exists()

    # A PEFT prefix of another model size given to nlg beam: both sides named, no output.
    torch.manual_seed(0)
    peft_made("prefix", to_transformers(GPT(tiny_config(n_embd=32, n_head=2))), tmp_path / "peft", projection=True)
    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"context": [11, 12, 0], "completion": [13, 0]}) + "\n")
    out = tmp_path / "out.jsonl"
    beam = ["beam", "--data", str(data), "--init_checkpoint", str(files["base"]), "--output_file", str(out),
            "--no_progress"]
    code, err = cli_result([*beam, "--checkpoint", str(tmp_path / "peft")], capsys)
    assert code == 2 and err.count("\n") == 0 and not out.exists()
    assert "adapter for num_layers 2, token_dim 32" in err and "the model has num_layers 2, token_dim 64" in err
    # A prefix directory given as a LoRA adapter, and to LoRA's analysis: named as a prefix.
    code, err = cli_result([*beam, "--lora_checkpoint", str(tmp_path / "peft")], capsys)
    assert code == 2 and "holds a checkpoint of method prefix, not LoRA" in err
    code, err = cli_result(["analyze", str(tmp_path / "peft")], capsys)
    assert code == 2 and err.count("\n") == 0 and "method PEFT PREFIX_TUNING; nlg analyze reads LoRA" in err


@pytest.mark.parametrize("name", PREFIXES)
def test_folding_for_decoding_keeps_the_logits(name: str) -> None:
    """prepare_inference folds PreLayer's MLP and PreEmbed's prompt into the past itself."""
    from nlg.methods.prefix.layers import FoldedPrefix, join_past, split_past

    flat = torch.randn(3, 2 * 2 * 64)
    assert torch.equal(join_past(split_past(flat, 2, 4)), flat)
    model = trained(name)
    x = torch.randint(0, 300, (2, 7))
    with torch.no_grad():
        before = model(x)
        methods.get(name).prepare_inference(model)
        assert isinstance(model.prefix, FoldedPrefix)
        torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)


def test_the_runs_count_line_puts_trained_and_stored_beside_the_papers() -> None:
    card = methods.CARD_SHAPES
    note = methods.get("prefix").note(card["gpt2.md"], methods.settings_of("prefix", {"prefix_len": 5}))
    assert "trains 25,744,896" in note and "stores n·2·L·d = 245,760" in note
    assert "L·d·(l_p + l_i) = 122,880 at l_p=5" in note and "the paper prints 0.35M for gpt2.md" in note
    note = methods.get("prefix").note(card["gpt2.lg"], methods.settings_of("prefix", {"prefix_len": 5}))
    assert "stores n·2·L·d = 460,800" in note and "the paper prints 0.77M for gpt2.lg" in note


def test_beam_leaves_the_prefix_its_positions(tmp_path, capsys) -> None:
    """A context budget counts the prefix's positions: one line naming both when none is left."""
    from dataclasses import replace

    torch.manual_seed(0)
    base = save_pretrained(GPT(replace(CONFIG, vocab_size=50257)), tmp_path / "base")  # nlg beam's eos 50256
    model = from_pretrained(base)
    settings = methods.settings_of("prefix", {"prefix_len": 6})
    methods.get("prefix").apply(model, settings)
    methods.get("prefix").save(model, tmp_path / "prefix", settings, base_model=str(base))
    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"context": [11, 12, 0], "completion": [13, 0]}) + "\n")
    out = tmp_path / "out.jsonl"
    beam = ["beam", "--data", str(data), "--init_checkpoint", str(base), "--checkpoint", str(tmp_path / "prefix"), "--output_file", str(out), "--no_progress", "--beam", "2"]
    code, err = cli_result([*beam, "--eval_len", "26"], capsys)  # 6 + 26 = 32: no position left for a context
    assert code == 2 and err.count("\n") == 0 and not out.exists()
    assert "eval_len 26 and the prefix's 6 positions leave no room for a context" in err
    assert cli_result([*beam, "--eval_len", "4"], capsys)[0] == 0 and out.exists()


def test_a_folded_prefix_decodes_but_does_not_resume_the_mlp(tmp_path) -> None:
    model = trained("prefix")
    settings = methods.settings_of("prefix", METHOD_SETTINGS["prefix"])
    methods.get("prefix").save(model, tmp_path, settings, base_model=None)
    (tmp_path / REPARAM_FILE).unlink()  # as PEFT writes it
    again = GPT(tiny_config())
    methods.get("prefix").apply(again, settings)
    with pytest.raises(InputError, match=f"no {REPARAM_FILE}, only the folded prefix"):
        methods.get("prefix").load(again, tmp_path, settings)
