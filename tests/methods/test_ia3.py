"""--method ia3: counts against PEFT's (q,k,v,ff equal; the paper's k,v,ff trains L·d fewer,
q's entries held at 1), the paper's k/v/ff placement, PEFT files that our k,v model cannot
hold, bad files and flags in one line. (PEFT both ways, merging, training, --resume and beam for
ia3 are in tests/methods/test_fourierft.py, parametrised over both methods.)"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_config

from nlg import methods
from nlg.files import InputError
from nlg.model import GPT
from nlg.weights import to_transformers

peft = pytest.importorskip("peft")

pytestmark = pytest.mark.usefixtures("single_thread")


def base(seed: int = 0, **changes) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config(**changes)).eval()


def peft_ia3(model: GPT, **changes):
    config = peft.IA3Config(**{"target_modules": ["c_attn", "mlp.c_proj"], "feedforward_modules": ["mlp.c_proj"],
                               "fan_in_fan_out": True, **changes})
    return peft.get_peft_model(to_transformers(model), config)


@pytest.mark.parametrize("changes", [{}, {"n_layer": 3, "n_embd": 48, "n_head": 4}])
def test_count_against_peft_and_what_trains(changes) -> None:
    method = methods.get("ia3")
    shape = methods.Shape.of(tiny_config(**changes))
    theirs = sum(p.numel() for p in peft_ia3(base(**changes)).parameters() if p.requires_grad)
    for targets, fewer in (("q,k,v,ff", 0), ("k,v,ff", shape.n_layer * shape.n_embd)):
        model = base(**changes)
        settings = methods.settings_of("ia3", {"ia3_targets": targets})
        method.apply(model, settings)
        trained = method.trainable(model)
        assert {n for n, p in model.named_parameters() if p.requires_grad} == set(trained)
        assert method.count(shape, settings) == sum(p.numel() for p in trained.values()) == theirs - fewer


def test_card_counts() -> None:
    assert methods.card_count("ia3", "gpt2.md") == 6 * 24 * 1024 == 147_456
    assert methods.card_count("ia3", "gpt2.lg") == 6 * 36 * 1280 == 276_480
    assert methods.card_count("ia3", "gpt2.md", {"ia3_targets": "q,k,v,ff"}) == 172_032
    assert methods.get("ia3").paper_rows == {}  # no published GPT-2 row
    assert methods.get("ia3").recipe_key({}) == "ia3"


def test_the_vectors_scale_keys_values_and_the_inner_activation() -> None:
    """l_k, l_v scale c_attn's k and v rows (bias included), l_ff the 4d input of mlp.c_proj;
    q is untouched."""
    model = base()
    method = methods.get("ia3")
    method.apply(model, methods.settings_of("ia3", {}))
    attn, proj = model.transformer.h[0].attn.c_attn, model.transformer.h[0].mlp.c_proj
    with torch.no_grad():
        attn.ia3_l["k"].fill_(2.0)
        attn.ia3_l["v"].fill_(3.0)
        proj.ia3_l["ff"].fill_(0.5)
        x, h = torch.randn(2, 64), torch.randn(2, 256)
        plain = torch.nn.functional.linear(x, attn.weight, attn.bias)
        assert torch.equal(attn(x), torch.cat([plain[:, :64], 2 * plain[:, 64:128], 3 * plain[:, 128:]], dim=1))
        torch.testing.assert_close(proj(h), torch.nn.functional.linear(0.5 * h, proj.weight, proj.bias))


def test_a_peft_file_with_q_entries_cannot_load_into_a_k_v_model(tmp_path) -> None:
    theirs = peft_ia3(base())
    with torch.no_grad():
        for param in (p for p in theirs.parameters() if p.requires_grad):
            param.add_(0.1)
    theirs.save_pretrained(tmp_path)
    model = base()
    method = methods.get("ia3")
    method.apply(model, methods.settings_of("ia3", {}))  # k,v,ff
    with pytest.raises(InputError, match=r"\(IA\)³ vectors on q,k,v,ff; the model has \(IA\)³ vectors on k,v,ff"):
        method.load(model, tmp_path, methods.settings_of("ia3", {}))
    # and a file of ours whose q rows are not 1 (edited): the tensor is named
    method.save(model, tmp_path / "ours", methods.settings_of("ia3", {}), None)
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = tmp_path / "ours" / "adapter_model.safetensors"
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    key = "base_model.model.transformer.h.1.attn.c_attn.ia3_l"
    tensors[key][3, 0] = 1.5
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(InputError) as error:
        method.load(base(), tmp_path / "ours", None)
    assert str(error.value).startswith(f"{path}: tensor transformer.h.1.attn.c_attn.ia3_l is not 1 outside the rows of k,v")


@pytest.mark.parametrize("changes, message", [
    ({"feedforward_modules": []}, "feedforward_modules: []; (IA)³ on GPT-2 scales"),
    ({"feedforward_modules": ["c_attn", "mlp.c_proj"]}, "feedforward_modules: [\"c_attn\", \"mlp.c_proj\"]"),
    ({"target_modules": ["c_fc"]}, "target_modules: 'c_fc' names none"),
    ({"target_modules": ".*c_attn"}, "target_modules: \".*c_attn\" must be a list"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save: [\"lm_head\"] is not supported"),
    ({"peft_type": "FOURIERFT"}, None),
])
def test_bad_ia3_configs_are_one_line_naming_file_and_key(tmp_path, changes, message) -> None:
    method = methods.get("ia3")
    model = base()
    method.apply(model, methods.settings_of("ia3", {}))
    method.save(model, tmp_path, methods.settings_of("ia3", {}), None)
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    with pytest.raises(InputError) as error:
        method.load(base(), tmp_path, None)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and "\n" not in text, text
    assert message is None or message in text, text


def test_a_misshapen_tensor_is_named(tmp_path) -> None:
    method = methods.get("ia3")
    model = base()
    method.apply(model, methods.settings_of("ia3", {}))
    method.save(model, tmp_path, methods.settings_of("ia3", {}), None)
    with pytest.raises(InputError, match=r"tensor transformer\.h\.0\.attn\.c_attn\.ia3_l has shape \(192, 1\), "
                                         r"the model needs \(384, 1\)"):
        method.load(base(n_embd=128), tmp_path, None)


@pytest.mark.parametrize("value", ["x", "k,k", ""])
def test_bad_targets_are_refused(value) -> None:
    assert methods.get("ia3").check({"ia3_targets": value})
