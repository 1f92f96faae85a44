"""GPT-2, readable top to bottom, with a key/value cache and strict checkpoint loading.

Module and parameter names follow the published checkpoints (`transformer.h.0.attn.c_attn`,
...), so a Hugging Face state dict maps one to one; the only difference is that
published checkpoints store their projections as `Conv1D` weights of shape (in, out),
which are transposed to `nn.Linear`'s (out, in) on load.

Cards: `gpt2.sm` (12 layers, 768 wide, 12 heads), `gpt2.md` (24, 1024, 16),
`gpt2.lg` (36, 1280, 20), and `gpt2.tiny` (2, 128, 4) for tests and CPU demos.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from nlg.files import read_json

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
    methods that act there (bottleneck adapters, nlg.methods.adapters.layers) replace a block's
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
        # A prefix method's module (nlg.methods.prefix.layers): `length` and `past(model)`, the
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
