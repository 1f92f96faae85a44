"""`--method prefix` (PreLayer) and `--method prefix-embed` (PreEmbed): prefix tuning (Li & Liang,
2021) on a frozen GPT-2; the modules are nlg.methods.prefix.layers, the model's hook `model.prefix`.

    prefix        trainable keys and values of --prefix_len n positions in every layer, trained
                  through Li & Liang's reparametrisation  P = Linear(h, L·2·d)(tanh(Linear(d, h)(E)))
                  with E an (n, d) embedding and h = --prefix_hidden (512)
                  trained: n·d + d·h + h + h·2·L·d + 2·L·d     stored: n·2·L·d (the folded past)
    prefix-embed  n trainable input embeddings before the context (no infix: the paper's l_i
                  tokens between context and completion are left out)   trained = stored: n·d;
                  folded for decoding into the keys and values the frozen blocks give them

Every real token attends to the whole prefix; the real tokens sit at positions n, n+1, ... (as
transformers' GPT-2 places them after a past of length n, and as PEFT computes). The model's own
dropout is switched off for both (Li & Liang's code trains the frozen GPT-2 without it; the
prefix has no dropout either), whatever --lora_dropout or the card says.

Files: PEFT's layout, so `PeftModel.from_pretrained(GPT2LMHeadModel, DIR)` reads them:

    adapter_config.json        prefix: {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": n,
                               "token_dim": d, "num_layers": L, "num_attention_heads": nh,
                               "prefix_projection": false, "encoder_hidden_size": h, ...}
                               prefix-embed: {"peft_type": "PROMPT_TUNING", ...}
    adapter_model.safetensors  prompt_embeddings: (n, L·2·d) the folded past | (n, d) embeddings
    prefix_reparametrisation.safetensors  (prefix, ours) embedding.weight, mlp.{0,2}.{weight,bias}

The prefix is stored folded (the past P itself, prefix_projection false) because that is what
PEFT stores for any prefix (it saves `prompt_embeddings` = P even when it trained with the MLP)
and what decoding needs; the MLP only shapes training. Our checkpoints keep the MLP as well, in
their own file, so that --resume continues the reparametrised training exactly. Loading a
directory without that file (PEFT's, or an export) gives the folded prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlg.files import InputError, atomic_write, read_json
from nlg.methods import Method, Shape, register

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
REPARAM_FILE = "prefix_reparametrisation.safetensors"
TENSOR = "prompt_embeddings"
PEFT_VERSION = "0.21.2"  # the PEFT release whose files these match


@dataclass(frozen=True)
class PrefixSettings:
    prefix_len: int
    prefix_hidden: int = 512


@dataclass(frozen=True)
class PromptSettings:
    prefix_len: int


def paper_formula(shape: Shape, prefix_len: int, infix_len: int = 0) -> int:
    """The LoRA paper's |Θ| = L·d·(l_p + l_i) for PreLayer (one vector per layer and position)."""
    return shape.n_layer * shape.n_embd * (prefix_len + infix_len)


def _paper_figure(shape: Shape) -> str:
    """'; the paper prints 0.35M (GPT-2 M)' when `shape` is a card the paper has a PreLayer row for."""
    from nlg.methods import CARD_SHAPES
    from nlg.methods.counts import PAPER_COUNTS

    for row in PAPER_COUNTS:
        if row.method == "prefix" and CARD_SHAPES[row.card] == shape:
            return f"; the paper prints {row.paper} for {row.card} (nlg recipe --params says why they differ)"
    return ""


def _dropout_off(model) -> None:
    """Li & Liang train the prefix on the frozen GPT-2 with its dropout off."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout") and isinstance(module.dropout, float):
            module.dropout = 0.0  # the attention's own dropout probability


class _Prefixes(Method):
    peft_type = ""
    files = (CONFIG_FILE, WEIGHTS_FILE)
    sizes = ("prefix_len",)
    parameter_marks = ("prefix.",)
    baseline_recipes = {"prefix": {"e2e": {"lr": 8e-05, "max_epoch": 5, "train_batch_size": 10, "prefix_len": 5}, "webnlg": {"lr": 5e-05, "max_epoch": 5, "train_batch_size": 5, "prefix_len": 5},
                                    "dart": {"lr": 5e-05, "max_epoch": 10, "train_batch_size": 5, "prefix_len": 10}}}
    flag_help = {"prefix_len": "--method prefix/prefix-embed: prefix positions (default 5; Li & Liang: "
                               "5 E2E/WebNLG, 10 DART)",
                 "prefix_hidden": "--method prefix: width of the reparametrisation MLP (default 512, Li & Liang's)"}

    def recipe_key(self, values: dict[str, Any]) -> str | None:
        return "prefix"  # prefix-embed too: Li & Liang print no settings of its own for table-to-text

    def recipe_values(self, baseline: Any) -> dict[str, Any]:
        length = getattr(baseline, "prefix_len", None)
        return {} if length is None else {"prefix_len": length}

    def stored(self, shape: Shape, settings: Any) -> int:
        raise NotImplementedError

    def apply(self, model, settings: Any) -> None:
        n, positions = settings.prefix_len, model.config.n_positions
        if not 1 <= n < positions:
            raise InputError(f"--prefix_len {n}: must be between 1 and the model's n_positions "
                             f"{positions} less one (a real token needs a position too)")
        for param in model.parameters():
            param.requires_grad_(False)
        _dropout_off(model)
        like = model.transformer.wte.weight
        model.prefix = self.module(model.config, settings).to(like.device, like.dtype)

    def module(self, config, settings: Any):
        raise NotImplementedError

    def trainable(self, model) -> dict:
        return {name: p for name, p in model.named_parameters() if name.startswith("prefix.")}

    # -- PEFT's files -------------------------------------------------------------------------

    def peft_config(self, config, settings: Any, base_model: str | None) -> dict:
        return {"auto_mapping": None, "base_model_name_or_path": base_model, "inference_mode": True,
                "modules_to_save": None, "num_attention_heads": config.n_head, "num_layers": config.n_layer,
                "num_transformer_submodules": 1, "num_virtual_tokens": settings.prefix_len,
                "peft_type": self.peft_type, "peft_version": PEFT_VERSION, "revision": None,
                "task_type": "CAUSAL_LM", "token_dim": config.n_embd}

    def stored_tensor(self, model):
        raise NotImplementedError

    def save(self, model, directory: Path, settings: Any, base_model: str | None) -> None:
        from safetensors.torch import save

        tensor = self.stored_tensor(model).detach().cpu().contiguous().clone()
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(directory / WEIGHTS_FILE, "wb") as handle:
            handle.write(save({TENSOR: tensor}, metadata={"format": "pt"}))
        with atomic_write(directory / CONFIG_FILE) as handle:
            handle.write(json.dumps(self.peft_config(model.config, settings, base_model), indent=2) + "\n")

    def read(self, model, directory: Path):
        """adapter_config.json and the stored tensor, checked against `model`: another PEFT
        method or another model size is an InputError naming both sides."""
        from nlg.weights import check_finite, read_state_dict

        path = directory / CONFIG_FILE
        if not path.is_file():
            raise InputError(f"{directory}: no {CONFIG_FILE}; not a PEFT {self.peft_type} adapter")
        config = read_json(path)
        kind = config.get("peft_type") if isinstance(config, dict) else None
        if kind == self.peft_type:
            config = self.recognized_type(directory)  # every key checked
        if kind != self.peft_type:
            what = f"peft_type {kind!r}" if kind is not None else "an adapter config of no PEFT type (AdapterHub's?)"
            raise InputError(f"{path}: {what}; --method {self.name} reads PEFT {self.peft_type} adapters")
        c = model.config
        want = {"num_layers": c.n_layer, "token_dim": c.n_embd, "num_attention_heads": c.n_head}
        have = {key: config.get(key) for key in want}
        if have != want:
            raise InputError(f"{path}: a {self.peft_type} adapter for " + ", ".join(f"{k} {v}" for k, v in have.items())
                             + "; the model has " + ", ".join(f"{k} {v}" for k, v in want.items()))
        if config.get("num_transformer_submodules", 1) != 1:
            raise InputError(f"{path}: num_transformer_submodules {config['num_transformer_submodules']}; "
                             "a decoder-only GPT-2 has 1")
        weights = directory / WEIGHTS_FILE
        if not weights.is_file() and (directory / "adapter_model.bin").is_file():
            weights = directory / "adapter_model.bin"
        state = read_state_dict(weights)
        if set(state) != {TENSOR}:
            raise InputError(f"{weights}: holds {sorted(state)[:3]}; a {self.peft_type} adapter holds {TENSOR} only")
        tensor = state[TENSOR]
        check_finite(weights, state, "the prefix")
        n = config.get("num_virtual_tokens")
        expected = (n, self.width(c))
        if tuple(tensor.shape) != expected:
            raise InputError(f"{weights}: {TENSOR} is {tuple(tensor.shape)}; {path} and the model "
                             f"need {expected}")
        return config, tensor

    def width(self, config) -> int:
        raise NotImplementedError

    def recognized_type(self, directory: Path) -> dict | None:
        """adapter_config.json when it is this PEFT type, every key we read checked by type and
        range (InputError `FILE: key: reason`)."""
        from nlg.methods import config_int

        path = directory / CONFIG_FILE
        if not path.is_file():
            return None
        config = read_json(path)
        if not (isinstance(config, dict) and config.get("peft_type") == self.peft_type):
            return None
        config_int(path, config, "num_virtual_tokens")
        for key in ("num_layers", "token_dim", "num_attention_heads"):
            config_int(path, config, key, default=None)
        config_int(path, config, "num_transformer_submodules", default=1)
        if config.get("encoder_hidden_size") is not None:  # null: PEFT's "no projection", our default width
            config_int(path, config, "encoder_hidden_size")
        return config


class PreLayer(_Prefixes):
    name = "prefix"
    label = "PreLayer"
    summary = "trainable keys and values of --prefix_len positions in every layer (Li & Liang, 2021); PEFT's files"
    flags = ("prefix_len", "prefix_hidden")
    defaults = {"prefix_len": 5, "prefix_hidden": 512}
    paper_rows = {
        "e2e": (
            (10, "gpt2.md", "all", "0.35M", {"BLEU": 69.7, "NIST": 8.81, "METEOR": 46.1, "ROUGE_L": 71.4, "CIDEr": 2.49},
             {}, True),
            (11, "gpt2.lg", "all", "0.77M", {"BLEU": 70.3, "NIST": 8.85, "METEOR": 46.2, "ROUGE_L": 71.7, "CIDEr": 2.47},
             {}, True),
        ),
        "webnlg": (
            (27, "gpt2.md", "unseen", "0.35M", {"BLEU": 45.6, "METEOR": 0.38, "TER": 0.49},
             {}, False),
            (28, "gpt2.md", "seen", "0.35M", {"BLEU": 62.9, "METEOR": 0.44, "TER": 0.35},
             {}, False),
            (29, "gpt2.md", "all", "0.35M", {"BLEU": 55.1, "METEOR": 0.41, "TER": 0.4},
             {}, False),
            (30, "gpt2.lg", "unseen", "0.77M", {"BLEU": 47.7, "METEOR": 0.39, "TER": 0.48},
             {}, False),
            (31, "gpt2.lg", "seen", "0.77M", {"BLEU": 63.4, "METEOR": 0.45, "TER": 0.34},
             {}, False),
            (32, "gpt2.lg", "all", "0.77M", {"BLEU": 56.3, "METEOR": 0.42, "TER": 0.4},
             {}, False),
        ),
        "dart": (
            (9, "gpt2.md", "all", "0.35M", {"BLEU": 46.4, "METEOR": 0.38, "TER": 0.46},
             {}, False),
            (10, "gpt2.lg", "all", "0.77M", {"BLEU": 46.7, "METEOR": 0.38, "TER": 0.45},
             {}, False),
        ),
    }
    files = (CONFIG_FILE, WEIGHTS_FILE, REPARAM_FILE)
    peft_type = "PREFIX_TUNING"

    def settings(self, values: dict[str, Any]) -> PrefixSettings:
        return PrefixSettings(int(values["prefix_len"]), int(values["prefix_hidden"]))

    def describe(self, settings: PrefixSettings) -> str:
        return f"prefix-layer tuning, {settings.prefix_len} positions, MLP width {settings.prefix_hidden}"

    def count(self, shape: Shape, settings: PrefixSettings) -> int:
        d, h, out = shape.n_embd, settings.prefix_hidden, 2 * shape.n_layer * shape.n_embd
        return settings.prefix_len * d + d * h + h + h * out + out

    def stored(self, shape: Shape, settings: PrefixSettings) -> int:
        return settings.prefix_len * 2 * shape.n_layer * shape.n_embd

    def note(self, shape: Shape, settings: PrefixSettings) -> str:
        n = settings.prefix_len
        return (f"prefix: trains {self.count(shape, settings):,} (embedding n·d + MLP), stores "
                f"n·2·L·d = {self.stored(shape, settings):,} (the folded keys and values); the paper's "
                f"|Θ| = L·d·(l_p + l_i) = {paper_formula(shape, n):,} at l_p={n}, l_i=0 counts one vector "
                "per layer and position, not a key and a value, and not the MLP that only trains"
                + _paper_figure(shape))

    def module(self, config, settings: PrefixSettings):
        from nlg.methods.prefix.layers import PrefixMLP

        return PrefixMLP(config.n_layer, config.n_head, config.n_embd, settings.prefix_len, settings.prefix_hidden)

    def width(self, config) -> int:
        return 2 * config.n_layer * config.n_embd

    def peft_config(self, config, settings: PrefixSettings, base_model: str | None) -> dict:
        return dict(sorted({**super().peft_config(config, settings, base_model), "encoder_hidden_size":
                            settings.prefix_hidden, "init_weights": None, "prefix_projection": False}.items()))

    def stored_tensor(self, model):
        return model.prefix.flat()

    def save(self, model, directory: Path, settings: PrefixSettings, base_model: str | None) -> None:
        from safetensors.torch import save

        super().save(model, directory, settings, base_model)
        from nlg.methods.prefix.layers import PrefixMLP

        if isinstance(model.prefix, PrefixMLP):  # the reparametrisation, for an exact --resume
            tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.prefix.state_dict().items()}
            with atomic_write(directory / REPARAM_FILE, "wb") as handle:
                handle.write(save(tensors, metadata={"format": "pt"}))

    def load(self, model, directory: Path, settings: PrefixSettings | None) -> None:
        """PEFT's folded prefix into `model`; with our REPARAM_FILE and a model whose prefix is
        still the MLP (a resumed run), the MLP's weights, strictly."""
        import torch

        from nlg.methods.prefix.layers import FoldedPrefix, PrefixMLP
        from nlg.weights import CheckpointError, check_finite, read_state_dict

        config, flat = self.read(model, directory)
        if isinstance(model.prefix, PrefixMLP) and not (directory / REPARAM_FILE).is_file():
            # A run that trains the MLP cannot continue from the folded past alone.
            raise InputError(f"{directory}: no {REPARAM_FILE}, only the folded prefix (PEFT's file); "
                             "it decodes with nlg beam --checkpoint but cannot resume the MLP's training")
        if isinstance(model.prefix, PrefixMLP):
            state = read_state_dict(directory / REPARAM_FILE)
            check_finite(directory / REPARAM_FILE, state, "the prefix")
            expected = model.prefix.state_dict()
            if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
                raise CheckpointError(f"{directory / REPARAM_FILE}: does not fit the prefix MLP of "
                                      f"{settings} ({sorted(state)[:4]})")
            with torch.no_grad():
                for key, value in expected.items():
                    value.copy_(state[key].to(value.dtype))
            return
        if model.prefix is None:
            for param in model.parameters():
                param.requires_grad_(False)
            _dropout_off(model)
        like = model.transformer.wte.weight
        model.prefix = FoldedPrefix(model.config.n_layer, model.config.n_head, flat.to(like.device, like.dtype))

    def prepare_inference(self, model) -> None:
        """Fold the MLP: the past is computed once, and is what PEFT's file holds."""
        import torch

        from nlg.methods.prefix.layers import FoldedPrefix, PrefixMLP

        if isinstance(model.prefix, PrefixMLP):
            with torch.no_grad():
                flat = model.prefix.flat()
            model.prefix = FoldedPrefix(model.config.n_layer, model.config.n_head, flat)

    def recognizes(self, directory: Path) -> PrefixSettings | None:
        config = self.recognized_type(directory)
        if config is None:
            return None
        return PrefixSettings(config["num_virtual_tokens"],
                              config.get("encoder_hidden_size") or self.defaults["prefix_hidden"])


class PreEmbed(_Prefixes):
    name = "prefix-embed"
    label = "PreEmbed"
    summary = "trainable input embeddings of --prefix_len positions before the context; PEFT's prompt tuning files"
    flags = ("prefix_len",)
    defaults = {"prefix_len": 5}
    peft_type = "PROMPT_TUNING"

    def settings(self, values: dict[str, Any]) -> PromptSettings:
        return PromptSettings(int(values["prefix_len"]))

    def describe(self, settings: PromptSettings) -> str:
        return f"prefix-embedding tuning, {settings.prefix_len} positions, no infix"

    def count(self, shape: Shape, settings: PromptSettings) -> int:
        return settings.prefix_len * shape.n_embd

    def stored(self, shape: Shape, settings: PromptSettings) -> int:
        return self.count(shape, settings)

    def note(self, shape: Shape, settings: PromptSettings) -> str:
        n = settings.prefix_len
        return (f"prefix-embed: trains and stores n·d = {self.count(shape, settings):,}, the paper's "
                f"PreEmbed |Θ| = d·(l_p + l_i) at l_p={n}, l_i=0 (no infix)")

    def module(self, config, settings: PromptSettings):
        from nlg.methods.prefix.layers import PromptEmbeds

        return PromptEmbeds(config.n_embd, settings.prefix_len)

    def width(self, config) -> int:
        return config.n_embd

    def peft_config(self, config, settings: PromptSettings, base_model: str | None) -> dict:
        return dict(sorted({**super().peft_config(config, settings, base_model), "prompt_tuning_init": "RANDOM",
                            "prompt_tuning_init_text": None, "tokenizer_kwargs": None,
                            "tokenizer_name_or_path": None}.items()))

    def stored_tensor(self, model):
        from nlg.methods.prefix.layers import PromptEmbeds

        if not isinstance(model.prefix, PromptEmbeds):
            raise ValueError("prefix-embed saves its input embeddings; this model's prefix is folded")
        return model.prefix.weight

    def load(self, model, directory: Path, settings: PromptSettings | None) -> None:
        import torch

        _, tensor = self.read(model, directory)
        if model.prefix is None:
            self.apply(model, PromptSettings(tensor.shape[0]))
        if model.prefix.length != tensor.shape[0]:
            raise InputError(f"{directory / WEIGHTS_FILE}: {tensor.shape[0]} prompt positions; the "
                             f"model's prefix has {model.prefix.length} (--prefix_len)")
        with torch.no_grad():
            model.prefix.weight.copy_(tensor.to(model.prefix.weight.dtype))

    def prepare_inference(self, model) -> None:
        """Fold: the prompt's keys and values, computed once (they do not depend on the context)."""
        import torch

        from nlg.methods.prefix.layers import FoldedPrefix, PromptEmbeds, join_past

        if isinstance(model.prefix, PromptEmbeds):
            with torch.no_grad():
                flat = join_past(model.prefix.past(model))
            model.prefix = FoldedPrefix(model.config.n_layer, model.config.n_head, flat)

    def recognizes(self, directory: Path) -> PromptSettings | None:
        config = self.recognized_type(directory)
        return None if config is None else PromptSettings(config["num_virtual_tokens"])


register(PreLayer())
register(PreEmbed())
