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

from nlg.methods import Method, Shape, register

# target -> (input width, output rows) in units of the model width d
_TARGET_SHAPE = {"q": (1, 1), "k": (1, 1), "v": (1, 1), "qkv": (1, 3), "o": (1, 1), "fc": (1, 4),
                 "proj": (4, 1)}


@dataclass(frozen=True)
class LoRASettings:
    rank: int = 4
    alpha: float = 32.0
    dropout: float = 0.1
    targets: tuple[str, ...] = ("q", "v")


class LoRA(Method):
    name = "lora"
    label = "LoRA"
    summary = "low-rank updates of q and v (Hu et al., 2021), merged for decoding; PEFT's files"
    flags = ("lora_dim", "lora_alpha", "lora_dropout", "lora_targets")
    defaults = {"lora_dim": 4, "lora_alpha": 32.0, "lora_dropout": 0.1, "lora_targets": ("q", "v")}
    files = ("adapter_config.json", "adapter_model.safetensors")
    merges = True

    def settings(self, values: dict[str, Any]) -> LoRASettings:
        targets = values["lora_targets"]
        targets = tuple(targets.split(",")) if isinstance(targets, str) else tuple(targets)
        return LoRASettings(int(values["lora_dim"]), float(values["lora_alpha"]),
                            float(values["lora_dropout"]), targets)

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
            kind = read_json(directory / "adapter_config.json").get("peft_type")
            if kind is None or kind != "LORA":
                return None  # AdapterHub's has no peft_type; PEFT's prefix and prompt tuning other ones
        except (InputError, TypeError):
            pass  # read_adapter names the bad line
        config, tensors, metadata = read_adapter(directory)
        c = adapter_lora_config(config, tensors, metadata)
        return LoRASettings(c.rank, c.alpha, c.dropout, c.targets)


register(LoRA())
