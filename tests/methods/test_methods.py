"""Every method through the nlg.methods interface, on tiny models: counts against the formula and
the paper, untrained = base model, save -> load -> identical logits, beam search with the method
identical to the batch-1 reference without a cache."""

from __future__ import annotations

import pytest
import torch
from helpers import METHOD_SETTINGS, reference_beam, run_without_torch, tiny_config, with_method

from nlg import methods
from nlg.beam import BeamConfig, beam_search
from nlg.model import CARDS, GPT

ALL = list(METHOD_SETTINGS)


pytestmark = pytest.mark.usefixtures("single_thread")


def base(seed: int = 0, **changes) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config(**changes)).eval()


def test_registry_lists_every_method_in_table_order_and_card_shapes_agree() -> None:
    assert methods.names() == ["lora", "full", "top2", "adapter-l", "adapter-h", "prefix", "prefix-embed",
                               "dora", "adalora", "vera", "vblora", "fourierft", "ia3"]
    for card, config in CARDS.items():
        assert methods.CARD_SHAPES[card] == methods.Shape.of(config)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("changes", [{}, {"n_layer": 3, "n_embd": 48, "n_head": 4}])
def test_count_equals_the_parameters_that_train(name: str, changes: dict) -> None:
    model = with_method(base(**changes), name, seed=None)
    method = methods.get(name)
    trainable = method.trainable(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(trainable)
    counted = sum(p.numel() for p in {id(p): p for p in trainable.values()}.values())
    settings = methods.settings_of(name, METHOD_SETTINGS[name])
    assert method.count(methods.Shape.of(model.config), settings) == counted


def test_paper_counts_come_from_the_shape_alone_without_torch() -> None:
    """The paper's figures, computed from the cards' shapes in an interpreter without torch:
    no weights are allocated."""
    code = """
from nlg.methods import card_count
print(card_count("top2", "gpt2.md"))
print(card_count("adapter-l", "gpt2.md", {"adapter_dim": 6}), card_count("adapter-l", "gpt2.md", {"adapter_dim": 224}))
print(card_count("adapter-l", "gpt2.lg", {"adapter_dim": 8}), card_count("adapter-l", "gpt2.lg", {"adapter_dim": 248}))
print(card_count("lora", "gpt2.md"), card_count("full", "gpt2.md"), card_count("full", "gpt2.lg"))
print(card_count("adapter-h", "gpt2.md", {"adapter_dim": 112}))
"""
    lines = [list(map(int, line.split())) for line in run_without_torch(code).splitlines()]
    assert lines[0] == [25_194_496]  # FT-Top2, GPT-2 M: blocks 22-23 and ln_f
    assert [round(n / 1e4) / 100 for n in lines[1]] == [0.37, 11.09]  # AdapterL, GPT-2 M
    assert [round(n / 1e4) / 100 for n in lines[2]] == [0.88, 23.00]  # AdapterL, GPT-2 L
    assert lines[3] == [393_216, 354_823_168, 774_030_080]  # LoRA r=4 q,v; FT M (paper 354.92M); FT L
    assert lines[4] == [11_064_576]  # AdapterH r=112 (the paper prints 11.09M)


# a prefix always acts; VB-LoRA starts from a random bank and logits (its paper, PEFT): B·A is not zero
@pytest.mark.parametrize("name", [n for n in ALL if not n.startswith("prefix") and n != "vblora"])
def test_an_untrained_method_computes_the_base_model(name: str) -> None:
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        expected = base()(x)
        torch.testing.assert_close(with_method(base(), name, seed=None)(x), expected, atol=0, rtol=0)


def test_the_residual_hooks_leave_the_base_model_bit_identical() -> None:
    """A block with its default hooks computes x + out exactly as before hooks existed."""
    model = base()
    block = model.transformer.h[0]
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        a = x + block.resid_dropout(block.attn(block.ln_1(x), None, None, 0))
        expected = a + block.resid_dropout(block.mlp(block.ln_2(a)))
        assert torch.equal(block(x, None, None, 0), expected)
    assert not any("_residual" in key for key in model.state_dict())


@pytest.mark.parametrize("name", ALL)
def test_save_then_load_gives_identical_logits(name: str, tmp_path) -> None:
    method = methods.get(name)
    settings = methods.settings_of(name, METHOD_SETTINGS[name])
    trained = with_method(base(), name)
    method.save(trained, tmp_path, settings, base_model="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(method.files)
    found, found_settings, _ = methods.detect(tmp_path)  # no method.json: recognised by its files
    assert found.name == name and found_settings == settings
    loaded = base(seed=5) if not method.needs_base else base()
    if method.needs_base:
        method.apply(loaded, settings)
    method.load(loaded, tmp_path, settings)
    x = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        assert torch.equal(loaded(x), trained(x))


def beam_model(name: str) -> GPT:
    """A float64 tiny GPT with peaked distributions (as tests/test_beam.py's) and the method,
    trained-like, made ready to decode (LoRA merged, adapters unmerged)."""
    torch.manual_seed(0)
    model = GPT(tiny_config(n_head=2, n_embd=32, vocab_size=64, n_positions=128)).double()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(3)
        model.transformer.ln_f.weight.fill_(20.0)
    with_method(model, name)
    methods.get(name).prepare_inference(model)
    return model.eval()


@pytest.mark.parametrize("name", ALL)
def test_beam_search_with_the_method_equals_the_batch_one_reference(name: str) -> None:
    model = beam_model(name)
    cfg = BeamConfig(beam=3, eval_len=8, length_penalty=0.8, no_repeat_ngram_size=3, eos_ids=(7,))
    gen = torch.Generator().manual_seed(3)
    contexts = [torch.randint(0, 64, (int(n),), generator=gen).tolist()
                for n in torch.randint(3, 10, (4,), generator=gen)]
    expected = [reference_beam(model, c, cfg) for c in contexts]
    assert beam_search(model, contexts, cfg) == expected  # batched, left-padded, on the cache


def test_lora_merges_for_decoding_and_adapters_stay_unmerged() -> None:
    lora = beam_model("lora")
    assert all(m.merged for m in lora.modules() if hasattr(m, "merged"))
    assert methods.get("lora").merges and not methods.get("adapter-h").merges


@pytest.mark.parametrize("name", ALL)
def test_every_load_refuses_non_finite_tensors_in_one_line(name: str, tmp_path) -> None:
    """Issue 29 case 5: a NaN in any method's saved tensors (a prefix's prompt_embeddings, an
    adapter's adapter_up, a top2 or full checkpoint) is refused on load, as LoRA's always was."""
    from safetensors.torch import load_file, save_file

    method = methods.get(name)
    settings = methods.settings_of(name, METHOD_SETTINGS[name])
    trained = with_method(base(), name)
    method.save(trained, tmp_path, settings, base_model="tiny")
    weights = next(tmp_path / f for f in method.files if f.endswith(".safetensors"))
    tensors = load_file(str(weights))
    key = sorted(k for k, v in tensors.items() if v.is_floating_point())[-1]
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(weights), metadata={"format": "pt"})
    loaded = base()
    if method.needs_base:
        method.apply(loaded, settings)
    with pytest.raises(methods.InputError, match=r"tensor .* has 1 non-finite values \(NaN/inf\)"):
        method.load(loaded, tmp_path, settings)


def test_a_top2_checkpoint_as_init_checkpoint_says_to_pass_it_as_checkpoint(tmp_path) -> None:
    from nlg.weights import CheckpointError, from_pretrained

    method = methods.get("top2")
    method.save(with_method(base(), "top2"), tmp_path, methods.settings_of("top2", METHOD_SETTINGS["top2"]), "tiny")
    with pytest.raises(CheckpointError, match="checkpoint of --method top2, not a whole GPT-2: give it as --checkpoint"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("name", methods.names())
def test_every_method_fits_the_cpu_demos_card_at_its_demo_values(name):
    """`reproduce.sh --demo --method NAME` trains gpt2.tiny (2 layers, 128 wide) at the method's
    defaults and its demo_values: VB-LoRA's default 256-long bank vectors do not divide 128, so its
    demo_values say 64; this fails for any method whose demo settings do not fit the demo's card."""
    method = methods.get(name)
    values = {**method.defaults, **method.demo_values}
    assert method.check(values) == []
    model = GPT(CARDS["gpt2.tiny"].__class__(**{**vars(CARDS["gpt2.tiny"]), "vocab_size": 64}))
    settings = method.settings(values)
    method.apply(model, settings)
    assert sum(p.numel() for p in method.trainable(model).values()) == method.count(methods.Shape.of(model.config), settings)
