"""`--method vera`: vector-based random matrix adaptation (Kopiczko et al., ICLR 2024), in PEFT's files.

The paper's Eq. 1-2: a frozen W0 gets the update

    h = W0 x + ΔW x,   ΔW = Λ_b B Λ_d A,   Λ_b = diag(b) (out), Λ_d = diag(d) (r)

where A (r x in) and B (out x r) are random (Kaiming uniform), frozen and SHARED by every layer
(drawn once from a seed), and only the per-layer vectors d (r, initialised to d_initial = 0.1)
and b (out, initialised to zero, so the adapted model starts as the base) train.

As PEFT (VeraConfig, peft.tuners.vera): A and B are drawn by `torch.Generator().manual_seed(
projection_prng_key)` with PEFT's Kaiming-uniform bound (gain √2, fan_in = their column count),
A first, of shape (r x largest in) and (largest out x r) over the adapted modules; each layer
uses A[:, :in] and B[:out, :]. Because they come from the seed, the adapter files need not hold
them; we write them anyway (`save_projection=True`, PEFT's default), so a reader does not have
to reproduce PEFT's generator.

Targets: the whole fused c_attn (q, k and v rows; `fan_in_fan_out`). The paper adapts q and v
with separate d vectors each; PEFT's format cannot express that on GPT-2's fused projection (one
d per module), so we adapt what PEFT adapts. Per block: r + 3d trainable values; the paper's q,v:
2(r + d). With the paper's E2E r = 1024 on GPT-2 M (d = 1024) both are 4096 per block,
24 · 4096 = 98,304 (the paper's 0.098M); on GPT-2 L (d = 1280) ours is 36 · (1024 + 3840) =
175,104 against the paper's 36 · 2 · (1024 + 1280) = 165,888 (0.17M).

Merging: ΔW is a dense (out x in) matrix, folded into W for decoding at the base model's speed.
Training never builds ΔW: the forward pass is b ⊙ (B (d ⊙ (A x))), as PEFT's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlg.methods import Method, Shape, peft_dir, register

KIND = "VERA"
ADAPTER_CONFIG = peft_dir.CONFIG_FILE
ADAPTER_WEIGHTS = peft_dir.WEIGHTS_FILE
MODULE = "attn.c_attn"


@dataclass(frozen=True)
class VeRASettings:
    rank: int = 1024  # the paper's E2E r (GPT-2 M and L); PEFT's default is 256
    d_initial: float = 0.1
    dropout: float = 0.0
    # PEFT's projection_prng_key: ours always train with PEFT's default 0 (no flag: method.json
    # holds integers >= 1); a PEFT directory with another key loads with its own
    seed: int = 0


DEFAULTS = VeRASettings()


class VeRA(Method):
    name = "vera"
    label = "VeRA"
    summary = "shared frozen random A, B and trained per-layer vectors d, b on c_attn (Kopiczko et al., 2024); PEFT's files"
    flags = ("vera_rank", "vera_d_initial", "vera_dropout")
    defaults = {"vera_rank": DEFAULTS.rank, "vera_d_initial": DEFAULTS.d_initial, "vera_dropout": DEFAULTS.dropout}
    flag_types = {"vera_rank": int, "vera_d_initial": float, "vera_dropout": float}
    flag_help = {"vera_rank": f"VeRA rank r of the shared random A, B (default {DEFAULTS.rank}, the paper's E2E; PEFT's is 256)",
                 "vera_d_initial": f"initial value of every d (default {DEFAULTS.d_initial})",
                 "vera_dropout": f"dropout on VeRA's input, in [0, 1) (default {DEFAULTS.dropout})"}
    fixed_on_resume = ("vera_rank",)
    sizes = ("vera_rank",)
    parameter_marks = (".vera_lambda_",)
    files = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
    merges = True
    # The paper's E2E hyper-parameters (its appendix table, GPT-2 M): r 1024 (the default above),
    # lr 1e-1, 5 epochs, batch 8 -- as recalled from the paper; NOT verified (the search found
    # no copy of the appendix table). GPT-2 L's lr differs (8e-2, likewise unverified).
    baseline_recipes = {"vera": {"e2e": {"lr": 0.1, "max_epoch": 5, "train_batch_size": 8}}}
    paper_rows = {"e2e": (
        (100, "gpt2.md", "all", "0.098M", {"BLEU": 70.1, "NIST": 8.81, "METEOR": 46.6, "ROUGE_L": 71.5,
                                             "CIDEr": 2.50}, {}, False,
         "VeRA (Kopiczko et al., ICLR 2024), Table 3"),  # as the issue cites; not verified
    )}

    def settings(self, values: dict[str, Any]) -> VeRASettings:
        return VeRASettings(int(values["vera_rank"]), float(values["vera_d_initial"]),
                            float(values["vera_dropout"]))

    def values(self, settings: VeRASettings) -> dict[str, Any]:
        return {"vera_rank": settings.rank, "vera_d_initial": settings.d_initial,
                "vera_dropout": settings.dropout}

    def check(self, values: dict[str, Any]) -> list[str]:
        problems = super().check(values)
        dropout = values.get("vera_dropout")
        if not problems and dropout is not None and not 0 <= dropout < 1:
            problems.append("--vera_dropout must be in [0, 1)")
        return problems

    def describe(self, settings: VeRASettings) -> str:
        return f"VeRA r={settings.rank} d_initial={settings.d_initial:g} seed={settings.seed} on c_attn"

    def count(self, shape: Shape, settings: VeRASettings) -> int:
        return shape.n_layer * (settings.rank + 3 * shape.n_embd)

    def apply(self, model, settings: VeRASettings) -> None:
        add_vera(model, settings)

    def trainable(self, model) -> dict:
        return {name: p for name, p in model.named_parameters() if ".vera_lambda_" in name}

    def save(self, model, directory: Path, settings: VeRASettings, base_model: str | None) -> None:
        save_vera(model, directory, settings, base_model)

    def load(self, model, directory: Path, settings: VeRASettings | None) -> None:
        load_vera(model, directory)

    def prepare_inference(self, model) -> None:
        for module in _modules(model):
            module.merge()

    def recognizes(self, directory: Path) -> VeRASettings | None:
        if peft_dir.peft_type(directory) != KIND:
            return None
        return _settings_of(peft_dir.read_config(directory, KIND, self.name), Path(directory) / ADAPTER_CONFIG)


# ---------------------------------------------------------------------------------------------
# The layer (torch from here on, imported by the functions that need it)
# ---------------------------------------------------------------------------------------------


def projections(rank: int, in_features: int, out_features: int, seed: int):
    """The shared frozen A (rank x in) and B (out x rank), drawn as PEFT draws them."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(seed)

    def kaiming(shape):
        bound = math.sqrt(3.0) * math.sqrt(2) / math.sqrt(shape[1])
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)

    return kaiming((rank, in_features)), kaiming((out_features, rank))


def _layer_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class VeRALinear(nn.Linear):
        """nn.Linear (same weight/bias names) plus VeRA: b ⊙ (B (d ⊙ (A dropout(x)))).

        A and B are the model's `vera_projection` buffers (non-persistent: one copy for all layers,
        moved once by model.to()); the layer holds that module in a list, so it is not its child."""

        def __init__(self, base: nn.Linear, projection: nn.Module, settings: VeRASettings):
            nn.Module.__init__(self)
            self.in_features, self.out_features = base.in_features, base.out_features
            self.weight, self.bias = base.weight, base.bias
            device = self.weight.device
            self._projection = [projection]
            A = projection.vera_A
            self.vera_lambda_d = nn.Parameter(torch.full((A.shape[0],), settings.d_initial, device=device))
            self.vera_lambda_b = nn.Parameter(torch.zeros(self.out_features, device=device))
            self.vera_dropout = nn.Dropout(settings.dropout) if settings.dropout > 0 else nn.Identity()
            self.merged = False

        @property
        def vera_A(self):
            return self._projection[0].vera_A

        @property
        def vera_B(self):
            return self._projection[0].vera_B

        def delta_weight(self):
            A = self.vera_A[:, : self.in_features].float()
            B = self.vera_B[: self.out_features].float()
            return (self.vera_lambda_b.float()[:, None] * B) @ (self.vera_lambda_d.float()[:, None] * A)

        def forward(self, x):
            out = F.linear(x, self.weight, self.bias)
            if self.merged:
                return out
            A = self.vera_A[:, : self.in_features].to(x.dtype)
            B = self.vera_B[: self.out_features].to(x.dtype)
            hidden = self.vera_lambda_d.to(x.dtype) * F.linear(self.vera_dropout(x), A)
            return out + self.vera_lambda_b.to(x.dtype) * F.linear(hidden, B)

        @torch.no_grad()
        def merge(self):
            if not self.merged:
                self.weight += self.delta_weight().to(self.weight.dtype)
                self.merged = True

    return VeRALinear


_CLASS = None


def layer_class():
    global _CLASS
    if _CLASS is None:
        _CLASS = _layer_class()
    return _CLASS


def _modules(model) -> list:
    cls = layer_class()
    return [m for m in model.modules() if isinstance(m, cls)]


def add_vera(model, settings: VeRASettings) -> None:
    """VeRA on every block's c_attn; everything else frozen (in place)."""
    if _modules(model):
        raise ValueError("model already has VeRA")
    for param in model.parameters():
        param.requires_grad_(False)
    first = model.transformer.h[0].attn.c_attn
    A, B = projections(settings.rank, first.in_features, first.out_features, settings.seed)
    from torch import nn

    projection = nn.Module()
    projection.register_buffer("vera_A", A.to(first.weight.device), persistent=False)
    projection.register_buffer("vera_B", B.to(first.weight.device), persistent=False)
    model.vera_projection = projection
    cls = layer_class()
    for block in model.transformer.h:
        block.attn.c_attn = cls(block.attn.c_attn, projection, settings).train(model.training)
    model.vera_settings = settings


# ---------------------------------------------------------------------------------------------
# PEFT's files
# ---------------------------------------------------------------------------------------------


def _peft_config(settings: VeRASettings, base_model: str | None) -> dict:
    return {"peft_type": "VERA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "r": settings.rank, "target_modules": ["c_attn"], "projection_prng_key": settings.seed,
            "save_projection": True, "vera_dropout": settings.dropout, "d_initial": settings.d_initial,
            "fan_in_fan_out": True, "bias": "none", "modules_to_save": None, "init_weights": True,
            "layers_to_transform": None, "layers_pattern": None, "inference_mode": True}


def save_vera(model, directory: Path, settings: VeRASettings, base_model: str | None) -> None:
    from nlg.files import InputError

    modules = {name: m for name, m in model.named_modules() if isinstance(m, layer_class())}
    if not modules:
        raise InputError("model has no VeRA to save")
    tensors = {}
    for name, module in modules.items():
        tensors[f"{name}.vera_lambda_b"] = module.vera_lambda_b.float()
        tensors[f"{name}.vera_lambda_d"] = module.vera_lambda_d.float()
    tensors["base_model.vera_A"] = model.vera_projection.vera_A.float()  # shared by every layer
    tensors["base_model.vera_B"] = model.vera_projection.vera_B.float()
    peft_dir.write(directory, _peft_config(model.vera_settings, base_model), tensors, {})


def _settings_of(config: dict, path: Path) -> VeRASettings:
    from nlg.files import InputError
    from nlg.methods import config_int

    rank = config_int(path, config, "r")
    seed = config_int(path, config, "projection_prng_key", minimum=0, default=0)
    d_initial = config.get("d_initial", 0.1)
    dropout = config.get("vera_dropout", 0.0)
    for key, value in (("d_initial", d_initial), ("vera_dropout", dropout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{path}: {key}: {json.dumps(value)} is not a finite number")
    if not 0 <= dropout < 1:
        raise InputError(f"{path}: vera_dropout: {dropout} must be in [0, 1)")
    targets = config.get("target_modules")
    if targets not in (["c_attn"], "c_attn", None) and not (isinstance(targets, list) and set(targets) == {"c_attn"}):
        raise InputError(f"{path}: target_modules: {json.dumps(targets)}: only c_attn is read (VeRA on GPT-2's attention)")
    return VeRASettings(rank, float(d_initial), float(dropout), seed)


def load_vera(model, directory: Path) -> VeRASettings:
    """PEFT's VeRA files (ours or PEFT's) into `model` (adding VeRA if it has none), strictly."""
    import torch

    from nlg.files import InputError

    config = peft_dir.read_config(directory, KIND, "vera")
    config_path = Path(directory) / ADAPTER_CONFIG
    settings = _settings_of(config, config_path)
    tensors, _, weights_path = peft_dir.read_tensors(directory)
    existing = getattr(model, "vera_settings", None)
    if existing is None:
        add_vera(model, settings)
    elif (existing.rank, existing.seed) != (settings.rank, settings.seed):
        raise InputError(f"{config_path}: r {settings.rank}, projection_prng_key {settings.seed}; the model has "
                         f"rank {existing.rank}, seed {existing.seed}")
    modules = {name: m for name, m in model.named_modules() if isinstance(m, layer_class())}
    expected = {}
    for name, module in modules.items():
        expected[f"{name}.vera_lambda_b"] = (module.out_features,)
        expected[f"{name}.vera_lambda_d"] = (settings.rank,)
    if config.get("save_projection", True):
        expected["base_model.vera_A"] = tuple(model.vera_projection.vera_A.shape)
        expected["base_model.vera_B"] = tuple(model.vera_projection.vera_B.shape)
    peft_dir.check_tensors(tensors, expected, weights_path)
    with torch.no_grad():
        if "base_model.vera_A" in expected:  # shared: one copy serves every layer
            model.vera_projection.vera_A.copy_(tensors["base_model.vera_A"])
            model.vera_projection.vera_B.copy_(tensors["base_model.vera_B"])
        for name, module in modules.items():
            module.vera_lambda_b.copy_(tensors[f"{name}.vera_lambda_b"])
            module.vera_lambda_d.copy_(tensors[f"{name}.vera_lambda_d"])
    return settings


register(VeRA())
