"""Fine-tuning methods: one module each, behind one interface, found by name.

    lora        nlg.methods.lora        low-rank updates of q and v (Hu et al., 2021); PEFT's files
    full        nlg.methods.full        every parameter trains (the paper's FT); a Hugging Face dir
    top2        nlg.methods.top_layers  the last --top_layers blocks and ln_f train (FT-Top2)
    adapter-l   nlg.methods.adapters    one bottleneck adapter per block (Lin et al., 2020)
    adapter-h   nlg.methods.adapters    two per block (Houlsby et al., 2019); AdapterHub's files
    prefix      nlg.methods.prefix      keys and values of n positions per layer (Li & Liang, 2021)
    prefix-embed nlg.methods.prefix     n input embeddings before the context; PEFT's files
    dora        nlg.methods.dora        LoRA's direction update and a trained magnitude (Liu et al., 2024); PEFT's files
    adalora     nlg.methods.adalora     SVD-form P Λ Q, ranks allocated by a budget schedule (Zhang et al., 2023); PEFT's files
    vera        nlg.methods.vera        shared random A, B; trained vectors d, b (Kopiczko et al., 2024); PEFT's files
    vblora      nlg.methods.vblora      LoRA mixed from a shared vector bank (Li et al., 2024); PEFT's files
    fourierft   nlg.methods.fourierft   n spectral entries per matrix, ΔW = α·Re(IDFT2(F)) (Gao et al., 2024); PEFT's files
    ia3         nlg.methods.ia3         vectors rescaling k, v and the FFN's activation ((IA)³, Liu et al., 2022); PEFT's files

A method owns some of `nlg train`'s flags (its `flags`, TrainConfig fields) and says:

    settings(values)            its settings dataclass from those flags' values
    describe(settings)          one line for the run's log
    count(shape, settings)      trainable parameters, from the model's shape alone (no weights)
    apply(model, settings)      change the model in place and freeze what does not train
    trainable(model)            the parameters that train, by name
    save(model, dir, ...)       its trained weights, in its ecosystem's layout (`files`)
    load(model, dir)            the same into a model built by `apply`, strictly
    prepare_inference(model)    merge into the base weights where it can (LoRA), else nothing
    training_hook(model, ...)   what it does in each training step (TrainingHook), or None

Every checkpoint also holds `method.json` (METHOD_FILE): the method, its settings, the model's
shape and the trainable count, so `nlg beam --checkpoint`, `nlg analyze` and `--resume` read
them and never need them repeated. A directory without one (written by PEFT, AdapterHub or
transformers) is recognised by its files (`detect`).

Where methods act on the model: LoRA replaces projections (nlg.methods.lora.layer.LoRALinear), adapters the
blocks' residual hooks (nlg.model.Residual: `attn_residual`, `mlp_residual`), full and top2 only
choose what trains. Prefix tuning puts a module in the model's `prefix` hook (nlg.model.GPT):
its keys and values come before every token's, in the first slots of the KVCache when decoding.

This package imports no torch at import time: `nlg recipe` prints counts without it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nlg.files import InputError, read_json

METHOD_FILE = "method.json"
DEFAULT = "lora"  # the method of a run, a row or a record that names none


def legacy_name(config: dict) -> str:
    """The method of a training state written before nlg.methods: --full_finetune or LoRA."""
    return "full" if config.get("full_finetune", False) else DEFAULT


@dataclass(frozen=True)
class Shape:
    """What a parameter count needs of a GPT-2: its depth, width, vocabulary and positions."""

    n_layer: int
    n_embd: int
    vocab_size: int = 50257
    n_positions: int = 1024

    @classmethod
    def of(cls, config: Any) -> Shape:
        """The shape of a GPTConfig (or anything with those four attributes, or a dict of them)."""
        get = config.get if isinstance(config, dict) else lambda key: getattr(config, key)
        return cls(get("n_layer"), get("n_embd"), get("vocab_size"), get("n_positions"))


# The model cards' shapes (nlg.model.CARDS, which needs torch; tests check they agree).
CARD_SHAPES: dict[str, Shape] = {
    "gpt2.tiny": Shape(2, 128),
    "gpt2.sm": Shape(12, 768),
    "gpt2.md": Shape(24, 1024),
    "gpt2.lg": Shape(36, 1280),
}


def base_count(shape: Shape) -> int:
    """Every parameter of GPT-2 (lm_head is tied to wte):
    V·d + P·d (embeddings) + L·(12·d² + 13·d) (per block: 2 layer norms 4d, c_attn 3d²+3d,
    attn c_proj d²+d, c_fc 4d²+4d, mlp c_proj 4d²+d) + 2d (ln_f)."""
    d = shape.n_embd
    return (shape.vocab_size + shape.n_positions) * d + shape.n_layer * block_count(d) + 2 * d


def block_count(d: int) -> int:
    """One transformer block's parameters: 12·d² + 13·d."""
    return 12 * d * d + 13 * d


@dataclass(frozen=True)
class Bound:
    """Where a numeric flag's value must lie: >= low (> low when strict), and < below when given."""

    low: float
    below: float | None = None
    strict: bool = False

    def holds(self, value: float) -> bool:
        return (value > self.low if self.strict else value >= self.low) and (self.below is None or value < self.below)


class TrainingHook:
    """What a method does in `nlg train`'s steps besides its forward pass (AdaLoRA: an extra loss
    term and a budget schedule). `Method.training_hook` makes one per run, or None (the default:
    the trainer then does nothing extra). nlg.training.step.Stepper.update calls, every step:

        regularise()          when the step's gradients are complete and unscaled (the mean
                              loss's), before clipping: add the gradient of an extra loss term
        after_update(step)    after the optimiser's update, before the gradients are zeroed;
                              `step`: the updates done before this one (0 for the first)

    and the checkpoint keeps `state_dict()` (tensors and plain values: training_state.pt is read
    with weights_only) for `load_state_dict` on --resume, so a resumed run continues exactly."""

    def regularise(self) -> None:
        """Nothing by default."""

    def after_update(self, step: int) -> None:
        """Nothing by default."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing by default."""


class Method:
    """The interface; each method module subclasses it and registers one instance."""

    name: str = ""
    label: str = ""  # the row label of the papers' tables (LoRA, FT-Top2, AdapterL, PreLayer, ...)
    summary: str = ""
    flags: tuple[str, ...] = ()  # `nlg train` flags that are this method's settings
    defaults: dict[str, Any] = {}  # their values when the command line leaves them out
    flag_types: dict[str, Any] = {}  # each flag's argparse type (int unless named here)
    flag_help: dict[str, str] = {}  # each flag's --help text
    flag_minimum: dict[str, int] = {}  # an integer flag's least value where it is not 1 (AdaLoRA's 0 steps)
    # The range of a numeric flag where it is narrower than its type's (an int >= flag_minimum or 1, a
    # finite float): the pipeline checks its settings by these (nlg.pipeline.settings), as `check` does
    flag_bounds: dict[str, Bound] = {}
    # Flag values of the CPU demos (`nlg reproduce --demo`, a tiny random GPT-2 pre-trained first)
    # where the environment sets none: the method scaled to a tiny model; empty: its recipe's
    demo_values: dict[str, Any] = {}
    fixed_on_resume: tuple[str, ...] | None = None  # flags --resume may never change (None: all of `flags`)
    sizes: tuple[str, ...] = ()  # the flags that size it: they pick its recipe row and paper row
    parameter_marks: tuple[str, ...] = ()  # substrings of the names of the parameters it adds to GPT-2
    # How the LoRA paper trained it on each dataset (Li & Liang's lr, epochs, batch, and any of its
    # own flags), by recipe_key then dataset: {"full": {"e2e": {"lr": 5e-5, ...}}}; nlg.datasets'
    # recipes take their baseline rows from here (`baselines`)
    baseline_recipes: dict[str, dict[str, dict[str, Any]]] = {}
    # Published rows of this method, by dataset: (row of the table, card, subset, parameters as
    # printed, scores, their ± over 3 seeds, copied from Li & Liang: the LoRA paper's *) for the
    # LoRA paper's own tables, and an 8th element, the source ("VeRA (Kopiczko et al., ICLR 2024),
    # Table 3"), for a row another paper published (rows numbered >= 100 follow the LoRA paper's);
    # the datasets' recipes make their PaperResults of them (`paper_rows`)
    paper_rows: dict[str, tuple] = {}
    files: tuple[str, ...] = ()  # what `save` writes into a checkpoint directory
    needs_base: bool = True  # False: a checkpoint is the whole model (full fine-tuning)
    # An older `nlg beam` flag that takes this method's checkpoints only (LoRA's "--lora_checkpoint",
    # from before other methods existed); None for none
    checkpoint_flag: str | None = None
    merges: bool = False  # prepare_inference folds the method into the base weights

    def settings(self, values: dict[str, Any]) -> Any:
        raise NotImplementedError

    def values(self, settings: Any) -> dict[str, Any]:
        """The flags and values of `settings` (the inverse of `settings`): by default the
        settings dataclass's fields, which are named as the flags."""
        return {flag: getattr(settings, flag) for flag in self.flags}

    def check(self, values: dict[str, Any]) -> list[str]:
        """What is wrong with this method's flag values, one phrase per problem: by default
        every integer flag must be >= 1 and every float flag finite."""
        problems = []
        for flag in self.flags:
            value, kind = values.get(flag), self.flag_types.get(flag, int)
            if value is None:
                continue
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(f"--{flag} {value!r}: must be an integer")
            elif kind is int and value < self.flag_minimum.get(flag, 1):
                problems.append(f"--{flag} must be >= {self.flag_minimum.get(flag, 1)}")
            elif kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or not math.isfinite(value)):
                problems.append(f"--{flag} {value!r}: not a finite number")
        return problems

    def note(self, shape: Shape, settings: Any) -> str:
        """An extra line for the run's log ("" for none): prefix tuning's trained and stored counts."""
        return ""

    def recipe_key(self, values: dict[str, Any]) -> str | None:
        """Which of a dataset's baseline recipes (nlg.datasets.recipe.Recipe.baselines) this
        method of these sizes trains with; None: the dataset's own (LoRA) recipe."""
        return self.name

    def recipe_values(self, baseline: Any) -> dict[str, Any]:
        """This method's flag values that a baseline recipe sets (prefix tuning: its length)."""
        return {}

    def describe(self, settings: Any) -> str:
        raise NotImplementedError

    def count(self, shape: Shape, settings: Any) -> int:
        raise NotImplementedError

    def apply(self, model, settings: Any) -> None:
        raise NotImplementedError

    def trainable(self, model) -> dict:
        """The parameters that train, by name: by default every one with requires_grad."""
        return {name: p for name, p in model.named_parameters() if p.requires_grad}

    def save(self, model, directory: Path, settings: Any, base_model: str | None) -> None:
        raise NotImplementedError

    def load(self, model, directory: Path, settings: Any) -> None:
        raise NotImplementedError

    def prepare_inference(self, model) -> None:
        """Make `model` ready to decode; by default nothing (it runs as trained)."""

    def training_hook(self, model, settings: Any, total_steps: int) -> TrainingHook | None:
        """What this method does in each training step of a run of `total_steps` updates
        (TrainingHook); None, the default: nothing beyond its forward pass."""
        return None

    def recognizes(self, directory: Path) -> Any | None:
        """This method's settings if `directory` (without method.json) holds its files."""
        return None


REGISTRY: dict[str, Method] = {}


# ---------------------------------------------------------------------------------------------
# Reading configs other tools write or people edit: each key checked by its type and range
# ---------------------------------------------------------------------------------------------

_REQUIRED = object()


def config_int(path: Any, config: dict, key: str, minimum: int = 1, default: Any = _REQUIRED) -> int:
    """config[key] as an int >= minimum; InputError `FILE: key: reason` for anything else (a
    string, null, a float, a bool); `default` when the key is absent (if one is given)."""
    if key not in config and default is not _REQUIRED:
        return default
    value = config.get(key)
    if key not in config:
        raise InputError(f"{path}: {key}: missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{path}: {key}: {json.dumps(value)} is not an integer")
    if value < minimum:
        raise InputError(f"{path}: {key}: {value} must be >= {minimum}")
    return value


def config_number(path: Any, config: dict, key: str) -> float:
    """config[key] as a finite number > 0; InputError `FILE: key: reason` otherwise."""
    value = config.get(key)
    if key not in config:
        raise InputError(f"{path}: {key}: missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{path}: {key}: {json.dumps(value) if not isinstance(value, float) else value} "
                         "must be a finite number > 0")
    return float(value)


def register(method: Method) -> Method:
    REGISTRY[method.name] = method
    return method


def _load_modules() -> None:
    # Each module registers its method(s) on import; none imports torch at module level.
    from nlg.methods import (  # noqa: F401
        adalora,
        adapters,
        dora,
        fourierft,
        full,
        ia3,
        lora,
        prefix,
        top_layers,
        vblora,
        vera,
    )


ORDER = ("lora", "full", "top2", "adapter-l", "adapter-h", "prefix", "prefix-embed", "dora", "adalora", "vera",
         "vblora", "fourierft", "ia3")  # as tables and messages list them


def names() -> list[str]:
    _load_modules()
    return sorted(REGISTRY, key=lambda name: ORDER.index(name) if name in ORDER else len(ORDER))


def get(name: str) -> Method:
    """The method called `name`; InputError naming the choices for any other."""
    _load_modules()
    if name not in REGISTRY:
        raise InputError(f"--method {name}: unknown method; choose one of {', '.join(names())}")
    return REGISTRY[name]


def all_flags() -> dict[str, str]:
    """Every method-owned flag -> the method owning it (a flag belongs to one method, or to the
    two adapters alike, then to the first registered)."""
    owners: dict[str, str] = {}
    for method in map(get, names()):
        for flag in method.flags:
            owners.setdefault(flag, method.name)
    return owners


def baselines(dataset: str) -> dict[str, dict[str, Any]]:
    """Every method's baseline recipe on `dataset`, by recipe key (nlg.datasets.recipe.Baseline's fields)."""
    found: dict[str, dict[str, Any]] = {}
    for method in map(get, names()):
        for key, by_dataset in method.baseline_recipes.items():
            if dataset in by_dataset:
                found.setdefault(key, dict(by_dataset[dataset]))
    return found


def paper_rows(dataset: str) -> list[tuple]:
    """Every method's published rows for `dataset`, in the tables' order:
    (method, card, subset, params, scores, spread, copied, source); source is None for a row of
    the LoRA paper's own table (the dataset's recipe names that table)."""
    found = [(row[0], method.name, *row[1:7], row[7] if len(row) > 7 else None)
             for method in map(get, names()) for row in method.paper_rows.get(dataset, ())]
    return [row[1:] for row in sorted(found, key=lambda row: row[0])]


def flag_owners(flag: str) -> list[Method]:
    """The methods that have `flag`."""
    return [method for method in map(get, names()) if flag in method.flags]


def resume_fixed() -> tuple[str, ...]:
    """Every method's flags that --resume may never change, in registry order."""
    fixed: list[str] = []
    for method in map(get, names()):
        for flag in method.flags if method.fixed_on_resume is None else method.fixed_on_resume:
            if flag not in fixed:
                fixed.append(flag)
    return tuple(fixed)


def is_added_parameter(name: str) -> bool:
    """Whether parameter `name` is one a method added to GPT-2 (LoRA's A and B, an adapter, a
    prefix): no part of a published GPT-2 checkpoint."""
    return any(mark in name for method in map(get, names()) for mark in method.parameter_marks)


def checkpoint_flag_owner(flag: str) -> Method | None:
    """The method whose own older checkpoint flag `flag` is (LoRA's --lora_checkpoint), or None."""
    return next((method for method in map(get, names()) if method.checkpoint_flag == flag), None)


def label(name: str) -> str:
    """The papers' row label of method `name` (the name itself for one not registered)."""
    _load_modules()
    return REGISTRY[name].label if name in REGISTRY else name


def foreign_flags(name: str, given: list[str]) -> list[str]:
    """Of the flags `given` on a command line, those that belong to methods other than `name`."""
    mine = set(get(name).flags)
    return [flag for flag in given if flag in all_flags() and flag not in mine]


def settings_of(name: str, values: dict[str, Any]) -> Any:
    """Method `name`'s settings from a config's values (a TrainConfig.to_json() dict)."""
    return get(name).settings(flag_values(name, values))


def flag_values(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Method `name`'s own flags and their values (as recorded in method.json); a flag that is
    absent or None takes the method's default."""
    method = get(name)
    return {flag: method.defaults.get(flag) if values.get(flag) is None else values[flag]
            for flag in method.flags}


def card_count(name: str, card: str, values: dict[str, Any] | None = None) -> int:
    """Trainable parameters of method `name` on model card `card`, weights never allocated."""
    return get(name).count(CARD_SHAPES[card], settings_of(name, values or {}))


# ---------------------------------------------------------------------------------------------
# method.json: what a checkpoint was trained with
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """method.json of a checkpoint directory."""

    method: str
    settings: dict  # the method's own flags and values (e.g. {"adapter_dim": 6})
    model: dict  # GPTConfig.to_dict() of the model trained
    trainable_params: int
    base_model: str | None = None  # --init_checkpoint (or the card) the run started from
    # What base_model's files are: [{"file": NAME or "", "bytes", "sha256"}] (nlg.files.file_identity;
    # the form of training_state's inputs["init_checkpoint"]); None: a random base, or older checkpoints
    base_identity: list | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def write_record(directory: Path, record: Record) -> None:
    from nlg.files import atomic_write

    with atomic_write(Path(directory) / METHOD_FILE) as handle:
        handle.write(record.to_json())


def read_record(directory: str | os.PathLike) -> Record | None:
    """method.json of `directory`, None when it has none; InputError naming the file when it is
    not one this package wrote."""
    path = Path(directory) / METHOD_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a method record (a JSON object)")
    unknown = sorted(set(data) - {f for f in Record.__dataclass_fields__})
    if unknown:
        raise InputError(f"{path}: {unknown[0]}: not a key of a method record")
    for key in ("method", "settings", "model", "trainable_params"):
        if key not in data:
            raise InputError(f"{path}: {key}: missing")
    if not isinstance(data["method"], str):
        raise InputError(f"{path}: method: {json.dumps(data['method'])} is not a method's name")
    _load_modules()
    if data["method"] not in REGISTRY:
        raise InputError(f"{path}: method: {data['method']!r} is not a method; choose one of {', '.join(names())}")
    method = REGISTRY[data["method"]]
    for key in ("settings", "model"):
        if not isinstance(data[key], dict):
            raise InputError(f"{path}: {key}: {json.dumps(data[key])} is not an object")
    for key in data["settings"]:
        if key not in method.flags:
            raise InputError(f"{path}: settings: {key}: not a setting of method {method.name}")
    for flag, value in data["settings"].items():
        kind = method.flag_types.get(flag, int)
        if kind is int:
            config_int(path, data["settings"], flag, minimum=method.flag_minimum.get(flag, 1))
        elif kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(f"{path}: {flag}: {json.dumps(value)} is not a number")
        elif kind is str and not (isinstance(value, str) or (isinstance(value, list)
                                                             and all(isinstance(v, str) for v in value))):
            raise InputError(f"{path}: {flag}: {json.dumps(value)} is not a list of names")
    problems = method.check(data["settings"])
    if problems:
        raise InputError(f"{path}: " + problems[0].removeprefix("--"))
    for key in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions"):
        config_int(path, data["model"], key)
    config_int(path, data, "trainable_params", minimum=0)
    if data.get("base_model") is not None and not isinstance(data["base_model"], str):
        raise InputError(f"{path}: base_model: {json.dumps(data['base_model'])} is not a path")
    identity = data.get("base_identity")
    if identity is not None and not (isinstance(identity, list) and all(
            isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("sha256"), str)
            and isinstance(e.get("bytes"), int) for e in identity)):
        raise InputError(f"{path}: base_identity: not a list of {{\"file\", \"bytes\", \"sha256\"}}")
    return Record(**data)


# ---------------------------------------------------------------------------------------------
# The base model a checkpoint was trained on
# ---------------------------------------------------------------------------------------------


def base_identity(init_checkpoint: str | os.PathLike | None) -> list[dict] | None:
    """[{"file": NAME or "", "bytes", "sha256"}] of the files of a base (a Hugging Face directory's
    config and weights, or a bare weights file); None for no base (random weights)."""
    if init_checkpoint is None:
        return None
    from nlg.files import file_identity
    from nlg.weights import checkpoint_files  # torch: only commands that load models call this

    path = Path(init_checkpoint)
    if path.is_dir():
        return [{"file": f.name, **file_identity(f)} for f in checkpoint_files(path) if f.is_file()]
    return [{"file": "", **file_identity(path)}]


def same_base(a: list[dict] | None, b: list[dict] | None) -> bool:
    def content(identity):
        return sorted((e["file"], e["bytes"], e["sha256"]) for e in identity or [])
    return content(a) == content(b)


def describe_base(name: str | None, identity: list[dict] | None) -> str:
    """"NAME (N bytes, sha256 0123456789ab)" of a base's weights (its largest file)."""
    if not identity:
        return f"{name or 'a model card'} (random weights)"
    main = max(identity, key=lambda e: e["bytes"])
    return f"{name} ({main['bytes']:,} bytes, sha256 {main['sha256'][:12]})"


def check_base(record: Record | None, checkpoint: str, init_checkpoint: str | None, allow: bool) -> str | None:
    """InputError unless `init_checkpoint` is the base `checkpoint` was trained on (its
    method.json's base_identity), naming both; with `allow`, the line saying so instead
    (returned). Nothing to check (None) when the checkpoint records no base."""
    if record is None or record.base_identity is None or not get(record.method).needs_base:
        return None
    now = base_identity(init_checkpoint)
    if same_base(record.base_identity, now):
        return None
    text = (f"--checkpoint {checkpoint} was trained on {describe_base(record.base_model, record.base_identity)}; "
            f"the base given is {describe_base(init_checkpoint, now)}")
    if not allow:
        raise InputError(f"{text}: give the base it was trained on as --init_checkpoint (or --allow_other_base "
                         "to decode on this one deliberately)")
    return f"--allow_other_base: {text}"


def detect(directory: str | os.PathLike) -> tuple[Method, Any, Record | None]:
    """(method, its settings, method.json or None) of a checkpoint or exported directory.

    method.json decides when present; otherwise the first method that recognises the files
    (PEFT's LoRA, AdapterHub's adapters, a whole Hugging Face GPT-2). InputError when none does.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: no such checkpoint directory")
    record = read_record(directory)
    if record is not None:
        return get(record.method), settings_of(record.method, record.settings), record
    for method in map(get, names()):
        settings = method.recognizes(directory)
        if settings is not None:
            return method, settings, None
    steps = sorted((int(entry.name.split("-", 1)[1]), entry) for entry in directory.iterdir()
                   if entry.is_dir() and entry.name.startswith("checkpoint-") and entry.name[11:].isdigit())
    hint = f"; a work_dir? its latest checkpoint is {steps[-1][1]}" if steps else ""
    raise InputError(f"{directory}: neither a checkpoint of `nlg train` ({METHOD_FILE}) nor a PEFT, "
                     f"AdapterHub or Hugging Face GPT-2 directory{hint}")


def require_lora(directory: str | os.PathLike, command: str) -> None:
    """InputError unless `directory` holds a LoRA adapter (or is not a checkpoint at all, which
    the command's own reader then names): for commands that only mean something for LoRA."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    record = read_record(directory)
    name = record.method if record is not None else None
    if name is None and (directory / "adapter_config.json").is_file():
        try:
            config = read_json(directory / "adapter_config.json")
        except InputError:
            return  # the command's reader names the line
        if isinstance(config, dict) and "peft_type" not in config and isinstance(config.get("config"), dict):
            name = "adapter-l/adapter-h (AdapterHub's layout)"
        elif isinstance(config, dict) and config.get("peft_type", "LORA") != "LORA":
            name = f"PEFT {config['peft_type']}"
    if name is not None and name != "lora":
        raise InputError(f"{directory}: a checkpoint of method {name}; {command} reads LoRA adapters only")
