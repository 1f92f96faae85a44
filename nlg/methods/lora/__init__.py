"""`--method lora`: low-rank updates of chosen projections (Hu et al., 2021), in PEFT's files.

The layer is nlg.methods.lora.layer, the file layout nlg.methods.lora.peft_files (both as before); this module puts
them behind the method interface. Flags: --lora_dim r, --lora_alpha, --lora_dropout,
--lora_targets (default q,v). Count: r·(in + out) per adapted slice and block, e.g. q and v on
GPT-2 M: 24 · 2 · 4 · (1024 + 1024) = 393,216 (the paper prints 0.35M; see the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlg.methods import Bound, Method, Shape, register

FLOAT32_MAX = 3.4028234663852886e38
TARGETS = ("q", "k", "v", "qkv", "o", "fc", "proj")  # as nlg.methods.lora.layer adapts them

# target -> (input width, output rows) in units of the model width d
_TARGET_SHAPE = {"q": (1, 1), "k": (1, 1), "v": (1, 1), "qkv": (1, 3), "o": (1, 1), "fc": (1, 4),
                 "proj": (4, 1)}


@dataclass(frozen=True)
class LoRASettings:
    """LoRA's settings and THE defaults (the paper's: r=4, alpha 32, dropout 0.1 on q and v);
    the layer's LoRAConfig, the flags and the recipes take theirs from here."""

    rank: int = 4
    alpha: float = 32.0
    dropout: float = 0.1
    targets: tuple[str, ...] = ("q", "v")


DEFAULTS = LoRASettings()


class LoRA(Method):
    name = "lora"
    label = "LoRA"
    checkpoint_flag = "--lora_checkpoint"
    summary = "low-rank updates of q and v (Hu et al., 2021), merged for decoding; PEFT's files"
    flags = ("lora_dim", "lora_alpha", "lora_dropout", "lora_targets")
    defaults = {"lora_dim": DEFAULTS.rank, "lora_alpha": DEFAULTS.alpha, "lora_dropout": DEFAULTS.dropout,
                "lora_targets": DEFAULTS.targets}
    flag_types = {"lora_dim": int, "lora_alpha": float, "lora_dropout": float, "lora_targets": str}
    flag_help = {"lora_dim": f"LoRA rank r (default {DEFAULTS.rank})",
                 "lora_alpha": f"LoRA alpha, the update scaled by alpha/r (default {DEFAULTS.alpha:g})",
                 "lora_dropout": f"dropout on LoRA's input, in [0, 1) (default {DEFAULTS.dropout})",
                 "lora_targets": f"comma-separated projections to adapt, from {','.join(TARGETS)} "
                                 f"(default {','.join(DEFAULTS.targets)})"}
    flag_bounds = {"lora_alpha": Bound(0, strict=True), "lora_dropout": Bound(0, below=1)}
    # The demos pre-train a tiny GPT-2 themselves: a wider update on more projections than the paper's
    demo_values = {"lora_dim": 8, "lora_alpha": 16.0, "lora_targets": ("q", "v", "o", "fc")}
    fixed_on_resume = ("lora_dim", "lora_alpha", "lora_targets")  # the dropout may change (--allow_changed)
    parameter_marks = (".lora_",)
    # The LoRA paper's own rows are the datasets' (nlg.datasets.e2e.PAPER); here the independent
    # reruns other papers published beside their methods: 3 seeds, as issue 27 cites them from
    # FourierFT's E2E table (VeRA reports BLEU 68.9 as well); not checked against the PDF here.
    paper_rows = {
        "e2e": (
            (101, "gpt2.md", "all", "0.35M", {"BLEU": 68.9, "NIST": 8.76, "METEOR": 46.6, "ROUGE_L": 71.5, "CIDEr": 2.53},
             {"BLEU": 0.3, "NIST": 0.06, "METEOR": 0.1, "ROUGE_L": 0.1, "CIDEr": 0.03}, False,
             "FourierFT (Gao et al., ICML 2024): LoRA rerun"),
        ),
    }
    # The paper's rank sweep (Appendix H.2, Table 18: GPT-2 M on E2E, r = 1, 2, 4, ..., 1024; validation
    # loss and test BLEU, NIST, METEOR, ROUGE-L, CIDEr), shown beside a sweep of LORA_DIM on E2E
    # (nlg.results.sweep). Its numbers are not recorded: they were searched for (2026-12-07) in the
    # stored pages, documentation and code (arXiv 2106.09685, "Table 18", the caption's words, the
    # column heads) and not found; none is written from memory.
    paper_sweeps = {
        ("e2e", ("LORA_DIM",)): {
            "source": "Hu et al. 2021, arXiv 2106.09685, Appendix H.2, Table 18", "card": "gpt2.md", "rows": None,
            "note": "not found in the sources searched (2026-12-07); add them to nlg/methods/lora/__init__.py "
                    "(paper_sweeps) from the paper, with where they were read"},
    }
    files = ("adapter_config.json", "adapter_model.safetensors")
    merges = True

    def settings(self, values: dict[str, Any]) -> LoRASettings:
        targets = values["lora_targets"]
        targets = tuple(t.strip() for t in targets.split(",") if t.strip()) if isinstance(targets, str) \
            else tuple(targets)
        return LoRASettings(int(values["lora_dim"]), float(values["lora_alpha"]),
                            float(values["lora_dropout"]), targets)

    def values(self, settings: LoRASettings) -> dict[str, Any]:
        return {"lora_dim": settings.rank, "lora_alpha": settings.alpha, "lora_dropout": settings.dropout,
                "lora_targets": settings.targets}

    def check(self, values: dict[str, Any]) -> list[str]:
        problems = super().check({k: v for k, v in values.items() if k != "lora_targets"})
        if problems:
            return problems
        dim, alpha, dropout = (values.get(k) for k in ("lora_dim", "lora_alpha", "lora_dropout"))
        if dropout is not None and not 0 <= dropout < 1:
            problems.append("--lora_dropout must be in [0, 1)")
        targets = values.get("lora_targets")
        if targets is not None:
            targets = tuple(t.strip() for t in targets.split(",") if t.strip()) if isinstance(targets, str) \
                else tuple(targets)
            unknown = [t for t in targets if t not in TARGETS]
            if unknown or not targets:
                problems.append(f"--lora_targets: unknown {unknown}; choose from {','.join(TARGETS)}")
        # The update is scaled by alpha/r in float32: a scale it cannot hold makes every logit NaN.
        if alpha is not None and not 0 < alpha / max(dim or DEFAULTS.rank, 1) <= FLOAT32_MAX:
            problems.append(f"--lora_alpha {alpha}: must be > 0, and --lora_alpha/--lora_dim at "
                            f"most {FLOAT32_MAX:.3g} (float32's largest number)")
        return problems

    def recipe_key(self, values: dict[str, Any]) -> str | None:
        return None  # a dataset's own recipe is LoRA's

    def describe(self, settings: LoRASettings) -> str:
        return f"LoRA r={settings.rank} alpha={settings.alpha:g} on {','.join(settings.targets)}"

    def count(self, shape: Shape, settings: LoRASettings) -> int:
        d = shape.n_embd
        per_block = sum(settings.rank * d * sum(_TARGET_SHAPE[t]) for t in settings.targets)
        return shape.n_layer * per_block

    def apply(self, model, settings: LoRASettings) -> None:
        from nlg.methods.lora.layer import add_lora

        add_lora(model, rank=settings.rank, alpha=settings.alpha, dropout=settings.dropout,
                 targets=settings.targets)

    def trainable(self, model) -> dict:
        from nlg.methods.lora.layer import lora_parameters

        return lora_parameters(model)

    def save(self, model, directory: Path, settings: LoRASettings, base_model: str | None) -> None:
        from nlg.methods.lora.peft_files import save_adapter

        save_adapter(model, directory, base_model=base_model)

    def load(self, model, directory: Path, settings: LoRASettings | None) -> None:
        from nlg.methods.lora.peft_files import load_adapter

        load_adapter(model, directory)

    def prepare_inference(self, model) -> None:
        from nlg.methods.lora.layer import merge

        merge(model)  # zero extra cost per token while decoding

    def recognizes(self, directory: Path) -> LoRASettings | None:
        from nlg.files import InputError, read_json
        from nlg.methods.lora.peft_files import adapter_lora_config, is_adapter_dir, read_adapter

        if not is_adapter_dir(directory):
            return None
        try:
            config = read_json(directory / "adapter_config.json")
            if config.get("peft_type") != "LORA" or config.get("use_dora") is True:
                return None  # AdapterHub's has no peft_type, PEFT's prefix, prompt tuning and DoRA other ones
        except (InputError, TypeError):
            pass  # read_adapter names the bad line
        config, tensors, metadata = read_adapter(directory)
        c = adapter_lora_config(config, tensors, metadata)
        return LoRASettings(c.rank, c.alpha, c.dropout, c.targets)


register(LoRA())
