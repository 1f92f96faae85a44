"""`--method dora` (nlg.methods.dora): the count against PEFT's, PEFT's files both ways (PEFT's own
classes read ours with our logits, ours read PEFT's), merged = unmerged, bad files in one line,
and `nlg train` / `--resume` / `nlg beam` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import (
    cli_result,
    hf_gpt2_dir,
    killed_run,
    metrics,
    tiny_config,
    trainable_base,
    write_copy_task,
)
from safetensors.torch import load_file, save_file

from nlg import methods
from nlg.cli import main as nlg
from nlg.methods.dora.layer import dora_modules
from nlg.model import GPT
from nlg.weights import from_pretrained, to_transformers

pytestmark = pytest.mark.usefixtures("single_thread")

DORA = methods.get("dora")
SMALL = {"dora_dim": 2, "dora_alpha": 8.0, "dora_dropout": 0.0, "dora_targets": ("q", "v")}


def settings(**changes):
    return DORA.settings({**SMALL, **changes})


def trained(model: GPT, s, seed: int = 1) -> GPT:
    """`model` with DoRA `s`, every trainable parameter moved off its initialisation."""
    DORA.apply(model, s)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in DORA.trainable(model).values():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval()


def base(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config()).eval()


def peft_config(peft, targets: list[str], r: int, alpha: float, **extra):
    return peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, fan_in_fan_out=True, use_dora=True,
                           **extra)


# ---------------------------------------------------------------------------------------------
# Counts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("targets, peft_targets", [(("qkv",), ["c_attn"]), (("qkv", "fc"), ["c_attn", "c_fc"]),
                                                   (("o", "proj"), ["c_proj"])])
def test_count_equals_peft_trainable_count(targets, peft_targets) -> None:
    peft = pytest.importorskip("peft")
    s = settings(dora_targets=targets, dora_dim=3)
    hf = to_transformers(base())
    theirs = peft.get_peft_model(hf, peft_config(peft, peft_targets, 3, 8.0))
    trainable, _ = theirs.get_nb_trainable_parameters()
    assert DORA.count(methods.Shape.of(tiny_config()), s) == trainable
    ours = trained(base(), s)
    assert sum(p.numel() for p in DORA.trainable(ours).values()) == trainable
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == set(DORA.trainable(ours))


def test_count_of_slices_is_lora_plus_the_magnitudes_of_their_module() -> None:
    """q,v (the default): LoRA's r·(d + d) per slice and the magnitude of all of c_attn (3d)."""
    shape = methods.Shape.of(tiny_config())
    ours = trained(base(), settings())
    assert DORA.count(shape, settings()) == sum(p.numel() for p in DORA.trainable(ours).values())
    assert DORA.count(shape, settings()) == 2 * (2 * 2 * (64 + 64) + 3 * 64)
    assert methods.card_count("dora", "gpt2.md") == 24 * (2 * 4 * 2048 + 3 * 1024) == 466_944


# ---------------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------------


def test_untrained_dora_is_the_base_model_and_merging_changes_nothing() -> None:
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        expected = base()(x)
        model = base()
        DORA.apply(model, settings())
        assert torch.equal(model(x), expected)
        model = trained(base(), settings(dora_targets=("q", "k", "v", "o", "fc", "proj")))
        unmerged = model(x)
        DORA.prepare_inference(model)
        assert all(m.merged for m in dora_modules(model).values())
        torch.testing.assert_close(model(x), unmerged, atol=1e-5, rtol=0)
        for module in dora_modules(model).values():
            module.unmerge()
        torch.testing.assert_close(model(x), unmerged, atol=1e-5, rtol=0)


def test_the_layer_is_the_papers_equation() -> None:
    """W' = m · (W0 + ΔW) / ||W0 + ΔW||_c, per output row (our (out x in) weight)."""
    model = trained(base(), settings(dora_targets=("qkv",)))
    layer = dora_modules(model)["transformer.h.0.attn.c_attn"]
    x = torch.randn(3, 64)
    with torch.no_grad():
        V = layer.weight + layer.scaling * layer.lora_B["qkv"] @ layer.lora_A["qkv"]
        W = layer.dora_magnitude[:, None] * V / V.norm(dim=1, keepdim=True)
        torch.testing.assert_close(layer(x), x @ W.T + layer.bias, atol=1e-5, rtol=0)


def test_the_norm_gets_no_gradient() -> None:
    """The paper's Section 4.3: ||W0 + ΔW||_c is a constant in backpropagation."""
    model = trained(base(), settings(dora_targets=("qkv",))).train()
    layer = dora_modules(model)["transformer.h.0.attn.c_attn"]
    x = torch.randn(3, 64)
    layer(x).sum().backward()
    A, B, m = layer.lora_A["qkv"], layer.lora_B["qkv"], layer.dora_magnitude
    with torch.no_grad():
        n = (layer.weight + layer.scaling * B @ A).norm(dim=1)
    A2, B2, m2 = (t.detach().clone().requires_grad_() for t in (A, B, m))
    out = (m2 / n)[None] * (x @ layer.weight.T + layer.scaling * x @ A2.T @ B2.T) + layer.bias
    out.sum().backward()
    for ours, expected in ((A.grad, A2.grad), (B.grad, B2.grad), (m.grad, m2.grad)):
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# PEFT's files, both ways
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("targets", [("q", "v"), ("qkv", "fc"), ("k", "o", "proj")])
def test_peft_reads_our_files_with_our_logits(tmp_path, targets) -> None:
    peft = pytest.importorskip("peft")
    hf = to_transformers(base())
    model = trained(base(), settings(dora_targets=targets))
    DORA.save(model, tmp_path, settings(dora_targets=targets), base_model="tiny")
    assert json.loads((tmp_path / "adapter_config.json").read_text())["use_dora"] is True
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path).eval()
    x = torch.randint(0, 300, (3, 9))
    mask = torch.ones_like(x)
    mask[1, 5:] = 0  # a right-padded row
    with torch.no_grad():
        ours = model(x)
        torch.testing.assert_close(theirs(x).logits, ours, atol=1e-5, rtol=0)
        padded = theirs(input_ids=x, attention_mask=mask).logits
        torch.testing.assert_close(padded[1, :5], model(x[1:2, :5])[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(padded[0], ours[0], atol=1e-5, rtol=0)


def peft_dora_dir(tmp_path: Path, targets: list[str], vocab_size: int = 300) -> tuple[Path, Path, object]:
    """A base saved as a Hugging Face directory and a DoRA adapter that PEFT made and saved on it
    (its weights moved off their initialisation); PEFT's model too."""
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    hf_gpt2_dir(tmp_path / "base", tiny_config(vocab_size=vocab_size))
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    theirs = peft.get_peft_model(hf, peft_config(peft, targets, 4, 16, init_lora_weights=False)).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in theirs.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    theirs.save_pretrained(tmp_path / "adapter")
    return tmp_path / "base", tmp_path / "adapter", theirs


@pytest.mark.parametrize("targets", [["c_attn"], ["c_attn", "c_fc"]])
def test_a_peft_dora_adapter_is_recognised_and_loads_with_peft_logits(tmp_path, targets) -> None:
    base_dir, adapter, theirs = peft_dora_dir(tmp_path, targets)
    method, found, record = methods.detect(adapter)
    assert (method.name, record) == ("dora", None)
    assert found.targets == tuple({"c_attn": "qkv", "c_fc": "fc"}[t] for t in targets) and found.rank == 4
    ours = from_pretrained(base_dir)
    DORA.load(ours, adapter, found)
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        expected = theirs(x).logits
        torch.testing.assert_close(ours.eval()(x), expected, atol=1e-5, rtol=0)
        DORA.prepare_inference(ours)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)


def test_nlg_beam_decodes_a_peft_dora_adapter(tmp_path) -> None:
    from nlg.beam import BeamConfig, beam_search, load_model

    base_dir, adapter, _ = peft_dora_dir(tmp_path, ["c_attn"], vocab_size=50257)  # 50256 always ends a text
    data = write_copy_task(tmp_path / "test.jsonl", 3, seed=2, vocab=300, lengths=(4, 6))
    out = tmp_path / "predict.jsonl"
    assert nlg(["beam", "--data", str(data), "--init_checkpoint", str(base_dir), "--checkpoint", str(adapter),
                "--beam", "2", "--eval_len", "4", "--eos_token_id", "628", "--no_progress",
                "--output_file", str(out)]) == 0
    got = [json.loads(line)["predict"] for line in out.read_text().splitlines()]
    model = load_model(str(base_dir), None, str(adapter))
    contexts = [json.loads(line)["context"] for line in data.read_text().splitlines()]
    cfg = BeamConfig(beam=2, eval_len=4, length_penalty=0.8, no_repeat_ngram_size=4, eos_ids=(50256, 628))
    assert got == beam_search(model, contexts, cfg) and len(got) == 3


def test_save_then_load_is_exact_and_recognised_without_method_json(tmp_path) -> None:
    s = settings(dora_targets=("q", "v", "fc"))
    model = trained(base(), s)
    DORA.save(model, tmp_path, s, base_model="tiny")
    found, found_settings, _ = methods.detect(tmp_path)
    assert found.name == "dora" and found_settings == s
    loaded = base()
    DORA.apply(loaded, s)
    DORA.load(loaded, tmp_path, s)
    x = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


@pytest.mark.parametrize("damage, message", [
    ("drop", r"tensor transformer\.h\.1\.attn\.c_attn\.lora_magnitude_vector: missing"),
    ("shape", r"tensor transformer\.h\.1\.attn\.c_attn\.lora_magnitude_vector has shape \(5,\)"),
    ("nan", r"tensor transformer\.h\.1\.attn\.c_attn\.lora_magnitude_vector has 1 non-finite values"),
])
def test_a_bad_magnitude_is_one_line_naming_file_and_tensor(tmp_path, capsys, damage, message) -> None:
    s = settings()
    DORA.save(trained(base(), s), tmp_path / "a", s, base_model="tiny")
    weights = tmp_path / "a" / "adapter_model.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata()  # nlg's: the slices q and v
    tensors = load_file(str(weights))
    key = "base_model.model.transformer.h.1.attn.c_attn.lora_magnitude_vector"
    if damage == "drop":
        del tensors[key]
    elif damage == "shape":
        tensors[key] = torch.ones(5)
    else:
        tensors[key][0] = float("nan")
    save_file(tensors, str(weights), metadata=metadata)
    loaded = base()
    DORA.apply(loaded, s)
    with pytest.raises(methods.InputError, match=message) as error:
        DORA.load(loaded, tmp_path / "a", s)
    assert "\n" not in str(error.value) and str(tmp_path / "a") in str(error.value)


def test_a_lora_adapter_is_not_dora_and_a_dora_adapter_is_not_lora(tmp_path) -> None:
    lora = methods.get("lora")
    model = base()
    lora.apply(model, lora.settings(lora.defaults))
    lora.save(model, tmp_path / "lora", lora.settings(lora.defaults), "tiny")
    assert methods.detect(tmp_path / "lora")[0].name == "lora"
    DORA.save(trained(base(), settings()), tmp_path / "dora", settings(), "tiny")
    assert methods.detect(tmp_path / "dora")[0].name == "dora"
    with pytest.raises(methods.InputError, match="use_dora: not a DoRA adapter"):
        DORA.load(base(), tmp_path / "lora", None)


# ---------------------------------------------------------------------------------------------
# nlg train, --resume, nlg beam --checkpoint
# ---------------------------------------------------------------------------------------------

CONFIG = tiny_config(vocab_size=128, n_positions=32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dora-runs")
    return {"base": trainable_base(root / "base", CONFIG, seed=0, scale=5),
            "train": write_copy_task(root / "train.jsonl", 24, seed=1, vocab=128, lengths=(4, 6))}


def train_args(files: dict, work: Path, *extra, with_method: bool = True) -> list[str]:
    flags = ["--method", "dora", "--dora_dim", "2", "--dora_alpha", "8", "--dora_dropout", "0.1"] if with_method else []
    return ["train", "--train_data", str(files["train"]), "--init_checkpoint", str(files["base"]),
            "--work_dir", str(work), "--train_batch_size", "8", "--seq_len", "32", "--warmup_step", "0",
            "--lr", "5e-2", "--label_smooth", "0", "--log_interval", "1", "--save_interval", "3",
            "--eval_interval", "1000", "--device", "cpu", *flags, *map(str, extra)]


def test_training_moves_the_loss_and_only_doras_parameters(files, tmp_path, capsys) -> None:
    work = tmp_path / "run"
    assert nlg(train_args(files, work, "--max_step", 9)) == 0
    losses = [r["loss"] for r in metrics(work) if "loss" in r]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    count = DORA.count(methods.Shape.of(CONFIG), DORA.settings({**DORA.defaults, "dora_dim": 2}))
    assert f"{count:,} trainable" in capsys.readouterr().out
    record = methods.read_record(work / "checkpoint-9")
    assert (record.method, record.trainable_params) == ("dora", count)
    assert record.settings == {"dora_dim": 2, "dora_alpha": 8.0, "dora_dropout": 0.1, "dora_targets": ["q", "v"]}
    assert methods.settings_of("dora", record.settings) == DORA.settings({**SMALL, "dora_dropout": 0.1})
    tensors = load_file(str(work / "checkpoint-9" / "adapter_model.safetensors"))
    base_model = from_pretrained(files["base"])
    norm = base_model.transformer.h[0].attn.c_attn.weight.norm(dim=1)
    assert not torch.equal(tensors["base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector"], norm)


def test_killed_and_resumed_run_equals_uninterrupted(files, tmp_path, monkeypatch) -> None:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert nlg(train_args(files, whole, "--max_step", 6)) == 0
    killed_run(train_args(files, broken, "--max_step", 6)[1:], 5, monkeypatch)
    assert nlg(train_args(files, broken, "--max_step", 6, "--resume", "latest", with_method=False)) == 0
    expected = load_file(str(whole / "checkpoint-6" / "adapter_model.safetensors"))
    got = load_file(str(broken / "checkpoint-6" / "adapter_model.safetensors"))
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)


def test_beam_decodes_the_trained_checkpoint_merged(files, tmp_path, capsys) -> None:
    from nlg.beam import load_model

    work = tmp_path / "run"
    assert nlg(train_args(files, work, "--max_step", 3)) == 0
    model = load_model(str(files["base"]), None, str(work / "checkpoint-3"))
    assert all(m.merged for m in dora_modules(model).values()) and dora_modules(model)


def test_bad_dora_flags_are_one_line(files, tmp_path, capsys) -> None:
    code, err = cli_result(train_args(files, tmp_path / "w", "--dora_dropout", "1.5"), capsys)
    assert code == 2 and err.count("\n") == 0 and "--dora_dropout must be in [0, 1)" in err
    code, err = cli_result(train_args(files, tmp_path / "w", "--dora_targets", "q,x"), capsys)
    assert code == 2 and "--dora_targets: unknown ['x']" in err
    code, err = cli_result([*train_args(files, tmp_path / "w", with_method=False), "--dora_dim", "2"], capsys)
    assert code == 2 and "--dora_dim is a setting of --method dora, not of --method lora" in err
    assert not (tmp_path / "w").exists()
