"""nlg.model against Hugging Face transformers as the independent reference: the KV cache, left
padding, length limits, cards and configs. Reading and writing published checkpoints (nlg.weights):
tests/test_weights.py.
"""

from __future__ import annotations

import pytest
import torch
from helpers import hf_gpt2, our_logits, perturbed_gpt, random_ids, tiny_config

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from transformers import GPT2Config  # noqa: E402

from nlg.model import CARDS, GPT, GPTConfig, KVCache, card_config  # noqa: E402
from nlg.weights import CheckpointError, infer_config  # noqa: E402

# ---------------------------------------------------------------------------------------------
# KV cache and left padding
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt() -> GPT:
    return perturbed_gpt(tiny_config(vocab_size=1000))


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
# Cards and configs
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


def test_return_hidden_is_the_input_of_the_head():
    torch.manual_seed(0)
    model = GPT(tiny_config(n_head=2, n_embd=32, vocab_size=100)).eval()
    x = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        hidden = model(x, return_hidden=True)
        assert hidden.shape == (2, 7, 32)
        assert torch.equal(model.lm_head(hidden), model(x))
