"""nlg.model against Hugging Face transformers as the independent reference.

Small random GPT-2s are built with `transformers.GPT2LMHeadModel`, every parameter perturbed
(so biases and LayerNorm gains are not their trivial initial values), written out in each
checkpoint layout we claim to read, loaded with `from_pretrained` and compared logit by logit.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from safetensors.torch import save_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from nlg.model import CARDS, GPT, GPTConfig, KVCache, card_config  # noqa: E402
from nlg.weights import (  # noqa: E402
    CheckpointError,
    from_pretrained,
    infer_config,
    load_base_weights,
    read_state_dict,
    save_pretrained,
    to_transformers,
)

ATOL = 1e-4  # fp32 logits against transformers


def hf_gpt2(seed: int, n_layer=2, n_head=2, n_embd=128, vocab_size=1000, n_positions=64):
    """A random HF GPT-2 in eval mode whose every parameter is perturbed away from its init."""
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size,
                        n_positions=n_positions, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def hf_logits(model: GPT2LMHeadModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def our_logits(model: GPT, ids: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, **kwargs)


def random_ids(vocab: int, batch: int = 2, length: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def hf_state(model: GPT2LMHeadModel) -> dict[str, torch.Tensor]:
    """The HF state dict with independent tensors (lm_head stays an equal copy of wte)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def legacy_state(model: GPT2LMHeadModel) -> dict[str, torch.Tensor]:
    """The layout of the paper's `gpt2-medium-pytorch_model.bin`: no `transformer.` prefix,
    no lm_head, and each block's causal-mask buffers `h.N.attn.bias` / `h.N.attn.masked_bias`."""
    n = model.config.n_positions
    state = {}
    for key, tensor in hf_state(model).items():
        if key == "lm_head.weight":
            continue
        state[key.removeprefix("transformer.")] = tensor
    for layer in range(model.config.n_layer):
        state[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        state[f"h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    return state


@pytest.fixture(scope="module")
def hf_model() -> GPT2LMHeadModel:
    # 32-wide heads: the head count cannot be inferred, so directory tests rely on config.json.
    return hf_gpt2(seed=1, n_head=4)


@pytest.fixture(scope="module")
def hf_model_64() -> GPT2LMHeadModel:
    # 64-wide heads, as in every published GPT-2: bare files can infer their shape.
    return hf_gpt2(seed=2, n_head=2)


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hf_safetensors")
    hf_model.save_pretrained(directory)
    assert (directory / "model.safetensors").is_file()
    return directory


# ---------------------------------------------------------------------------------------------
# 1. logits equal transformers' for every checkpoint layout
# ---------------------------------------------------------------------------------------------


def test_hf_directory_safetensors_matches_transformers(hf_model, hf_dir):
    model = from_pretrained(hf_dir).eval()
    assert model.config == GPTConfig(n_layer=2, n_head=4, n_embd=128, vocab_size=1000, n_positions=64)
    ids = random_ids(1000)
    ours = our_logits(model, ids)
    assert ours.shape == (2, 11, 1000)
    torch.testing.assert_close(ours, hf_logits(hf_model, ids), atol=ATOL, rtol=0)


def test_hf_directory_pytorch_bin_matches_transformers(hf_model, hf_dir, tmp_path):
    # transformers 5 always writes safetensors, so write the legacy directory layout by hand;
    # the HF state dict carries lm_head.weight equal to wte, which must be accepted.
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    state = hf_state(hf_model)
    assert "lm_head.weight" in state
    torch.save(state, tmp_path / "pytorch_model.bin")
    model = from_pretrained(tmp_path).eval()
    ids = random_ids(1000, seed=1)
    torch.testing.assert_close(our_logits(model, ids), hf_logits(hf_model, ids), atol=ATOL, rtol=0)


def test_bare_bin_with_transformer_prefix(hf_model_64, tmp_path):
    path = tmp_path / "weights.bin"
    torch.save(hf_state(hf_model_64), path)
    model = from_pretrained(path).eval()
    assert model.config == GPTConfig(n_layer=2, n_head=2, n_embd=128, vocab_size=1000, n_positions=64)
    ids = random_ids(1000, seed=2)
    torch.testing.assert_close(our_logits(model, ids), hf_logits(hf_model_64, ids), atol=ATOL, rtol=0)


def test_bare_legacy_bin_without_prefix_and_with_mask_buffers(hf_model_64, tmp_path):
    # Written in the pre-1.6 (non-zip) format, as the 2019 file is.
    path = tmp_path / "gpt2-pytorch_model.bin"
    torch.save(legacy_state(hf_model_64), path, _use_new_zipfile_serialization=False)
    model = from_pretrained(path).eval()
    assert model.config.n_layer == 2 and model.config.n_head == 2
    ids = random_ids(1000, seed=3)
    torch.testing.assert_close(our_logits(model, ids), hf_logits(hf_model_64, ids), atol=ATOL, rtol=0)


def test_bare_safetensors_file(hf_model_64, tmp_path):
    path = tmp_path / "weights.safetensors"
    state = hf_state(hf_model_64)
    del state["lm_head.weight"]  # safetensors refuses shared tensors; HF drops the tied copy too
    save_file(state, str(path))
    model = from_pretrained(path).eval()
    ids = random_ids(1000, seed=4)
    torch.testing.assert_close(our_logits(model, ids), hf_logits(hf_model_64, ids), atol=ATOL, rtol=0)


def test_ddp_module_prefix(hf_model_64, tmp_path):
    # Saved from a DistributedDataParallel-wrapped model: every key starts with `module.`.
    path = tmp_path / "ddp.bin"
    torch.save({"module." + k: v for k, v in hf_state(hf_model_64).items()}, path)
    model = from_pretrained(path).eval()
    ids = random_ids(1000, seed=12)
    torch.testing.assert_close(our_logits(model, ids), hf_logits(hf_model_64, ids), atol=ATOL, rtol=0)


def test_paper_training_checkpoint_wrapper(hf_model_64, tmp_path):
    # The paper's own trainer saves {"model_state_dict": ...}.
    path = tmp_path / "model.pt"
    torch.save({"model_state_dict": legacy_state(hf_model_64)}, path)
    model = from_pretrained(path).eval()
    ids = random_ids(1000, seed=5)
    torch.testing.assert_close(our_logits(model, ids), hf_logits(hf_model_64, ids), atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def hf_tiny_card_model() -> GPT2LMHeadModel:
    tiny = CARDS["gpt2.tiny"]
    return hf_gpt2(seed=3, n_layer=tiny.n_layer, n_head=tiny.n_head, n_embd=tiny.n_embd,
                   vocab_size=tiny.vocab_size, n_positions=tiny.n_positions)


def test_card_matching_directory_and_bare_file(hf_tiny_card_model, tmp_path):
    directory = tmp_path / "dir"
    hf_tiny_card_model.save_pretrained(directory)
    bare = tmp_path / "tiny.bin"
    torch.save(hf_state(hf_tiny_card_model), bare)
    ids = random_ids(50257, length=7, seed=6)
    expected = hf_logits(hf_tiny_card_model, ids)
    for path in (directory, bare):
        # The bare file's 32-wide heads cannot be inferred: the card supplies n_head=4.
        model = from_pretrained(path, card="gpt2.tiny").eval()
        assert model.config == CARDS["gpt2.tiny"]
        torch.testing.assert_close(our_logits(model, ids), expected, atol=ATOL, rtol=0)


def test_card_mismatching_config_json(hf_dir):
    with pytest.raises(CheckpointError, match="not card gpt2.tiny"):
        from_pretrained(hf_dir, card="gpt2.tiny")


def test_card_mismatching_bare_file_lists_mis_shaped_keys(hf_model_64, tmp_path):
    path = tmp_path / "weights.bin"
    torch.save(hf_state(hf_model_64), path)
    with pytest.raises(CheckpointError) as error:
        from_pretrained(path, card="gpt2.tiny")  # vocab 1000 / 64 positions vs 50257 / 1024
    message = str(error.value)
    assert "mis-shaped" in message
    assert "transformer.wte.weight" in message and "transformer.wpe.weight" in message


def test_unknown_card_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match="unknown model card"):
        card_config("gpt2.xxl")
    with pytest.raises(FileNotFoundError):
        from_pretrained(tmp_path / "nope.bin")
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        from_pretrained(tmp_path)


def test_head_width_not_inferable(tmp_path):
    hf = hf_gpt2(seed=4, n_layer=1, n_head=2, n_embd=96, vocab_size=50)
    path = tmp_path / "weights.bin"
    torch.save(hf_state(hf), path)
    with pytest.raises(CheckpointError, match="cannot infer the head count"):
        from_pretrained(path)


# ---------------------------------------------------------------------------------------------
# 2. strict loading
# ---------------------------------------------------------------------------------------------


def small_config() -> GPTConfig:
    return GPTConfig(n_layer=2, n_head=2, n_embd=128, vocab_size=1000, n_positions=64)


def test_missing_key_is_listed(hf_model_64):
    state = hf_state(hf_model_64)
    del state["transformer.h.1.mlp.c_fc.bias"]
    model = GPT(small_config())
    with pytest.raises(CheckpointError, match=r"missing 1: transformer\.h\.1\.mlp\.c_fc\.bias"):
        load_base_weights(model, state)


def test_extra_key_is_listed(hf_model_64):
    state = hf_state(hf_model_64)
    state["transformer.h.0.attn.rotary"] = torch.zeros(3)
    state["transformer.h.2.ln_1.weight"] = torch.ones(128)  # a layer the model does not have
    with pytest.raises(CheckpointError) as error:
        load_base_weights(GPT(small_config()), state)
    message = str(error.value)
    assert "unexpected 2" in message
    assert "transformer.h.0.attn.rotary" in message and "transformer.h.2.ln_1.weight" in message


def test_mis_shaped_tensor_is_listed(hf_model_64):
    state = hf_state(hf_model_64)
    state["transformer.h.0.attn.c_attn.bias"] = torch.zeros(100)
    with pytest.raises(CheckpointError) as error:
        load_base_weights(GPT(small_config()), state)
    message = str(error.value)
    assert "mis-shaped 1" in message
    assert "transformer.h.0.attn.c_attn.bias: checkpoint (100,), model (384,)" in message


def test_all_problems_reported_together_and_model_untouched(hf_model_64, tmp_path):
    state = hf_state(hf_model_64)
    del state["transformer.ln_f.weight"]
    state["transformer.extra"] = torch.zeros(1)
    state["transformer.h.1.mlp.c_proj.weight"] = torch.zeros(4, 4)
    (tmp_path / "config.json").write_text(hf_model_64.config.to_json_string())
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as error:
        from_pretrained(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "pytorch_model.bin") in message
    for key in ("transformer.ln_f.weight", "transformer.extra", "transformer.h.1.mlp.c_proj.weight"):
        assert key in message
    # Nothing is copied before everything has been checked.
    model = GPT(small_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError):
        load_base_weights(model, state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_lm_head_must_equal_wte(hf_model_64, tmp_path):
    state = hf_state(hf_model_64)
    state["lm_head.weight"] = state["lm_head.weight"] + 1e-3
    path = tmp_path / "untied.bin"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="lm_head.weight differs from transformer.wte.weight"):
        from_pretrained(path)


class _WritesAFile:
    """Unpickling this would call open(path, "w"), creating the file: code run from a pickle."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    payload = {"transformer.wte.weight": _WritesAFile(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="refused"):
        from_pretrained(path)
    assert not marker.exists()
    # The same file does run code when loaded without weights_only: the test can fail.
    torch.load(path, weights_only=False) if writer == "torch.save" else pickle.loads(path.read_bytes())
    assert marker.exists()


def test_non_dict_checkpoint_is_refused(tmp_path):
    path = tmp_path / "tensor.bin"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="expected a dict of tensors"):
        read_state_dict(path)


# ---------------------------------------------------------------------------------------------
# 3. KV cache and left padding
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt() -> GPT:
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=1000)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def test_attention_never_offers_cudnn_its_per_shape_plans(gpt, monkeypatch):
    # cuDNN's attention re-plans for every new shape, and E2E shapes change every step: on an
    # H100 it made training 3.3x and bf16 beam search 7x slower (bench/attention_backends.py).
    import torch.nn.functional as F

    seen, real = [], F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append((torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()))
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    gpt(random_ids(1000, batch=2, length=5, seed=3), key_mask=torch.ones(2, 5, dtype=torch.bool))
    gpt(random_ids(1000, batch=2, length=5, seed=3))
    assert seen == [(False, True)] * 4  # 2 layers x 2 calls
    assert torch.backends.cuda.cudnn_sdp_enabled()  # the choice is undone after each call


def test_kv_cache_prefill_then_single_tokens_equals_full(gpt):
    ids = random_ids(1000, batch=3, length=13, seed=7)
    full = our_logits(gpt, ids)
    cache = KVCache(gpt.config, batch=3, max_len=20)
    steps = [our_logits(gpt, ids[:, :5], cache=cache)]
    assert cache.length == 5
    for t in range(5, 13):
        steps.append(our_logits(gpt, ids[:, t : t + 1], cache=cache))
    assert cache.length == 13
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_kv_cache_from_empty_one_token_at_a_time(gpt):
    ids = random_ids(1000, batch=1, length=6, seed=8)
    cache = KVCache(gpt.config, batch=1, max_len=6)
    steps = [our_logits(gpt, ids[:, t : t + 1], cache=cache) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), our_logits(gpt, ids), atol=1e-5, rtol=0)


def test_kv_cache_chunks_after_prefill_stay_causal(gpt):
    # Several new tokens at once after a prefill (e.g. appending a forced suffix) must not
    # see each other's future.
    ids = random_ids(1000, batch=2, length=12, seed=9)
    cache = KVCache(gpt.config, batch=2, max_len=12)
    chunks = [(0, 4), (4, 7), (7, 8), (8, 12)]
    steps = [our_logits(gpt, ids[:, a:b], cache=cache) for a, b in chunks]
    torch.testing.assert_close(torch.cat(steps, dim=1), our_logits(gpt, ids), atol=1e-5, rtol=0)


def left_pad(seqs: list[torch.Tensor], pad_id: int = 0):
    """(ids, position_ids, key_mask) of a left-padded batch."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.bool)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = seq
        mask[row, width - len(seq) :] = True
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    return ids, positions, mask


def test_left_padded_batch_equals_unpadded_singles(gpt):
    seqs = [random_ids(1000, batch=1, length=n, seed=10 + n)[0] for n in (7, 3, 9)]
    ids, positions, mask = left_pad(seqs, pad_id=999)
    batch = our_logits(gpt, ids, position_ids=positions, key_mask=mask)
    assert torch.isfinite(batch).all()
    for row, seq in enumerate(seqs):
        single = our_logits(gpt, seq[None])[0]
        torch.testing.assert_close(batch[row, -len(seq) :], single, atol=1e-5, rtol=0)
    # Without the mask, the pads leak into the short rows: the check above can fail.
    leaky = our_logits(gpt, ids, position_ids=positions)
    assert not torch.allclose(leaky[1, -3:], our_logits(gpt, seqs[1][None])[0], atol=1e-3)


def test_left_padded_batch_decodes_with_cache(gpt):
    seqs = [random_ids(1000, batch=1, length=n, seed=20 + n)[0] for n in (5, 2, 8)]
    extra = random_ids(1000, batch=3, length=4, seed=30)
    ids, positions, mask = left_pad(seqs)
    cache = KVCache(gpt.config, batch=3, max_len=ids.shape[1] + extra.shape[1])
    steps = [our_logits(gpt, ids, cache=cache, position_ids=positions, key_mask=mask)[:, -1:]]
    for t in range(extra.shape[1]):
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], dim=1)
        steps.append(our_logits(gpt, extra[:, t : t + 1], cache=cache, position_ids=positions,
                                key_mask=mask))
    decoded = torch.cat(steps, dim=1)  # logits after the prompt, then after each extra token
    for row, seq in enumerate(seqs):
        full = our_logits(gpt, torch.cat([seq, extra[row]])[None])[0]
        torch.testing.assert_close(decoded[row], full[len(seq) - 1 :], atol=1e-5, rtol=0)


def test_kv_cache_reorder(gpt):
    prompts = random_ids(1000, batch=3, length=6, seed=40)
    nxt = random_ids(1000, batch=4, length=1, seed=41)
    index = torch.tensor([2, 0, 0, 1])  # rows may repeat (beams sharing a parent) and grow
    cache = KVCache(gpt.config, batch=3, max_len=8)
    our_logits(gpt, prompts, cache=cache)
    cache.reorder(index)
    assert cache.length == 6 and cache.keys[0].shape[0] == 4
    step = our_logits(gpt, nxt, cache=cache)
    expected = our_logits(gpt, torch.cat([prompts[index], nxt], dim=1))[:, -1:]
    torch.testing.assert_close(step, expected, atol=1e-5, rtol=0)


def test_length_limits(gpt):
    with pytest.raises(ValueError, match="exceeds n_positions"):
        gpt(torch.zeros(1, 65, dtype=torch.long))
    cache = KVCache(gpt.config, batch=1, max_len=4)
    gpt(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="cache holds 4 tokens"):
        gpt(torch.zeros(1, 2, dtype=torch.long), cache=cache)


# ---------------------------------------------------------------------------------------------
# 4. cards and configs
# ---------------------------------------------------------------------------------------------


# Published parameter counts (tied embeddings counted once): GPT-2 small 124M, medium 355M,
# large 774M.
@pytest.mark.parametrize("card, shape, count", [
    ("gpt2.sm", (12, 12, 768), 124_439_808),
    ("gpt2.md", (24, 16, 1024), 354_823_168),
    ("gpt2.lg", (36, 20, 1280), 774_030_080),
])
def test_cards_shapes_and_parameter_counts(card, shape, count):
    config = card_config(card)
    assert (config.n_layer, config.n_head, config.n_embd) == shape
    assert (config.vocab_size, config.n_positions) == (50257, 1024)
    with torch.device("meta"):
        model = GPT(config)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.num_parameters() == count
    assert model.num_parameters(trainable_only=True) == count


def test_tiny_card_parameter_count_formula():
    c = card_config("gpt2.tiny")
    d, L = c.n_embd, c.n_layer
    per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    expected = c.vocab_size * d + c.n_positions * d + L * per_block + 2 * d
    with torch.device("meta"):
        assert GPT(c).num_parameters() == expected


def test_parameter_names_match_transformers():
    hf = hf_gpt2(seed=5, n_layer=2, n_head=2, n_embd=64, vocab_size=100, n_positions=16)
    ours = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, vocab_size=100, n_positions=16))
    assert set(ours.state_dict()) == set(hf.state_dict())


def test_from_hf_config(tmp_path):
    GPT2Config(n_layer=3, n_head=5, n_embd=80, vocab_size=321, n_positions=40,
               layer_norm_epsilon=1e-6).save_pretrained(tmp_path)
    config = GPTConfig.from_hf_config(tmp_path / "config.json")
    assert config == GPTConfig(n_layer=3, n_head=5, n_embd=80, vocab_size=321, n_positions=40,
                               layer_norm_epsilon=1e-6)
    (tmp_path / "bad.json").write_text('{"n_layer": 2, "n_embd": 64}')
    with pytest.raises(ValueError, match="lacks key 'n_head'"):
        GPTConfig.from_hf_config(tmp_path / "bad.json")


def test_config_validation_and_inference():
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(n_head=5, n_embd=64)
    with torch.device("meta"):
        state = GPT(CARDS["gpt2.md"]).state_dict()
    assert infer_config(state) == CARDS["gpt2.md"]
    with pytest.raises(CheckpointError, match="not a GPT-2 checkpoint"):
        infer_config({"h.0.ln_1.weight": torch.zeros(4)})


@pytest.mark.parametrize("key, value", [("activation_function", "relu"), ("n_inner", 100),
                                        ("scale_attn_by_inverse_layer_idx", True)])
def test_unsupported_config_variants_are_refused(tmp_path, key, value):
    import json

    config = {"n_layer": 2, "n_head": 2, "n_embd": 64, key: value}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=key):
        GPTConfig.from_hf_config(tmp_path / "config.json")


def test_loading_into_a_merged_model_is_refused():
    from nlg.methods.lora.layer import add_lora, merge

    model = merge(add_lora(GPT(tiny_config())))
    with pytest.raises(CheckpointError, match="unmerge first"):
        load_base_weights(model, GPT(tiny_config()).state_dict())


def test_save_pretrained_round_trips_through_us_and_transformers(tmp_path):
    torch.manual_seed(0)
    ours = GPT(tiny_config(n_head=2, n_positions=32)).eval()
    save_pretrained(ours, tmp_path / "saved")
    x = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        expected = ours(x)
        assert torch.equal(from_pretrained(tmp_path / "saved")(x), expected)
        theirs = GPT2LMHeadModel.from_pretrained(tmp_path / "saved").eval()
        assert torch.allclose(theirs(x).logits, expected, atol=1e-5)


def test_to_transformers_gives_our_logits(gpt):
    from nlg.methods.lora.layer import add_lora

    theirs = to_transformers(gpt)
    ids = random_ids(1000)
    torch.testing.assert_close(hf_logits(theirs, ids), our_logits(gpt, ids), atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="save_adapter"):
        to_transformers(add_lora(GPT(tiny_config())))


def test_save_pretrained_refuses_a_lora_model(tmp_path):
    from nlg.methods.lora.layer import add_lora

    with pytest.raises(ValueError, match="save_adapter"):
        save_pretrained(add_lora(GPT(tiny_config())), tmp_path)


def test_return_hidden_is_the_input_of_the_head():
    torch.manual_seed(0)
    model = GPT(tiny_config(n_head=2, n_embd=32, vocab_size=100)).eval()
    x = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        hidden = model(x, return_hidden=True)
        assert hidden.shape == (2, 7, 32)
        assert torch.equal(model.lm_head(hidden), model(x))
