"""nlg.weights: published GPT-2 checkpoints read and written, against Hugging Face transformers.

Small random GPT-2s are built with `transformers.GPT2LMHeadModel`, every parameter perturbed
(so biases and LayerNorm gains are not their trivial initial values), written out in each
checkpoint layout we claim to read, loaded with `from_pretrained` and compared logit by logit;
loading is strict, refuses pickled code, and a file that is not one is one line.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers import (
    error_line,
    hf_gpt2,
    hf_logits,
    nlg,
    our_logits,
    perturbed_gpt,
    random_ids,
    tiny_config,
    write_encoded,
)

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from safetensors.torch import save_file  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

from nlg.model import CARDS, GPT, GPTConfig, card_config  # noqa: E402
from nlg.weights import (  # noqa: E402
    CheckpointError,
    from_pretrained,
    load_base_weights,
    read_state_dict,
    save_pretrained,
    to_transformers,
)

pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = 1e-4  # fp32 logits against transformers


@pytest.fixture(scope="module")
def gpt() -> GPT:
    return perturbed_gpt(tiny_config(vocab_size=1000))


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
# logits equal transformers' for every checkpoint layout
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
# strict loading
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
# writing: our published layout, read back by us and by transformers
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# A file that is not a checkpoint: one line
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "beam", "analyze"])
def test_a_text_file_named_bin_is_one_line(lora_run, tmp_path, capsys, command):
    fake = tmp_path / "model.bin"
    fake.write_text("hello\n")
    data = write_encoded(tmp_path / "x.jsonl", 2)
    argv = {"train": ["train", "--train_data", data, "--init_checkpoint", fake, "--work_dir", tmp_path / "w",
                      "--device", "cpu"],
            "beam": ["beam", "--data", data, "--init_checkpoint", fake, "--output_file", tmp_path / "o.jsonl"],
            "analyze": ["analyze", lora_run["work"] / "checkpoint-3", "--base", fake,
                        "--json", tmp_path / "report.json"]}[command]
    assert nlg(*argv) == 2
    prefix = "--init_checkpoint {fake}: " if command == "train" else ""
    assert error_line(capsys) == (f"nlg {command}: error: {prefix.format(fake=fake)}{fake}: not a readable "
                                  "PyTorch file (KeyError: 101)\n")
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "report.json").exists()
