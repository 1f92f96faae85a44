"""`--method dora`: weight-decomposed low-rank adaptation (DoRA; Liu et al., ICML 2024), in PEFT's
files (LoraConfig(use_dora=True)).

DoRA splits a frozen weight W0 (out x in, our nn.Linear's layout) into a magnitude and a
direction, trains the magnitude m (one value per output row) and adapts the direction with LoRA
(the paper's Eq. 2 and 5, its norm ||·||_c taken over each output row of our (out x in) W):

    W' = m · (W0 + ΔW) / ||W0 + ΔW||_c        ΔW = (alpha / r) · B A,   m_0 = ||W0||_c   (Eq. 5)

B starts at zero, so W' = W0 until training moves B or m. As the paper's Section 4.3 suggests
(and PEFT does), ||W0 + ΔW||_c is treated as a constant in backpropagation (detached): the
gradient reaches m, A and B through the numerator only. A layer computes, like PEFT's
DoraLinearLayer,

    y = W0 x + b + (m/n - 1) · W0 x' + (m/n) · (alpha/r) · B A x'      n = ||W0 + ΔW||_c (detached)

with x' = dropout(x) while training with dropout, else x (then y = (m/n)(W0 x + ΔW x) + b).
Computing n needs ΔW as one dense matrix at every forward pass, as PEFT computes it (its
`get_lora_weight`); nothing else is rebuilt.

Targets and parameters: DoRA reuses LoRA's layer (nlg.methods.lora.layer.LoRALinear, q/k/v
slices of GPT-2's fused c_attn; `DoRALinear` below adds the magnitude). PEFT's format stores q
and v of c_attn as one c_attn adapter with a block B (nlg.methods.lora.peft_files), and its
magnitude is a vector over all of c_attn's output rows: q, k and v (3·d). So with the default
targets q,v the k rows' magnitude trains too (their direction does not: B is zero there); that is
what PEFT computes and trains for these files, and our count is PEFT's:

    |Θ| = Σ_targets r·(in + rows) + Σ_adapted modules out       per block
        q,v on GPT-2 M, r=4: 24·(2·4·(1024+1024) + 3·1024) = 466,944 (0.47M)

Merging (`prepare_inference`): W <- (m/n)·(W0 + ΔW), the bias unchanged: decoding at the base
model's speed.

Defaults and recipe: the DoRA paper has no E2E (GPT-2) experiment; it trains each benchmark with
its LoRA baseline's configuration and rank. So its defaults are the LoRA paper's E2E setting
(r=4, alpha=32, dropout 0.1 on q and v) and its recipe LoRA's E2E recipe (lr 2e-4, 5 epochs,
batch 8), not PEFT's LoraConfig defaults (r=8, alpha 8, no dropout, all of c_attn). There is no
published DoRA row for E2E, WebNLG or DART (paper_rows is empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlg.methods import Method, Shape, register
from nlg.methods.lora import _TARGET_SHAPE, DEFAULTS, LoRA

MAGNITUDE = "dora_magnitude"  # our parameter's name in DoRALinear
PEFT_MAGNITUDE = "lora_magnitude_vector"  # PEFT's tensor name for it


@dataclass(frozen=True)
class DoRASettings:
    rank: int = DEFAULTS.rank
    alpha: float = DEFAULTS.alpha
    dropout: float = DEFAULTS.dropout
    targets: tuple[str, ...] = DEFAULTS.targets


# target -> the module it adapts (the magnitude's length is that module's out)
_MODULE_ROWS = {"q": ("attn.c_attn", 3), "k": ("attn.c_attn", 3), "v": ("attn.c_attn", 3), "qkv": ("attn.c_attn", 3),
                "o": ("attn.c_proj", 1), "fc": ("mlp.c_fc", 4), "proj": ("mlp.c_proj", 1)}

_LORA_FLAGS = {"dora_dim": "lora_dim", "dora_alpha": "lora_alpha", "dora_dropout": "lora_dropout",
               "dora_targets": "lora_targets"}


class DoRA(Method):
    name = "dora"
    label = "DoRA"
    summary = "LoRA's direction update with a trained magnitude per output row (Liu et al., 2024), merged; PEFT's files"
    flags = tuple(_LORA_FLAGS)
    defaults = {"dora_dim": DEFAULTS.rank, "dora_alpha": DEFAULTS.alpha, "dora_dropout": DEFAULTS.dropout,
                "dora_targets": DEFAULTS.targets}
    flag_types = {"dora_dim": int, "dora_alpha": float, "dora_dropout": float, "dora_targets": str}
    flag_help = {"dora_dim": f"DoRA's LoRA rank r (default {DEFAULTS.rank})",
                 "dora_alpha": f"DoRA's LoRA alpha, the direction update scaled by alpha/r (default {DEFAULTS.alpha:g})",
                 "dora_dropout": f"dropout on DoRA's input, in [0, 1) (default {DEFAULTS.dropout})",
                 "dora_targets": "comma-separated projections to adapt, from q,k,v,qkv,o,fc,proj "
                                 f"(default {','.join(DEFAULTS.targets)})"}
    fixed_on_resume = ("dora_dim", "dora_alpha", "dora_targets")
    sizes = ("dora_dim",)
    parameter_marks = (".lora_", f".{MAGNITUDE}")
    baseline_recipes = {"dora": {"e2e": {"lr": 2e-4, "max_epoch": 5, "train_batch_size": 8}}}
    files = ("adapter_config.json", "adapter_model.safetensors")
    merges = True

    # -- settings: LoRA's, under DoRA's flag names --------------------------------------------

    def settings(self, values: dict[str, Any]) -> DoRASettings:
        lora = LoRA().settings({_LORA_FLAGS[k]: v for k, v in values.items() if k in _LORA_FLAGS})
        return DoRASettings(lora.rank, lora.alpha, lora.dropout, lora.targets)

    def values(self, settings: DoRASettings) -> dict[str, Any]:
        return {"dora_dim": settings.rank, "dora_alpha": settings.alpha, "dora_dropout": settings.dropout,
                "dora_targets": settings.targets}

    def check(self, values: dict[str, Any]) -> list[str]:
        problems = LoRA().check({_LORA_FLAGS[k]: v for k, v in values.items() if k in _LORA_FLAGS})
        return [p.replace("--lora_", "--dora_") for p in problems]

    def describe(self, settings: DoRASettings) -> str:
        return f"DoRA r={settings.rank} alpha={settings.alpha:g} on {','.join(settings.targets)}, magnitudes trained"

    def count(self, shape: Shape, settings: DoRASettings) -> int:
        d = shape.n_embd
        lora = sum(settings.rank * d * sum(_TARGET_SHAPE[t]) for t in settings.targets)
        modules = {_MODULE_ROWS[t] for t in settings.targets}
        return shape.n_layer * (lora + sum(rows * d for _, rows in modules))

    # -- the model ------------------------------------------------------------------------------

    def apply(self, model, settings: DoRASettings) -> None:
        from nlg.methods.dora.layer import add_dora

        add_dora(model, settings)

    def trainable(self, model) -> dict:
        return {name: p for name, p in model.named_parameters()
                if ".lora_A." in name or ".lora_B." in name or name.endswith(f".{MAGNITUDE}")}

    def prepare_inference(self, model) -> None:
        from nlg.methods.lora.layer import merge

        merge(model)  # DoRALinear.merge: W <- (m/n)(W0 + ΔW)

    # -- PEFT's files -----------------------------------------------------------------------------

    def save(self, model, directory: Path, settings: DoRASettings, base_model: str | None) -> None:
        from nlg.methods.dora.layer import save_dora

        save_dora(model, directory, base_model)

    def load(self, model, directory: Path, settings: DoRASettings | None) -> None:
        from nlg.methods.dora.layer import load_dora

        load_dora(model, directory)

    def recognizes(self, directory: Path) -> DoRASettings | None:
        from nlg.files import InputError, read_json
        from nlg.methods.dora.layer import read_dora
        from nlg.methods.lora.peft_files import ADAPTER_CONFIG, adapter_lora_config

        path = Path(directory) / ADAPTER_CONFIG
        if not path.is_file():
            return None
        try:
            config = read_json(path)
        except InputError:
            return None  # another method's reader names the line
        if not isinstance(config, dict) or config.get("peft_type") != "LORA" or config.get("use_dora") is not True:
            return None
        config, tensors, metadata = read_dora(directory)
        c = adapter_lora_config(config, tensors, metadata)
        return DoRASettings(c.rank, c.alpha, c.dropout, c.targets)


register(DoRA())
