"""`--method top2`: only the last --top_layers blocks (default 2) and the final layer norm train
(the paper's FT-Top2); embeddings and every other block stay frozen.

Count: k·(12·d² + 13·d) + 2·d; for GPT-2 M with k = 2 that is 25,194,496, the paper's 25.19M.

Files: a Hugging Face GPT-2 directory holding only what trained (config.json +
model.safetensors with `transformer.h.{L-k..L-1}.*` and `transformer.ln_f.*`, in the published
Conv1D layout); config.json adds `nlg_top_layers` and `nlg_base_model`, the base it needs.
`nlg beam --init_checkpoint BASE --checkpoint DIR` rebuilds the whole model, and so does
REBUILD, a one-liner with transformers (tensors not in the file keep the base's values; a
tensor the model does not have stops it, so nothing is dropped silently):

    python -c "import sys; from transformers import GPT2LMHeadModel as M; from safetensors.torch
    import load_file; ..." BASE DIR WHOLE        (the whole line: REBUILD, and the README)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlg.files import InputError, read_json
from nlg.methods import Method, Shape, block_count, register

TOP_KEY = "nlg_top_layers"
# BASE (a Hugging Face GPT-2) + DIR (a top2 checkpoint) -> WHOLE, a complete Hugging Face GPT-2.
REBUILD = ("python -c \"import sys; from transformers import GPT2LMHeadModel as M; "
           "from safetensors.torch import load_file; m = M.from_pretrained(sys.argv[1]); "
           "r = m.load_state_dict(load_file(sys.argv[2] + '/model.safetensors'), strict=False); "
           "assert not r.unexpected_keys, r.unexpected_keys; "
           "m.save_pretrained(sys.argv[3])\" BASE DIR WHOLE")


@dataclass(frozen=True)
class TopSettings:
    top_layers: int = 2


def trained_prefixes(n_layer: int, k: int) -> tuple[str, ...]:
    """Parameter-name prefixes of what trains: the last k blocks and ln_f."""
    return (*(f"transformer.h.{i}." for i in range(n_layer - k, n_layer)), "transformer.ln_f.")


class TopLayers(Method):
    name = "top2"
    label = "FT-Top2"
    summary = "the last --top_layers blocks (default 2) and ln_f train (FT-Top2); a partial HF dir"
    flags = ("top_layers",)
    defaults = {"top_layers": 2}
    flag_help = {"top_layers": "--method top2: how many top blocks train (default 2)"}
    sizes = ("top_layers",)
    paper_rows = {
        "e2e": (
            (6, "gpt2.md", "all", "25.19M", {"BLEU": 68.1, "NIST": 8.59, "METEOR": 46.0, "ROUGE_L": 70.8, "CIDEr": 2.41},
             {}, True),
        ),
        "webnlg": (
            (15, "gpt2.md", "unseen", "25.19M", {"BLEU": 18.9, "METEOR": 0.23, "TER": 0.99},
             {}, False),
            (16, "gpt2.md", "seen", "25.19M", {"BLEU": 53.6, "METEOR": 0.38, "TER": 0.49},
             {}, False),
            (17, "gpt2.md", "all", "25.19M", {"BLEU": 36.0, "METEOR": 0.31, "TER": 0.72},
             {}, False),
        ),
        "dart": (
            (5, "gpt2.md", "all", "25.19M", {"BLEU": 41.0, "METEOR": 0.34, "TER": 0.56},
             {}, False),
        ),
    }
    baseline_recipes = {"top2": {"e2e": {"lr": 5e-05, "max_epoch": 5, "train_batch_size": 10}, "webnlg": {"lr": 5e-05, "max_epoch": 10, "train_batch_size": 9},
                                  "dart": {"lr": 5e-05, "max_epoch": 5, "train_batch_size": 5}}}
    files = ("config.json", "model.safetensors")

    def settings(self, values: dict[str, Any]) -> TopSettings:
        return TopSettings(int(values["top_layers"]))

    def describe(self, settings: TopSettings) -> str:
        return f"the top {settings.top_layers} blocks and ln_f"

    def count(self, shape: Shape, settings: TopSettings) -> int:
        return min(settings.top_layers, shape.n_layer) * block_count(shape.n_embd) + 2 * shape.n_embd

    def apply(self, model, settings: TopSettings) -> None:
        n_layer = model.config.n_layer
        if not 1 <= settings.top_layers <= n_layer:
            raise InputError(f"--top_layers {settings.top_layers}: the model has {n_layer} blocks")
        prefixes = trained_prefixes(n_layer, settings.top_layers)
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith(prefixes))

    def save(self, model, directory: Path, settings: TopSettings, base_model: str | None) -> None:
        from safetensors.torch import save

        from nlg.files import atomic_write
        from nlg.weights import hf_config, published_layout

        tensors = published_layout({name: p.detach().cpu() for name, p in self.trainable(model).items()})
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(directory / "model.safetensors", "wb") as handle:
            handle.write(save(tensors, metadata={"format": "pt"}))
        config = {**hf_config(model.config), TOP_KEY: settings.top_layers, "nlg_base_model": base_model}
        with atomic_write(directory / "config.json") as handle:
            handle.write(json.dumps(config, indent=2) + "\n")

    def load(self, model, directory: Path, settings: TopSettings | None) -> None:
        """The trained blocks into `model` (built on the base), strictly: exactly the tensors of
        the last k blocks and ln_f, each of the model's shape."""
        import torch

        from nlg.weights import CheckpointError, check_finite, published_layout, read_state_dict

        settings = settings or self.recognizes(directory)
        weights = directory / "model.safetensors"
        state = published_layout(read_state_dict(weights))
        check_finite(weights, state, "the checkpoint")  # Conv1D (in, out) back to (out, in)
        prefixes = trained_prefixes(model.config.n_layer, settings.top_layers)
        expected = {name: p for name, p in model.named_parameters() if name.startswith(prefixes)}
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(p.shape)}"
                  for k, p in expected.items() if k in state and state[k].shape != p.shape]
        if missing or unexpected or shapes:
            raise CheckpointError(f"{weights}: not the top {settings.top_layers} blocks of this "
                                  f"{model.config.n_layer}-layer model: missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}, mis-shaped {shapes[:3]}")
        with torch.no_grad():
            for name, param in expected.items():
                param.copy_(state[name].to(param.dtype))

    def recognizes(self, directory: Path) -> TopSettings | None:
        path = directory / "config.json"
        if not path.is_file():
            return None
        from nlg.methods import config_int

        config = read_json(path)
        return TopSettings(config_int(path, config, TOP_KEY)) if isinstance(config, dict) and TOP_KEY in config else None


register(TopLayers())
