"""`--method adalora`: AdaLoRA (Zhang et al., "Adaptive Budget Allocation for Parameter-Efficient
Fine-Tuning", ICLR 2023), in PEFT's files (peft.AdaLoraConfig, peft_type ADALORA).

The paper's update in SVD form (its Eq. 3) on a frozen W0 (out x in):

    W = W0 + ΔW = W0 + P Λ Q        P (out x r), Λ = diag(λ) (r), Q (r x in)

trained with the orthogonality of P and Q encouraged by a regulariser added to the loss (Eq. 4)
and the rank of each matrix allocated during training: every triplet (P's column i, λ_i, Q's row
i) gets an importance score from a smoothed sensitivity and its uncertainty (Eq. 7-10), and a
cubic budget schedule (Eq. 11) zeroes the λ_i of the least important triplets until on average
target_r remain per matrix. The layer (nlg.methods.adalora.layer) computes PEFT 0.22's SVDLinear,
ΔW x = (α / (init_r + 1e-5)) · P (λ ⊙ (Q x)); the regulariser and the allocator
(nlg.methods.adalora.allocator, the method's TrainingHook) compute PEFT's AdaLoraModel.forward
regulariser and update_and_allocate / RankAllocator, step for step (their docstrings say where
PEFT's numbers differ from the paper's formulas: its regulariser, as the authors' code's, is the
unsquared Frobenius norm).

Flags and defaults (PEFT's AdaLoraConfig defaults. The authors' released code, QingruZhang/AdaLoRA,
has GLUE (DeBERTaV3), SQuAD v2 and BART XSum / CNN-DailyMail scripts and no GPT-2 or E2E one;
their paper's tables were not read here. So no recipe of its own: `nlg recipe e2e --method
adalora` says the paper gives none):

    --adalora_init_r 12  --adalora_target_r 8  --adalora_tinit 0  --adalora_tfinal 0
    --adalora_delta_t 1 (PEFT's deltaT)  --adalora_beta1 0.85  --adalora_beta2 0.85
    --adalora_orth_reg_weight 0.5  --adalora_alpha 8 (LoraConfig's lora_alpha)  --adalora_dropout 0
    --adalora_targets qkv (PEFT's GPT-2 default: the fused c_attn; also o, fc, proj)

PEFT's total_step is the run's own step count (the trainer's, `training_hook`), not a flag.

Targets and the count. PEFT adapts GPT-2's fused c_attn (Conv1D, fan_in_fan_out) as one (3d x d)
matrix with one SVD triplet set, so q and v cannot be adapted apart in its format; we adapt what
PEFT adapts. What trains (PEFT's trainable count, every triplet of init_r, masked or not):

    L · init_r · Σ_targets (in + out + 1)      qkv on GPT-2 M, init_r 12: 24 · 12 · 4,097 = 1,179,936

and the schedule ends with target_r triplets per module on average (24 · 8 · 4,097 = 786,624 on
GPT-2 M). The cited E2E row's 0.38M is near r = 4 on c_attn (24 · 4 · 4,097 = 393,312, 0.39M);
the setting behind it is not verified (nlg.methods.counts).

Files: PEFT's, so `PeftModel.from_pretrained(GPT2LMHeadModel, DIR)` reads them:

    adapter_config.json        {"peft_type": "ADALORA", "init_r", "target_r", "tinit", "tfinal", "deltaT",
                               "beta1", "beta2", "orth_reg_weight", "total_step", "lora_alpha",
                               "rank_pattern": {"transformer.h.<i>.attn.c_attn.lora_E": [true, false, ...]}, ...}
    adapter_model.safetensors  base_model.model.transformer.h.<i>.attn.c_attn.lora_A (n x in), lora_E (n x 1),
                               lora_B (out x n)   n = the triplets kept (all init_r before any allocation)

After an allocation the tensors hold only the kept triplets and rank_pattern says which they are,
as PEFT's save_pretrained writes them; loading puts them back in their places (zero elsewhere).
A checkpoint's training_state.pt keeps every triplet (the hook's state) for an exact --resume.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from nlg.files import InputError
from nlg.methods import Method, Shape, config_int, peft_dir, register

KIND = "ADALORA"
TARGETS = tuple(peft_dir.MODULES)  # qkv o fc proj
# target -> (input width, output rows) in units of d
_SHAPE = {"qkv": (1, 3), "o": (1, 1), "fc": (1, 4), "proj": (4, 1)}
PEFT_R = 8  # LoraConfig's r, unused by AdaLoRA; PEFT warns on any other value, so we write its default


@dataclass(frozen=True)
class AdaLoRASettings:
    init_r: int = 12
    target_r: int = 8
    tinit: int = 0
    tfinal: int = 0
    delta_t: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("qkv",)


DEFAULTS = AdaLoRASettings()
_FIELDS = tuple(f.name for f in fields(AdaLoRASettings))
FLAGS = tuple(f"adalora_{name}" for name in _FIELDS)
_FLOATS = ("beta1", "beta2", "orth_reg_weight", "alpha", "dropout")


def _targets(value: Any) -> tuple[str, ...]:
    """Targets in the canonical order (qkv, o, fc, proj), as a file read back lists them."""
    given = tuple(t.strip() for t in value.split(",") if t.strip()) if isinstance(value, str) else tuple(value)
    return tuple(t for t in TARGETS if t in given) + tuple(t for t in given if t not in TARGETS)


class AdaLoRA(Method):
    name = "adalora"
    label = "AdaLoRA"
    summary = "SVD-form updates P Λ Q whose ranks a budget schedule allocates (Zhang et al., 2023), merged; PEFT's files"
    flags = FLAGS
    defaults = {f"adalora_{name}": getattr(DEFAULTS, name) for name in _FIELDS}
    flag_types = {**{f"adalora_{name}": int for name in ("init_r", "target_r", "tinit", "tfinal", "delta_t")},
                  **{f"adalora_{name}": float for name in _FLOATS}, "adalora_targets": str}
    flag_minimum = {"adalora_tinit": 0, "adalora_tfinal": 0}
    flag_help = {
        "adalora_init_r": f"--method adalora: each matrix's initial rank (PEFT's init_r, default {DEFAULTS.init_r})",
        "adalora_target_r": f"--method adalora: the average rank the budget ends at (default {DEFAULTS.target_r})",
        "adalora_tinit": "--method adalora: steps of warm-up before any rank is pruned (default 0)",
        "adalora_tfinal": "--method adalora: final steps at the final allocation (default 0)",
        "adalora_delta_t": "--method adalora: steps between two allocations (PEFT's deltaT, default 1)",
        "adalora_beta1": f"--method adalora: EMA factor of the sensitivity (default {DEFAULTS.beta1})",
        "adalora_beta2": f"--method adalora: EMA factor of the uncertainty (default {DEFAULTS.beta2})",
        "adalora_orth_reg_weight": f"--method adalora: weight of the orthogonal regulariser (default {DEFAULTS.orth_reg_weight})",
        "adalora_alpha": f"--method adalora: the update scaled by alpha/init_r (default {DEFAULTS.alpha:g}, PEFT's)",
        "adalora_dropout": "--method adalora: dropout on the update's input, in [0, 1) (default 0)",
        "adalora_targets": f"--method adalora: comma-separated matrices to adapt, from {','.join(TARGETS)} "
                           "(default qkv: the fused c_attn)",
    }
    # what the weights mean; the schedule's settings (and dropout) may change with --allow_changed
    fixed_on_resume = ("adalora_init_r", "adalora_alpha", "adalora_targets")
    sizes = ("adalora_init_r", "adalora_target_r")
    parameter_marks = (".lora_",)
    files = (peft_dir.CONFIG_FILE, peft_dir.WEIGHTS_FILE)
    merges = True
    # No baseline_recipes: the authors' released code has no E2E (GPT-2) experiment. The row is AdaLoRA's as
    # VeRA's E2E table prints it, as issue 27 cites it; NOT VERIFIED (the search tool found neither
    # VeRA's table nor the source or the settings of its AdaLoRA row).
    paper_rows = {
        "e2e": (
            (110, "gpt2.md", "all", "0.38M", {"BLEU": 68.2, "NIST": 8.58, "METEOR": 44.1, "ROUGE_L": 70.7, "CIDEr": 2.35},
             {}, False, "VeRA (Kopiczko et al., ICLR 2024), E2E table: AdaLoRA (as issue 27 cites; not verified)"),
        ),
    }

    # -- settings ---------------------------------------------------------------------------------

    def settings(self, values: dict[str, Any]) -> AdaLoRASettings:
        kinds = {"targets": _targets, **{name: float for name in _FLOATS}}
        return AdaLoRASettings(**{name: kinds.get(name, int)(values[f"adalora_{name}"]) for name in _FIELDS})

    def values(self, settings: AdaLoRASettings) -> dict[str, Any]:
        return {f"adalora_{name}": getattr(settings, name) for name in _FIELDS}

    def check(self, values: dict[str, Any]) -> list[str]:
        problems = super().check({k: v for k, v in values.items() if k != "adalora_targets"})
        if problems:
            return problems
        init_r, target_r = values.get("adalora_init_r"), values.get("adalora_target_r")
        if init_r is not None and target_r is not None and target_r >= init_r:
            problems.append(f"--adalora_target_r {target_r}: must be less than --adalora_init_r {init_r} "
                            "(the budget prunes ranks; PEFT's allocator fails when it prunes none)")
        for flag in ("adalora_beta1", "adalora_beta2"):
            if values.get(flag) is not None and not 0 < values[flag] < 1:
                problems.append(f"--{flag} {values[flag]}: must be in (0, 1)")
        weight = values.get("adalora_orth_reg_weight")
        if weight is not None and weight < 0:
            problems.append(f"--adalora_orth_reg_weight {weight}: must be >= 0")
        alpha = values.get("adalora_alpha")
        if alpha is not None and not 0 < alpha <= 3.4e38:
            problems.append(f"--adalora_alpha {alpha}: must be > 0 (and a float32 number)")
        dropout = values.get("adalora_dropout")
        if dropout is not None and not 0 <= dropout < 1:
            problems.append("--adalora_dropout must be in [0, 1)")
        targets = values.get("adalora_targets")
        if targets is not None:
            given = tuple(t.strip() for t in targets.split(",") if t.strip()) if isinstance(targets, str) \
                else tuple(targets)
            if not given or any(t not in TARGETS for t in given) or len(set(given)) != len(given):
                problems.append(f"--adalora_targets {','.join(given)}: choose distinct ones from {','.join(TARGETS)}")
        return problems

    def describe(self, settings: AdaLoRASettings) -> str:
        return (f"AdaLoRA init_r={settings.init_r} -> target_r={settings.target_r} alpha={settings.alpha:g} "
                f"on {','.join(settings.targets)} (tinit {settings.tinit}, tfinal {settings.tfinal}, "
                f"deltaT {settings.delta_t}, orth_reg_weight {settings.orth_reg_weight:g})")

    def count(self, shape: Shape, settings: AdaLoRASettings) -> int:
        d = shape.n_embd
        return shape.n_layer * settings.init_r * sum(sum(_SHAPE[t]) * d + 1 for t in settings.targets)

    def note(self, shape: Shape, settings: AdaLoRASettings) -> str:
        final = self.count(shape, AdaLoRASettings(**{**self._asdict(settings), "init_r": settings.target_r}))
        return (f"adalora: all {settings.init_r} triplets per matrix train (PEFT's count); the budget ends at "
                f"{settings.target_r} per matrix on average, {final:,} values")

    @staticmethod
    def _asdict(settings: AdaLoRASettings) -> dict:
        return {name: getattr(settings, name) for name in _FIELDS}

    # -- the model ----------------------------------------------------------------------------------

    def _paths(self, settings: AdaLoRASettings) -> tuple[str, ...]:
        return tuple(peft_dir.MODULES[t] for t in settings.targets)

    def apply(self, model, settings: AdaLoRASettings) -> None:
        from nlg.methods.adalora import layer

        layer.add(model, self._paths(settings), settings.init_r, settings.alpha, settings.dropout)

    def trainable(self, model) -> dict:
        from nlg.methods.adalora import layer

        return {f"{name}.{kind}": getattr(module, kind)
                for name, module in layer.modules(model).items() for kind in layer.PARAMETERS}

    def prepare_inference(self, model) -> None:
        from nlg.methods.adalora import layer

        for module in layer.modules(model).values():
            module.merge()

    def training_hook(self, model, settings: AdaLoRASettings, total_steps: int):
        from nlg.methods.adalora.allocator import AdaLoRAHook

        return AdaLoRAHook(model, settings, total_steps)

    # -- PEFT's files -------------------------------------------------------------------------------

    def peft_config(self, settings: AdaLoRASettings, base_model: str | None, total_step: int,
                    rank_pattern: dict | None) -> dict:
        return {**peft_dir.common_config(KIND, base_model, list(self._paths(settings))),
                "init_r": settings.init_r, "target_r": settings.target_r, "tinit": settings.tinit,
                "tfinal": settings.tfinal, "deltaT": settings.delta_t, "beta1": settings.beta1,
                "beta2": settings.beta2, "orth_reg_weight": settings.orth_reg_weight, "total_step": total_step,
                "rank_pattern": rank_pattern, "lora_alpha": settings.alpha, "lora_dropout": settings.dropout,
                "r": PEFT_R, "alpha_pattern": {}, "bias": "none", "init_lora_weights": True, "use_rslora": False,
                "use_dora": False, "layers_to_transform": None, "layers_pattern": None}

    def save(self, model, directory: Path, settings: AdaLoRASettings, base_model: str | None) -> None:
        from nlg.methods.adalora import layer

        present = layer.modules(model)
        # PEFT refuses a config without total_step (or one leaving no budget phase); a model no run
        # has trained (tests, a PEFT file's settings) writes the least PEFT accepts
        total_step = getattr(model, "adalora_total_step", None) or settings.tinit + settings.tfinal + 1
        allocated = any(m.kept is not None for m in present.values())
        tensors, rank_pattern = {}, ({} if allocated else None)
        for name, module in present.items():
            kept = module.kept if allocated else None
            if allocated and kept is None:  # (a partial allocation is never made; keep every triplet)
                kept = module.lora_E.new_ones(module.rank, dtype=bool)
            if kept is None:
                tensors.update({f"{name}.{kind}": getattr(module, kind) for kind in layer.PARAMETERS})
                continue
            rank_pattern[f"{name}.lora_E"] = [bool(k) for k in kept.tolist()]
            tensors[f"{name}.lora_A"] = module.lora_A[kept]
            tensors[f"{name}.lora_E"] = module.lora_E[kept]
            tensors[f"{name}.lora_B"] = module.lora_B[:, kept]
        peft_dir.write(directory, self.peft_config(settings, base_model, total_step, rank_pattern), tensors, {})

    def read(self, directory: Path) -> tuple[AdaLoRASettings, int, dict[str, list[bool]] | None]:
        """(settings, total_step, rank_pattern by module name or None) of an ADALORA
        adapter_config.json, every key we use checked (InputError naming the file and key)."""
        config = peft_dir.read_config(directory, KIND, self.name)
        path = Path(directory) / peft_dir.CONFIG_FILE

        def number(key: str, low: float, high: float, low_open: bool = False, high_open: bool = True) -> float:
            value = config.get(key)
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
                and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
            if not ok:
                raise InputError(f"{path}: {key}: {json.dumps(value)} must be a number in "
                                 f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
            return float(value)

        init_r = config_int(path, config, "init_r")
        target_r = config_int(path, config, "target_r", minimum=0)
        tinit = config_int(path, config, "tinit", minimum=0, default=0)
        tfinal = config_int(path, config, "tfinal", minimum=0, default=0)
        delta_t = config_int(path, config, "deltaT", default=1)
        total_step = config_int(path, config, "total_step")
        beta1 = number("beta1", 0, 1, low_open=True)
        beta2 = number("beta2", 0, 1, low_open=True)
        weight = number("orth_reg_weight", 0, math.inf)
        alpha = number("lora_alpha", 0, 3.4e38, low_open=True, high_open=False)
        dropout = number("lora_dropout", 0, 1) if config.get("lora_dropout") is not None else 0.0
        for key in ("use_rslora", "use_dora"):
            if config.get(key):
                raise InputError(f"{path}: {key}: {json.dumps(config[key])} is not supported (AdaLoRA has neither)")
        if config.get("bias", "none") != "none":
            raise InputError(f"{path}: bias: {json.dumps(config['bias'])} is not supported (must be \"none\")")
        paths = peft_dir.target_paths(config, path, tuple(peft_dir.MODULES.values()))
        targets = tuple(t for t, p in peft_dir.MODULES.items() if p in paths)
        settings = AdaLoRASettings(init_r, target_r, tinit, tfinal, delta_t, beta1, beta2, weight, alpha, dropout,
                                   targets)
        pattern = config.get("rank_pattern")
        if pattern is None:
            return settings, total_step, None
        if not isinstance(pattern, dict) or not all(
                isinstance(v, list) and len(v) == init_r and all(isinstance(b, bool) for b in v) for v in pattern.values()):
            raise InputError(f"{path}: rank_pattern: must map each module's lora_E to a list of {init_r} "
                             "true/false (PEFT's allocation)")
        return settings, total_step, {key.removesuffix(".default").removesuffix(".lora_E"): v
                                      for key, v in pattern.items()}

    def load(self, model, directory: Path, settings: AdaLoRASettings | None) -> None:
        import torch

        from nlg.methods.adalora import layer

        directory = Path(directory)
        found, total_step, pattern = self.read(directory)
        present = layer.modules(model)
        if not present:
            self.apply(model, found)
            present = layer.modules(model)
        elif settings is not None and (found.init_r, found.alpha, found.targets) != \
                (settings.init_r, settings.alpha, settings.targets):
            raise InputError(f"{directory / peft_dir.CONFIG_FILE}: {self.describe(found)}; the model has "
                             f"{self.describe(settings)}")
        config_path = directory / peft_dir.CONFIG_FILE
        if pattern is not None:
            unknown = sorted(set(pattern) - set(present))
            if unknown:
                raise InputError(f"{config_path}: rank_pattern: {unknown[0]}.lora_E is not a module the model adapts")
            for name in present:
                if name not in pattern:
                    raise InputError(f"{config_path}: rank_pattern: no entry for {name}.lora_E")
        kept = {name: None if pattern is None else torch.tensor(pattern[name], dtype=torch.bool, device=m.lora_E.device)
                for name, m in present.items()}
        expected = {}
        for name, module in present.items():
            n = module.rank if kept[name] is None else int(kept[name].sum())
            expected.update({f"{name}.lora_A": (n, module.in_features), f"{name}.lora_E": (n, 1),
                             f"{name}.lora_B": (module.out_features, n)})
        tensors, _, path = peft_dir.read_tensors(directory)
        peft_dir.check_tensors(tensors, expected, path)
        with torch.no_grad():
            for name, module in present.items():
                rows = kept[name] if kept[name] is not None else slice(None)
                for kind in layer.PARAMETERS:
                    getattr(module, kind).zero_()
                module.lora_A[rows] = tensors[f"{name}.lora_A"].to(module.lora_A.dtype)
                module.lora_E[rows] = tensors[f"{name}.lora_E"].to(module.lora_E.dtype)
                module.lora_B[:, rows] = tensors[f"{name}.lora_B"].to(module.lora_B.dtype)
                module.kept = kept[name]
        model.adalora_total_step = total_step

    def recognizes(self, directory: Path) -> AdaLoRASettings | None:
        if peft_dir.peft_type(directory) != KIND:
            return None
        return self.read(directory)[0]


register(AdaLoRA())
