"""Adapter files: PEFT layout, exact round trip, and PEFT itself reading what we write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import (
    RUN_EOS,
    damage,
    error_line,
    hf_gpt2_dir,
    nlg,
    snapshot,
    tiny_config,
    train_argv,
    trained_like,
    write_encoded,
)

from nlg.files import MANIFEST, InputError
from nlg.methods.lora.layer import add_lora, lora_modules, lora_parameters, merge
from nlg.methods.lora.peft_files import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterError,
    load_adapter,
    read_adapter,
    save_adapter,
)
from nlg.model import GPT
from nlg.training.checkpoints import verify_checkpoint
from nlg.weights import from_pretrained

TARGET_SETS = [("q", "v"), ("q", "k", "v", "o", "fc", "proj"), ("o",), ("v", "fc"), ("qkv", "proj")]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("targets", TARGET_SETS)
def test_round_trip_is_exact(tmp_path, targets):
    torch.manual_seed(0)
    base = GPT(tiny_config())
    model = trained_like(add_lora(GPT(tiny_config()), rank=3, alpha=12, targets=targets))
    model.load_state_dict(base.state_dict(), strict=False)
    save_adapter(model, tmp_path / "adapter")
    fresh = GPT(tiny_config())
    fresh.load_state_dict(base.state_dict())
    config = load_adapter(fresh, tmp_path / "adapter")
    assert config.targets == tuple(targets) and config.rank == 3 and config.alpha == 12
    for name, param in lora_parameters(model).items():
        assert torch.equal(param, lora_parameters(fresh)[name]), name
    x = torch.randint(0, 300, (2, 7))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), fresh.eval()(x))


def test_files_follow_peft_layout(tmp_path):
    model = trained_like(add_lora(GPT(tiny_config()), rank=4, alpha=32, targets=("q", "v")))
    save_adapter(model, tmp_path)
    config = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    # q and v of rank 4 become one c_attn adapter of rank 8, alpha doubled to keep alpha/r.
    assert config["peft_type"] == "LORA" and config["fan_in_fan_out"] is True
    assert config["r"] == 8 and config["lora_alpha"] == 64 and config["target_modules"] == ["c_attn"]
    _, tensors, _ = read_adapter(tmp_path)
    assert sorted(tensors) == [
        f"transformer.h.{i}.attn.c_attn.lora_{m}.weight" for i in (0, 1) for m in "AB"
    ]
    a = tensors["transformer.h.0.attn.c_attn.lora_A.weight"]
    b = tensors["transformer.h.0.attn.c_attn.lora_B.weight"]
    assert a.shape == (8, 64) and b.shape == (192, 8)
    assert torch.count_nonzero(b[64:128]) == 0  # k rows untouched
    assert torch.count_nonzero(b[:64, 4:]) == 0 and torch.count_nonzero(b[128:, :4]) == 0


@pytest.mark.parametrize("targets", [("q", "v"), ("q", "k", "v", "o", "fc", "proj"), ("o",), ("v", "fc")])
def test_peft_reads_our_adapter_with_equal_logits(tmp_path, targets):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    hf_gpt2_dir(tmp_path / "base")
    ours = trained_like(add_lora(from_pretrained(tmp_path / "base"), rank=4, alpha=32, targets=targets))
    save_adapter(ours, tmp_path / "adapter", base_model=str(tmp_path / "base"))

    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    adapted = {name.removeprefix("base_model.model.") for name, module in theirs.named_modules()
               if hasattr(module, "lora_A") and len(module.lora_A)}
    assert adapted == set(lora_modules(ours))
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        expected = ours.eval()(x)
        assert torch.allclose(theirs(x).logits, expected, atol=1e-5)
        # and the merged model, which is what beam search decodes with
        assert torch.allclose(merge(ours)(x), expected, atol=1e-5)


def test_peft_written_adapter_loads_as_fused_qkv(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    hf_gpt2_dir(tmp_path / "base")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    lora = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True,
                           init_lora_weights=False)
    theirs = peft.get_peft_model(hf, lora).eval()
    theirs.save_pretrained(tmp_path / "adapter")
    ours = from_pretrained(tmp_path / "base")
    config = load_adapter(ours, tmp_path / "adapter")
    assert config.targets == ("qkv",) and config.rank == 4 and config.alpha == 16
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), theirs(x).logits, atol=1e-5)


def test_wrong_shape_names_the_tensor(tmp_path):
    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=4, targets=("q", "v"))), tmp_path)
    wider = GPT(tiny_config(n_embd=128))
    with pytest.raises(AdapterError, match=r"transformer\.h\.0\.attn\.c_attn\.lora_A\.weight"):
        load_adapter(wider, tmp_path)


def test_missing_layer_is_an_error(tmp_path):
    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=4, targets=("q", "v"))), tmp_path)
    deeper = GPT(tiny_config(n_layer=3))
    with pytest.raises(AdapterError, match=r"tensor transformer\.h\.2\.attn\.c_attn\.lora_A\.weight missing"):
        load_adapter(deeper, tmp_path)


def test_rank_mismatch_with_existing_lora(tmp_path):
    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=4, targets=("q", "v"))), tmp_path)
    other = add_lora(GPT(tiny_config()), rank=8, targets=("q", "v"))
    with pytest.raises(AdapterError, match="rank 4"):
        load_adapter(other, tmp_path)


def test_off_block_values_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    save_adapter(trained_like(add_lora(GPT(tiny_config()), rank=4, targets=("q", "v"))), tmp_path)
    path = tmp_path / ADAPTER_WEIGHTS
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    key = "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"
    tensors[key][70, 0] = 1.0  # a k row: q and v slices cannot represent it
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(AdapterError, match=r"h\.1\.attn\.c_attn\.lora_B\.weight is not zero"):
        load_adapter(GPT(tiny_config()), tmp_path)


def test_directory_without_adapter(tmp_path):
    with pytest.raises(AdapterError, match="not an adapter directory"):
        load_adapter(GPT(tiny_config()), tmp_path)


# ---------------------------------------------------------------------------------------------
# A damaged adapter, or one whose config disagrees with its tensors: one line naming the file
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["beam", "analyze"])
def test_reading_a_damaged_adapter_names_the_file(lora_run, tmp_path, capsys, command):
    adapter = Path(shutil.copytree(lora_run["work"] / "checkpoint-3", tmp_path / "adapter"))
    (adapter / MANIFEST).unlink()  # without it the damage is found by safetensors itself
    weights = adapter / "adapter_model.safetensors"
    damage(weights, "truncate")
    data = write_encoded(tmp_path / "x.jsonl", 2)
    before = snapshot(tmp_path)
    argv = (["beam", "--data", data, "--init_checkpoint", lora_run["base"], "--lora_checkpoint", adapter,
             "--output_file", tmp_path / "out.jsonl", "--eos_token_id", RUN_EOS] if command == "beam"
            else ["analyze", adapter])
    assert nlg(*argv) == 2
    assert error_line(capsys).startswith(f"nlg {command}: error: {weights}: not a readable safetensors file (")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("key, value, message", [
    ("r", 4, "r is 4, but {weights} holds rank 8 (transformer.h.0.attn.c_attn.lora_A.weight has 8 rows)"),
    ("lora_alpha", 16.0, "lora_alpha is 16.0, but {weights} was written with lora_alpha 64.0 "
                         "(its metadata: rank 4, alpha 32.0, targets q,v)"),
    ("target_modules", ["c_fc"], "target_modules is ['c_fc'], but {weights} adapts transformer.h.0.attn.c_attn, "
                                 "which it does not select"),
])
@pytest.mark.parametrize("command", ["beam", "analyze"])
def test_an_adapter_config_that_disagrees_with_its_tensors_is_an_error(lora_run, tmp_path, capsys, command, key,
                                                                       value, message):
    adapter = Path(shutil.copytree(lora_run["work"] / "checkpoint-3", tmp_path / "adapter"))
    config = adapter / "adapter_config.json"
    changed = {**json.loads(config.read_text()), key: value}
    config.write_text(json.dumps(changed))
    with pytest.raises(InputError, match=f"{config}: .*manifest.json"):  # the manifest notices first
        verify_checkpoint(adapter)
    (adapter / MANIFEST).unlink()  # and without it, the tensors do
    data = write_encoded(tmp_path / "x.jsonl", 2)
    argv = (["beam", "--data", data, "--init_checkpoint", lora_run["base"], "--lora_checkpoint", adapter,
             "--output_file", tmp_path / "out.jsonl", "--eos_token_id", RUN_EOS] if command == "beam"
            else ["analyze", adapter])
    assert nlg(*argv) == 2
    weights = adapter / "adapter_model.safetensors"
    assert error_line(capsys) == f"nlg {command}: error: {config}: {message.format(weights=weights)}\n"
    assert not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# Adapter scales: `r` a positive integer, `lora_alpha` a finite positive number, alpha/r a
# scale float32 holds, wherever an adapter config is read (beam, analyze, resume); a malformed
# adapter config is one line too
# ---------------------------------------------------------------------------------------------


def peft_adapter(lora_run: dict[str, Path], directory: Path, **changes: object) -> Path:
    """checkpoint-3's adapter as PEFT writes one: no nlg metadata, no manifest; its
    adapter_config.json changed by `changes` (a value None removes the key)."""
    from safetensors.torch import load_file, save_file

    directory.mkdir()
    source = lora_run["work"] / "checkpoint-3"
    save_file(load_file(str(source / "adapter_model.safetensors")), str(directory / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    config = {**json.loads((source / "adapter_config.json").read_text()), **changes}
    (directory / "adapter_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return directory


def adapter_argv(command: str, lora_run: dict[str, Path], adapter: Path, tmp_path: Path) -> list[object]:
    if command == "analyze":
        return ["analyze", adapter]
    return ["beam", "--data", write_encoded(tmp_path / "x.jsonl", 2), "--init_checkpoint", lora_run["base"],
            "--lora_checkpoint", adapter, "--output_file", tmp_path / "out.jsonl", "--eos_token_id", RUN_EOS,
            "--device", "cpu"]


# (changes to adapter_config.json, the message after its path); checkpoint-3 has r 8 (q and v
# of rank 4 stacked in c_attn) and lora_alpha 64.0
SCALE_CASES = [
    ({"lora_alpha": float("nan")}, "lora_alpha is nan: must be a finite positive number"),
    ({"lora_alpha": 1e308}, "lora_alpha/r is 1e+308/8 = 1.25e+307: the scale must be a positive number "
                            "float32 can hold (at most 3.4e+38)"),
    ({"lora_alpha": -64.0}, "lora_alpha is -64.0: must be a finite positive number"),
    ({"r": 8.7}, "r is 8.7: must be a positive integer (the LoRA rank)"),
    ({"r": True}, "r is True: must be a positive integer (the LoRA rank)"),
    ({"lora_alpha": [64]}, "lora_alpha is [64]: must be a finite positive number"),
    ({"lora_alpha": None}, "no 'lora_alpha' key (every LoRA adapter_config.json has one)"),
    ({"r": None}, "no 'r' key (every LoRA adapter_config.json has one)"),
    ({"alpha_pattern": {"c_attn": "64"}}, "alpha_pattern['c_attn'] is '64': must be a finite positive number"),
    ({"rank_pattern": [8]}, "rank_pattern is [8]: must be an object of module: value"),
]


@pytest.mark.parametrize("changes, message", SCALE_CASES)
@pytest.mark.parametrize("command", ["beam", "analyze"])
def test_an_adapter_scale_that_is_not_finite_and_positive_is_one_line(lora_run, tmp_path, capsys, command, changes,
                                                                      message):
    adapter = peft_adapter(lora_run, tmp_path / "adapter", **changes)
    argv = adapter_argv(command, lora_run, adapter, tmp_path)
    before = snapshot(tmp_path)
    assert nlg(*argv) == 2
    config = adapter / "adapter_config.json"
    if changes == {"lora_alpha": float("nan")}:  # a stricter JSON reader may refuse NaN itself
        assert error_line(capsys).startswith(f"nlg {command}: error: {config}")
    else:
        assert error_line(capsys) == f"nlg {command}: error: {config}: {message}\n"
    assert snapshot(tmp_path) == before  # no predictions, no report


def test_a_fine_peft_adapter_still_loads(lora_run, tmp_path, capsys):
    adapter = peft_adapter(lora_run, tmp_path / "adapter")
    assert nlg("analyze", adapter, "--json", tmp_path / "report.json") == 0


@pytest.mark.parametrize("alpha, message", [
    ("0", "--lora_alpha 0.0: must be > 0, and --lora_alpha/--lora_dim at most 3.4e+38 (float32's largest number)"),
    ("1e40", "--lora_alpha 1e+40: must be > 0, and --lora_alpha/--lora_dim at most 3.4e+38 "
             "(float32's largest number)"),
])
def test_train_refuses_a_lora_alpha_it_could_not_save(lora_run, tmp_path, capsys, alpha, message):
    assert nlg(*train_argv(lora_run, tmp_path / "w", "--lora_alpha", alpha)) == 2
    assert error_line(capsys) == f"nlg train: error: {message}\n"
    assert not (tmp_path / "w").exists()
