"""`--method full` (`--full_finetune`): every parameter trains (the paper's FT).

A checkpoint is the whole model as a Hugging Face GPT-2 directory (config.json +
model.safetensors; nlg.weights.save_pretrained): transformers' GPT2LMHeadModel.from_pretrained
and `--init_checkpoint` read it, and `nlg beam --checkpoint` needs no base.
Count: every parameter, `base_count` (GPT-2 M: 354,823,168; the paper prints 354.92M).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlg.methods import Method, Shape, base_count, register


@dataclass(frozen=True)
class FullSettings:
    """Full fine-tuning has no settings of its own."""


class Full(Method):
    name = "full"
    label = "FT"
    summary = "every parameter trains (FT); checkpoints are whole Hugging Face GPT-2 directories"
    files = ("config.json", "model.safetensors")
    needs_base = False
    paper_rows = {
        "e2e": (
            (2, "gpt2.md", "all", "354.92M", {"BLEU": 68.2, "NIST": 8.62, "METEOR": 46.2, "ROUGE_L": 71.0, "CIDEr": 2.47},
             {}, True),
            (7, "gpt2.lg", "all", "774.03M", {"BLEU": 68.5, "NIST": 8.78, "METEOR": 46.0, "ROUGE_L": 69.9, "CIDEr": 2.45},
             {}, True),
        ),
        "webnlg": (
            (6, "gpt2.md", "unseen", "354.92M", {"BLEU": 27.7, "METEOR": 0.3, "TER": 0.76},
             {}, False),
            (7, "gpt2.md", "seen", "354.92M", {"BLEU": 64.2, "METEOR": 0.45, "TER": 0.33},
             {}, False),
            (8, "gpt2.md", "all", "354.92M", {"BLEU": 46.5, "METEOR": 0.38, "TER": 0.53},
             {}, False),
            (18, "gpt2.lg", "unseen", "774.03M", {"BLEU": 43.1, "METEOR": 0.38, "TER": 0.53},
             {}, False),
            (19, "gpt2.lg", "seen", "774.03M", {"BLEU": 65.3, "METEOR": 0.46, "TER": 0.33},
             {}, False),
            (20, "gpt2.lg", "all", "774.03M", {"BLEU": 55.5, "METEOR": 0.42, "TER": 0.42},
             {}, False),
        ),
        "dart": (
            (2, "gpt2.md", "all", "354.92M", {"BLEU": 46.2, "METEOR": 0.39, "TER": 0.46},
             {}, False),
            (6, "gpt2.lg", "all", "774.03M", {"BLEU": 47.0, "METEOR": 0.39, "TER": 0.46},
             {}, False),
        ),
    }
    baseline_recipes = {"full": {"e2e": {"lr": 5e-05, "max_epoch": 5, "train_batch_size": 10}, "webnlg": {"lr": 1e-05, "max_epoch": 10, "train_batch_size": 6},
                                  "dart": {"lr": 1e-05, "max_epoch": 10, "train_batch_size": 6}}}

    def settings(self, values: dict[str, Any]) -> FullSettings:
        return FullSettings()

    def describe(self, settings: FullSettings) -> str:
        return "full fine-tuning"

    def count(self, shape: Shape, settings: FullSettings) -> int:
        return base_count(shape)

    def apply(self, model, settings: FullSettings) -> None:
        for param in model.parameters():
            param.requires_grad_(True)

    def save(self, model, directory: Path, settings: FullSettings, base_model: str | None) -> None:
        from nlg.weights import save_pretrained

        save_pretrained(model, directory)

    def load(self, model, directory: Path, settings: FullSettings | None) -> None:
        from nlg.weights import find_weights_file, load_base_weights, read_state_dict

        weights = find_weights_file(directory)
        load_base_weights(model, read_state_dict(weights), str(weights))

    def recognizes(self, directory: Path) -> FullSettings | None:
        if (directory / "config.json").is_file() and "nlg_top_layers" in (directory / "config.json").read_text():
            return None  # the top blocks only (nlg.methods.top_layers)
        has_weights = any((directory / name).is_file() for name in ("model.safetensors", "pytorch_model.bin"))
        return FullSettings() if (directory / "config.json").is_file() and has_weights else None


register(Full())
