"""`nlg train`'s settings: the TrainConfig dataclass, its command line and its checks.

Flags follow the paper's `gpt2_ft.py` (both `--train_data` and `--train-data` spellings), and
the defaults are its E2E recipe (see nlg.training.trainer). The paper's flags that mean nothing here
(--platform, --local_rank, --fp16, --roll_*, --i_steps, ...) are accepted and ignored with a
warning, so its published command runs unchanged.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from nlg import methods
from nlg.cli import spellings
from nlg.files import InputError
from nlg.training.distributed import TIMEOUT_ENV, default_timeout

# How --resume treats each setting (nlg.training.checkpoints compares them).
RESUME_MAY_DIFFER = ("resume", "allow_changed", "work_dir", "log_interval", "eval_interval",
                     "save_interval", "valid_batch_size", "device", "compile", "dist_timeout")
INPUT_SETTINGS = ("train_data", "valid_data", "init_checkpoint")
# The one list of settings --resume never lets change: the data order, its position in the epoch,
# the method, and each method's own (nlg.methods: Method.fixed_on_resume, e.g. --lora_dim).
RESUME_FIXED = ("train_batch_size", "grad_acc", "seq_len", "random_seed", "group_by_length", "obj",
                "method", *methods.resume_fixed())
COMPILE_MODES = ("auto", "none", "static", "graphs", "inductor")

DESCRIPTION = ("Fine-tuning of GPT-2 (LoRA, full, top layers, adapters: --method) on encoded "
               "(context, completion) pairs: one CPU, one GPU or many.")


@dataclass
class TrainConfig:
    """Every setting of a run; each field is the flag of the same name (see build_parser)."""

    train_data: str
    valid_data: str | None = None
    train_batch_size: int = 8
    valid_batch_size: int = 4
    grad_acc: int = 1
    seq_len: int = 512  # cap on context + completion tokens; longer pairs lose their tail
    model_card: str | None = None  # default: the checkpoint's own shape, else gpt2.md
    init_checkpoint: str | None = None  # None: a randomly initialised model (tests, demos)
    lr: float = 2e-4
    weight_decay: float = 0.01
    correct_bias: bool = True  # Adam bias correction; always on (the paper's recipe sets it)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-6
    scheduler: str = "linear"  # linear | cosine | constant, each after linear warmup
    warmup_step: int = 500
    max_epoch: int | None = None  # default 5 when --max_step is not given either
    max_step: int | None = None
    clip: float = 0.0  # max gradient norm; 0 = off
    # A name of nlg.methods (lora by default); None only with --resume and no --method: the
    # checkpoint's method and settings (nlg.training.trainer.resolve_method)
    method: str | None = methods.DEFAULT
    # The method's own settings object (nlg.methods: LoRASettings, AdapterSettings, ...); None
    # for the method's defaults. With method None: a dict of the method flags given, which
    # resolve_method judges against the checkpoint's method.
    method_settings: Any = None
    label_smooth: float = 0.1
    obj: str = "clm"  # clm: loss on completion tokens; jlm: on every token
    group_by_length: bool = False
    save_interval: int = 1000
    eval_interval: int = 2000
    log_interval: int = 100
    work_dir: str = "trained_models/e2e"
    random_seed: int = 110
    resume: str | None = None  # "latest" or a checkpoint directory
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: str = "auto"  # how steps run: auto | none | static | graphs | inductor (nlg.training.step)
    dist_timeout: float = field(default_factory=default_timeout)
    allow_changed: tuple[str, ...] = ()  # settings --resume may find changed (nlg.training.checkpoints)

    def __post_init__(self) -> None:
        if self.method is not None and self.method_settings is None:
            method = methods.get(self.method)
            self.method_settings = method.settings(dict(method.defaults))

    def method_values(self) -> dict[str, Any]:
        """The method's flags and values (flat, as train_config.json and training_state record them)."""
        if self.method is None:
            return dict(self.method_settings or {})
        return methods.get(self.method).values(self.method_settings)

    def to_json(self) -> dict:
        """Every setting by its flag's name: the method's own flags flat beside the others (the
        form train_config.json and training_state.pt have always had)."""
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "method_settings"}
        plain = {**plain, **self.method_values()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in plain.items()}


# Paper flags that have no meaning here: accepted so its commands run, then ignored.
IGNORED_FLAGS = {
    "platform": "torchrun/torch.distributed environment variables decide the platform",
    "local_rank": "the LOCAL_RANK environment variable is used",
    "rank": "the RANK environment variable is used",
    "world_size": "the WORLD_SIZE environment variable is used",
    "fp16": "GPUs train with bf16 autocast",
    "no_decay_bias": "LoRA parameters have no biases",
    "roll_interval": "rolling LoRA merges are not implemented",
    "roll_lr": "rolling LoRA merges are not implemented",
    "roll_step": "rolling LoRA merges are not implemented",
    "eval_epoch": "validation runs every --eval_interval steps and at every epoch end",
    "i_steps": "only the linear, cosine and constant schedules exist",
    "i_lrs": "only the linear, cosine and constant schedules exist",
}
_SWITCHES = ("fp16", "no_decay_bias")


def build_parser() -> argparse.ArgumentParser:
    """`nlg train`'s flags, in both spellings, defaults from TrainConfig. One flat list of
    `add` calls, in the order --help shows them: longer than 60 lines, but split it would only
    be harder to scan."""
    p = argparse.ArgumentParser(prog="nlg train", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = TrainConfig(train_data="")

    def add(name: str, **kwargs) -> None:
        p.add_argument(*spellings(name), dest=name, **kwargs)

    add("train_data", required=True, help="encoded training pairs ({split}.jsonl from `nlg data`)")
    add("valid_data", default=None, help="encoded validation pairs; no validation without it")
    add("train_batch_size", type=int, default=d.train_batch_size, help="pairs per micro-batch per process")
    add("valid_batch_size", type=int, default=d.valid_batch_size)
    add("grad_acc", type=int, default=d.grad_acc, help="micro-batches per optimiser step")
    add("seq_len", type=int, default=d.seq_len,
        help="max context+completion tokens; longer pairs are cut (and counted); batches are NOT padded to it")
    add("model_card", default=None, choices=["gpt2.tiny", "gpt2.sm", "gpt2.md", "gpt2.lg"],
        help="model shape (default: the checkpoint's own, or gpt2.md without one)")
    add("init_checkpoint", default=None,
        help="pretrained GPT-2: a Hugging Face directory or a bare .bin/.safetensors file "
             "(omit to train a randomly initialised model)")
    add("lr", type=float, default=d.lr)
    add("weight_decay", type=float, default=d.weight_decay, help="decoupled (AdamW) weight decay")
    add("correct_bias", action="store_true", default=True,
        help="Adam bias correction; always on, the flag is accepted for the paper's commands")
    add("adam_beta1", type=float, default=d.adam_beta1)
    add("adam_beta2", type=float, default=d.adam_beta2)
    p.add_argument("--adam_epislon", "--adam-epislon", "--adam_epsilon", "--adam-epsilon",
                   dest="adam_epsilon", type=float, default=d.adam_epsilon,
                   help="Adam epsilon (the paper spells it --adam_epislon)")
    add("scheduler", default=d.scheduler, choices=["linear", "cosine", "constant"],
        help="learning-rate schedule after the linear warmup")
    add("warmup_step", type=int, default=d.warmup_step)
    add("max_epoch", type=int, default=None, help="epochs (default 5 unless --max_step is given)")
    add("max_step", type=int, default=None,
        help="optimiser steps; also the schedule's length (default: max_epoch × steps per epoch)")
    add("clip", type=float, default=d.clip, help="max gradient norm, 0 = no clipping")
    add("method", default=None,
        help="(default lora; with --resume, the checkpoint's) fine-tuning method: "
             f"{', '.join(f'{m.name} ({m.summary})' for m in map(methods.get, methods.names()))}")
    p.add_argument(*spellings("full_finetune"), dest="full_finetune", action="store_true",
                   help="the same as --method full: checkpoints are then whole models "
                        "(Hugging Face directories, usable as --init_checkpoint)")
    for flag, owner in methods.all_flags().items():  # each method's own flags, its help and type
        method = methods.get(owner)
        add(flag, type=method.flag_types.get(flag, int), default=None, help=method.flag_help.get(flag))
    add("label_smooth", type=float, default=d.label_smooth)
    add("obj", default=d.obj, choices=["clm", "jlm"],
        help="clm: loss on completion tokens only; jlm: on every token (the paper's joint LM)")
    add("group_by_length", action="store_true", help="batch pairs of similar length (less padding)")
    add("save_interval", type=int, default=d.save_interval, help="checkpoint every N steps (and at the end)")
    add("eval_interval", type=int, default=d.eval_interval, help="validate every N steps (and each epoch end)")
    add("log_interval", type=int, default=d.log_interval, help="log training loss every N steps")
    add("work_dir", default=d.work_dir, help="checkpoints, metrics.jsonl and train_config.json go here")
    add("random_seed", type=int, default=d.random_seed)
    add("resume", default=None, help="'latest' (the newest checkpoint in --work_dir, if any) or a checkpoint directory")
    add("device", default=d.device, help="auto (cuda if available), cpu, cuda or cuda:N")
    add("compile", default=d.compile, choices=COMPILE_MODES,
        help="how each step runs: none (eager, each batch padded to its longest pair); static "
             "(eager on bucketed static shapes, what graphs captures); graphs (static, each "
             "micro-batch shape captured once as a CUDA graph and replayed; GPU only); inductor "
             "(static, forward and backward compiled by torch.compile). auto: none on CPU, and "
             "on GPU none until bench/gpu_check.sh has verified graphs there (README, On a GPU)")
    add("dist_timeout", type=float, default=d.dist_timeout,
        help=f"seconds a collective may wait for a dead or stuck rank (env {TIMEOUT_ENV})")
    add("allow_changed", default="",
        help="with --resume: comma-separated settings that may differ from the checkpoint's "
             "(e.g. lr,max_step); each takes effect and is logged. Without it any other "
             "setting, base model or data file than the checkpoint's is refused (README, Train)")
    _add_ignored_flags(p)
    return p


def _add_ignored_flags(parser: argparse.ArgumentParser) -> None:
    ignored = parser.add_argument_group("paper flags accepted and ignored")
    for name, why in IGNORED_FLAGS.items():
        if name in _SWITCHES:
            ignored.add_argument(*spellings(name), dest=name, action="store_const", const=True,
                                 default=None, help=why)
        else:
            ignored.add_argument(*spellings(name), dest=name, default=None, help=why)


class _Refused(Exception):
    """argparse's error, raised instead of exiting (train_problems collects it)."""


def _parse(argv: list[str] | None, warn: bool) -> tuple[TrainConfig | None, list[str], argparse.ArgumentParser]:
    """(the config or None, every problem found, the parser): parse_args and train_problems alike."""
    parser = build_parser()

    def refuse(message: str) -> None:
        raise _Refused(message)

    parser.error = refuse  # type: ignore[method-assign]
    try:
        args = vars(parser.parse_args(argv))
    except _Refused as error:
        return None, [str(error)], parser
    for name, why in IGNORED_FLAGS.items():
        # torch.distributed.launch adds --local_rank itself: not worth a warning.
        if args.pop(name) is not None and warn and name != "local_rank" and int(os.environ.get("RANK", 0)) == 0:
            print(f"warning: --{name} is ignored: {why}", file=sys.stderr)
    args["allow_changed"] = tuple(t.strip() for t in args["allow_changed"].split(",") if t.strip())
    given = {flag: args.pop(flag) for flag in methods.all_flags()}
    given = {flag: value for flag, value in given.items() if value is not None}
    problems = method_problems(args, given)
    if problems:
        return None, problems, parser
    config = TrainConfig(**args)
    problems = check_config(config)
    return (None if problems else config), problems, parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The run's settings from the command line; a bad value exits with one line (exit 2), an
    ignored paper flag warns (on rank 0)."""
    config, problems, parser = _parse(argv, warn=True)
    if problems:  # one line, as every other failure (argparse's error() would add the long usage)
        parser.exit(2, f"{parser.prog}: error: {'; '.join(problems)}\n")
    return config


def train_problems(argv: list[str]) -> list[str]:
    """The one-line problems `nlg train ARGV` would stop on before any work (the checks
    parse_args makes, without exiting or warning); empty when it would start. The pipeline
    validates its train command with it."""
    return _parse(list(argv), warn=False)[1]


def method_problems(args: dict, given: dict[str, Any]) -> list[str]:
    """An unknown --method, --full_finetune beside another --method, a flag of another method
    (e.g. --adapter_dim with lora), or a bad value of the method's own; sets args["method"] and
    args["method_settings"] (the method's settings object) in place."""
    full = args.pop("full_finetune", False)
    if full:
        whole = next(m.name for m in map(methods.get, methods.names()) if not m.needs_base)
        if args["method"] not in (None, whole):
            return [f"--full_finetune is --method {whole}; it conflicts with --method {args['method']}: give one"]
        args["method"] = whole
    if args["method"] is None and args.get("resume") is not None:
        # continue the checkpoint's method (nlg.training.trainer.resolve_method judges `given` against it)
        problems = [p for flag, value in given.items() for m in methods.flag_owners(flag)[:1]
                    for p in m.check({flag: value})]
        args["method_settings"] = dict(given)
        return problems
    if args["method"] is None:
        args["method"] = methods.DEFAULT  # lora, the default
    try:
        method = methods.get(args["method"])
    except InputError as error:
        return [str(error)]
    problems = foreign_problems(method.name, list(given))
    if problems:
        return problems
    values = {**method.defaults, **given}
    problems = method.check(values)
    if not problems:
        args["method_settings"] = method.settings(values)
    return problems


def foreign_problems(name: str, given: list[str]) -> list[str]:
    """Each flag of `given` that is not method `name`'s, as a phrase."""
    owners = methods.all_flags()
    return [f"--{flag} is a setting of --method {owners[flag]}, not of --method {name}"
            for flag in methods.foreign_flags(name, given)]


def check_config(c: TrainConfig) -> list[str]:
    """What is wrong with a config, one phrase per problem (empty when nothing is); the method's
    own settings are its own to check (nlg.methods: Method.check)."""
    problems = [f"--{f.name} {getattr(c, f.name)}: not a finite number" for f in fields(c)
                if isinstance(getattr(c, f.name), float) and not math.isfinite(getattr(c, f.name))]
    if problems:  # NaN passes every comparison below (and inf most): nothing else is worth checking
        return problems
    for name in ("train_batch_size", "valid_batch_size", "grad_acc", "save_interval",
                 "eval_interval", "log_interval"):
        if getattr(c, name) is not None and getattr(c, name) < 1:
            problems.append(f"--{name} must be >= 1")
    if c.seq_len < 2:
        problems.append("--seq_len must be >= 2")
    for name in ("max_step", "max_epoch"):
        if getattr(c, name) is not None and getattr(c, name) < 1:
            problems.append(f"--{name} must be >= 1")
    if not 0 <= c.label_smooth < 1:
        problems.append("--label_smooth must be in [0, 1)")
    if c.lr <= 0:
        problems.append(f"--lr {c.lr:g}: must be > 0 (a run at learning rate 0 cannot learn)")
    if c.warmup_step < 0 or c.weight_decay < 0 or c.clip < 0:
        problems.append("--warmup_step, --weight_decay and --clip must be >= 0")
    problems += [f"--{name} must be in [0, 1)" for name in ("adam_beta1", "adam_beta2")
                 if not 0 <= getattr(c, name) < 1]
    if c.adam_epsilon < 0:
        problems.append("--adam_epsilon must be >= 0")
    if c.dist_timeout <= 0:
        problems.append("--dist_timeout must be > 0")
    problems += check_allowed(c.allow_changed, setting_names())
    return problems


def setting_names() -> list[str]:
    """Every setting of nlg train by its flag's name: TrainConfig's fields and every method's flags."""
    return [f.name for f in fields(TrainConfig) if f.name != "method_settings"] + list(methods.all_flags())


def check_allowed(names: tuple[str, ...], field_names: list[str]) -> list[str]:
    """What is wrong with --allow_changed (one phrase per problem, empty when nothing is)."""
    problems = []
    for name in names:
        if name not in field_names:
            problems.append(f"--allow_changed {name}: not a setting of nlg train")
        elif name in RESUME_FIXED:
            problems.append(f"--allow_changed {name}: cannot change on --resume (the checkpoint's data "
                            "order, its position in the epoch or its weights' shape depend on it)")
    return problems
