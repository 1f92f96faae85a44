"""The paper's recipe for a dataset, as data: training, beam search, decoding and scoring
settings, and the numbers the paper reports.

Every dataset module builds one `Recipe`; a pipeline reads it instead of repeating the
numbers. The `args()` methods give the flags of `nlg train`, `nlg beam` and `nlg decode` in
the paper's spelling, so a recipe is run exactly as the paper's commands run.

`nlg recipe NAME` prints a recipe as the pipeline script's settings (`settings`), one
`NAME=value` line each, which scripts/reproduce.sh reads; `nlg recipe` alone prints the table
of every dataset's. Neither imports torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from nlg.methods import DEFAULT as DEFAULT_METHOD
from nlg.methods.lora import DEFAULTS as LORA  # LoRA's defaults live there (no torch)

SUBSETS = ("all", "seen", "unseen")


class CommandFlags:
    """Settings whose field names are a command's flags."""

    def args(self) -> list[str]:
        """`--name value` for every field, in field order; tuples are joined with commas."""
        flags = []
        for item in fields(self):
            value = getattr(self, item.name)
            flags += [f"--{item.name}", ",".join(value) if isinstance(value, tuple) else str(value)]
        return flags


@dataclass(frozen=True)
class TrainRecipe(CommandFlags):
    """`nlg train` settings; field names are the flags (the paper's gpt2_ft.py spelling).

    The defaults are the paper's GPT-2 recipe for E2E and WebNLG (its appendix table and
    examples/NLG/README.md): AdamW, lr 2e-4, weight decay 0.01, batch 8, 5 epochs, 500 warmup
    steps then linear decay, label smoothing 0.1, LoRA r=4 on query and value, alpha 32,
    dropout 0.1, sequences of at most 512 tokens, seed 110, no gradient clipping.
    """

    train_batch_size: int = 8
    grad_acc: int = 1
    seq_len: int = 512
    lr: float = 2e-4
    weight_decay: float = 0.01
    adam_beta2: float = 0.999
    scheduler: str = "linear"
    warmup_step: int = 500
    max_epoch: int = 5
    clip: float = 0.0
    lora_dim: int = LORA.rank
    lora_alpha: float = LORA.alpha
    lora_dropout: float = LORA.dropout
    lora_targets: tuple[str, ...] = LORA.targets
    label_smooth: float = 0.1
    random_seed: int = 110


@dataclass(frozen=True)
class BeamRecipe(CommandFlags):
    """`nlg beam` settings; field names are the flags (the paper's gpt2_beam.py spelling).

    eos 628 is "\\n\\n": generation also stops at a blank line, as in the paper's commands.
    """

    beam: int = 10
    length_penalty: float = 0.8
    no_repeat_ngram_size: int = 4
    repetition_penalty: float = 1.0
    eos_token_id: int = 628
    eval_len: int = 64
    seq_len: int = 512


@dataclass(frozen=True)
class ScoringRecipe:
    """How the paper turns predictions into reference files and scores them.

    ref_type   `nlg decode --ref_type`: which dataset writes the reference files
    ref_num    references per context in the reference folder (the paper's --ref_num);
               None where every reference of a context is written (E2E's grouped file)
    tokenize, lower   the paper's decode flags
    subsets    the `--filter` values the paper reports scores for
    suite      the scorer: "e2e" (the E2E challenge's measure_scores.py) or "webnlg"
               (WebNLG's GenerationEval, eval.py -nr ref_num)
    metrics    the metrics the paper reports, named as the suite names them
    pymteval   E2E: BLEU/NIST as the official script's -p computes them, as the paper ran it
    """

    ref_type: str
    ref_num: int | None
    tokenize: bool
    lower: bool
    subsets: tuple[str, ...]
    suite: str
    metrics: tuple[str, ...]
    pymteval: bool = False

    def __post_init__(self) -> None:
        if not set(self.subsets) <= set(SUBSETS):
            raise ValueError(f"subsets must be among {SUBSETS}, got {self.subsets}")

    def decode_args(self, subset: str = "all") -> list[str]:
        """`nlg decode` flags for one subset (input, prediction and output files not included)."""
        if subset not in self.subsets:
            raise ValueError(f"the paper reports no {subset!r} scores here (only {', '.join(self.subsets)})")
        flags = ["--ref_type", self.ref_type]
        if self.ref_num is not None:
            flags += ["--ref_num", str(self.ref_num)]
        if subset != "all":
            flags += ["--filter", subset]
        if self.tokenize:
            flags.append("--tokenize")
        if self.lower:
            flags.append("--lower")
        return flags

    def score_args(self) -> list[str]:
        """`nlg score` flags as the paper scored (references and predictions not included):
        `--dataset` (ref_type names the dataset whose references these are; the scores file
        records it, `nlg results` checks it), then E2E's `-p` where it ran the official script
        so, or GenerationEval's `-nr N -m METRICS`."""
        dataset = ["--dataset", self.ref_type]
        if self.suite == "e2e":
            return dataset + (["-p"] if self.pymteval else [])
        return dataset + ["-nr", str(self.ref_num), "-m", ",".join(m.lower() for m in self.metrics)]


@dataclass(frozen=True)
class PaperResult:
    """Scores the LoRA paper reports for one model size and subset, as its tables print them.

    `percent` names the metrics printed in percent (BLEU 70.4 means 0.704); `fraction`
    gives every value on the 0..1 scale of `nlg score`.
    """

    model_card: str  # gpt2.md | gpt2.lg
    subset: str  # all | seen | unseen
    scores: Mapping[str, float]
    percent: frozenset[str]
    source: str  # where in the paper
    method: str = DEFAULT_METHOD  # a name of nlg.methods (its rows: Recipe.paper_result)
    params: str = ""  # trainable parameters as the paper prints them ("0.35M"); "" where it prints none
    spread: Mapping[str, float] = field(default_factory=dict)  # the paper's ± per metric (3 seeds)
    copied: bool = False  # marked * in the paper: copied from Li & Liang (2021), not rerun
    external: bool = False  # published by another paper (its `source`), not the LoRA paper's table

    def fraction(self, metric: str) -> float:
        value = self.scores[metric]
        return value / 100 if metric in self.percent else value


@dataclass(frozen=True)
class Baseline:
    """How the LoRA paper trained a baseline method on a dataset: it took the settings from Li &
    Liang (2021, their table of hyperparameters), which give learning rate, epochs and batch
    size; everything else is the dataset's LoRA recipe, and decoding is the same for every row."""

    lr: float
    max_epoch: int
    train_batch_size: int
    prefix_len: int | None = None  # prefix tuning: Li & Liang's prefix length for the dataset


# Keys of Recipe.baselines: what each method's recipe_key says (nlg.methods): a method's name,
# or an adapter recipe of Li & Liang's two sizes ("adapter-0.1%", "adapter-3%").


@dataclass(frozen=True)
class SelectionRecipe:
    """Which checkpoint of a run is decoded on test, chosen on validation only (`nlg select`).

    criterion  last | valid_loss | valid_metric: the newest checkpoint, the lowest validation
               loss logged at a checkpoint, or the best `metric` of a beam search of the
               validation split with each checkpoint. The paper reports each seed's best epoch
               (its appendix D.3) without saying by what; the validation loss is the cheap choice.
    metric     what valid_metric compares (as the suite names it; TER: lowest wins)
    """

    criterion: str = "valid_loss"
    metric: str = "BLEU"


@dataclass(frozen=True)
class Recipe:
    """Everything the paper did with one dataset after making its files."""

    train: TrainRecipe
    beam: BeamRecipe
    scoring: ScoringRecipe
    paper: tuple[PaperResult, ...] = field(default=())
    baselines: Mapping[str, Baseline] = field(default_factory=dict)  # by Method.recipe_key
    selection: SelectionRecipe = field(default=SelectionRecipe())

    def method_train(self, method: str, sizes: Mapping[str, object] | None = None) -> TrainRecipe:
        """The `nlg train` settings of `method` of these sizes (e.g. {"adapter_dim": 224}) on this
        dataset: the LoRA recipe with the baseline's lr, epochs and batch size (which baseline:
        the method says, Method.recipe_key)."""
        from dataclasses import replace

        from nlg import methods
        from nlg.files import InputError

        found = methods.get(method)
        key = found.recipe_key({**found.defaults, **{k: v for k, v in (sizes or {}).items() if v is not None}})
        if key is None:
            return self.train
        if key not in self.baselines:
            raise InputError(f"no recipe for --method {method} ({key}): the paper gives none")
        b = self.baselines[key]
        return replace(self.train, lr=b.lr, max_epoch=b.max_epoch, train_batch_size=b.train_batch_size)

    def method_sizes(self, method: str, sizes: Mapping[str, object] | None = None) -> dict[str, object]:
        """Every size flag of `method` (Method.sizes) and its value: `sizes` where given, else the
        dataset's baseline (prefix tuning's length), else the method's default."""
        from nlg import methods

        found = methods.get(method)
        own = {**found.defaults, **found.recipe_values(self.baselines.get(found.recipe_key(found.defaults) or ""))}
        given = {k: v for k, v in (sizes or {}).items() if v is not None}
        return {flag: given.get(flag, own.get(flag)) for flag in found.sizes}

    def paper_result(self, model_card: str, subset: str = "all", method: str = DEFAULT_METHOD,
                     params: str | None = None, sizes: Mapping[str, object] | None = None) -> PaperResult | None:
        """The paper's scores for `method` (of `params` size as the paper prints it, or of these
        `sizes`, e.g. {"adapter_dim": 224}) with `model_card` on `subset`, or None if it
        reports none. With `sizes`, a row counts only when it was run at those sizes (the
        dataset's own, where the paper prints one row of the method)."""
        from nlg.methods.counts import paper_sizes

        rows = sorted((r for r in self.paper if r.model_card == model_card and r.subset == subset
                       and r.method == method and (params is None or r.params == params)),
                      key=lambda r: r.external)  # the LoRA paper's own row before another paper's rerun
        if sizes is None:
            return rows[0] if rows else None
        want, own = self.method_sizes(method, sizes), self.method_sizes(method)
        return next((r for r in rows if {**own, **paper_sizes(method, model_card, r.params)} == want), None)


# ---------------------------------------------------------------------------------------------
# The recipe as the pipeline script's settings: `nlg recipe`
# ---------------------------------------------------------------------------------------------

# The script's name for each field (scripts/reproduce.sh reads `nlg recipe NAME` and lets an
# environment variable of the same name override the paper's value).
TRAIN_SETTINGS = {
    "BATCH": "train_batch_size", "GRAD_ACC": "grad_acc", "SEQ_LEN": "seq_len", "LR": "lr",
    "WEIGHT_DECAY": "weight_decay", "ADAM_BETA2": "adam_beta2", "SCHEDULER": "scheduler",
    "WARMUP": "warmup_step", "EPOCHS": "max_epoch", "CLIP": "clip", "LORA_DIM": "lora_dim",
    "LORA_ALPHA": "lora_alpha", "LORA_DROPOUT": "lora_dropout", "LORA_TARGETS": "lora_targets",
    "LABEL_SMOOTH": "label_smooth", "SEED": "random_seed",
}
BEAM_SETTINGS = {
    "BEAM": "beam", "LENGTH_PENALTY": "length_penalty", "NO_REPEAT_NGRAM": "no_repeat_ngram_size",
    "REPETITION_PENALTY": "repetition_penalty", "EOS_IDS": "eos_token_id", "EVAL_LEN": "eval_len",
    "BEAM_SEQ_LEN": "seq_len",
}


@dataclass(frozen=True)
class Setting:
    """One setting of the pipeline script: its variable, what it sets, and the paper's value
    as the script uses it (words separated by single spaces, never a line break)."""

    name: str
    sets: str
    value: str


def _word(value: object) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def setting_lines(recipe: Recipe) -> list[Setting]:
    """The recipe as the script's settings: the train and beam flags one by one, then the
    subsets to decode and score, the decode and score flags as the paper ran them, and how the
    checkpoint decoded on test is chosen."""
    scoring = recipe.scoring
    return [
        *(Setting(name, f"nlg train --{field}", _word(getattr(recipe.train, field)))
          for name, field in TRAIN_SETTINGS.items()),
        *(Setting(name, f"nlg beam --{field}", _word(getattr(recipe.beam, field)))
          for name, field in BEAM_SETTINGS.items()),
        Setting("SUBSETS", "nlg decode --filter, one run each", " ".join(scoring.subsets)),
        Setting("DECODE_ARGS", "nlg decode flags", " ".join(scoring.decode_args("all"))),
        Setting("SCORE_ARGS", "nlg score flags", " ".join(scoring.score_args())),
        Setting("SELECT", "nlg select --criterion", recipe.selection.criterion),
        Setting("SELECT_METRIC", "nlg select --metric", recipe.selection.metric),
    ]


def method_settings(recipe: Recipe, method: str, sizes: Mapping[str, object] | None = None) -> list[Setting]:
    """`setting_lines` for a run of `method` of these `sizes` (its size flags, e.g.
    {"adapter_dim": 224}; None or absent: the recipe's): its train settings
    (`Recipe.method_train`, the row of that size), other methods' own flags left out, then
    METHOD=name and the method's size flags (TOP_LAYERS, ADAPTER_DIM, PREFIX_LEN) with their
    values. Beam, decode and score settings are LoRA's. InputError for a size of another method
    or a bad value (the checks `nlg train` makes)."""
    from dataclasses import replace

    from nlg import methods
    from nlg.files import InputError

    found = methods.get(method)  # InputError naming the choices
    given = {k: v for k, v in (sizes or {}).items() if v is not None}
    foreign = [flag for flag in given if flag not in found.flags]
    if foreign:
        owners = {flag: "/".join(m.name for m in methods.flag_owners(flag)) for flag in foreign}
        raise InputError("; ".join(f"--{flag} is a setting of --method {owners[flag]}, not of --method {method}"
                                   for flag in foreign))
    problems = found.check(given)
    if problems:
        raise InputError("; ".join(problems))
    values = recipe.method_sizes(method, given)
    lines = setting_lines(replace(recipe, train=recipe.method_train(method, values)))
    others = {name for name, flag in TRAIN_SETTINGS.items() if flag in methods.all_flags() and flag not in found.flags}
    lines = [s for s in lines if s.name not in others]
    own = [Setting(flag.upper(), f"nlg train --{flag}", _word(value)) for flag, value in values.items()]
    return [*lines, Setting("METHOD", "nlg train --method", method), *own]


def settings(dataset: str, method: str, sizes: Mapping[str, int | None] | None = None) -> dict[str, str]:
    """The pipeline's NAME -> value settings for `method` of these `sizes` on `dataset` (what
    `nlg recipe DATASET --method M --adapter_dim R` prints): the pipeline calls this in-process."""
    from nlg import datasets

    return {s.name: s.value for s in method_settings(datasets.get(dataset).recipe, method, sizes)}


def describe(values: dict[str, str]) -> str:
    """Values per dataset, compactly: the one most share, then the others by name."""
    counts = Counter(values.values())
    common = max(counts, key=counts.get)
    if counts[common] * 2 <= len(values):
        return " | ".join(f"{name}: {value}" for name, value in values.items())
    others = [f"{name}: {value}" for name, value in values.items() if value != common]
    return common + (f" ({'; '.join(others)})" if others else "")


def settings_table(recipes: dict[str, Recipe]) -> str:
    """Every setting with what it sets and its value for each dataset."""
    columns = {name: setting_lines(recipe) for name, recipe in recipes.items()}
    first = next(iter(columns.values()))
    name_width, sets_width = (max(len(getattr(s, key)) for s in first) + 2 for key in ("name", "sets"))
    rows = []
    for index, setting in enumerate(first):
        values = {name: column[index].value for name, column in columns.items()}
        rows.append(f"  {setting.name:<{name_width}}{setting.sets:<{sets_width}}{describe(values)}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """`nlg recipe [NAME]`: NAME=value lines for one dataset, or the table of all."""
    import argparse

    from nlg import datasets

    parser = argparse.ArgumentParser(
        prog="nlg recipe",
        description="The LoRA paper's settings for a dataset (nlg/datasets/NAME.py) as the pipeline "
        "script's NAME=value lines, one per setting; the value is the rest of the line. Without "
        "NAME: every setting, what it sets and its value for each dataset.")
    parser.add_argument("dataset", nargs="?", choices=datasets.names())
    parser.add_argument("--method", default=None,
                        help="a fine-tuning method (nlg.methods: lora, full, top2, adapter-l, "
                             "adapter-h, prefix, prefix-embed): its training settings (Li & Liang's for the baselines), "
                             "METHOD=name and its own flags; without it, LoRA's as before")
    from nlg import methods

    size_flags = list(dict.fromkeys(flag for m in map(methods.get, methods.names()) for flag in m.sizes))
    for flag in size_flags:
        owner = methods.flag_owners(flag)[0]
        parser.add_argument(f"--{flag}", f"--{flag.replace('_', '-')}", dest=flag,
                            type=owner.flag_types.get(flag, int), default=None,
                            help=(owner.flag_help.get(flag, "") + "; picks the recipe row of that size").replace("%", "%%"))
    parser.add_argument("--params", action="store_true",
                        help="print the trainable-parameter table: each method and model size, "
                             "our count beside the paper's, and why they differ where they do")
    args = parser.parse_args(argv)
    if args.params:
        from nlg.methods.counts import count_table

        print(count_table())
    elif args.dataset is None:
        print(settings_table({name: datasets.get(name).recipe for name in datasets.names()}))
    elif args.method is None and all(getattr(args, flag) is None for flag in size_flags):
        print("\n".join(f"{s.name}={s.value}" for s in setting_lines(datasets.get(args.dataset).recipe)))
    else:
        sizes = {flag: getattr(args, flag) for flag in size_flags}
        lines = method_settings(datasets.get(args.dataset).recipe, args.method or methods.DEFAULT, sizes)
        print("\n".join(f"{s.name}={s.value}" for s in lines))
    return 0
