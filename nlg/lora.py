"""LoRA: low-rank adapters on GPT-2's projections (Hu et al., 2021).

A frozen projection W (out x in) gets a trainable low-rank update::

    x ↦ W x + b + (alpha / r) · B A dropout(x)        A: (r x in), B: (out x r)

A starts Kaiming-uniform and B at zero (as in the paper's loralib), so an adapted model
computes exactly what the base model does until training moves B.

GPT-2 fuses query, key and value into one `c_attn` projection (out = 3·n_embd). The paper
adapts q and v separately, so one `LoRALinear` can carry several *slices*, each with its own
A and B acting on its block of output rows. Targets:

    q, k, v  -> rows [0:d], [d:2d], [2d:3d] of attn.c_attn
    qkv      -> all of attn.c_attn, one shared A (how PEFT adapts the fused matrix)
    o        -> attn.c_proj          fc -> mlp.c_fc          proj -> mlp.c_proj

`merge` folds (alpha/r)·B A into W for inference at the base model's speed; `unmerge` takes
it out again.

Adapter files use Hugging Face PEFT's layout, the ecosystem's common format::

    adapter_config.json          {"peft_type": "LORA", "r", "lora_alpha", "target_modules",
                                  "fan_in_fan_out": true, "rank_pattern", "alpha_pattern", ...}
    adapter_model.safetensors    base_model.model.<module>.lora_A.weight  (r x in)
                                 base_model.model.<module>.lora_B.weight  (out x r)

PEFT adapts the fused c_attn as one matrix, so separate q and v slices of rank r are written as
one c_attn adapter of rank 2r: A stacks A_q over A_v and B is block-structured (B_q in the q
rows and first r columns, B_v in the v rows and last r columns, zeros elsewhere), with
lora_alpha doubled to keep alpha/rank. The slice names travel in the safetensors metadata, so
`load_adapter` restores the same slices; an adapter from PEFT itself loads as target `qkv`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlg.files import InputError

# target -> (module path inside a Block, index of its slice of the fused c_attn or None)
TARGETS: dict[str, tuple[str, int | None]] = {
    "q": ("attn.c_attn", 0),
    "k": ("attn.c_attn", 1),
    "v": ("attn.c_attn", 2),
    "qkv": ("attn.c_attn", None),
    "o": ("attn.c_proj", None),
    "fc": ("mlp.c_fc", None),
    "proj": ("mlp.c_proj", None),
}


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 4
    alpha: float = 32.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ValueError(f"unknown LoRA targets {unknown}; choose from {', '.join(TARGETS)}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"LoRA targets repeat: {self.targets}")
        if "qkv" in self.targets and set(self.targets) & {"q", "k", "v"}:
            raise ValueError("target qkv already covers q, k and v; use either qkv or the slices")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class LoRALinear(nn.Linear):
    """An `nn.Linear` (same `weight`/`bias` names, so checkpoints still load) plus LoRA slices.

    slices: name -> (first row, end row) of the output that the slice's B writes to.
    Parameters: `lora_A.<name>` (r x in) and `lora_B.<name>` (rows x r).
    """

    def __init__(self, base: nn.Linear, slices: dict[str, tuple[int, int]], config: LoRAConfig):
        # nn.Linear.__init__ would allocate and randomly fill a full weight only to drop it (GBs
        # of work on gpt2.lg, and it would consume global random numbers); share base's instead.
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.rank = config.rank
        self.alpha = config.alpha
        self.scaling = config.scaling
        self.slices = dict(slices)
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for name, (start, end) in self.slices.items():
            a = torch.empty(config.rank, self.in_features, device=self.weight.device, dtype=torch.float32)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # loralib's initialisation
            self.lora_A[name] = nn.Parameter(a)
            self.lora_B[name] = nn.Parameter(
                torch.zeros(end - start, config.rank, device=self.weight.device, dtype=torch.float32))
        self.merged = False

    def stacked_A(self) -> Tensor:
        """All slices' A stacked: (n_slices·r x in)."""
        return torch.cat([self.lora_A[name] for name in self.slices], dim=0)

    def block_B(self) -> Tensor:
        """All slices' B placed in their output rows: (out x n_slices·r), zero elsewhere."""
        names = list(self.slices)
        if len(names) == 1 and self.slices[names[0]] == (0, self.out_features):
            return self.lora_B[names[0]]
        first = self.lora_B[names[0]]
        full = first.new_zeros(self.out_features, len(names) * self.rank)
        for index, name in enumerate(names):
            start, end = self.slices[name]
            full[start:end, index * self.rank : (index + 1) * self.rank] = self.lora_B[name]
        return full

    def delta_weight(self) -> Tensor:
        """(alpha/r) · B A as one (out x in) matrix, in fp32."""
        return self.scaling * (self.block_B().float() @ self.stacked_A().float())

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        A = self.stacked_A().to(x.dtype)
        B = self.block_B().to(x.dtype)
        return out + self.scaling * F.linear(F.linear(self.lora_dropout(x), A), B)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight += self.delta_weight().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight -= self.delta_weight().to(self.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lora_slices={list(self.slices)}, r={self.rank}, alpha={self.alpha}"


def _module_slices(model: nn.Module, targets: tuple[str, ...]) -> dict[str, dict[str, tuple[int, int]]]:
    """For each block-relative module path, the slices to adapt, in target order."""
    width = model.config.n_embd
    plan: dict[str, dict[str, tuple[int, int]]] = {}
    for target in targets:
        path, index = TARGETS[target]
        if index is None:
            plan.setdefault(path, {})[target] = (0, _get(model.transformer.h[0], path).out_features)
        else:
            plan.setdefault(path, {})[target] = (index * width, (index + 1) * width)
    return plan


def _get(module: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def add_lora(model: nn.Module, rank: int = 4, alpha: float = 32.0, dropout: float = 0.0,
             targets: tuple[str, ...] | list[str] = ("q", "v")) -> nn.Module:
    """Put LoRA slices on `targets` of every block and freeze everything else (in place)."""
    config = LoRAConfig(rank=rank, alpha=alpha, dropout=dropout, targets=tuple(targets))
    if lora_modules(model):
        raise ValueError("model already has LoRA adapters")
    for param in model.parameters():
        param.requires_grad_(False)
    plan = _module_slices(model, config.targets)
    for block in model.transformer.h:
        for path, slices in plan.items():
            parent_path, _, leaf = path.rpartition(".")
            parent = _get(block, parent_path)
            setattr(parent, leaf, LoRALinear(getattr(parent, leaf), slices, config))
    model.lora_config = config
    return model


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter's parameters by name, e.g. `transformer.h.0.attn.c_attn.lora_A.q`."""
    return {name: p for name, p in model.named_parameters() if ".lora_A." in name or ".lora_B." in name}


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach() for name, p in lora_parameters(model).items()}


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight: no extra cost at inference."""
    for module in lora_modules(model).values():
        module.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo `merge`, so training can go on."""
    for module in lora_modules(model).values():
        module.unmerge()
    return model


# ---------------------------------------------------------------------------------------------
# Adapter files (PEFT layout)
# ---------------------------------------------------------------------------------------------

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


class AdapterError(InputError):
    """An adapter file that does not fit the model; the message names the tensor or key."""


def _peft_targets(config: LoRAConfig) -> tuple[list[str] | str, dict[str, int], dict[str, float], int, float]:
    """PEFT's target_modules, rank_pattern, alpha_pattern, r and lora_alpha for our config."""
    fused = [t for t in config.targets if TARGETS[t][0] == "attn.c_attn" and TARGETS[t][1] is not None]
    paths = sorted({TARGETS[t][0] for t in config.targets})
    leaves = [path.rsplit(".", 1)[1] for path in paths]
    # PEFT matches target names as suffixes, and "c_proj" names both attn.c_proj (o) and
    # mlp.c_proj (proj): adapting only one of them needs a full-path pattern.
    if "c_proj" not in leaves or {"o", "proj"} <= set(config.targets):
        target_modules: list[str] | str = sorted(set(leaves))
    else:
        target_modules = r".*\.h\.\d+\.(" + "|".join(p.replace(".", r"\.") for p in paths) + ")$"
    r, alpha = config.rank, config.alpha
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    if fused:
        n = len(fused)
        if len(paths) == 1:
            r, alpha = n * config.rank, n * config.alpha
        else:
            rank_pattern["c_attn"] = n * config.rank
            alpha_pattern["c_attn"] = n * config.alpha
    return target_modules, rank_pattern, alpha_pattern, r, alpha


def save_adapter(model: nn.Module, directory: str | os.PathLike, base_model: str | None = None) -> Path:
    """Write the LoRA weights and settings only, in PEFT's layout; returns the directory."""
    from safetensors.torch import save

    from nlg.files import atomic_write

    config: LoRAConfig | None = getattr(model, "lora_config", None)
    modules = lora_modules(model)
    if config is None or not modules:
        raise AdapterError("model has no LoRA adapters to save")
    target_modules, rank_pattern, alpha_pattern, r, alpha = _peft_targets(config)
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": config.dropout,
        "target_modules": target_modules,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "fan_in_fan_out": True,  # published GPT-2 weights are Conv1D, (in, out)
        "bias": "none",
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
    }
    tensors = {}
    with torch.no_grad():
        for name, module in modules.items():
            tensors[f"{_PEFT_PREFIX}{name}.lora_A.weight"] = module.stacked_A().detach().contiguous().cpu()
            tensors[f"{_PEFT_PREFIX}{name}.lora_B.weight"] = module.block_B().detach().contiguous().cpu()
    metadata = {
        "format": "pt",
        "nlg.targets": ",".join(config.targets),
        "nlg.rank": str(config.rank),
        "nlg.alpha": repr(float(config.alpha)),
        "nlg.dropout": repr(float(config.dropout)),
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / ADAPTER_WEIGHTS, "wb") as handle:
        handle.write(save(tensors, metadata=metadata))
    with atomic_write(directory / ADAPTER_CONFIG) as handle:
        handle.write(json.dumps(peft_config, indent=2) + "\n")
    return directory


def read_adapter(directory: str | os.PathLike) -> tuple[dict, dict[str, Tensor], dict[str, str]]:
    """(adapter_config.json, tensors by module-relative name, safetensors metadata) of a directory.

    Tensor names lose PEFT's `base_model.model.` prefix and adapter name, e.g.
    `transformer.h.0.attn.c_attn.lora_A.weight`.
    """
    from safetensors import safe_open

    directory = Path(directory)
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise AdapterError(f"{directory}: not an adapter directory (no {path.name})")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise AdapterError(f"{config_path}: not valid JSON ({error.msg})") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{config_path}: peft_type {config.get('peft_type')!r} is not LORA")
    for key in ("use_dora", "use_rslora"):
        if config.get(key):
            raise AdapterError(f"{config_path}: {key}=true is not supported")
    tensors = {}
    with safe_open(str(weights_path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        for key in handle.keys():
            name = key[len(_PEFT_PREFIX):] if key.startswith(_PEFT_PREFIX) else key
            name = name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
            tensors[name] = handle.get_tensor(key)
    return config, tensors, metadata


def _leaf_target(module_path: str) -> str:
    for target, (path, index) in TARGETS.items():
        if index is None and module_path.endswith("." + path):
            return target
    raise AdapterError(f"adapter tensor on {module_path!r}: not a GPT-2 projection LoRA can adapt")


def adapter_lora_config(config: dict, tensors: dict[str, Tensor], metadata: dict[str, str]) -> LoRAConfig:
    """The LoRAConfig an adapter was trained with (ours), or the one a PEFT adapter implies."""
    if "nlg.targets" in metadata:
        return LoRAConfig(rank=int(metadata["nlg.rank"]), alpha=float(metadata["nlg.alpha"]),
                          dropout=float(metadata.get("nlg.dropout", 0.0)),
                          targets=tuple(metadata["nlg.targets"].split(",")))
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise AdapterError("PEFT adapters with rank_pattern/alpha_pattern are only read when written by nlg")
    modules = sorted({name.rsplit(".lora_", 1)[0] for name in tensors})
    targets = tuple(dict.fromkeys(_leaf_target(path) for path in modules))
    return LoRAConfig(rank=int(config["r"]), alpha=float(config["lora_alpha"]),
                      dropout=float(config.get("lora_dropout", 0.0)), targets=targets)


def load_adapter(model: nn.Module, directory: str | os.PathLike) -> LoRAConfig:
    """Load an adapter directory into `model` (adding LoRA first if it has none), strictly.

    Every adapter tensor of the model must be in the file with the right shape and nothing else
    may be; a block-structured c_attn B must be zero outside its slices. Returns the config.
    """
    config, tensors, metadata = read_adapter(directory)
    lora_config = adapter_lora_config(config, tensors, metadata)
    existing: LoRAConfig | None = getattr(model, "lora_config", None)
    if existing is None:
        add_lora(model, rank=lora_config.rank, alpha=lora_config.alpha,
                 dropout=lora_config.dropout, targets=lora_config.targets)
    elif (existing.rank, existing.alpha, existing.targets) != (lora_config.rank, lora_config.alpha,
                                                               lora_config.targets):
        raise AdapterError(f"{directory}: adapter has rank {lora_config.rank}, alpha {lora_config.alpha}, "
                           f"targets {lora_config.targets}; the model has rank {existing.rank}, "
                           f"alpha {existing.alpha}, targets {existing.targets}")
    modules = lora_modules(model)
    expected = {}
    for name, module in modules.items():
        expected[f"{name}.lora_A.weight"] = (len(module.slices) * module.rank, module.in_features)
        expected[f"{name}.lora_B.weight"] = (module.out_features, len(module.slices) * module.rank)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(unexpected)}"] if unexpected else [])
        raise AdapterError(f"{directory}: adapter does not fit the model: " + "; ".join(parts))
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise AdapterError(f"{directory}: tensor {key} has shape {tuple(tensors[key].shape)}, "
                               f"the model needs {shape} (another model size or rank?)")
    with torch.no_grad():
        for name, module in modules.items():
            A, B = tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"]
            placed = torch.zeros_like(B)
            for index, (slice_name, (start, end)) in enumerate(module.slices.items()):
                cols = slice(index * module.rank, (index + 1) * module.rank)
                module.lora_A[slice_name].copy_(A[cols])
                module.lora_B[slice_name].copy_(B[start:end, cols])
                placed[start:end, cols] = B[start:end, cols]
            if not torch.equal(placed, B):
                raise AdapterError(f"{directory}: tensor {name}.lora_B.weight is not zero outside the "
                                   f"blocks of slices {list(module.slices)}")
    return lora_config
