"""GPT-2, readable top to bottom, with a key/value cache and strict checkpoint loading.

Module and parameter names follow the published checkpoints (`transformer.h.0.attn.c_attn`,
...), so a Hugging Face state dict maps one to one; the only difference is that
published checkpoints store their projections as `Conv1D` weights of shape (in, out),
which are transposed to `nn.Linear`'s (out, in) on load.

Cards: `gpt2.sm` (12 layers, 768 wide, 12 heads), `gpt2.md` (24, 1024, 16),
`gpt2.lg` (36, 1280, 20), and `gpt2.tiny` (2, 128, 4) for tests and CPU demos.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from nlg.files import InputError, read_json

# Every attention kernel but cuDNN's. PyTorch picks cuDNN's for bf16 on Hopper GPUs, and it
# builds a plan for every new shape; E2E shapes change at every training step (each batch is
# padded to its own longest pair) and at every decoding step (the cache grows). On an H100,
# GPT-2 M: training steps 203 -> 61 ms, bf16 beam search 7.1x faster (bench/attention_backends.py).
ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    vocab_size: int = 50257
    n_positions: int = 1024
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")

    @classmethod
    def from_hf_config(cls, path: str | os.PathLike) -> GPTConfig:
        """Read a Hugging Face GPT-2 `config.json` (keys n_layer, n_head, n_embd, ...)."""
        config = read_json(path)
        # Variants this GPT-2 does not implement would load without a shape error and compute
        # something else; refuse them by name.
        unsupported = {
            "activation_function": (config.get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh")),
            "n_inner": (config.get("n_inner"), (None, 4 * config.get("n_embd", 0))),
            "scale_attn_weights": (config.get("scale_attn_weights", True), (True,)),
            "scale_attn_by_inverse_layer_idx": (config.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        }
        for key, (value, allowed) in unsupported.items():
            if value not in allowed:
                raise ValueError(f"{path}: {key}={value!r} is not supported (GPT-2 uses {allowed[0]!r})")
        try:
            return cls(
                n_layer=config["n_layer"],
                n_head=config["n_head"],
                n_embd=config["n_embd"],
                vocab_size=config.get("vocab_size", 50257),
                n_positions=config.get("n_positions", 1024),
                layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-5),
            )
        except KeyError as error:
            raise ValueError(f"{path}: GPT-2 config lacks key {error.args[0]!r}") from None

    def to_dict(self) -> dict:
        return asdict(self)


CARDS: dict[str, GPTConfig] = {
    "gpt2.tiny": GPTConfig(n_layer=2, n_head=4, n_embd=128),
    "gpt2.sm": GPTConfig(n_layer=12, n_head=12, n_embd=768),
    "gpt2.md": GPTConfig(n_layer=24, n_head=16, n_embd=1024),
    "gpt2.lg": GPTConfig(n_layer=36, n_head=20, n_embd=1280),
}


def card_config(card: str) -> GPTConfig:
    if card not in CARDS:
        raise ValueError(f"unknown model card {card!r}; choose one of {', '.join(CARDS)}")
    return CARDS[card]


class KVCache:
    """Keys and values of every layer, preallocated: (B, n_head, max_len, head_dim) each.

    `length` tokens are filled. Beam search reorders the batch with `reorder`.
    """

    def __init__(self, config: GPTConfig, batch: int, max_len: int, device=None, dtype=None):
        head_dim = config.n_embd // config.n_head
        shape = (batch, config.n_head, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0
        self.max_len = max_len

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (may repeat rows), e.g. the surviving beams' parents.

        Only the filled `length` positions are copied; the rest of the buffer is left unset,
        since every slot is written before it is read.
        """
        n = self.length
        for store in (self.keys, self.values):
            for layer, old in enumerate(store):
                new = old.new_empty((index.numel(), *old.shape[1:]))
                new[:, :, :n] = old[index, :, :n]
                store[layer] = new


def _fill_cache(cache: KVCache, kv: list[tuple[Tensor, Tensor]], batch: int) -> None:
    """Widen a fresh cache by the prefix's n slots and put the prefix's keys and values
    (1, nh, n, hs) per layer in its first n slots of every row."""
    n = kv[0][0].shape[2]
    for layer, (k, v) in enumerate(kv):
        for store, value in ((cache.keys, k), (cache.values, v)):
            old = store[layer]
            new = old.new_empty((old.shape[0], old.shape[1], cache.max_len + n, old.shape[3]))
            new[:, :, :n] = value.to(old.dtype).expand(batch, -1, -1, -1)
            store[layer] = new
    cache.max_len += n
    cache.length = n


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v fused
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x: Tensor, mask: Tensor | None, cache: KVCache | None, layer: int,
                past: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """past: keys and values (1, nh, n, hs) before the tokens, without a cache (a prefix)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start : start + T] = k
            cache.values[layer][:, :, start : start + T] = v
            k = cache.keys[layer][:, :, : start + T]  # (B, nh, S, hs)
            v = cache.values[layer][:, :, : start + T]
        elif past is not None:
            k = torch.cat([past[0].expand(B, -1, -1, -1), k], dim=2)
            v = torch.cat([past[1].expand(B, -1, -1, -1), v], dim=2)
        dropout = self.dropout if self.training else 0.0
        if mask is None:
            # Without a cache, T == S and plain causal attention is right; with a cache and
            # T == 1 the new token sees every cached one.
            causal = cache is None or cache.length == 0
            # A conditional, not `causal and T > 1`: under torch.compile with dynamic shapes that
            # expression is a symbolic bool, which SDPA refuses; a condition is a Python bool.
            is_causal = True if causal and T > 1 else False  # noqa: SIM210
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=is_causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Residual(nn.Module):
    """How a sublayer's output `out` joins the residual stream `x`: x + out. A hook point:
    methods that act there (bottleneck adapters, nlg.methods.bottleneck) replace a block's
    `attn_residual` / `mlp_residual` with a module of the same call, out and x -> new stream."""

    def forward(self, out: Tensor, x: Tensor) -> Tensor:
        return x + out


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.attn_residual: nn.Module = Residual()  # parameter-free: state dicts are unchanged
        self.mlp_residual: nn.Module = Residual()

    def forward(self, x: Tensor, mask: Tensor | None, cache: KVCache | None, layer: int,
                past: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.attn_residual(self.resid_dropout(self.attn(self.ln_1(x), mask, cache, layer, past)), x)
        return self.mlp_residual(self.resid_dropout(self.mlp(self.ln_2(x))), x)


class GPT(nn.Module):
    """GPT-2 language model: `model(input_ids) -> logits` of shape (B, T, vocab)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.n_positions, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        # A prefix method's module (nlg.methods.prefix_layers): `length` and `past(model)`, the
        # keys and values every token sees before its own. None: no prefix.
        self.prefix: nn.Module | None = None
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer) at initialisation.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        input_ids: Tensor,
        *,
        cache: KVCache | None = None,
        position_ids: Tensor | None = None,
        key_mask: Tensor | None = None,
        return_hidden: bool = False,
    ) -> Tensor:
        """Logits (B, T, vocab) for `input_ids` (B, T).

        cache: keys/values of earlier tokens; the new ones are appended and `cache.length` grows.
        position_ids: (B, T); by default the positions follow the cached tokens.
        key_mask: (B, S) bool over every key position (cached + new), False for padding. With
            left-padded batches it keeps real tokens from attending to pads.
        return_hidden: return the final layer norm's output (B, T, C) instead, so a caller that
            needs logits at a few positions runs the vocabulary-wide `lm_head` only there.

        With a prefix (`self.prefix`, prefix tuning) its n keys and values come before every
        token's in each layer: prepended without a cache, in the first n slots of a fresh cache
        (widened by n). Callers' positions and key_mask stay as without one; they are shifted here.
        """
        B, T = input_ids.shape
        prefix_kv, offset = None, 0
        if self.prefix is not None:
            # The prefix's n positions come first, invisible to the caller: its positions and
            # key_mask count real tokens from 0, and are shifted here by n (real tokens sit at
            # positions n, n+1, ... as transformers places them after a past of length n).
            offset = self.prefix.length
            if cache is None or cache.length == 0:
                prefix_kv = self.prefix.past(self)
            if cache is not None and cache.length == 0:
                _fill_cache(cache, prefix_kv, B)
                prefix_kv = None
            if position_ids is not None:
                position_ids = position_ids + offset
            if key_mask is not None:
                key_mask = torch.cat([key_mask.new_ones(key_mask.shape[0], offset), key_mask.bool()], dim=1)
        past = cache.length if cache is not None else offset
        if past + T > self.config.n_positions:
            raise ValueError(f"sequence of {past + T} tokens exceeds n_positions={self.config.n_positions}")
        if cache is not None and past + T > cache.max_len:
            raise ValueError(f"cache holds {cache.max_len} tokens, {past + T} needed")
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)
        x = self.transformer.drop(self.transformer.wte(input_ids) + self.transformer.wpe(position_ids))
        if key_mask is None and past > 0 and T > 1:
            # Several new tokens after cached ones: SDPA's is_causal aligns its triangle to the
            # top left, which is wrong once T < S, so spell the causal mask out.
            key_mask = torch.ones(B, past + T, dtype=torch.bool, device=input_ids.device)
        mask = None
        if key_mask is not None:
            mask = self._attention_mask(key_mask, past, T)
        with sdpa_kernel(ATTENTION_BACKENDS):  # the backward pass keeps the forward's choice
            for layer, block in enumerate(self.transformer.h):
                x = block(x, mask, cache, layer, None if prefix_kv is None else prefix_kv[layer])
        if cache is not None:
            cache.length = past + T
        hidden = self.transformer.ln_f(x)
        return hidden if return_hidden else self.lm_head(hidden)

    @staticmethod
    def _attention_mask(key_mask: Tensor, past: int, T: int) -> Tensor:
        """(B, 1, T, S) bool: causal, no padding keys, and every query sees itself.

        The diagonal keeps a padding query from attending to nothing (softmax of an empty row
        is NaN); its output is never used.
        """
        S = past + T
        query_pos = torch.arange(past, S, device=key_mask.device).unsqueeze(1)  # (T, 1)
        key_pos = torch.arange(S, device=key_mask.device).unsqueeze(0)  # (1, S)
        causal = key_pos <= query_pos  # (T, S)
        mask = causal.unsqueeze(0) & key_mask[:, None, :S].bool()  # (B, T, S)
        mask = mask | (key_pos == query_pos).unsqueeze(0)
        return mask.unsqueeze(1)

    def num_parameters(self, trainable_only: bool = False) -> int:
        params = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        return sum(p.numel() for p in params.values())


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


# Names of the parameters a fine-tuning method adds (nlg.methods): LoRA's A and B, the adapters
# that replace a block's residual hooks. They are no part of a published GPT-2.
METHOD_PARAMETER_MARKS = (".lora_", "_residual.", "prefix.")


def is_method_parameter(name: str) -> bool:
    return any(mark in name for mark in METHOD_PARAMETER_MARKS)


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


def load_base_weights(model: GPT, state: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Copy a published GPT-2 state dict into `model`, strictly.

    Every base parameter must be present with the right shape and nothing else may be there;
    otherwise CheckpointError lists the missing, unexpected and mis-shaped keys.
    """
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
                         "nlg.methods save (LoRA: nlg.adapter_files.save_adapter)")
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
    load_base_weights(model, state, source=str(weights))
    return model
