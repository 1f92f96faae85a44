"""VB-LoRA: PEFT's VBLoRAConfig both ways, counts against PEFT, merged == unmerged."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import RUN_EOS, hf_gpt2_dir, nlg, tiny_config, with_method, write_encoded

from nlg import methods
from nlg.files import InputError
from nlg.methods.vblora import VBLoRASettings
from nlg.model import GPT
from nlg.weights import from_pretrained, to_transformers

pytestmark = pytest.mark.usefixtures("single_thread")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
VBLORA = methods.get("vblora")


def peft_vblora(**changes):
    settings = {"r": 2, "num_vectors": 16, "vector_length": 16, "topk": 2, **changes}
    return peft.VBLoRAConfig(target_modules=["c_attn"], fan_in_fan_out=True, **settings)


@pytest.mark.parametrize("changes", [{}, {"r": 4, "num_vectors": 30, "vector_length": 32, "topk": 3}])
def test_count_equals_peft(tmp_path, changes):
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir(tmp_path / "base"))
    theirs = peft.get_peft_model(hf, peft_vblora(**changes))
    trainable = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    config = theirs.peft_config["default"]
    settings = VBLoRASettings(config.r, config.num_vectors, config.vector_length, config.topk)
    assert VBLORA.count(methods.Shape.of(tiny_config()), settings) == trainable


def test_peft_reads_ours_with_equal_logits(tmp_path):
    hf_gpt2_dir(tmp_path / "base")
    ours = with_method(from_pretrained(tmp_path / "base"), "vblora").eval()
    VBLORA.save(ours, tmp_path / "adapter", ours.vblora_settings, str(tmp_path / "base"))
    theirs = peft.PeftModel.from_pretrained(to_transformers(from_pretrained(tmp_path / "base")),
                                            tmp_path / "adapter").eval()
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        expected = ours(x)
        assert torch.allclose(theirs(x).logits, expected, atol=1e-5)
        mask = torch.ones_like(x)
        mask[0, -3:] = 0
        got = theirs(x, attention_mask=mask).logits
        assert torch.allclose(got[1], expected[1], atol=1e-5)
        assert torch.allclose(got[0, :-3], expected[0, :-3], atol=1e-5)  # right padding changes nothing before it
        VBLORA.prepare_inference(ours)
        assert torch.allclose(ours(x), expected, atol=1e-5)


def test_peft_written_loads_and_decodes(tmp_path):
    hf_gpt2_dir(tmp_path / "base", tiny_config(vocab_size=50257))  # beam's end-of-text id 50256
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    theirs = peft.get_peft_model(hf, peft_vblora())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _name, param in theirs.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    theirs.save_pretrained(tmp_path / "adapter")
    method, settings, record = methods.detect(tmp_path / "adapter")
    assert method is VBLORA and record is None and settings == VBLoRASettings(2, 16, 16, 2)
    ours = from_pretrained(tmp_path / "base")
    VBLORA.load(ours, tmp_path / "adapter", settings)
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

    model = with_method(GPT(tiny_config()), "vblora")
    VBLORA.save(model, tmp_path, model.vblora_settings, None)
    weights = tmp_path / "adapter_model.safetensors"
    tensors = load_file(weights)
    key = "base_model.model.transformer.h.1.attn.c_attn.vblora_logits_B"
    tensors[key] = tensors[key][:5]
    save_file(tensors, weights)
    with pytest.raises(InputError, match=r"adapter_model\.safetensors: tensor transformer\.h\.1\.attn\.c_attn\.vblora_logits_B"):
        VBLORA.load(GPT(tiny_config()), tmp_path, None)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["topk"] = 0
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"adapter_config\.json: topk:"):
        VBLORA.load(GPT(tiny_config()), tmp_path, None)


def test_vector_length_must_divide_the_width():
    with pytest.raises(InputError, match="--vblora_vector_length 48 must divide the model's width 64"):
        VBLORA.apply(GPT(tiny_config()), VBLoRASettings(vector_length=48))
