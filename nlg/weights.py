"""Reading and writing published GPT-2 checkpoints (nlg.model is the model itself).

A published checkpoint (a Hugging Face directory with config.json and model.safetensors or
pytorch_model.bin, or a bare .bin/.safetensors file) maps one to one onto nlg.model.GPT's
parameter names; its projections are stored as Conv1D weights (in, out), transposed to
nn.Linear's (out, in) on load and back on save. Loading is strict: every parameter must be
filled, and missing, unexpected and mis-shaped keys are all listed (CheckpointError).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch
from torch import Tensor

from nlg.files import InputError
from nlg.model import GPT, GPTConfig, card_config

# ---------------------------------------------------------------------------------------------
# Loading published checkpoints
# ---------------------------------------------------------------------------------------------

# Buffers some published checkpoints carry (the causal mask); not parameters, safe to skip.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# Published checkpoints store these as Conv1D weights, (in, out).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def published_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state` with our nn.Linear (out, in) projections as published GPT-2 files store them:
    Conv1D's (in, out). Transformers' GPT2LMHeadModel loads the result."""
    return {k: (v.t() if k.endswith(_CONV1D) else v).contiguous() for k, v in state.items()}


def is_method_parameter(name: str) -> bool:
    """A parameter a fine-tuning method added (each method names its own: nlg.methods), no part
    of a published GPT-2."""
    from nlg.methods import is_added_parameter

    return is_added_parameter(name)


class CheckpointError(InputError):
    """A checkpoint that does not fill the model exactly; the message lists every problem key."""


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of a `.safetensors` or `.bin`/`.pt` file; pickles are read with weights_only=True."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except OSError:
            raise  # missing, no permission: the machine's state, reported as such
        except Exception as error:  # noqa: BLE001 - safetensors' own SafetensorError for a damaged file
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses anything but tensors and plain containers: never run a pickle's code.
        raise CheckpointError(f"{path}: refused: the pickle holds objects other than tensors, "
                              "which could run code when loaded") from None
    except OSError:
        raise  # missing, no permission: the machine's state, reported as such
    except Exception as error:  # noqa: BLE001 - a damaged zip (RuntimeError), or text or another
        # format, which the legacy unpickler meets as KeyError, EOFError, ValueError, ...
        raise CheckpointError(f"{path}: not a readable PyTorch file ({type(error).__name__}: "
                              f"{error})") from None
    if isinstance(state, dict) and "model_state_dict" in state:  # the paper's own checkpoints
        state = state["model_state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    return state


def normalise_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map published key spellings onto ours: optional `transformer.` prefix, skip mask buffers."""
    out = {}
    for key, tensor in state.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        if key.startswith("module."):  # saved from a DDP-wrapped model
            key = key[len("module.") :]
        if not key.startswith(("transformer.", "lm_head.")):
            key = "transformer." + key
        out[key] = tensor
    return out


def infer_config(state: dict[str, Tensor]) -> GPTConfig:
    """Shape of a GPT-2 from its tensors (a bare weights file has no config)."""
    state = normalise_keys(state)
    try:
        vocab_size, n_embd = state["transformer.wte.weight"].shape
        n_positions = state["transformer.wpe.weight"].shape[0]
    except KeyError as error:
        raise CheckpointError(f"not a GPT-2 checkpoint: no {error.args[0]!r}") from None
    layers = {int(key.split(".")[2]) for key in state if key.startswith("transformer.h.")}
    n_layer = max(layers) + 1 if layers else 0
    # Every published GPT-2 (small to xl) uses 64-wide heads.
    if n_embd % 64:
        raise CheckpointError(
            f"cannot infer the head count for width {n_embd}; pass a card or a config.json"
        )
    return GPTConfig(n_layer=n_layer, n_head=n_embd // 64, n_embd=n_embd,
                     vocab_size=vocab_size, n_positions=n_positions)


def check_finite(source: str | os.PathLike, tensors: dict[str, Tensor], what: str = "the checkpoint") -> None:
    """CheckpointError naming the first tensor holding NaN or inf: weights that decode to empty
    predictions are refused when read, by every method alike (nlg.methods' loads call this)."""
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            continue
        bad = int(torch.count_nonzero(~torch.isfinite(tensor)))
        if bad:
            raise CheckpointError(f"{source}: tensor {name} has {bad} non-finite values (NaN/inf): "
                                  f"{what} is broken (diverged training?)")


def load_base_weights(model: GPT, state: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Copy a published GPT-2 state dict into `model`, strictly.

    Every base parameter must be present with the right shape, finite, and nothing else may be
    there; otherwise CheckpointError lists the missing, unexpected and mis-shaped keys.
    """
    check_finite(source, state, "the model")
    if any(getattr(module, "merged", False) for module in model.modules()):
        raise CheckpointError("cannot load base weights into a model whose LoRA is merged; unmerge first")
    state = normalise_keys(state)
    if "lm_head.weight" in state:  # tied to wte; check it really is the same matrix
        head = state.pop("lm_head.weight")
        wte = state.get("transformer.wte.weight")
        if wte is not None and (head.shape != wte.shape or not torch.equal(head, wte)):
            raise CheckpointError(f"{source}: lm_head.weight differs from transformer.wte.weight "
                                  "(GPT-2 ties them)")
    expected = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    expected = {k: v for k, v in expected.items() if not is_method_parameter(k)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = []
    converted = {}
    for key in sorted(set(expected) & set(state)):
        tensor = state[key]
        if key.endswith(_CONV1D) and tensor.ndim == 2:
            tensor = tensor.t()
        if tensor.shape != expected[key].shape:
            mis_shaped.append(f"{key}: checkpoint {tuple(tensor.shape)}, model {tuple(expected[key].shape)}")
        converted[key] = tensor
    if missing or unexpected or mis_shaped:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)}: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)}: {', '.join(unexpected)}")
        if mis_shaped:
            problems.append(f"mis-shaped {len(mis_shaped)}: {'; '.join(mis_shaped)}")
        raise CheckpointError(f"{source} does not match the model:\n  " + "\n  ".join(problems))
    with torch.no_grad():
        params = dict(model.named_parameters())
        params.update(dict(model.named_buffers()))
        for key, tensor in converted.items():
            params[key].copy_(tensor.to(params[key].dtype))


def _published_state(model: GPT, what: str) -> dict[str, Tensor]:
    """`model`'s weights on the CPU as published GPT-2 files hold them: Conv1D projections and no
    lm_head (tied to wte). A LoRA'd model is refused: merge it into a copy or save its adapter."""
    if any(is_method_parameter(name) for name, _ in model.named_parameters()):
        raise ValueError(f"{what} takes base models; save the method's own weights with its "
                         "nlg.methods save (LoRA: nlg.methods.lora.peft_files.save_adapter)")
    return published_layout({k: v.detach().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"})


def save_pretrained(model: GPT, directory: str | os.PathLike) -> Path:
    """Write `model` as a Hugging Face GPT-2 directory (config.json + model.safetensors).

    Projections go back to Conv1D's (in, out) layout and the tied lm_head is left out, so
    `from_pretrained` here and transformers' `GPT2LMHeadModel.from_pretrained` both read it.
    A LoRA'd model is refused: merge it into a copy or save its adapter instead.
    """
    from safetensors.torch import save

    from nlg.files import atomic_write

    tensors = _published_state(model, "save_pretrained")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / "model.safetensors", "wb") as handle:
        handle.write(save(tensors, metadata={"format": "pt"}))
    with atomic_write(directory / "config.json") as handle:
        handle.write(json.dumps(hf_config(model.config), indent=2) + "\n")
    return directory


def hf_config(c: GPTConfig) -> dict:
    """The Hugging Face config.json of a GPT-2 of shape `c`."""
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd, "vocab_size": c.vocab_size,
        "n_positions": c.n_positions, "n_ctx": c.n_positions, "layer_norm_epsilon": c.layer_norm_epsilon,
        "activation_function": "gelu_new", "bos_token_id": 50256, "eos_token_id": 50256,
        "tie_word_embeddings": True,
    }


def to_transformers(model: GPT, attn_implementation: str | None = None):
    """A transformers `GPT2LMHeadModel` (eval mode, dropout off) holding exactly `model`'s
    weights, on the CPU: the baseline of the benchmarks and of equivalence tests. Needs the
    `transformers` package (a test extra, not a dependency). attn_implementation: e.g. "sdpa"
    (default: transformers' own choice)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.n_positions, n_embd=c.n_embd,
                        n_layer=c.n_layer, n_head=c.n_head, layer_norm_epsilon=c.layer_norm_epsilon,
                        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    hf = GPT2LMHeadModel(config)
    missing, unexpected = hf.load_state_dict(_published_state(model, "to_transformers"), strict=False)
    # lm_head is tied to wte, which was loaded; the mask buffers are transformers' own.
    missing = [k for k in missing if k != "lm_head.weight" and not k.endswith(_IGNORED_SUFFIXES)]
    if missing or unexpected or hf.lm_head.weight is not hf.transformer.wte.weight:
        raise RuntimeError(f"weight transfer to transformers failed: missing {missing}, unexpected {unexpected}")
    return hf.eval()


WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")  # a Hugging Face directory's, in order of preference


def checkpoint_files(path: str | os.PathLike | None) -> list[Path]:
    """The files `from_pretrained(path)` may read: the file itself, or a directory's config.json
    and weights files (for commands to check that no output would overwrite them)."""
    if path is None:
        return []
    path = Path(path)
    return [path / name for name in ("config.json", *WEIGHTS_FILES)] if path.is_dir() else [path]


def find_weights_file(directory: Path) -> Path:
    for name in WEIGHTS_FILES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory}: no model.safetensors or pytorch_model.bin in the directory")


def from_pretrained(path: str | os.PathLike, card: str | None = None) -> GPT:
    """Load a GPT-2 from a Hugging Face directory or a bare weights file, strictly.

    path: a directory with `config.json` and `model.safetensors` or `pytorch_model.bin`, or a
        single file (e.g. the paper's `gpt2-medium-pytorch_model.bin`).
    card: a model card name; when given, the checkpoint must have that shape. Without it the
        shape comes from `config.json`, or is inferred from the tensors.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file or directory")
    config = None
    if path.is_dir():
        weights = find_weights_file(path)
        if (path / "config.json").is_file():
            config = GPTConfig.from_hf_config(path / "config.json")
    else:
        weights = path
    state = read_state_dict(weights)
    if card is not None:
        card_cfg = card_config(card)
        if config is not None and config != card_cfg:
            raise CheckpointError(f"{path}: config.json describes {config}, not card {card} ({card_cfg})")
        config = card_cfg
    if config is None:
        config = infer_config(state)
    model = GPT(config)
    try:
        load_base_weights(model, state, source=str(weights))
    except CheckpointError as error:
        raise CheckpointError(f"{error}{_method_hint(path)}") from None
    return model


def _method_hint(path: Path) -> str:
    """'; ... give it as --checkpoint' when `path` holds a fine-tuning method's checkpoint that
    needs a base (a top2 checkpoint's few blocks, an adapter) rather than a whole GPT-2."""
    from nlg import methods

    if not path.is_dir():
        return ""
    try:
        method, _, _ = methods.detect(path)
    except (InputError, OSError, ValueError, KeyError, TypeError):
        return ""
    if not method.needs_base:
        return ""
    return (f" ({path} is a checkpoint of --method {method.name}, not a whole GPT-2: give it as "
            "--checkpoint, with the base it was trained on as --init_checkpoint)")
