"""VeRA: PEFT's VeraConfig both ways, counts against PEFT, merged == unmerged."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import RUN_EOS, hf_gpt2_dir, nlg, tiny_config, with_method, write_encoded

from nlg import methods
from nlg.files import InputError
from nlg.methods.vera import VeRASettings
from nlg.model import GPT
from nlg.weights import from_pretrained, to_transformers

pytestmark = pytest.mark.usefixtures("single_thread")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
VERA = methods.get("vera")


def peft_vera(rank=8, seed=0):
    return peft.VeraConfig(r=rank, target_modules=["c_attn"], fan_in_fan_out=True, projection_prng_key=seed,
                           save_projection=True)


@pytest.mark.parametrize("rank", [8, 100])
def test_count_equals_peft(tmp_path, rank):
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir(tmp_path / "base"))
    theirs = peft.get_peft_model(hf, peft_vera(rank))
    trainable = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    shape = methods.Shape.of(tiny_config())
    assert VERA.count(shape, VeRASettings(rank=rank)) == trainable
    assert methods.card_count("vera", "gpt2.md", {"vera_rank": 1024}) == 98_304


def test_fresh_vera_is_the_base_and_shares_peft_projections(tmp_path):
    hf_gpt2_dir(tmp_path / "base")
    ours = from_pretrained(tmp_path / "base")
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        before = ours.eval()(x)
        VERA.apply(ours, VeRASettings(rank=8, seed=3))
        assert torch.equal(ours(x), before)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    theirs = peft.get_peft_model(hf, peft_vera(8, 3))
    layer = ours.transformer.h[0].attn.c_attn
    assert torch.equal(layer.vera_A, theirs.base_model.vera_A["default"])
    assert torch.equal(layer.vera_B, theirs.base_model.vera_B["default"])


def padded(x):
    mask = torch.ones_like(x)
    mask[0, -3:] = 0
    return mask


def test_peft_reads_ours_with_equal_logits(tmp_path):
    hf_gpt2_dir(tmp_path / "base")
    ours = with_method(from_pretrained(tmp_path / "base"), "vera").eval()
    VERA.save(ours, tmp_path / "adapter", ours.vera_settings, str(tmp_path / "base"))
    base = from_pretrained(tmp_path / "base")
    theirs = peft.PeftModel.from_pretrained(to_transformers(base), tmp_path / "adapter").eval()
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        expected = ours(x)
        assert torch.allclose(theirs(x).logits, expected, atol=1e-5)
        mask = padded(x)
        got = theirs(x, attention_mask=mask).logits
        assert torch.allclose(got[1], expected[1], atol=1e-5)
        assert torch.allclose(got[0, :-3], expected[0, :-3], atol=1e-5)  # right padding changes nothing before it
        VERA.prepare_inference(ours)
        assert torch.allclose(ours(x), expected, atol=1e-5)


def test_peft_written_loads_and_decodes(tmp_path):
    hf_gpt2_dir(tmp_path / "base", tiny_config(vocab_size=50257))  # beam's end-of-text id 50256
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    theirs = peft.get_peft_model(hf, peft_vera(8, 5))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _name, param in theirs.named_parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    theirs.save_pretrained(tmp_path / "adapter")
    method, settings, record = methods.detect(tmp_path / "adapter")
    assert method is VERA and record is None and settings.rank == 8 and settings.seed == 5
    ours = from_pretrained(tmp_path / "base")
    VERA.load(ours, tmp_path / "adapter", settings)
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), theirs.eval()(x).logits, atol=1e-5)
    out = tmp_path / "out.jsonl"
    assert nlg("beam", "--data", write_encoded(tmp_path / "x.jsonl", 2), "--init_checkpoint", tmp_path / "base",
               "--checkpoint", tmp_path / "adapter", "--beam", "2", "--eval_len", "3", "--no_progress",
               "--eos_token_id", RUN_EOS, "--output_file", out) == 0
    assert len(out.read_text().splitlines()) == 2


def test_bad_files_name_file_and_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    model = with_method(GPT(tiny_config()), "vera")
    VERA.save(model, tmp_path, model.vera_settings, None)
    weights = tmp_path / "adapter_model.safetensors"
    tensors = load_file(weights)
    key = "base_model.model.transformer.h.1.attn.c_attn.vera_lambda_b"
    tensors[key] = tensors[key][:5]
    save_file(tensors, weights)
    with pytest.raises(InputError, match=r"adapter_model\.safetensors: tensor transformer\.h\.1\.attn\.c_attn\.vera_lambda_b"):
        VERA.load(GPT(tiny_config()), tmp_path, None)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["r"] = "eight"
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"adapter_config\.json: r:"):
        VERA.load(GPT(tiny_config()), tmp_path, None)


def test_one_copy_of_the_projections_after_moving_the_model():
    model = with_method(GPT(tiny_config()), "vera").to(torch.float64)
    layers = [block.attn.c_attn for block in model.transformer.h]
    assert all(layer.vera_A is layers[0].vera_A and layer.vera_B is layers[0].vera_B for layer in layers)
    assert layers[0].vera_A.dtype == torch.float64
    assert not any("vera_A" in key or "vera_B" in key for key in model.state_dict())
