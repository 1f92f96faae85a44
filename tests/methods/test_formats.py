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


def _saved(name: str, tmp_path):
    from helpers import METHOD_SETTINGS, tiny_config, with_method

    from nlg import methods
    from nlg.model import GPT

    torch.manual_seed(0)
    model = with_method(GPT(tiny_config()).eval(), name)
    methods.get(name).save(model, tmp_path, methods.settings_of(name, METHOD_SETTINGS[name]), "tiny")
    return tmp_path


@pytest.mark.parametrize("name, file, where, value, message", [
    ("adapter-l", "adapter_config.json", ("config", "reduction_factor"), 0, "reduction_factor: 0 must be a finite number > 0"),
    ("adapter-l", "adapter_config.json", ("config", "reduction_factor"), float("nan"), "reduction_factor: nan must be"),
    ("adapter-h", "adapter_config.json", ("config", "reduction_factor"), 1000, "reduction_factor: 1000 gives a bottleneck of 0"),
    ("adapter-h", "adapter_config.json", ("hidden_size",), "64", 'hidden_size: "64" is not an integer'),
    ("prefix", "adapter_config.json", ("num_virtual_tokens",), "4", 'num_virtual_tokens: "4" is not an integer'),
    ("prefix", "adapter_config.json", ("num_virtual_tokens",), None, "num_virtual_tokens: null is not an integer"),
    ("prefix", "adapter_config.json", ("encoder_hidden_size",), "512", 'encoder_hidden_size: "512" is not an integer'),
    ("prefix-embed", "adapter_config.json", ("num_virtual_tokens",), None, "num_virtual_tokens: null is not an integer"),
    ("top2", "config.json", ("nlg_top_layers",), "1", 'nlg_top_layers: "1" is not an integer'),
    ("top2", "config.json", ("nlg_top_layers",), None, "nlg_top_layers: null is not an integer"),
    ("lora", "adapter_config.json", ("lora_dropout",), "0.1", 'lora_dropout: "0.1" must be a number in [0, 1)'),
    ("lora", "adapter_config.json", ("lora_dropout",), 1.5, "lora_dropout: 1.5 must be a number in [0, 1)"),
])
def test_odd_config_values_are_one_line_naming_file_and_key(name, file, where, value, message, tmp_path):
    """Issue 29 case 8: every key of every config we read, by type and range: FILE: key: reason."""
    import json

    from nlg import methods

    directory = _saved(name, tmp_path)
    config = json.loads((directory / file).read_text())
    node = config
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    (directory / file).write_text(json.dumps(config))
    with pytest.raises(methods.InputError) as error:
        methods.detect(directory)
    assert str(error.value).startswith(f"{directory / file}: ") and message in str(error.value)
    assert "--adapter_dim" not in str(error.value)


@pytest.mark.parametrize("change, message", [
    ({"settings": []}, "settings: [] is not an object"),
    ({"model": []}, "model: [] is not an object"),
    ({"settings": {"adapter_dim": "x"}}, 'adapter_dim: "x" is not an integer'),
    ({"settings": {"adapter_dim": 0}}, "adapter_dim: 0 must be >= 1"),
    ({"settings": {"lora_dim": 4}}, "settings: lora_dim: not a setting of method adapter-l"),
    ({"method": 3}, "method: 3 is not a method's name"),
    ({"trainable_params": "many"}, 'trainable_params: "many" is not an integer'),
])
def test_odd_method_json_is_one_line(change, message, tmp_path):
    import json

    from nlg import methods

    record = {"method": "adapter-l", "settings": {"adapter_dim": 4}, "trainable_params": 10, "base_model": None,
              "model": {"n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 300, "n_positions": 64}}
    (tmp_path / "method.json").write_text(json.dumps({**record, **change}))
    with pytest.raises(methods.InputError) as error:
        methods.read_record(tmp_path)
    assert str(error.value).startswith(f"{tmp_path / 'method.json'}: ") and message in str(error.value)
