"""The pipeline's settings: resolved once, checked before any work.

Every setting is a NAME=value string, as the environment gives it and the stage records hold it.
`resolve` takes them in the order the pipeline always has (a setting given wins over a later
source):

    1. the environment (NAME=value; for the recipe's names an empty value counts as given:
       SCORE_ARGS= scores E2E with mteval-v13a);
    2. --demo's defaults (DEMO_DEFAULTS, DEMO_BY_DATASET, and the method's own `demo_values`);
    3. the dataset's recipe, in-process: nlg.datasets.recipe.settings(dataset, method, sizes);
    4. the pipeline's own defaults (WORK_DIR, SAVE_INTERVAL, ...).

A method's settings are its own `nlg train` flags upper-cased (lora_dim -> LORA_DIM,
vera_rank -> VERA_RANK): only the chosen method's are passed to nlg train, checked and recorded;
an empty one is not passed (nlg train's default). Nothing here names a method.

Checks (each one line, exit 2, nothing run): numbers (NUMBERS, and a method's flags by their
type and `flag_bounds`, the ranges `nlg train` enforces: LR=0 is refused by both, a run at
learning rate 0 cannot learn), the method's own `check`, selection, seeds, and the splits (the
test split never reaches training, validation or selection). Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

PROG = "reproduce.sh"
TEST_SPLIT = "test"
DATASETS = ("e2e", "webnlg", "dart")


class Refusal(Exception):
    """Bad input found before any work: `reproduce.sh: MESSAGE`, exit 2."""


@dataclass(frozen=True)
class Number:
    """What a numeric setting may hold."""

    kind: str  # "int", "float" or "ints" (space-separated whole numbers)
    low: float | None  # the smallest allowed value (None: any finite number)
    below: float | None = None  # values must be < this (a fraction's 1), None: no bound
    strict: bool = False  # low itself is not allowed (LR > 0)
    empty: bool = False  # "" is allowed (the setting is off)

    def describe(self) -> str:
        what = {"int": "a whole number", "float": "a number", "ints": "whole numbers"}[self.kind]
        bound = "" if self.low is None else f" {'>' if self.strict else '>='} {self.low:g}"
        if self.below is not None:
            bound += f" and < {self.below:g}"
        return what + bound


WHOLE, POSITIVE = Number("int", 0), Number("int", 1)
# The pipeline's numeric settings. Their ranges are nlg train's and nlg beam's
# (nlg.training.settings.check_config; tests/pipeline/test_pipeline_settings.py checks they agree).
NUMBERS: dict[str, Number] = {
    **dict.fromkeys(("MAX_STEP", "TEST_LIMIT", "VALID_LIMIT", "WARMUP", "SEED", "PRETRAIN_SEED",
                     "NO_REPEAT_NGRAM", "PRETRAIN_STEPS"), WHOLE),
    **dict.fromkeys(("BATCH", "GRAD_ACC", "SEQ_LEN", "EPOCHS", "SAVE_INTERVAL", "EVAL_INTERVAL",
                     "BEAM_BATCH", "BEAM", "EVAL_LEN", "BEAM_SEQ_LEN", "PRETRAIN_EPOCHS", "NPROC"), POSITIVE),
    "SEEDS": Number("ints", 0, empty=True),
    "EOS_IDS": Number("ints", 0),
    **dict.fromkeys(("LR", "PRETRAIN_LR", "REPETITION_PENALTY"), Number("float", 0, strict=True)),
    **dict.fromkeys(("WEIGHT_DECAY", "CLIP", "LENGTH_PENALTY"), Number("float", 0)),
    **dict.fromkeys(("ADAM_BETA2", "LABEL_SMOOTH"), Number("float", 0, below=1)),
}
_INT = re.compile(r"^[0-9]+$")


def method_numbers(method: Any) -> dict[str, Number]:
    """NAME -> Number of a method's numeric flags (its int and float `flag_types`), by the method's
    own ranges: `flag_bounds`, else an int's `flag_minimum` (1 by default); empty: not given."""
    numbers = {}
    for flag in method.flags:
        kind = method.flag_types.get(flag, int)
        if kind not in (int, float):
            continue
        bound = method.flag_bounds.get(flag)
        if bound is not None:
            number = Number(kind.__name__, bound.low, bound.below, bound.strict, empty=True)
        elif kind is int:
            number = Number("int", method.flag_minimum.get(flag, 1), empty=True)
        else:
            number = Number("float", None, empty=True)
        numbers[flag.upper()] = number
    return numbers


def check_number(name: str, value: str, spec: Number | None = None) -> str | None:
    """Why `value` is not a valid NAME, or None when it is (NAME in NUMBERS unless `spec` is given)."""
    spec = spec or NUMBERS[name]
    if value == "" and spec.empty:
        return None
    bad = f"{name}={value!r} is not {spec.describe()}"
    if spec.kind in ("int", "ints"):
        words = value.split() if spec.kind == "ints" else [value]
        if not words or not all(_INT.match(word) for word in words):
            return bad
        numbers = [float(word) for word in words]
    else:
        try:
            numbers = [float(value)]
        except ValueError:
            return bad
        if not math.isfinite(numbers[0]) or value.strip() != value:
            return bad
    for number in numbers:
        if spec.low is not None and (number < spec.low or (spec.strict and number == spec.low)):
            return bad
        if spec.below is not None and number >= spec.below:
            return bad
    return None


def all_numbers() -> dict[str, Number]:
    """Every numeric setting: the pipeline's (NUMBERS) and every method's (`method_numbers`)."""
    from nlg import methods

    found = dict(NUMBERS)
    for name in methods.names():
        for key, number in method_numbers(methods.get(name)).items():
            found.setdefault(key, number)
    return found


def check(pairs: list[str], numbers: Mapping[str, Number] | None = None) -> list[str]:
    """The problems of NAME=VALUE pairs, in order, by `numbers` (default: `all_numbers`; a name
    without a rule is a bug of the pipeline)."""
    numbers = all_numbers() if numbers is None else numbers
    problems = []
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in numbers:
            raise ValueError(f"no rule for the setting {name}")
        problem = check_number(name, value, numbers[name])
        if problem:
            problems.append(problem)
    return problems


def split_problems(train: str, valid: str, select: str, select_split: str) -> list[str]:
    """The test split never reaches training, validation or selection (issue 29 case 2)."""
    problems = []
    for name, value in (("TRAIN_SPLIT", train), ("VALID_SPLIT", valid)):
        if value == TEST_SPLIT:
            problems.append(f"{name}=test: the test split is only decoded and scored, never trained or "
                            "validated on (use a train or valid split)")
    if select == "valid_metric" and select_split == TEST_SPLIT:
        problems.append("SELECT_SPLIT=test: the checkpoint is chosen on validation, never on the test "
                        "split (use a valid split, or SELECT=last)")
    return problems


def size_problems(method: str, values: Mapping[str, str]) -> list[str]:
    """A size setting of another method (its `sizes` flag upper-cased: ADAPTER_DIM, TOP_LAYERS,
    VERA_RANK, ...) given for `method`: one line naming it and the methods it belongs to. Other
    methods' settings that are not sizes (LORA_DROPOUT) mean nothing to this run and are ignored."""
    from nlg import methods

    chosen = methods.get(method)
    foreign = []
    for other in map(methods.get, methods.names()):
        for flag in other.sizes:
            if flag not in chosen.flags and values.get(flag.upper()) and flag not in foreign:
                foreign.append(flag)
    if foreign and not chosen.sizes:
        return [f"{', '.join(f'{flag.upper()}={values[flag.upper()]}' for flag in foreign)}: settings of "
                f"other methods than {method} (--method NAME)"]
    return [f"{flag.upper()}={values[flag.upper()]} is a setting of "
            f"{', '.join(m.name for m in methods.flag_owners(flag))}, not of --method {method}" for flag in foreign]


def problems(values: Mapping[str, str]) -> list[str]:
    """Every problem of the pipeline's NAME -> value settings that is not a number's."""
    found = split_problems(values.get("TRAIN_SPLIT", ""), values.get("VALID_SPLIT", ""),
                           values.get("SELECT", ""), values.get("SELECT_SPLIT", ""))
    if values.get("METHOD"):
        found += size_problems(values["METHOD"], values)
    return found


def method_problem(method: Any, values: Mapping[str, str]) -> str | None:
    """The first problem of a method's settings (its flags upper-cased; empty: not given), or
    None: each must read as its flag's type, then the method's own `check` (what nlg train runs)
    decides, every flag not given at its default. A refused value is named by its range where
    that range refuses it (`method_numbers`), else by the method's words."""
    numbers = method_numbers(method)
    given = {flag: values.get(flag.upper(), "") for flag in method.flags}
    for flag, value in given.items():
        number = numbers.get(flag.upper())
        if value and number and check_number(flag.upper(), value, Number(number.kind, None, empty=True)):
            return check_number(flag.upper(), value, number)
    parsed = {flag: parse(method, flag, value) for flag, value in given.items() if value}
    found = method.check({**method.defaults, **parsed})
    if not found:
        return None
    for flag, value in given.items():
        number = numbers.get(flag.upper())
        if value and number and check_number(flag.upper(), value, number):
            return check_number(flag.upper(), value, number)
    return f"{found[0]} ({', '.join(f'{flag.upper()}={value}' for flag, value in given.items() if value)})"


def word(value: Any) -> str:
    """A flag value as a setting: tuples joined by commas, floats in their shortest form."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse(method: Any, flag: str, value: str) -> Any:
    """A method flag's setting as `nlg train` reads it (its flag type); None when empty."""
    if value == "":
        return None
    kind = method.flag_types.get(flag, int)
    return kind(value) if kind in (int, float) else value


# ---------------------------------------------------------------------------------------------
# The demo's defaults (--demo, where the environment sets none)
# ---------------------------------------------------------------------------------------------

# On 2 cores the tiny model's cost is its 50,257-word head: 0.35 s a step of 8 WebNLG pairs (0.45 s
# of 8 E2E pairs), and beam 10 decodes about 7 test contexts/s, beam 5 about 14. These settings fit
# training, both beam searches and scoring in ~15 min for WebNLG and E2E; 1,000 steps of 8 pairs
# learn to copy names from the triples (validation loss 3.2), 500 of 16 do not yet (4.2).
DEMO_DEFAULTS = {"MODEL_CARD": "gpt2.tiny", "LR": "2e-3", "LABEL_SMOOTH": "0.0", "WARMUP": "50",
                 "PRETRAIN_LR": "3e-3", "BATCH": "8", "PRETRAIN_STEPS": "1000", "EPOCHS": "1",
                 "MAX_STEP": "300", "BEAM": "5", "EVAL_LEN": "48", "BEAM_BATCH": "64"}
# E2E and DART train on their valid split (no training split on the development machines): no
# validation on it, and the last checkpoint is decoded (VALID_SPLIT unset -> empty; set, kept).
# WebNLG validates on its dev split at both checkpoints (150, 300) and decodes the better. 1,000
# pre-training steps of 8 pairs are 3 epochs of E2E's valid split or DART's dev split, 0.44 of
# WebNLG's train split.
DEMO_BY_DATASET: dict[str, dict[str, str]] = {
    "e2e": {"SEQ_LEN": "128", "TRAIN_SPLIT": "valid", "PRETRAIN_EPOCHS": "3"},
    "dart": {"TRAIN_SPLIT": "valid", "PRETRAIN_EPOCHS": "3"},
    "webnlg": {"TRAIN_SPLIT": "train", "SAVE_INTERVAL": "150", "PRETRAIN_EPOCHS": "1"},
}
DEMO_NO_VALIDATION = ("e2e", "dart")

# Every environment setting the pipeline reads besides the recipe's names and the method's flags
# (each documented in the usage text, nlg.pipeline.usage).
ENVIRONMENT = ("MODEL_CARD", "METHOD", "SEEDS", "INIT_CHECKPOINT", "PRETRAINED_DIR", "WORK_DIR", "DATA_DIR",
               "E2E_RAW_DIR", "WEBNLG_RAW_DIR", "DART_RAW_DIR", "NLG_VOCAB_DIR", "NPROC", "TRAIN_SPLIT",
               "VALID_SPLIT", "MAX_STEP", "SAVE_INTERVAL", "EVAL_INTERVAL", "SELECT_SPLIT", "VALID_LIMIT",
               "BEAM_BATCH", "TEST_LIMIT", "NLG", "PRETRAIN_LR", "PRETRAIN_EPOCHS", "PRETRAIN_STEPS",
               "PRETRAIN_SEED")


@dataclass
class Settings:
    """Every setting of one pipeline run, resolved (`resolve`): `values` holds each NAME=value as
    the stage records hold it; the rest is what follows from them."""

    dataset: str
    demo: bool
    method: str  # a name of nlg.methods
    values: dict[str, str]
    seeds: list[int] = field(default_factory=list)  # empty: one run in WORK_DIR, with SEED
    nlg: list[str] = field(default_factory=lambda: ["python", "-m", "nlg"])  # how to call nlg (NLG)
    raw_env: str = ""  # E2E_RAW_DIR, ...
    raw_dir: str = ""  # the raw files given; "": downloaded into DATA_DIR/raw
    init_given: str = ""  # INIT_CHECKPOINT as given
    pretrain: bool = False  # the demo's pretrain stage runs (no INIT_CHECKPOINT given)

    def __getitem__(self, name: str) -> str:
        return self.values.get(name, "")

    def number(self, name: str) -> int:
        return int(self[name])

    @property
    def work_dir(self) -> Path:
        return Path(self["WORK_DIR"])

    @property
    def data_dir(self) -> Path:
        return Path(self["DATA_DIR"])

    @property
    def base_path(self) -> str:
        """The base model the method trains on, as recorded: given, or PRETRAINED_DIR/<card>."""
        return self.init_given or f"{self['PRETRAINED_DIR']}/{self['MODEL_CARD']}"

    @cached_property
    def method_object(self) -> Any:
        from nlg import methods

        return methods.get(self.method)

    @property
    def method_names(self) -> list[str]:
        """The chosen method's settings: its flags upper-cased."""
        return [flag.upper() for flag in self.method_object.flags]

    def method_values(self) -> dict[str, Any]:
        """The chosen method's flags and their values as nlg train reads them (None: not given)."""
        method = self.method_object
        return {flag: parse(method, flag, self[flag.upper()]) for flag in method.flags}

    def method_args(self) -> list[str]:
        """nlg train's --method NAME and each of its flags that has a value."""
        flags = ["--method", self.method]
        for flag in self.method_object.flags:
            if self[flag.upper()] != "":
                flags += [f"--{flag}", self[flag.upper()]]
        return flags

    def describe_method(self) -> str:
        from nlg import methods

        return self.method_object.describe(methods.settings_of(self.method, self.method_values()))

    def own_recipe(self) -> bool:
        """Whether the run is of the dataset's own recipe (the method's recipe_key is None: the
        paper's table of this method is the recipe's own rows, which `nlg results --card` prints
        beside the run), not a baseline labelled by method and size (`nlg results --runs`)."""
        method = self.method_object
        return method.recipe_key({**method.defaults, **{k: v for k, v in self.method_values().items()
                                                        if v is not None}}) is None

    def words(self, name: str) -> list[str]:
        return self[name].split()

    @property
    def subsets(self) -> list[str]:
        return self.words("SUBSETS")

    def splits_read(self) -> list[str]:
        """The data splits this run reads: training, validation, selection's, test."""
        splits = [self["TRAIN_SPLIT"], *self.words("VALID_SPLIT")]
        if self["SELECT"] == "valid_metric":
            splits.append(self["SELECT_SPLIT"])
        return [*splits, TEST_SPLIT]


def _recipe(dataset: str, method: Any, sizes: dict[str, Any], given: Mapping[str, str]) -> dict[str, str]:
    """The dataset's recipe for `method` of these sizes (nlg.datasets.recipe.settings). A method
    the paper gives no baseline recipe for trains with the dataset's own recipe when LR, EPOCHS and
    BATCH (all the baseline would give) are set, as --demo sets them; else Refusal."""
    from dataclasses import replace

    from nlg import datasets
    from nlg.datasets import recipe as recipes
    from nlg.files import InputError

    try:
        return recipes.settings(dataset, method.name, sizes)
    except InputError as error:
        recipe = datasets.get(dataset).recipe
        key = method.recipe_key({**method.defaults, **sizes})
        if key is None or key in recipe.baselines:
            raise Refusal(str(error)) from None
        if not all(given.get(name) for name in ("LR", "EPOCHS", "BATCH")):
            raise Refusal(f"{error}; set LR, EPOCHS and BATCH to train it with the rest of {dataset}'s "
                          "recipe") from None
        train = recipe.train  # placeholders: LR, EPOCHS and BATCH given replace all three
        baseline = recipes.Baseline(train.lr, train.max_epoch, train.train_batch_size)
        lines = recipes.method_settings(replace(recipe, baselines={**recipe.baselines, key: baseline}),
                                        method.name, sizes)
        return {s.name: s.value for s in lines}


def resolve(dataset: str, environ: Mapping[str, str], demo: bool = False, method_flag: str = "",
            seed_count: str = "") -> Settings:
    """Every setting of a run of `dataset` from the environment, the demo's defaults and the
    recipe (module docstring), checked: Refusal on the first problem."""
    from nlg import methods

    method = _method(environ, method_flag, seed_count)
    values = dict(environ)  # the settings as they are resolved: what is set stays
    values["METHOD"] = method.name
    suffix = "" if method.name == methods.DEFAULT else f"-{method.name}"
    select_given = bool(values.get("SELECT"))
    if demo:
        _demo_defaults(values, dataset, method, suffix)
    problem = next(iter(size_problems(method.name, values)), None) or method_problem(method, values)
    if problem:
        raise Refusal(f"{problem}; nothing was run")
    sizes = {flag: parse(method, flag, values[flag.upper()]) for flag in method.sizes if values.get(flag.upper())}
    recipe = _recipe(dataset, method, sizes, values)
    for key, value in recipe.items():
        values.setdefault(key, value)  # the recipe's where the environment (or the demo) set none
    _defaults(values, dataset, method, suffix, select_given)
    seeds = _checked_seeds(values, seed_count)
    problem = method_problem(method, values)  # with the recipe's values too
    if problem:
        raise Refusal(f"{problem}; nothing was run")

    known = {*ENVIRONMENT, *NUMBERS, *(f.upper() for f in method.flags), *recipe, "RAW_DIR", "DATASET"}
    values["DATASET"] = dataset
    raw_env = f"{dataset.upper()}_RAW_DIR"
    init_given = values.get("INIT_CHECKPOINT", "")
    nlg = shlex.split(environ["NLG"]) if environ.get("NLG") else [sys.executable, "-m", "nlg"]
    return Settings(dataset=dataset, demo=demo, method=method.name,
                    values={key: value for key, value in values.items() if key in known},
                    seeds=seeds, nlg=nlg, raw_env=raw_env, raw_dir=values.get(raw_env, ""),
                    init_given=init_given, pretrain=demo and not init_given)


def _method(environ: Mapping[str, str], method_flag: str, seed_count: str) -> Any:
    """The method of the run (--method or METHOD, default nlg.methods.DEFAULT), and --seeds checked."""
    from nlg import methods
    from nlg.files import InputError

    given = environ.get("METHOD", "")
    if method_flag and given and given != method_flag:
        raise Refusal(f"--method {method_flag} and METHOD={given} disagree; give one")
    name = method_flag or given or methods.DEFAULT
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise Refusal(f"METHOD='{name}' is not a method name (e.g. {', '.join(methods.names()[:3])})")
    if seed_count:
        if not _INT.match(seed_count) or int(seed_count) < 1:
            raise Refusal(f"--seeds '{seed_count}' is not a whole number >= 1")
        if environ.get("SEEDS"):
            raise Refusal(f"give --seeds {seed_count} or SEEDS=\"{environ['SEEDS']}\", not both")
    try:
        return methods.get(name)
    except InputError as error:
        raise Refusal(str(error)) from None


def _default(values: dict[str, str], key: str, value: str) -> None:
    """`value` where `key` is unset or empty (the shell's ${KEY:-value})."""
    if not values.get(key):
        values[key] = value


def _demo_defaults(values: dict[str, str], dataset: str, method: Any, suffix: str) -> None:
    _default(values, "MODEL_CARD", DEMO_DEFAULTS["MODEL_CARD"])
    _default(values, "WORK_DIR", f"runs/{dataset}-demo{suffix}")
    for flag, value in method.demo_values.items():
        _default(values, flag.upper(), word(value))
    for key, value in {**DEMO_DEFAULTS, **DEMO_BY_DATASET.get(dataset, {})}.items():
        _default(values, key, value)
    if dataset in DEMO_NO_VALIDATION:
        values.setdefault("VALID_SPLIT", "")
    _default(values, "SAVE_INTERVAL", "200")
    _default(values, "EVAL_INTERVAL", values["SAVE_INTERVAL"])  # validation at every checkpoint (valid_loss)


def _defaults(values: dict[str, str], dataset: str, method: Any, suffix: str, select_given: bool) -> None:
    """The pipeline's own defaults, after the environment, the demo's and the recipe's."""
    _default(values, "MODEL_CARD", "gpt2.md")
    _default(values, "WORK_DIR", f"runs/{dataset}-{values['MODEL_CARD']}{suffix}")
    _default(values, "DATA_DIR", f"data/{dataset}")
    _default(values, "PRETRAINED_DIR", "pretrained")
    _default(values, "TRAIN_SPLIT", "train")
    values.setdefault("VALID_SPLIT", "valid")  # set but empty: no validation
    for flag in method.flags:
        values.setdefault(flag.upper(), "")
    if not select_given and not values["VALID_SPLIT"] and values["SELECT"] == "valid_loss":
        values["SELECT"] = "last"  # the recipe's SELECT needs a validation split
    values.setdefault("SELECT_SPLIT", values["VALID_SPLIT"])
    for key, value in (("VALID_LIMIT", "0"), ("MAX_STEP", "0"), ("SAVE_INTERVAL", "1000")):
        _default(values, key, value)
    if values["SELECT"] == "valid_loss":
        _default(values, "EVAL_INTERVAL", values["SAVE_INTERVAL"])
    for key, value in (("EVAL_INTERVAL", "2000"), ("BEAM_BATCH", "16"), ("TEST_LIMIT", "0"),
                       ("PRETRAIN_LR", "3e-3"), ("PRETRAIN_EPOCHS", "1"), ("PRETRAIN_STEPS", "0"),
                       ("PRETRAIN_SEED", values["SEED"])):
        _default(values, key, value)
    values["RAW_DIR"] = values.get(f"{dataset.upper()}_RAW_DIR") or f"download into {values['DATA_DIR']}/raw"
    if not values.get("NPROC"):
        values["NPROC"] = str(default_nproc())
    values.setdefault("NLG_VOCAB_DIR", "")


def _checked_seeds(values: Mapping[str, str], seed_count: str) -> list[int]:
    """The numbers, the seeds, the selection and the splits checked; the seeds to run."""
    found = check([f"{key}={values.get(key, '')}" for key in NUMBERS], NUMBERS)
    if found:
        raise Refusal(f"{found[0]}; nothing was run")
    seeds = [int(seed) for seed in values.get("SEEDS", "").split()]
    if seed_count:
        seeds = list(range(int(values["SEED"]), int(values["SEED"]) + int(seed_count)))
    repeated = sorted({str(seed) for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise Refusal(f"SEEDS=\"{values['SEEDS']}\" names seed(s) {' '.join(repeated)} more than once")
    _check_selection(values)
    found = split_problems(values["TRAIN_SPLIT"], values["VALID_SPLIT"], values["SELECT"], values["SELECT_SPLIT"])
    if found:
        raise Refusal(f"{found[0]}; nothing was run")
    return seeds


def _check_selection(values: Mapping[str, str]) -> None:
    select = values["SELECT"]
    if select not in ("last", "valid_loss", "valid_metric"):
        raise Refusal(f"SELECT={select} is not one of: last, valid_loss, valid_metric")
    if select == "valid_loss":
        if not values["VALID_SPLIT"]:
            raise Refusal("SELECT=valid_loss needs a validation split, and VALID_SPLIT is empty (SELECT=last, or "
                          "set VALID_SPLIT)")
        if int(values["SAVE_INTERVAL"]) % int(values["EVAL_INTERVAL"]):
            raise Refusal(f"SELECT=valid_loss needs a validation loss at every checkpoint: EVAL_INTERVAL="
                          f"{values['EVAL_INTERVAL']} must divide SAVE_INTERVAL={values['SAVE_INTERVAL']}")
    if select == "valid_metric" and not values["SELECT_SPLIT"]:
        raise Refusal("SELECT=valid_metric needs a split to beam-search, and SELECT_SPLIT (default VALID_SPLIT) "
                      "is empty")


def default_nproc() -> int:
    """Processes per run by default: one per GPU, else one (without torch: one; the stages then
    say what is missing)."""
    try:
        from nlg.training.distributed import default_nproc as nproc
    except ModuleNotFoundError:
        return 1
    return nproc()
