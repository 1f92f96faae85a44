"""`--method ia3`: (IA)³, "Infused Adapter by Inhibiting and Amplifying Inner Activations"
(Liu et al., "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning", NeurIPS 2022), in PEFT's files (peft.IA3Config).

The paper (its section 3.3 and Figure 1) rescales keys, values and the feed-forward's inner activation by
learned vectors l_k, l_v ∈ R^{d_k}, l_ff ∈ R^{d_ff}, initialised to ones:

    softmax(Q (l_k ⊙ K^T) / √d_k) (l_v ⊙ V)          (attention)
    (l_ff ⊙ γ(W1 x)) W2                              (feed-forward)

On GPT-2: l_k, l_v scale the k and v rows of the fused c_attn's output (K = W_k x + b_k, bias
included), l_ff the input of mlp.c_proj (γ(c_fc x), the 4d inner activation). PEFT's GPT-2
defaults target the same modules (target_modules c_attn and mlp.c_proj, feedforward_modules
mlp.c_proj), but its c_attn vector covers q as well: PEFT's format holds the paper exactly with
the q entries at 1, so that is what we write, and we train only k and v (the paper's choice; the
default --ia3_targets k,v,ff). --ia3_targets q,k,v,ff trains PEFT's whole c_attn vector.

Count: L·(d·|{q,k,v} ∩ targets| + 4d·[ff]): k,v,ff is 6·L·d = 147,456 on GPT-2 M and 276,480 on
GPT-2 L; PEFT trains 7·L·d (172,032 / 322,560) for the same files because it trains q's entries
too (--ia3_targets q,k,v,ff matches it). The paper reports no GPT-2 E2E row (it is on T0/T5),
so there is no printed count to compare with.

Merged decoding: `prepare_inference` folds each vector into its matrix (c_attn's rows and bias,
mlp.c_proj's columns), as PEFT's merge does.

Files:
    adapter_config.json        {"peft_type": "IA3", "target_modules": ["attn.c_attn", "mlp.c_proj"],
                               "feedforward_modules": ["mlp.c_proj"], "fan_in_fan_out": true, ...}
    adapter_model.safetensors  base_model.model.transformer.h.<i>.attn.c_attn.ia3_l  (3d, 1)
                               base_model.model.transformer.h.<i>.mlp.c_proj.ia3_l  (1, 4d)
                               metadata nlg.targets (ours only; PEFT's files load as q,k,v,ff)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlg.files import InputError
from nlg.methods import Method, Shape, peft_dir, register

KIND = "IA3"
TARGETS = ("q", "k", "v", "ff")
ATTN, FF = "attn.c_attn", "mlp.c_proj"


@dataclass(frozen=True)
class IA3Settings:
    targets: tuple[str, ...] = ("k", "v", "ff")


DEFAULTS = IA3Settings()


def _targets(value: Any) -> tuple[str, ...]:
    return tuple(t.strip() for t in value.split(",") if t.strip()) if isinstance(value, str) else tuple(value)


class IA3(Method):
    name = "ia3"
    label = "(IA)³"
    summary = "learned vectors rescaling keys, values and the feed-forward's inner activation (Liu et al., 2022), merged; PEFT's files"
    flags = ("ia3_targets",)
    defaults = {"ia3_targets": DEFAULTS.targets}
    flag_types = {"ia3_targets": str}
    flag_help = {"ia3_targets": f"--method ia3: comma-separated vectors to train, from {','.join(TARGETS)} "
                                "(default k,v,ff: the paper's; q,k,v,ff: PEFT's whole c_attn vector)"}
    sizes = ()
    parameter_marks = (".ia3_l.",)
    files = (peft_dir.CONFIG_FILE, peft_dir.WEIGHTS_FILE)
    merges = True
    # No published E2E recipe or row. (IA)³'s paper trains T0 with Adafactor, lr 3e-3, batch 8
    # (its T-Few recipe; those two figures are not verified here: the search tool returned only
    # the paper's abstract and Figure 1). We take that lr and batch and the LoRA paper's 5 E2E epochs.
    baseline_recipes = {"ia3": {"e2e": {"lr": 3e-3, "max_epoch": 5, "train_batch_size": 8}}}
    paper_rows: dict[str, tuple] = {}

    def settings(self, values: dict[str, Any]) -> IA3Settings:
        return IA3Settings(_targets(values["ia3_targets"]))

    def values(self, settings: IA3Settings) -> dict[str, Any]:
        return {"ia3_targets": settings.targets}

    def check(self, values: dict[str, Any]) -> list[str]:
        targets = values.get("ia3_targets")
        if targets is None:
            return []
        targets = _targets(targets)
        unknown = [t for t in targets if t not in TARGETS]
        if unknown or not targets or len(set(targets)) != len(targets):
            return [f"--ia3_targets {','.join(targets)}: choose distinct ones from {','.join(TARGETS)}"]
        return []

    def describe(self, settings: IA3Settings) -> str:
        return f"(IA)³ vectors on {','.join(settings.targets)}"

    def count(self, shape: Shape, settings: IA3Settings) -> int:
        d = shape.n_embd
        return shape.n_layer * sum(4 * d if t == "ff" else d for t in settings.targets)

    def _plan(self, settings: IA3Settings, d: int) -> dict[str, tuple[dict[str, tuple[int, int]], bool]]:
        from nlg.methods.lora.layer import target_rows

        plan: dict[str, tuple[dict[str, tuple[int, int]], bool]] = {}
        attn = {t: target_rows(t, 3 * d, d) for t in TARGETS[:3] if t in settings.targets}
        if attn:
            plan[ATTN] = (attn, False)
        if "ff" in settings.targets:
            plan[FF] = ({"ff": (0, 4 * d)}, True)
        return plan

    def apply(self, model, settings: IA3Settings) -> None:
        from nlg.methods.ia3 import layer

        layer.add(model, self._plan(settings, model.config.n_embd))

    def trainable(self, model) -> dict:
        return {name: p for name, p in model.named_parameters() if ".ia3_l." in name}

    def peft_config(self, settings: IA3Settings, base_model: str | None) -> dict:
        targets = ([ATTN] if set(settings.targets) & {"q", "k", "v"} else []) + ([FF] if "ff" in settings.targets else [])
        return {**peft_dir.common_config(KIND, base_model, targets),
                "feedforward_modules": [FF] if "ff" in settings.targets else [], "init_ia3_weights": True}

    def save(self, model, directory: Path, settings: IA3Settings, base_model: str | None) -> None:
        from nlg.methods.ia3 import layer

        tensors = {}
        for name, module in layer.modules(model).items():
            scale = module.scale().detach().float()
            tensors[f"{name}.ia3_l"] = scale[None, :] if module.feedforward else scale[:, None]
        peft_dir.write(directory, self.peft_config(settings, base_model), tensors,
                       {"nlg.targets": ",".join(settings.targets)})

    def read_settings(self, directory: Path) -> IA3Settings:
        """The settings of an IA3 adapter directory (ours: its nlg.targets; PEFT's: q,k,v for
        c_attn, ff for mlp.c_proj), every key we use checked."""
        directory = Path(directory)
        config = peft_dir.read_config(directory, KIND, self.name)
        path = directory / peft_dir.CONFIG_FILE
        paths = peft_dir.target_paths(config, path, (ATTN, FF))
        feedforward = config.get("feedforward_modules") or []
        if not isinstance(feedforward, list) or not all(isinstance(t, str) for t in feedforward):
            raise InputError(f"{path}: feedforward_modules: {json.dumps(feedforward)} must be a list of module names")
        ff = [p for p in (ATTN, FF) if any(p == t or p.endswith("." + t) for t in feedforward)]
        if len(ff) != len(feedforward) or ATTN in ff or (FF in paths) != (FF in ff):
            raise InputError(f"{path}: feedforward_modules: {json.dumps(feedforward)}; (IA)³ on GPT-2 scales "
                             f"c_attn's output and mlp.c_proj's input: it must be [\"mlp.c_proj\"] exactly when "
                             "mlp.c_proj is a target")
        _, metadata, weights = peft_dir.read_tensors(directory)
        if "nlg.targets" in metadata:
            targets = _targets(metadata["nlg.targets"])
            problems = self.check({"ia3_targets": targets})
            implied = self.peft_config(IA3Settings(targets), None)["target_modules"] if not problems else None
            if problems or implied != paths:
                raise InputError(f"{weights}: nlg.targets {metadata['nlg.targets']!r} does not fit {path}'s "
                                 f"target_modules {json.dumps(config.get('target_modules'))}")
            return IA3Settings(targets)
        return IA3Settings(tuple((["q", "k", "v"] if ATTN in paths else []) + (["ff"] if FF in paths else [])))

    def load(self, model, directory: Path, settings: IA3Settings | None) -> None:
        import torch

        from nlg.methods.ia3 import layer

        present, tensors, path = peft_dir.load_checked(
            self, model, directory, self.read_settings(directory), settings, layer.modules,
            lambda m: {"ia3_l": (1, m.in_features) if m.feedforward else (m.out_features, 1)})
        with torch.no_grad():
            for name, module in present.items():
                vector = tensors[f"{name}.ia3_l"].flatten().float()
                outside = torch.ones_like(vector, dtype=torch.bool)
                for slice_name, (start, end) in module.slices.items():
                    outside[start:end] = False
                    module.ia3_l[slice_name].copy_(vector[start:end])
                if bool((vector[outside] != 1).any()):
                    raise InputError(f"{path}: tensor {name}.ia3_l is not 1 outside the rows of "
                                     f"{','.join(module.slices)} (the model trains only those; "
                                     "--ia3_targets q,k,v,ff takes the whole vector)")

    def prepare_inference(self, model) -> None:
        from nlg.methods.ia3 import layer

        for module in layer.modules(model).values():
            module.merge()

    def recognizes(self, directory: Path) -> IA3Settings | None:
        if peft_dir.peft_type(directory) != KIND:
            return None
        return self.read_settings(directory)


register(IA3())
