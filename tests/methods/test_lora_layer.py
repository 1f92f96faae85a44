"""nlg.methods.lora.layer: the adapters compute what the LoRA formula says, on exactly the intended weights.

The PEFT file round trip (nlg.methods.lora.peft_files) is tested in tests/methods/test_peft_files.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import hf_gpt2_dir, tiny_config

from nlg.methods.lora.layer import (
    TARGETS,
    LoRAConfig,
    LoRALinear,
    add_lora,
    count_trainable,
    lora_modules,
    lora_parameters,
    lora_state_dict,
    merge,
    unmerge,
)
from nlg.model import GPT, GPTConfig, card_config
from nlg.weights import CheckpointError, load_base_weights, published_layout

D = 64  # width of the small model
SLICES = ("q", "k", "v", "o", "fc", "proj")  # every target, the fused slices separately
FUSED = ("qkv", "o", "fc", "proj")  # every target, c_attn as one matrix
# target -> (module inside a block, adapted output rows [start, end))
EXPECTED = {
    "q": ("attn.c_attn", (0, D)),
    "k": ("attn.c_attn", (D, 2 * D)),
    "v": ("attn.c_attn", (2 * D, 3 * D)),
    "qkv": ("attn.c_attn", (0, 3 * D)),
    "o": ("attn.c_proj", (0, D)),
    "fc": ("mlp.c_fc", (0, 4 * D)),
    "proj": ("mlp.c_proj", (0, D)),
}


def small_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(tiny_config(n_embd=D, vocab_size=200, n_positions=32)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def ids(seed: int = 0, batch: int = 2, length: int = 9) -> torch.Tensor:
    return torch.randint(0, 200, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens)


def randomise_b(model: GPT, seed: int = 0, only: tuple[str, str] | None = None) -> None:
    """Give B random values (all slices, or only slice `only` = (module name, slice name))."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in lora_modules(model).items():
            for slice_name, b in module.lora_B.items():
                if only is None or only == (name, slice_name):
                    b.copy_(0.1 * torch.randn(b.shape, generator=generator))


def base_weights(model: GPT) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if ".lora_" not in k}


# ---------------------------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("targets", [("q", "v"), SLICES, FUSED])
def test_fresh_adapter_leaves_the_output_unchanged(targets):
    model = small_gpt()
    tokens = ids()
    before = logits(model, tokens)
    add_lora(model, rank=4, alpha=32, targets=targets)
    assert torch.equal(logits(model, tokens), before)
    # B starts at zero, A does not (else the first step would give A no gradient either).
    for module in lora_modules(model).values():
        for name in module.slices:
            assert not module.lora_B[name].any() and module.lora_A[name].abs().sum() > 0


@pytest.mark.parametrize("targets", [("q", "v"), SLICES, FUSED])
def test_only_lora_parameters_are_trainable(targets):
    model = add_lora(small_gpt(), rank=2, targets=targets)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lora_parameters(model))
    assert model.lora_config == LoRAConfig(rank=2, alpha=32.0, targets=targets)
    expected = set()
    for layer in range(2):
        for target in targets:
            path = f"transformer.h.{layer}.{TARGETS[target][0]}"
            expected |= {f"{path}.lora_A.{target}", f"{path}.lora_B.{target}"}
    assert trainable == expected
    state = lora_state_dict(model)
    assert set(state) == expected and not any(t.requires_grad for t in state.values())


@pytest.mark.parametrize("target", list(EXPECTED))
def test_each_target_sits_on_its_module(target):
    model = add_lora(small_gpt(), rank=2, targets=(target,))
    path = EXPECTED[target][0]
    assert set(lora_modules(model)) == {f"transformer.h.{i}.{path}" for i in range(2)}
    for module in lora_modules(model).values():
        assert module.slices == {target: EXPECTED[target][1]}


def lora_count(config: GPTConfig, rank: int, targets) -> int:
    """Trainable parameters by hand: each target adds A (r x in) and B (rows x r) per block."""
    d = config.n_embd
    in_out = {"q": (d, d), "k": (d, d), "v": (d, d), "qkv": (d, 3 * d), "o": (d, d),
              "fc": (d, 4 * d), "proj": (4 * d, d)}
    return config.n_layer * sum(rank * (in_out[t][0] + in_out[t][1]) for t in targets)


@pytest.mark.parametrize("card, rank, targets, paper", [
    ("gpt2.md", 4, ("q", "v"), 393_216),  # the paper's E2E setting (0.35M in its Table 4 is 0.39M)
    ("gpt2.md", 8, SLICES, None),
    ("gpt2.sm", 2, ("o", "fc"), None),
    ("gpt2.lg", 4, FUSED, None),
    ("gpt2.sm", 1, ("proj",), None),
])
def test_trainable_counts(card, rank, targets, paper):
    config = card_config(card)
    with torch.device("meta"):
        model = add_lora(GPT(config), rank=rank, targets=targets)
    expected = lora_count(config, rank, targets)
    if paper is not None:
        assert expected == paper
    assert count_trainable(model) == expected
    assert model.num_parameters(trainable_only=True) == expected


def test_bad_arguments_raise_and_leave_the_model_alone():
    model = small_gpt()
    for kwargs in (dict(targets=("x",)), dict(targets=()), dict(rank=0),
                   dict(targets=("qkv", "q"))):
        with pytest.raises(ValueError):
            add_lora(model, **kwargs)
    assert not lora_modules(model)
    assert all(p.requires_grad for p in model.parameters())
    add_lora(model)
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(model, targets=("o",))


# ---------------------------------------------------------------------------------------------
# the maths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", list(EXPECTED))
def test_a_nonzero_b_changes_only_its_own_rows(target):
    targets = FUSED if target in FUSED else SLICES
    model = add_lora(small_gpt(), rank=3, targets=targets)
    path, (start, end) = EXPECTED[target]
    adapted = f"transformer.h.1.{path}"
    randomise_b(model, only=(adapted, target))
    for name, module in lora_modules(model).items():
        delta = module.delta_weight()
        if name != adapted:
            assert not delta.any(), name
            continue
        rows = delta.abs().sum(dim=1) > 0
        expected_rows = torch.zeros(module.out_features, dtype=torch.bool)
        expected_rows[start:end] = True
        assert torch.equal(rows, expected_rows)
        # The module's output changes in exactly those features.
        x = torch.randn(2, 5, module.in_features)
        with torch.no_grad():
            change = (module(x) - F.linear(x, module.weight, module.bias)).abs().amax(dim=(0, 1))
        assert torch.equal(change > 0, expected_rows)


def explicit(module: LoRALinear, x: torch.Tensor, dropped: torch.Tensor | None = None) -> torch.Tensor:
    """W x + b + (alpha/r) B A x, slice by slice, written out with matmuls."""
    dropped = x if dropped is None else dropped
    y = x @ module.weight.T + module.bias
    scale = module.alpha / module.rank
    parts = []
    for name, (start, end) in module.slices.items():
        A, B = module.lora_A[name], module.lora_B[name]
        update = torch.zeros_like(y)
        update[..., start:end] = scale * (dropped @ A.T @ B.T)
        parts.append(update)
    return y + sum(parts)


@pytest.mark.parametrize("path, targets", [
    ("attn.c_attn", ("q", "v")), ("attn.c_attn", ("k", "q", "v")), ("attn.c_attn", ("qkv",)),
    ("mlp.c_fc", ("fc",)), ("mlp.c_proj", ("proj",)), ("attn.c_proj", ("o",)),
])
def test_forward_is_w_x_plus_b_plus_scaled_b_a_x(path, targets):
    model = add_lora(small_gpt(), rank=4, alpha=16, targets=targets)
    randomise_b(model, seed=3)
    module = lora_modules(model)[f"transformer.h.0.{path}"]
    x = torch.randn(3, 5, module.in_features)
    with torch.no_grad():
        torch.testing.assert_close(module(x), explicit(module, x), atol=1e-5, rtol=0)
        # delta_weight is the same update as one matrix
        torch.testing.assert_close(x @ (module.weight + module.delta_weight()).T + module.bias,
                                   explicit(module, x), atol=1e-5, rtol=0)


def test_dropout_applies_to_the_lora_branch_in_train_mode_only():
    model = add_lora(small_gpt(), rank=4, alpha=8, dropout=0.5, targets=("q", "v"))
    randomise_b(model, seed=4)
    module = lora_modules(model)["transformer.h.0.attn.c_attn"]
    x = torch.randn(2, 6, D)
    with torch.no_grad():
        module.eval()
        torch.testing.assert_close(module(x), explicit(module, x), atol=1e-5, rtol=0)
        module.train()
        torch.manual_seed(7)
        out = module(x)
        torch.manual_seed(7)
        dropped = F.dropout(x, 0.5, training=True)
        torch.testing.assert_close(out, explicit(module, x, dropped), atol=1e-5, rtol=0)
        assert not torch.allclose(out, explicit(module, x), atol=1e-3)
    # Model level: eval is deterministic; train mode with B = 0 is still exactly the base
    # model, so dropout never touches the frozen path (the model's own dropout is 0).
    tokens = ids(1)
    model.eval()
    assert torch.equal(logits(model, tokens), logits(model, tokens))
    fresh = small_gpt()
    base = logits(fresh, tokens)
    add_lora(fresh, rank=4, dropout=0.5).train()
    assert torch.equal(logits(fresh, tokens), base)


@pytest.mark.parametrize("targets", [SLICES, FUSED])
def test_merge_and_unmerge(targets):
    model = add_lora(small_gpt(), rank=4, alpha=32, targets=targets)
    randomise_b(model, seed=5)
    tokens = ids(2)
    original = base_weights(model)
    unmerged = logits(model, tokens)
    assert not torch.allclose(unmerged, logits(small_gpt(), tokens), atol=1e-3)  # LoRA matters

    merge(model)
    assert all(m.merged for m in lora_modules(model).values())
    merged_weights = base_weights(model)
    for name, module in lora_modules(model).items():
        torch.testing.assert_close(module.weight, original[f"{name}.weight"] + module.delta_weight(),
                                   atol=1e-7, rtol=0)
    torch.testing.assert_close(logits(model, tokens), unmerged, atol=1e-5, rtol=0)
    merge(model)  # a second merge must not add the update again
    for key, value in base_weights(model).items():
        assert torch.equal(value, merged_weights[key]), key

    unmerge(model)
    assert not any(m.merged for m in lora_modules(model).values())
    restored = base_weights(model)
    for key, value in restored.items():
        torch.testing.assert_close(value, original[key], atol=1e-6, rtol=0)
    unmerge(model)  # no-op
    for key, value in base_weights(model).items():
        assert torch.equal(value, restored[key]), key
    torch.testing.assert_close(logits(model, tokens), unmerged, atol=1e-5, rtol=0)


def test_gradients_reach_only_lora_parameters():
    model = add_lora(small_gpt(), rank=4, targets=SLICES).train()
    randomise_b(model, seed=6)  # with B = 0, A's gradient would be zero
    tokens = ids(3)
    out = model(tokens[:, :-1])
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), tokens[:, 1:].reshape(-1))
    loss.backward()
    lora = lora_parameters(model)
    for name, param in model.named_parameters():
        if name in lora:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


# ---------------------------------------------------------------------------------------------
# composing with checkpoint loading
# ---------------------------------------------------------------------------------------------


def published_state(model: GPT) -> dict[str, torch.Tensor]:
    """`model`'s base weights as a published checkpoint stores them (Conv1D: (in, out))."""
    return published_layout({k: v.clone() for k, v in model.state_dict().items() if ".lora_" not in k})


def test_base_weights_load_into_a_model_with_lora():
    model = add_lora(small_gpt(seed=1), rank=4, targets=SLICES)
    randomise_b(model, seed=7)
    adapter = {k: v.clone() for k, v in lora_state_dict(model).items()}
    other = small_gpt(seed=2)
    load_base_weights(model, published_state(other))  # the .lora_ keys are not "missing"
    for key, value in base_weights(model).items():
        assert torch.equal(value, other.state_dict()[key]), key
    for key, value in lora_state_dict(model).items():
        assert torch.equal(value, adapter[key]), key
    assert count_trainable(model) == lora_count(model.config, 4, SLICES)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".lora_" not in n)
    # Same result as putting the adapter on the other model directly.
    add_lora(other, rank=4, targets=SLICES)
    other.load_state_dict(adapter, strict=False)
    torch.testing.assert_close(logits(model, ids(4)), logits(other, ids(4)), atol=1e-6, rtol=0)
    # Strictness is unchanged: lora keys in the checkpoint are unexpected, base keys missing.
    state = published_state(other)
    del state["transformer.h.0.ln_1.bias"]
    state["transformer.h.0.attn.c_attn.lora_A.q"] = adapter["transformer.h.0.attn.c_attn.lora_A.q"]
    with pytest.raises(CheckpointError) as error:
        load_base_weights(model, state)
    message = str(error.value)
    assert "missing 1: transformer.h.0.ln_1.bias" in message
    assert "unexpected 1: transformer.h.0.attn.c_attn.lora_A.q" in message


def test_from_pretrained_then_add_lora(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    from nlg.weights import from_pretrained

    hf_gpt2_dir(tmp_path, tiny_config(n_head=2, n_embd=128, vocab_size=200, n_positions=32))
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    model = add_lora(from_pretrained(tmp_path), rank=4, targets=("q", "v")).eval()
    tokens = ids(5)
    with torch.no_grad():
        expected = hf(tokens).logits
    torch.testing.assert_close(logits(model, tokens), expected, atol=1e-4, rtol=0)
    randomise_b(model, seed=8)
    assert not torch.allclose(logits(model, tokens), expected, atol=1e-3)


def test_repeated_targets_are_refused():
    with pytest.raises(ValueError, match="repeat"):
        LoRAConfig(targets=("q", "q"))


def test_lora_linear_shares_the_base_weight_without_reallocating():
    base = torch.nn.Linear(8, 12)
    module = LoRALinear(base, {"all": (0, 12)}, LoRAConfig(rank=2))
    assert module.weight is base.weight and module.bias is base.bias
