"""`--method adapter-l` (Lin et al., 2020) and `--method adapter-h` (Houlsby et al., 2019):
bottleneck adapters of width --adapter_dim r on a frozen GPT-2 (the layers: nlg.methods.adapters.layers).

    adapter-l   one per block, on the block's output, with its own layer norm
                |Θ| = L·(2·d·r + r + d) + 2·L·d      GPT-2 M r=6: 368,784 (0.37M), r=224: 11.09M
    adapter-h   two per block, on the attention's and the MLP's outputs
                |Θ| = 2·L·(2·d·r + r + d)            GPT-2 M r=112: 11,064,576

The paper's formula |Θ| = L̂_adpt·(2·d·r + r + d) + 2·L̂_LN·d with L̂_LN = L for adapter-l and 0 for
adapter-h. Adapters do not merge: they decode unmerged, on the KV cache.

Files: AdapterHub's layout (the `adapters` library), so that `adapters` loads ours onto
transformers' GPT2LMHeadModel and computes our logits:

    adapter_config.json   {"config": BnConfig's fields, "hidden_size": d, "model_class":
                           "GPT2LMHeadModel", "model_type": "gpt2", "name": NAME, "version": ...}
    adapter.safetensors   transformer.h.{i}.{attention,output}_adapters.adapters.NAME.
                          adapter_down.{0,1}.{weight,bias}, adapter_up.{weight,bias}
                          (adapter-l: the layer norm is adapter_down.0, also stored under its
                          other name adapter_norm_before, and the Linear is adapter_down.1)

    model.load_adapter(DIR, use_safetensors=True); model.set_active_adapters(NAME)

The configurations that reproduce our two designs on GPT-2 (whose blocks hand the adapters the
sublayer's output and the residual input, and no layer norm):
    adapter-h   mh_adapter, output_adapter, residual_before_ln=true, original_ln_after=true
                (adapter(out) + out, then + x)
    adapter-l   output_adapter only, original_ln_before=true (h = out + x first),
                residual_before_ln=false (the adapter's residual is h), ln_before=true,
                original_ln_after=false
both with non_linearity relu, scaling 1.0, no gating, init_weights "mam_adapter" (up at zero).
AdapterHub sizes the bottleneck by reduction_factor, r = int(d // reduction_factor); we write
d / r, or d / (r + 0.5) where float rounding would make d // (d / r) come out as r - 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlg.files import InputError, atomic_write, read_json
from nlg.methods import Method, Shape, register

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter.safetensors"  # AdapterHub's safetensors name (pytorch_adapter.bin is read too)
ADAPTER_NAME = "nlg"
ADAPTERS_VERSION = "adapters.1.3.0"

# BnConfig fields every design here shares; the two designs' own are in Adapters.placement.
_COMMON = {
    "adapter_residual_before_ln": False, "cross_adapter": False, "dropout": 0.0,
    "factorized_phm_W": True, "factorized_phm_rule": False,
    "hypercomplex_nonlinearity": "glorot-uniform", "init_weights": "mam_adapter",
    "init_weights_seed": None, "inv_adapter": None, "inv_adapter_reduction_factor": None,
    "is_parallel": False, "learn_phm": True, "leave_out": [], "ln_after": False,
    "non_linearity": "relu", "phm_bias": True, "phm_c_init": "normal", "phm_dim": 4,
    "phm_init_range": 0.0001, "phm_layer": False, "phm_rank": 1, "scaling": 1.0,
    "shared_W_phm": False, "shared_phm_rule": True, "stochastic_depth": 0.0, "use_gating": False,
}
# Fields whose value changes what is computed: another value there is another adapter.
_MUST_MATCH = ("adapter_residual_before_ln", "inv_adapter", "is_parallel", "ln_after",
               "non_linearity", "phm_layer", "scaling", "stochastic_depth", "use_gating", "leave_out",
               "cross_adapter")


@dataclass(frozen=True)
class AdapterSettings:
    adapter_dim: int


def reduction_factor(d: int, r: int) -> float:
    """AdapterHub's reduction_factor giving a bottleneck of exactly r: int(d // factor) == r."""
    for factor in (d / r, d / (r + 0.5)):
        if int(d // factor) == r:
            return factor
    raise ValueError(f"no reduction factor gives adapter width {r} at hidden size {d}")


class Adapters(Method):
    """adapter-l and adapter-h: the same bottleneck, placed differently."""

    flags = ("adapter_dim",)
    flag_help = {"adapter_dim": "--method adapter-l/adapter-h: bottleneck width r (default 6 for "
                                "adapter-l, 112 for adapter-h); picks Li & Liang's 0.1%% or 3%% recipe"}  # %% : argparse formats help
    sizes = ("adapter_dim",)
    parameter_marks = ("_residual.",)
    # Li & Liang's two adapter sizes (recipe_key): 3 % and 0.1 % of GPT-2 M
    baseline_recipes = {"adapter-3%": {"e2e": {"lr": 5e-05, "max_epoch": 5, "train_batch_size": 5}, "webnlg": {"lr": 5e-05, "max_epoch": 5, "train_batch_size": 5},
                                        "dart": {"lr": 5e-05, "max_epoch": 5, "train_batch_size": 5}},
                        "adapter-0.1%": {"e2e": {"lr": 8e-05, "max_epoch": 10, "train_batch_size": 5}, "webnlg": {"lr": 5e-05, "max_epoch": 10, "train_batch_size": 5},
                                          "dart": {"lr": 8e-05, "max_epoch": 5, "train_batch_size": 5}}}
    files = (CONFIG_FILE, WEIGHTS_FILE)
    per_block: tuple[str, ...] = ()  # which residual hooks of a block carry an adapter
    layer_norm = False
    placement: dict[str, Any] = {}  # this design's BnConfig fields

    def settings(self, values: dict[str, Any]) -> AdapterSettings:
        return AdapterSettings(int(values["adapter_dim"]))

    def recipe_key(self, values: dict[str, Any]) -> str | None:
        """Li & Liang's adapter recipe for this width: "adapter-3%" when it trains at least 1 % of
        GPT-2 M's parameters (their 3 % row, the paper's 11.09M), else "adapter-0.1%" (their
        0.1 %, the paper's 0.37M and 0.88M)."""
        from nlg.methods import CARD_SHAPES, base_count

        r = values.get("adapter_dim") or self.defaults["adapter_dim"]
        shape = CARD_SHAPES["gpt2.md"]
        share = self.count(shape, AdapterSettings(int(r))) / base_count(shape)
        return "adapter-3%" if share >= 0.01 else "adapter-0.1%"

    def describe(self, settings: AdapterSettings) -> str:
        return f"{self.name} r={settings.adapter_dim}, {len(self.per_block)} adapter(s) per block"

    def count(self, shape: Shape, settings: AdapterSettings) -> int:
        d, r = shape.n_embd, settings.adapter_dim
        per_adapter = 2 * d * r + r + d + (2 * d if self.layer_norm else 0)
        return shape.n_layer * len(self.per_block) * per_adapter

    def hook(self, d: int, r: int):
        raise NotImplementedError

    def apply(self, model, settings: AdapterSettings) -> None:
        r = settings.adapter_dim
        if r < 1:
            raise InputError(f"--adapter_dim {r}: must be >= 1")
        for param in model.parameters():
            param.requires_grad_(False)
        like = model.transformer.wte.weight  # the adapters take the model's device and dtype
        for block in model.transformer.h:
            for hook in self.per_block:
                setattr(block, hook, self.hook(model.config.n_embd, r).to(like.device, like.dtype))

    def trainable(self, model) -> dict:
        return {name: p for name, p in model.named_parameters() if "_residual." in name}

    # -- AdapterHub's files ---------------------------------------------------------------------

    def hub_config(self, d: int, r: int) -> dict:
        config = {**_COMMON, **self.placement, "reduction_factor": reduction_factor(d, r)}
        return {"config": dict(sorted(config.items())), "hidden_size": d, "model_class": "GPT2LMHeadModel",
                "model_name": "", "model_type": "gpt2", "name": ADAPTER_NAME, "version": ADAPTERS_VERSION}

    def hub_tensors(self, model) -> dict:
        """Our adapter parameters under AdapterHub's names."""
        out = {}
        for i, block in enumerate(model.transformer.h):
            for hook in self.per_block:
                module = getattr(block, hook)
                where = "attention_adapters" if hook == "attn_residual" else "output_adapters"
                prefix = f"transformer.h.{i}.{where}.adapters.{ADAPTER_NAME}."
                linear = 1 if module.norm is not None else 0
                if module.norm is not None:
                    for kind in ("weight", "bias"):
                        value = getattr(module.norm, kind)
                        out[f"{prefix}adapter_down.0.{kind}"] = value
                        out[f"{prefix}adapter_norm_before.{kind}"] = value
                for kind in ("weight", "bias"):
                    out[f"{prefix}adapter_down.{linear}.{kind}"] = getattr(module.down, kind)
                    out[f"{prefix}adapter_up.{kind}"] = getattr(module.up, kind)
        return out

    def save(self, model, directory: Path, settings: AdapterSettings, base_model: str | None) -> None:
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.hub_tensors(model).items()}
        config = self.hub_config(model.config.n_embd, settings.adapter_dim)
        config["model_name"] = base_model or ""
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(directory / WEIGHTS_FILE, "wb") as handle:
            handle.write(save(tensors, metadata={"format": "pt"}))
        with atomic_write(directory / CONFIG_FILE) as handle:
            handle.write(json.dumps(config, indent=2) + "\n")

    def load(self, model, directory: Path, settings: AdapterSettings | None) -> None:
        """AdapterHub adapter files into `model` (adapters added first if it has none),
        strictly: every tensor of ours, each of its shape, and nothing else."""
        import torch

        from nlg.weights import CheckpointError, check_finite, read_state_dict

        found = self.recognizes(directory)
        if found is None:
            raise InputError(f"{directory}: not a {self.name} adapter in AdapterHub's layout")
        if not any("_residual." in name for name, _ in model.named_parameters()):
            self.apply(model, found)
        weights = directory / WEIGHTS_FILE
        if not weights.is_file() and (directory / "pytorch_adapter.bin").is_file():
            weights = directory / "pytorch_adapter.bin"
        state = read_state_dict(weights)
        check_finite(weights, state, "the adapter")
        config = read_json(directory / CONFIG_FILE)
        name = config.get("name", ADAPTER_NAME) if isinstance(config, dict) else ADAPTER_NAME
        state = {k.replace(f".adapters.{name}.", f".adapters.{ADAPTER_NAME}."): v for k, v in state.items()}
        expected = self.hub_tensors(model)
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(p.shape)}"
                  for k, p in expected.items() if k in state and state[k].shape != p.shape]
        if missing or unexpected or shapes:
            raise CheckpointError(f"{weights}: does not fit this model's {self.name} adapters: "
                                  f"missing {missing[:3]}, unexpected {unexpected[:3]}, mis-shaped {shapes[:3]}")
        with torch.no_grad():
            for key, param in expected.items():
                param.copy_(state[key].to(param.dtype))

    def recognizes(self, directory: Path) -> AdapterSettings | None:
        """This design's settings when directory holds an AdapterHub config of it; InputError
        (naming the key) for a bottleneck config that is neither design."""
        path = directory / CONFIG_FILE
        if not path.is_file():
            return None
        data = read_json(path)
        config = data.get("config") if isinstance(data, dict) else None
        if not isinstance(config, dict) or "peft_type" in data:
            return None
        if any(config.get(k) != v for k, v in self.placement.items()):
            return None  # the other design, or not one of ours; `detect` tries the others
        for key in _MUST_MATCH:
            if config.get(key, _COMMON[key]) != _COMMON[key]:
                raise InputError(f"{path}: {key} is {config.get(key)!r}; {self.name} needs "
                                 f"{_COMMON[key]!r}")
        from nlg.methods import config_int, config_number

        d = config_int(path, data, "hidden_size")
        factor = config_number(path, config, "reduction_factor")
        r = int(d // factor)
        if not 1 <= r <= d:
            raise InputError(f"{path}: reduction_factor: {factor:g} gives a bottleneck of {r} at hidden_size "
                             f"{d} (AdapterHub: width = hidden_size // reduction_factor); it must be 1 to {d}")
        return AdapterSettings(r)


class AdapterL(Adapters):
    name = "adapter-l"
    label = "AdapterL"
    summary = "one bottleneck adapter per block with its own layer norm (Lin et al., 2020); AdapterHub"
    defaults = {"adapter_dim": 6}
    paper_rows = {
        "e2e": (
            (3, "gpt2.md", "all", "0.37M", {"BLEU": 66.3, "NIST": 8.41, "METEOR": 45.0, "ROUGE_L": 69.8, "CIDEr": 2.4},
             {}, True),
            (4, "gpt2.md", "all", "11.09M", {"BLEU": 68.9, "NIST": 8.71, "METEOR": 46.1, "ROUGE_L": 71.3, "CIDEr": 2.47},
             {}, True),
            (8, "gpt2.lg", "all", "0.88M", {"BLEU": 69.1, "NIST": 8.68, "METEOR": 46.3, "ROUGE_L": 71.4, "CIDEr": 2.49},
             {"BLEU": 0.1, "NIST": 0.03, "METEOR": 0.0, "ROUGE_L": 0.2, "CIDEr": 0.0}, False),
            (9, "gpt2.lg", "all", "23.00M", {"BLEU": 68.9, "NIST": 8.7, "METEOR": 46.1, "ROUGE_L": 71.3, "CIDEr": 2.45},
             {"BLEU": 0.3, "NIST": 0.04, "METEOR": 0.1, "ROUGE_L": 0.2, "CIDEr": 0.02}, False),
        ),
        "webnlg": (
            (9, "gpt2.md", "unseen", "0.37M", {"BLEU": 45.1, "METEOR": 0.36, "TER": 0.46},
             {}, False),
            (10, "gpt2.md", "seen", "0.37M", {"BLEU": 54.5, "METEOR": 0.39, "TER": 0.4},
             {}, False),
            (11, "gpt2.md", "all", "0.37M", {"BLEU": 50.2, "METEOR": 0.38, "TER": 0.43},
             {}, False),
            (12, "gpt2.md", "unseen", "11M", {"BLEU": 48.3, "METEOR": 0.38, "TER": 0.45},
             {}, False),
            (13, "gpt2.md", "seen", "11M", {"BLEU": 60.4, "METEOR": 0.43, "TER": 0.35},
             {}, False),
            (14, "gpt2.md", "all", "11M", {"BLEU": 54.9, "METEOR": 0.41, "TER": 0.39},
             {}, False),
            (21, "gpt2.lg", "unseen", "0.88M", {"BLEU": 49.8, "METEOR": 0.38, "TER": 0.44},
             {}, False),
            (22, "gpt2.lg", "seen", "0.88M", {"BLEU": 61.1, "METEOR": 0.43, "TER": 0.35},
             {}, False),
            (23, "gpt2.lg", "all", "0.88M", {"BLEU": 56.0, "METEOR": 0.41, "TER": 0.39},
             {}, False),
            (24, "gpt2.lg", "unseen", "23M", {"BLEU": 49.2, "METEOR": 0.39, "TER": 0.46},
             {}, False),
            (25, "gpt2.lg", "seen", "23M", {"BLEU": 64.7, "METEOR": 0.46, "TER": 0.33},
             {}, False),
            (26, "gpt2.lg", "all", "23M", {"BLEU": 57.7, "METEOR": 0.43, "TER": 0.39},
             {}, False),
        ),
        "dart": (
            (3, "gpt2.md", "all", "0.37M", {"BLEU": 42.4, "METEOR": 0.36, "TER": 0.48},
             {}, False),
            (4, "gpt2.md", "all", "11M", {"BLEU": 45.2, "METEOR": 0.38, "TER": 0.46},
             {}, False),
            (7, "gpt2.lg", "all", "0.88M", {"BLEU": 45.7, "METEOR": 0.38, "TER": 0.46},
             {}, False),
            (8, "gpt2.lg", "all", "23M", {"BLEU": 47.1, "METEOR": 0.39, "TER": 0.45},
             {}, False),
        ),
    }
    per_block = ("mlp_residual",)
    layer_norm = True
    placement = {"mh_adapter": False, "output_adapter": True, "original_ln_before": True,
                 "original_ln_after": False, "residual_before_ln": False, "ln_before": True}

    def hook(self, d: int, r: int):
        from nlg.methods.adapters.layers import LinResidual

        return LinResidual(d, r)


class AdapterH(Adapters):
    name = "adapter-h"
    label = "AdapterH"
    summary = "two bottleneck adapters per block, after attention and MLP (Houlsby et al., 2019)"
    defaults = {"adapter_dim": 112}
    paper_rows = {
        "e2e": (
            (5, "gpt2.md", "all", "11.09M", {"BLEU": 67.3, "NIST": 8.5, "METEOR": 46.0, "ROUGE_L": 70.7, "CIDEr": 2.44},
             {"BLEU": 0.6, "NIST": 0.07, "METEOR": 0.2, "ROUGE_L": 0.2, "CIDEr": 0.01}, False),
        ),
    }
    per_block = ("attn_residual", "mlp_residual")
    placement = {"mh_adapter": True, "output_adapter": True, "original_ln_before": False,
                 "original_ln_after": True, "residual_before_ln": True, "ln_before": False}

    def hook(self, d: int, r: int):
        from nlg.methods.adapters.layers import HoulsbyResidual

        return HoulsbyResidual(d, r)


register(AdapterL())
register(AdapterH())
