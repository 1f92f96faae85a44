"""The usage text of the pipeline (`nlg reproduce --help`, `scripts/reproduce.sh --help`): every
flag and setting, with the recipe's table, each method's settings and the demo's method values
filled in from the registries (so a new method or recipe setting shows without an edit here)."""

from __future__ import annotations

USAGE = """\
usage: scripts/reproduce.sh DATASET [--demo] [--method NAME] [--seeds N] [--from STAGE] [--help]
                            [--sweep SWEEP] [--points] [--point K] [--gather]
                                                                   DATASET: e2e | webnlg | dart

Reproduce one of the LoRA paper's GPT-2 tables: encode the dataset, fine-tune GPT-2 with LoRA
(torchrun), choose the checkpoint on validation, beam-search every distinct test context once,
decode the predictions into the scorer's files (WebNLG: once per category set, all / seen /
unseen, from the same predictions) and score each, ending with results.md, results.json and
run.json beside the paper's numbers for GPT-2 M and L (LoRA's rows; a run of another method
is labelled by method and size beside every row of the paper's table, as `nlg results --runs`
prints it). The paper's settings come from the
dataset's module (`nlg recipe DATASET`); stages whose outputs exist are skipped, so re-running
resumes, and interrupted training continues from its latest checkpoint.

Each stage's marker (WORK_DIR/.done-STAGE) records the settings its output was made from (its
own and every earlier stage's, after overrides) and the size and SHA-256 of the files it read.
A finished stage is never reused with other settings: before any work the run stops (exit 2)
with one line naming each changed setting, its recorded and its current value, and the stage
to redo from; `--from STAGE` redoes that stage and every later one, or use another WORK_DIR.
Every numeric setting is checked first (a whole number, a number, its range): a mistyped one
stops the run with one line naming it, exit 2, nothing run.

options:
  --demo         CPU demo: a random gpt2.tiny is first trained fully on the training split (a
                 stand-in for GPT-2's pre-training: LoRA cannot teach a random frozen model),
                 then LoRA-tuned on it, beam-searched on every test context and scored beside
                 the same card untrained: 1,000 pre-training and 300 LoRA steps of 8 pairs, then
                 beam 5 over 48 tokens. webnlg trains on its 2017 train split (18,025 pairs)
                 and picks the better of its checkpoints 150 and 300 by validation loss: about
                 15 minutes on 2 cores for its 1,862 test contexts. e2e trains on its valid split
                 (4,672 pairs) and dart on its dev split (6,980 pairs; their train splits are not
                 on the development machines), so neither validates and both decode their last
                 checkpoint: e2e about 13 minutes (630 test contexts; per-step times measured
                 on 2 cores, README; 44 minutes when the machine was 4 times overloaded), dart
                 about 21 (4,159).
                 Demo settings below apply where the environment sets none.
  --method NAME  fine-tuning method (METHOD; default lora), one of METHOD_NAMES
                 its settings come from the dataset's recipe (`nlg recipe DATASET --method
                 NAME`), `nlg train` gets --method NAME and each of the method's own flags that
                 has a value, from its setting: the flag upper-cased (--adapter_dim from
                 ADAPTER_DIM, --vera_rank from VERA_RANK); the run directory gets -NAME
                 appended (runs/DATASET-<card>-NAME) unless it is lora
  --seeds N      run the whole chain once per seed, SEED, SEED+1, ... (or SEEDS="110 111 112"),
                 each in WORK_DIR/seed-SEED/; data and the demo's pre-training are shared
                 (done once, in WORK_DIR), finished seeds are skipped, an interrupted one
                 resumes; then one table over the seeds (`nlg results DATASET --runs ...`) in
                 WORK_DIR/results.md and results.json. Without it a single run uses WORK_DIR
                 itself, with SEED.
  --from STAGE   redo STAGE (data, pretrain, train, select, beam, untrained, decode, score) and
                 every later one, discarding their outputs (in every seed's directory; pretrain
                 and untrained are demo stages; --from select keeps the candidates' validation
                 searches that fit the settings); the stages before it must fit the settings
  --sweep SWEEP  SWEEP is NAME=V1,V2,...: run the chain once per value (and per seed) of a
                 numeric setting of training or decoding (LR, WEIGHT_DECAY, the method's own: LORA_DIM, ADAPTER_DIM, ...,
                 BEAM, LENGTH_PENALTY, ...), each in WORK_DIR/sweep/POINT/seed-SEED/ (POINT:
                 lora_dim-4; several --sweep make a grid, lora_dim-4_lr-2e-4); data and the
                 demo's pre-training are shared, decoding-only points share their training
                 point's checkpoint; then WORK_DIR/sweep/results.md, results.json, results.png:
                 a row per point, the point best on validation chosen (docs/reproducing.md)
  --points       with --sweep: print one command per point and seed (--point K), run nothing
  --point K      with --sweep: run only point-and-seed K (0-based, as --points lists them):
                 a SLURM array task, or one per GPU with CUDA_VISIBLE_DEVICES
  --gather       with --sweep: make the sweep's table from the finished points; a point or seed
                 not finished is named (with its --point command), exit 1
  --help         this text

settings (environment variables):
  MODEL_CARD=gpt2.md        gpt2.sm | gpt2.md | gpt2.lg (gpt2.tiny in --demo)
  METHOD=lora               as --method
  the method's settings: each of its `nlg train` flags upper-cased, passed when set (empty: nlg
  train's default; the recipe sets a method's sizes, which pick its recipe row; a size of another
  method is refused, its other settings are not used):
METHOD_SETTINGS
  SEEDS=                    seeds to run, space-separated (as --seeds); empty: one run, SEED
  INIT_CHECKPOINT=          pretrained GPT-2 (HF directory or .bin); default
                            PRETRAINED_DIR/<card>, downloaded from huggingface.co when missing
                            (--demo: the pretrain stage's last checkpoint; given, no pretrain)
  PRETRAINED_DIR=pretrained where downloaded checkpoints go
  WORK_DIR=runs/DATASET-<card>   run directory (runs/DATASET-demo in --demo; -METHOD appended
                            for another method than lora)
  DATA_DIR=data/DATASET     encoded dataset
  E2E_RAW_DIR= WEBNLG_RAW_DIR= DART_RAW_DIR=
                            the dataset's raw files (`nlg data DATASET --help`); when unset,
                            the paper's files are downloaded into DATA_DIR/raw
  NLG_VOCAB_DIR=            GPT-2 encoder.json + vocab.bpe (else tiktoken's download)
  NPROC=<#GPUs or 1>        processes for torchrun
  TRAIN_SPLIT=train         split to train on
  VALID_SPLIT=valid         split to validate on while training (empty: no validation)
  MAX_STEP=0                stop training after N steps (0: EPOCHS decide)
  SAVE_INTERVAL=1000        a checkpoint every N steps (and at the end): the candidates of SELECT
  EVAL_INTERVAL=2000        validation every N steps (and each epoch end); SAVE_INTERVAL with
                            SELECT=valid_loss, which needs a validation loss at every checkpoint
  SELECT_SPLIT=VALID_SPLIT  split SELECT=valid_metric beam-searches (never the test split)
  VALID_LIMIT=0             SELECT=valid_metric searches only N distinct contexts of it (0 = all)
  BEAM_BATCH=16             contexts per beam-search batch
  TEST_LIMIT=0              decode only N distinct test contexts, evenly spread over the test
                            set, every reference of them kept (0 = all)
  NLG="python -m nlg"       how to call nlg (the script runs `$NLG reproduce`, the stages `$NLG STAGE`)

  the paper's recipe, from nlg/datasets/DATASET.py: each NAME=value of `nlg recipe DATASET`,
  unless the environment (or --demo) sets NAME; SUBSETS, DECODE_ARGS and SCORE_ARGS are
  space-separated (SCORE_ARGS= scores E2E with mteval-v13a instead of the paper's -p). SELECT
  chooses the checkpoint decoded on test, on validation only (`nlg select`): last (the newest),
  valid_loss (the lowest validation loss `nlg train` logged at a checkpoint; without a
  VALID_SPLIT the recipe's valid_loss becomes last) or valid_metric (each checkpoint
  beam-searches SELECT_SPLIT with the test's beam settings, decoded and scored with SCORE_ARGS;
  the best SELECT_METRIC wins, TER the lowest; finished searches are kept in select/):
RECIPE_TABLE

  --demo (where unset): MODEL_CARD=gpt2.tiny TRAIN_SPLIT=valid (webnlg: train)
    the method scaled to a tiny model (its demo_values): DEMO_METHODS
    LR=2e-3 LABEL_SMOOTH=0.0 BATCH=8 WARMUP=50 EPOCHS=1 MAX_STEP=300 SAVE_INTERVAL=200
    EVAL_INTERVAL=SAVE_INTERVAL
    BEAM=5 EVAL_LEN=48 BEAM_BATCH=64
    pre-training: PRETRAIN_LR=3e-3 PRETRAIN_STEPS=1000 PRETRAIN_EPOCHS=3 (webnlg: 1)
    PRETRAIN_SEED=SEED (shared by every seed)
    e2e: SEQ_LEN=128 VALID_SPLIT= (so SELECT=last); dart: VALID_SPLIT=
    webnlg: SAVE_INTERVAL=150 (SELECT=valid_loss over steps 150 and 300)

outputs (in WORK_DIR, or each WORK_DIR/seed-SEED): METHOD/ (lora/, adapter-l/, ...: checkpoint-*/ with what trained + training
  state, metrics.jsonl, loss.png), selection.json (and select/checkpoint-N/ with valid_metric),
  pretrain/ (--demo, shared) and untrained/ (--demo), predict.jsonl, per subset (SUFFIX: none
  for all, _seen, _unseen) DATASET_refSUFFIX (E2E: e2e_ref.txt; WebNLG, DART: a folder of
  reference0..5), DATASET_predSUFFIX.txt and scoresSUFFIX.json, results.md, results.json and
  run.json (the run record: dataset, card, method, seed, trainable parameters, settings, the
  decoded checkpoint, the selection and every candidate's value, each subset's files)

"""


def method_settings() -> str:
    """Each method's settings (its flags upper-cased), one line per method, wrapped."""
    import textwrap

    from nlg import methods

    lines = []
    for method in map(methods.get, methods.names()):
        names = " ".join(f"{flag.upper()}=" for flag in method.flags) or "(none)"
        lines += textwrap.wrap(names, 98, initial_indent=f"    {method.name + ':':<14}", subsequent_indent=" " * 18)
    return "\n".join(lines)


def demo_methods() -> str:
    from nlg import methods
    from nlg.pipeline.settings import word

    found = [f"{method.name}: " + " ".join(f"{flag.upper()}={word(value)}" for flag, value in method.demo_values.items())
             for method in map(methods.get, methods.names()) if method.demo_values]
    return "; ".join(found) + " (other methods: their recipe's)"


def usage() -> str:
    """The usage text, filled in."""
    from nlg import datasets, methods
    from nlg.datasets.recipe import settings_table

    table = settings_table({name: datasets.get(name).recipe for name in datasets.names()})
    return (USAGE.replace("RECIPE_TABLE", table).replace("METHOD_SETTINGS", method_settings())
            .replace("DEMO_METHODS", demo_methods()).replace("METHOD_NAMES", _wrapped(", ".join(methods.names()))))


def _wrapped(names: str) -> str:
    import textwrap

    return "\n                 ".join(textwrap.wrap(names + ":", 80, initial_indent=" " * 46)).lstrip()
