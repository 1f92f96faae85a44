"""Full and top2 checkpoints in the Hugging Face ecosystem: transformers' GPT2LMHeadModel reads a
full checkpoint with our logits, and the documented one-liner (top_layers.REBUILD) turns a base
plus a top2 checkpoint into a whole model with our logits. (LoRA's PEFT files: tests/methods/test_lora_layer.py;
the adapters' AdapterHub files: test_adapterhub_interop.py.)"""

from __future__ import annotations

import shlex
import sys

import pytest
import torch
from helpers import METHOD_SETTINGS, tiny_config, with_method

from nlg import methods
from nlg.methods.top_layers import REBUILD
from nlg.model import GPT
from nlg.weights import from_pretrained, save_pretrained

transformers = pytest.importorskip("transformers")


def trained(name: str) -> GPT:
    torch.manual_seed(0)
    return with_method(GPT(tiny_config()), name).eval()


def test_transformers_reads_a_full_checkpoint_with_our_logits(tmp_path) -> None:
    model = trained("full")
    methods.get("full").save(model, tmp_path, methods.settings_of("full", {}), base_model=None)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), atol=1e-5, rtol=1e-5)


def test_the_one_liner_rebuilds_the_whole_model_from_base_and_top_blocks(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    base = GPT(tiny_config())
    save_pretrained(base, tmp_path / "base")
    model = trained("top2")
    settings = methods.settings_of("top2", METHOD_SETTINGS["top2"])
    methods.get("top2").save(model, tmp_path / "top", settings, base_model=str(tmp_path / "base"))
    # The one-liner's code, run here with its three arguments (a second interpreter would only
    # import transformers once more).
    python, flag, code, *placeholders = shlex.split(REBUILD)
    assert (python, flag, placeholders) == ("python", "-c", ["BASE", "DIR", "WHOLE"])
    monkeypatch.setattr(sys, "argv", ["-c", str(tmp_path / "base"), str(tmp_path / "top"), str(tmp_path / "whole")])
    exec(code, {})  # noqa: S102 - our own documented command
    whole = from_pretrained(tmp_path / "whole").eval()
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(whole(x), model(x), atol=1e-6, rtol=0)
    # The top2 file holds the trained block and ln_f only, not the frozen rest.
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "top/model.safetensors"))
    assert {"transformer.ln_f.weight", "transformer.h.1.mlp.c_fc.weight"} <= keys
    assert all(k.startswith(("transformer.h.1.", "transformer.ln_f.")) for k in keys)
