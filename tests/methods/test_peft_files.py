"""Adapter files: PEFT layout, exact round trip, and PEFT itself reading what we write."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import hf_gpt2_dir, tiny_config, trained_like

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
from nlg.weights import from_pretrained

TARGET_SETS = [("q", "v"), ("q", "k", "v", "o", "fc", "proj"), ("o",), ("v", "fc"), ("qkv", "proj")]


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
    with pytest.raises(AdapterError, match=r"missing transformer\.h\.2\.attn\.c_attn"):
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
