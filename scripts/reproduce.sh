#!/usr/bin/env bash
# The LoRA paper's GPT-2 experiments on E2E, WebNLG 2017 and DART, end to end:
# data -> train -> beam -> decode -> score. Run `scripts/reproduce.sh --help` for every setting.
set -euo pipefail

STAGES=(data pretrain train select beam untrained decode score)

usage() {
  cat <<'EOF'
usage: scripts/reproduce.sh DATASET [--demo] [--method NAME] [--seeds N] [--from STAGE] [--help]
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
  --method NAME  fine-tuning method (METHOD; default lora): its settings come from
                 `nlg recipe DATASET --method NAME`, `nlg train` gets --method NAME (and
                 --adapter_dim, --top_layers, --prefix_len when ADAPTER_DIM, TOP_LAYERS, PREFIX_LEN are set); the run
                 directory gets -NAME appended (runs/DATASET-<card>-NAME) unless it is lora
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
  --help         this text

settings (environment variables):
  MODEL_CARD=gpt2.md        gpt2.sm | gpt2.md | gpt2.lg (gpt2.tiny in --demo)
  METHOD=lora               as --method
  ADAPTER_DIM= TOP_LAYERS= PREFIX_LEN=  the method's sizes, passed to nlg train when set (not for lora)
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
  NLG="python -m nlg"       how to call nlg

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
    LoRA scaled to a tiny model: LORA_DIM=8 LORA_ALPHA=16 LORA_TARGETS=q,v,o,fc LR=2e-3
    LABEL_SMOOTH=0.0 BATCH=8 WARMUP=50 EPOCHS=1 MAX_STEP=300 SAVE_INTERVAL=200
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
EOF
}

die() { printf 'reproduce.sh: %s\n' "$*" >&2; exit 1; }
refuse() { printf 'reproduce.sh: %s\n' "$*" >&2; exit 2; }  # bad input: nothing was run
log() { printf '\n== %s  [%dm%02ds]\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)) >&2; }

DATASET=""
DEMO=0
FROM=""
HELP=0
SEED_COUNT=""
method_flag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --demo) DEMO=1 ;;
    --from) FROM="${2:?--from needs a stage}"; shift ;;
    --from=*) FROM="${1#--from=}" ;;
    --seeds) SEED_COUNT="${2:?--seeds needs a number}"; shift ;;
    --seeds=*) SEED_COUNT="${1#--seeds=}" ;;
    --method) method_flag="${2:?--method needs a name}"; shift ;;
    --method=*) method_flag="${1#--method=}" ;;
    -h|--help) HELP=1 ;;
    -*) refuse "unknown argument $1 (see --help)" ;;
    *) [ -z "$DATASET" ] || refuse "one DATASET only (see --help)"
       DATASET=$1 ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
NLG=${NLG:-python -m nlg}
if [ "$HELP" = 1 ]; then
  table=$($NLG recipe 2>/dev/null) || table="  (run \`nlg recipe DATASET\` once nlg is installed)"
  usage | awk -v table="$table" '$0 == "RECIPE_TABLE" { print table; next } { print }'
  exit 0
fi
case "$DATASET" in
  e2e|webnlg|dart) ;;
  "") refuse "which dataset? e2e, webnlg or dart (see --help)" ;;
  *) refuse "unknown dataset '$DATASET' (one of: e2e, webnlg, dart)" ;;
esac
if [ -n "$FROM" ]; then
  case " ${STAGES[*]} " in
    *" $FROM "*) ;;
    *) refuse "unknown stage '$FROM' (one of: ${STAGES[*]})" ;;
  esac
fi
if [ -n "$method_flag" ] && [ -n "${METHOD:-}" ] && [ "$METHOD" != "$method_flag" ]; then
  refuse "--method $method_flag and METHOD=$METHOD disagree; give one"
fi
METHOD=${method_flag:-${METHOD:-lora}}
[[ $METHOD =~ ^[a-z0-9][a-z0-9-]*$ ]] || refuse "METHOD='$METHOD' is not a method name (e.g. lora, full, adapter-l)"
if [ -n "$SEED_COUNT" ]; then
  [[ $SEED_COUNT =~ ^[0-9]+$ ]] && ((10#$SEED_COUNT > 0)) || refuse "--seeds '$SEED_COUNT' is not a whole number >= 1"
  [ -z "${SEEDS:-}" ] || refuse "give --seeds $SEED_COUNT or SEEDS=\"$SEEDS\", not both"
fi

# ---- settings: the environment, then the demo's, then the paper's recipe ---------------------
select_given=${SELECT:+set}
if [ "$DEMO" = 1 ]; then
  MODEL_CARD=${MODEL_CARD:-gpt2.tiny}
  WORK_DIR=${WORK_DIR:-runs/$DATASET-demo$([ "$METHOD" = lora ] || printf -- '-%s' "$METHOD")}
  # The demo's base model is pre-trained here, so its LoRA recipe is scaled to a tiny model.
  LORA_DIM=${LORA_DIM:-8} LORA_ALPHA=${LORA_ALPHA:-16} LORA_TARGETS=${LORA_TARGETS:-q,v,o,fc}
  LR=${LR:-2e-3} LABEL_SMOOTH=${LABEL_SMOOTH:-0.0} WARMUP=${WARMUP:-50}
  PRETRAIN_LR=${PRETRAIN_LR:-3e-3}
  # On 2 cores the tiny model's cost is its 50,257-word head: 0.35 s a step of 8 WebNLG pairs
  # (0.45 s of 8 E2E pairs), and beam 10 decodes about 7 test contexts/s, beam 5 about 14. These
  # settings fit training, both beam searches and scoring in ~15 min for WebNLG and E2E;
  # 1,000 steps of 8 pairs learn to copy names from the triples (validation loss 3.2), 500 of 16
  # do not yet (4.2).
  BATCH=${BATCH:-8} PRETRAIN_STEPS=${PRETRAIN_STEPS:-1000}
  EPOCHS=${EPOCHS:-1} MAX_STEP=${MAX_STEP:-300}
  BEAM=${BEAM:-5} EVAL_LEN=${EVAL_LEN:-48} BEAM_BATCH=${BEAM_BATCH:-64}
  case "$DATASET" in
    # E2E and DART train on their valid split (no training split here): no validation on it,
    # and the last checkpoint is decoded.
    e2e) SEQ_LEN=${SEQ_LEN:-128} VALID_SPLIT=${VALID_SPLIT-} TRAIN_SPLIT=${TRAIN_SPLIT:-valid} ;;
    dart) VALID_SPLIT=${VALID_SPLIT-} TRAIN_SPLIT=${TRAIN_SPLIT:-valid} ;;
    # WebNLG validates on its dev split at both checkpoints (150, 300) and decodes the better.
    webnlg) TRAIN_SPLIT=${TRAIN_SPLIT:-train} SAVE_INTERVAL=${SAVE_INTERVAL:-150} ;;
  esac
  # 1,000 pre-training steps of 8 pairs are 3 epochs of E2E's valid split or DART's dev split,
  # 0.44 of WebNLG's train split.
  [ "$DATASET" = webnlg ] && PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-1}
  PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-3}
  # validation (where there is any) at every checkpoint, as SELECT=valid_loss needs
  SAVE_INTERVAL=${SAVE_INTERVAL:-200}
  EVAL_INTERVAL=${EVAL_INTERVAL:-$SAVE_INTERVAL}
fi
# One NAME=value line per setting of the paper's recipe; a variable already set keeps its value.
python -m nlg.pipeline settings METHOD="$METHOD" ADAPTER_DIM="${ADAPTER_DIM:-}" TOP_LAYERS="${TOP_LAYERS:-}" \
  PREFIX_LEN="${PREFIX_LEN:-}" || exit 2
# The method's size picks its recipe row (Li & Liang's 0.1% or 3% adapters, a prefix length, ...).
METHOD_ARGS=(--method "$METHOD")
[ -z "${ADAPTER_DIM:-}" ] || METHOD_ARGS+=(--adapter_dim "$ADAPTER_DIM")
[ -z "${TOP_LAYERS:-}" ] || METHOD_ARGS+=(--top_layers "$TOP_LAYERS")
[ -z "${PREFIX_LEN:-}" ] || METHOD_ARGS+=(--prefix_len "$PREFIX_LEN")
recipe=$($NLG recipe "$DATASET" "${METHOD_ARGS[@]}") \
  || die "could not read the recipe: \`$NLG recipe $DATASET ${METHOD_ARGS[*]}\` failed"
while IFS= read -r line; do
  name=${line%%=*}
  [ -n "${!name+set}" ] || printf -v "$name" '%s' "${line#*=}"
done <<<"$recipe"
read -ra DECODE_FLAGS <<<"$DECODE_ARGS"
read -ra SCORE_FLAGS <<<"$SCORE_ARGS"

MODEL_CARD=${MODEL_CARD:-gpt2.md}
WORK_DIR=${WORK_DIR:-runs/$DATASET-$MODEL_CARD$([ "$METHOD" = lora ] || printf -- '-%s' "$METHOD")}
DATA_DIR=${DATA_DIR:-data/$DATASET}
PRETRAINED_DIR=${PRETRAINED_DIR:-pretrained}
TRAIN_SPLIT=${TRAIN_SPLIT:-train} VALID_SPLIT=${VALID_SPLIT-valid}
ADAPTER_DIM=${ADAPTER_DIM:-} TOP_LAYERS=${TOP_LAYERS:-} PREFIX_LEN=${PREFIX_LEN:-}
# The recipe's SELECT needs a validation split; without one the last checkpoint is decoded.
if [ -z "$select_given" ] && [ -z "$VALID_SPLIT" ] && [ "$SELECT" = valid_loss ]; then SELECT=last; fi
SELECT_SPLIT=${SELECT_SPLIT-$VALID_SPLIT} VALID_LIMIT=${VALID_LIMIT:-0}
MAX_STEP=${MAX_STEP:-0} SAVE_INTERVAL=${SAVE_INTERVAL:-1000}
if [ "$SELECT" = valid_loss ]; then EVAL_INTERVAL=${EVAL_INTERVAL:-$SAVE_INTERVAL}; fi
EVAL_INTERVAL=${EVAL_INTERVAL:-2000}
BEAM_BATCH=${BEAM_BATCH:-16} TEST_LIMIT=${TEST_LIMIT:-0}
PRETRAIN_LR=${PRETRAIN_LR:-3e-3} PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-1} PRETRAIN_STEPS=${PRETRAIN_STEPS:-0}
PRETRAIN_SEED=${PRETRAIN_SEED:-$SEED}
RAW_ENV=$(printf '%s_RAW_DIR' "$DATASET" | tr '[:lower:]' '[:upper:]')  # E2E_RAW_DIR, ...
raw_dir=${!RAW_ENV:-}
RAW_DIR=${raw_dir:-download into $DATA_DIR/raw}
if [ -z "${NPROC:-}" ]; then
  NPROC=$(python -m nlg.pipeline nproc)
fi
VOCAB_ARGS=()
[ -n "${NLG_VOCAB_DIR:-}" ] && VOCAB_ARGS=(--vocab "$NLG_VOCAB_DIR")
init_given=${INIT_CHECKPOINT:-}
PRETRAIN=0  # the demo's pretrain stage runs where no INIT_CHECKPOINT is given
[ "$DEMO" = 1 ] && [ -z "$init_given" ] && PRETRAIN=1
# The base model the method trains on: given, downloaded into PRETRAINED_DIR, or (demo) the
# pretrain stage's. Its files' identity goes into every stage record that uses it (BASE=).
BASE_PATH=${init_given:-$PRETRAINED_DIR/$MODEL_CARD}
SEEDS=${SEEDS:-}

# ---- every numeric setting checked before any work: one line naming it, exit 2 ---------------
NUMERIC=(MAX_STEP TEST_LIMIT VALID_LIMIT WARMUP SEED PRETRAIN_SEED NO_REPEAT_NGRAM PRETRAIN_STEPS
         BATCH GRAD_ACC SEQ_LEN EPOCHS LORA_DIM SAVE_INTERVAL EVAL_INTERVAL BEAM_BATCH BEAM EVAL_LEN
         BEAM_SEQ_LEN PRETRAIN_EPOCHS NPROC ADAPTER_DIM TOP_LAYERS PREFIX_LEN SEEDS EOS_IDS LR PRETRAIN_LR
         LORA_ALPHA REPETITION_PENALTY WEIGHT_DECAY CLIP LENGTH_PENALTY ADAM_BETA2 LORA_DROPOUT
         LABEL_SMOOTH)
pairs=()
for name in "${NUMERIC[@]}"; do
  [[ $METHOD != lora && $name == LORA_* ]] && continue  # LoRA's shape means nothing to other methods
  pairs+=("$name=${!name-}")
done
python -m nlg.pipeline check "${pairs[@]}" || exit 2
if [ -n "$SEED_COUNT" ]; then
  SEEDS=$(seq "$((10#$SEED))" $((10#$SEED + 10#$SEED_COUNT - 1)) | tr '\n' ' ')
fi
if [ -n "$SEEDS" ]; then
  repeated=$(printf '%s\n' $SEEDS | sed 's/^0*\([0-9]\)/\1/' | sort | uniq -d | tr '\n' ' ')
  [ -z "$repeated" ] || refuse "SEEDS=\"$SEEDS\" names seed(s) ${repeated% } more than once"
fi
case "$SELECT" in
  last|valid_loss|valid_metric) ;;
  *) refuse "SELECT=$SELECT is not one of: last, valid_loss, valid_metric" ;;
esac
if [ "$SELECT" = valid_loss ]; then
  [ -n "$VALID_SPLIT" ] || refuse "SELECT=valid_loss needs a validation split, and VALID_SPLIT is empty (SELECT=last, or set VALID_SPLIT)"
  ((10#$SAVE_INTERVAL % 10#$EVAL_INTERVAL == 0)) || refuse "SELECT=valid_loss needs a validation loss at every checkpoint: EVAL_INTERVAL=$EVAL_INTERVAL must divide SAVE_INTERVAL=$SAVE_INTERVAL"
fi
if [ "$SELECT" = valid_metric ] && [ -z "$SELECT_SPLIT" ]; then
  refuse "SELECT=valid_metric needs a split to beam-search, and SELECT_SPLIT (default VALID_SPLIT) is empty"
fi
# the test split never reaches training, validation or selection (nlg.pipeline.settings)
python -m nlg.pipeline settings TRAIN_SPLIT="$TRAIN_SPLIT" VALID_SPLIT="$VALID_SPLIT" SELECT="$SELECT" \
  SELECT_SPLIT="$SELECT_SPLIT" || exit 2

# ---- run directories: WORK_DIR, or WORK_DIR/seed-SEED for each of SEEDS -----------------------
# Data and the demo's pre-training (the stand-in for GPT-2) are shared: their markers live in
# WORK_DIR. Every other stage runs once per run directory.
RUN_DIRS=()
if [ -n "$SEEDS" ]; then
  for seed in $SEEDS; do RUN_DIRS+=("$WORK_DIR/seed-$((10#$seed))"); done
else
  RUN_DIRS=("$WORK_DIR")
fi
seed_of() {  # the seed of a run directory
  if [ -n "$SEEDS" ]; then local name=${1##*/seed-}; printf '%s' "$((10#$name))"; else printf '%s' "$SEED"; fi
}
is_shared() { [ "$1" = data ] || [ "$1" = pretrain ]; }
stage_dir() { if is_shared "$1"; then printf '%s' "$WORK_DIR"; else printf '%s' "$2"; fi; }

# ---- the settings record: each stage's marker holds what its output was made from -------------
# RUN/.done-STAGE holds NAME=value lines: the settings that shape that stage's output and those
# of the stages before it, and the identity (size, SHA-256) of the files it reads. A finished
# stage whose record differs from the current settings is never reused: the run stops, naming
# each difference, before any work.
identity() {  # a file's size and full SHA-256, or "missing"
  python -m nlg.pipeline identity "$1" | tr -d '\n'
}
base_identity() {  # the identity of a base model's files: each weight file of a directory, or the file
  local file found=""
  if [ "$PRETRAIN" = 1 ]; then printf '(the pretrain stage)'; return; fi
  if [ -d "$BASE_PATH" ]; then
    for file in config.json model.safetensors pytorch_model.bin; do
      [ -f "$BASE_PATH/$file" ] || continue
      found+="$file: $(identity "$BASE_PATH/$file"); "
    done
    printf '%s' "${found:-missing}"
  else
    identity "$BASE_PATH"
  fi
}
BASE_ID=$(base_identity)
BEAM_NAMES=(BEAM LENGTH_PENALTY NO_REPEAT_NGRAM REPETITION_PENALTY EOS_IDS EVAL_LEN BEAM_SEQ_LEN)
stage_names() {  # the settings a stage adds to those of the stages before it
  case "$1" in
    data) echo DATASET DATA_DIR RAW_DIR NLG_VOCAB_DIR ;;
    pretrain) echo MODEL_CARD TRAIN_SPLIT BATCH PRETRAIN_LR PRETRAIN_EPOCHS PRETRAIN_STEPS WARMUP SEQ_LEN \
                   PRETRAIN_SEED SAVE_INTERVAL ;;
    train) echo METHOD MODEL_CARD INIT_CHECKPOINT BASE TRAIN_SPLIT VALID_SPLIT BATCH GRAD_ACC SEQ_LEN LR \
                WEIGHT_DECAY ADAM_BETA2 SCHEDULER WARMUP EPOCHS MAX_STEP CLIP LORA_DIM LORA_ALPHA \
                LORA_DROPOUT LORA_TARGETS ADAPTER_DIM TOP_LAYERS PREFIX_LEN LABEL_SMOOTH SEED SAVE_INTERVAL \
                EVAL_INTERVAL NPROC ;;
    select) echo SELECT SELECT_METRIC
            if [ "$SELECT" = valid_metric ]; then
              echo SELECT_SPLIT VALID_LIMIT "${BEAM_NAMES[@]}" DECODE_ARGS SCORE_ARGS
            fi ;;
    beam|untrained) echo "${BEAM_NAMES[@]}" TEST_LIMIT ;;
    decode) echo SUBSETS DECODE_ARGS ;;
    score) echo SCORE_ARGS ;;
  esac
}
stage_inputs() {  # the files a stage reads (besides earlier stages' outputs)
  case "$1" in
    pretrain) echo "$DATA_DIR/$TRAIN_SPLIT.jsonl" ;;
    train) echo "$DATA_DIR/$TRAIN_SPLIT.jsonl"; [ -z "$VALID_SPLIT" ] || echo "$DATA_DIR/$VALID_SPLIT.jsonl" ;;
    select) [ "$SELECT" != valid_metric ] || echo "$DATA_DIR/$SELECT_SPLIT.jsonl" "$DATA_DIR/${SELECT_SPLIT}_formatted.jsonl" ;;
    beam|untrained) echo "$DATA_DIR/test.jsonl" ;;
    decode) echo "$DATA_DIR/test_formatted.jsonl" ;;
  esac
}
stage_applies() {  # stages a run has: pretrain only in a demo without INIT_CHECKPOINT, untrained in demos
  case "$1" in pretrain) [ "$PRETRAIN" = 1 ] ;; untrained) [ "$DEMO" = 1 ] ;; *) true ;; esac
}
stage_record() {  # stage_record STAGE: its NAME=value lines, those of the stages before it first
  local stage name file
  local -A seen=()
  for stage in "${STAGES[@]}"; do
    stage_applies "$stage" || { [ "$stage" = "$1" ] && break; continue; }
    # untrained runs beside beam (with the same settings), not before it
    if [ "$stage" = untrained ] && [ "$1" != untrained ]; then continue; fi
    if [ "$stage" = beam ] && [ "$1" = untrained ]; then continue; fi
    for name in $(stage_names "$stage"); do
      [ -z "${seen[$name]+set}" ] || continue
      seen[$name]=1
      if [ "$name" = INIT_CHECKPOINT ]; then
        if [ "$PRETRAIN" = 1 ]; then printf '%s=%s\n' "$name" "(the pretrain stage)"
        else printf '%s=%s\n' "$name" "$BASE_PATH"; fi
      elif [ "$name" = BASE ]; then printf '%s=%s\n' "$name" "$BASE_ID"
      else printf '%s=%s\n' "$name" "${!name-}"; fi
    done
    for file in $(stage_inputs "$stage"); do
      [ -z "${seen[$file]+set}" ] || continue
      seen[$file]=1
      printf '%s=%s\n' "${file##*/}" "$(identity "$file")"
    done
    [ "$stage" = "$1" ] && break
  done
}
record_differences() {  # record_differences MARKER RECORD: "NAME=old (now new)" for each change
  local line name
  local -A old=() new=()
  local names=() diffs=()
  while IFS= read -r line; do [ -n "$line" ] && old[${line%%=*}]=${line#*=}; done <"$1"
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    name=${line%%=*} new[$name]=${line#*=} names+=("$name")
  done <<<"$2"
  for name in "${names[@]}"; do
    if [ -z "${old[$name]+set}" ]; then diffs+=("$name=${new[$name]} (not in the record)")
    elif [ "${old[$name]}" != "${new[$name]}" ]; then diffs+=("$name=${old[$name]} (now ${new[$name]})"); fi
  done
  for name in "${!old[@]}"; do
    [ -n "${new[$name]+set}" ] || diffs+=("$name=${old[$name]} (now not used)")
  done
  local IFS=';'
  printf '%s' "${diffs[*]}" | sed 's/;/; /g'
}
stage_differences() {  # stage_differences STAGE RUN: how STAGE's finished output differs, or ""
  local marker
  marker=$(stage_dir "$1" "$2")/.done-$1
  [ -f "$marker" ] || return 0
  if [ ! -s "$marker" ]; then
    printf 'no settings recorded (made by an older reproduce.sh)'
  else
    record_differences "$marker" "$(stage_record "$1")"
  fi
}
refuse_changed() {  # refuse_changed STAGE RUN DIFFERENCES
  refuse "$(stage_dir "$1" "$2")/.done-$1 was made with other settings: $3; redo it and every later stage with --from $1, or use another WORK_DIR"
}
check_stage() {  # check_stage STAGE RUN: stop unless STAGE's finished output fits the settings
  local differences
  differences=$(stage_differences "$1" "$2")
  [ -z "$differences" ] || refuse_changed "$1" "$2" "$differences"
}
done_stage() {  # done_stage STAGE RUN: finished, and made with these settings (else stop)
  check_stage "$1" "$2"
  [ -f "$(stage_dir "$1" "$2")/.done-$1" ]
}
mark_done() {  # mark_done STAGE RUN: the stage's record, written atomically
  local marker
  marker=$(stage_dir "$1" "$2")/.done-$1
  stage_record "$1" >"$marker.tmp" && mv -f "$marker.tmp" "$marker"
}

# ---- --from STAGE removes the outputs from STAGE on -------------------------------------------
stage_outputs() {  # what each stage writes in its run directory (data writes DATA_DIR, rewritten whole)
  case "$1" in
    pretrain) echo pretrain ;;
    train) echo "$METHOD" select ;;  # the candidates' validation searches belong to these checkpoints
    select) echo selection.json ;;  # select/checkpoint-N/ are kept: each records what it was made from
    beam) echo predict.jsonl test_subset.jsonl test_subset_formatted.jsonl ;;
    untrained) echo untrained ;;
    decode) echo "${DATASET}"_ref* "${DATASET}"_pred*.txt untrained/"${DATASET}"_* ;;
    score) echo scores*.json untrained/scores*.json results.md results.json run.json ;;
  esac
}
check_run() {  # check_run RUN [UNTIL]: every finished stage of RUN (before UNTIL) fits the settings
  local seed stage
  seed=$(seed_of "$1")
  local SEED=$seed  # the records' SEED is the run's
  local first="" differences="" found
  # The first stage that differs is where to redo from; the last finished one's record (it holds
  # every earlier stage's settings too) names every difference.
  for stage in "${STAGES[@]}"; do
    [ "$stage" != "${2:-}" ] || break
    stage_applies "$stage" || continue
    found=$(stage_differences "$stage" "$1")
    [ -n "$found" ] || continue
    [ -n "$first" ] || first=$stage
    differences=$found
  done
  [ -z "$first" ] || refuse_changed "$first" "$1" "$differences"
}
# Before any work (and before --from removes anything): every finished stage of every run
# directory that is kept fits the current settings.
for run in "${RUN_DIRS[@]}"; do check_run "$run" "$FROM"; done
if [ -n "$FROM" ]; then
  past=0
  for stage in "${STAGES[@]}"; do
    [ "$stage" = "$FROM" ] && past=1
    [ "$past" = 1 ] || continue
    dirs=("${RUN_DIRS[@]}")
    is_shared "$stage" && dirs=("$WORK_DIR")
    for dir in "${dirs[@]}"; do
      rm -f "$dir/.done-$stage"
      if [ -d "$dir" ]; then
        (cd "$dir" && for output in $(stage_outputs "$stage"); do rm -rf -- "$output"; done)
      fi
    done
  done
  [ -z "$SEEDS" ] || rm -f "$WORK_DIR/results.md" "$WORK_DIR/results.json"
fi
launch() {  # run a module on NPROC processes (torchrun) or one
  local module=$1; shift
  if [ "$NPROC" -gt 1 ]; then
    torchrun --standalone --nproc_per_node="$NPROC" -m "$module" "$@"
  else
    python -m "$module" "$@"
  fi
}
newest_checkpoint() {  # DIR/checkpoint-N with the largest N (by number: 1000 is after 800)
  local path step newest="" newest_step=-1
  for path in "$1"/checkpoint-*; do
    step=${path##*/checkpoint-}
    [[ -d $path && $step =~ ^[0-9]+$ ]] || continue
    if ((10#$step > newest_step)); then newest=$path newest_step=$((10#$step)); fi
  done
  printf '%s\n' "$newest"
}
limit_contexts() {  # limit_contexts ENCODED FORMATTED N OUT_ENCODED OUT_FORMATTED
  # N distinct contexts spread evenly over the split (so WebNLG's seen and unseen categories are
  # both there), with every line of them, in the files' order (nlg.pipeline.write_subset).
  python -m nlg.pipeline subset "$@"
}

# Files of one subset (all, seen, unseen) of a run directory.
suffix() { [ "$1" = all ] || printf '_%s' "$1"; }
ref_path() { printf '%s/%s_ref%s' "$1" "$DATASET" "$(suffix "$2")"; [ "$DATASET" = e2e ] && printf .txt; true; }
pred_path() { printf '%s/%s_pred%s.txt' "$1" "$DATASET" "$(suffix "$2")"; }
scores_path() { printf '%s/scores%s.json' "$1" "$(suffix "$2")"; }

# ---- data ------------------------------------------------------------------------------------
if ! done_stage data "$WORK_DIR"; then
  log "data: encode $DATASET into $DATA_DIR"
  if [ -n "$raw_dir" ]; then
    $NLG data "$DATASET" --raw-dir "$raw_dir" --out-dir "$DATA_DIR" "${VOCAB_ARGS[@]}"
  else
    mkdir -p "$(dirname "$DATA_DIR")"
    if ! $NLG data "$DATASET" --download --raw-dir "$DATA_DIR/raw" --out-dir "$DATA_DIR" "${VOCAB_ARGS[@]}" \
         2>"$DATA_DIR.download-error"; then
      # Nobody gave --download: name the setting that gives the files instead.
      reason=$(sed -n '$s/; without network.*//p' "$DATA_DIR.download-error")
      rm -f "$DATA_DIR.download-error"
      die "no $DATASET raw files: $RAW_ENV is not set and downloading them into $DATA_DIR/raw failed (${reason#nlg data: }); set $RAW_ENV to a folder holding the raw splits this run reads ($(printf '%s\n' "$TRAIN_SPLIT" $VALID_SPLIT test | sort -u | tr '\n' ' ' | sed 's/ $//; s/ /, /g'); \`nlg data $DATASET --help\`)"
    fi
    rm -f "$DATA_DIR.download-error"
  fi
  mkdir -p "$WORK_DIR"
  mark_done data "$WORK_DIR"
fi
for split in "$TRAIN_SPLIT" $VALID_SPLIT $([ "$SELECT" = valid_metric ] && echo "$SELECT_SPLIT") test; do
  [ -f "$DATA_DIR/$split.jsonl" ] || die "$DATA_DIR/$split.jsonl is missing (no raw $split split in ${raw_dir:-$DATA_DIR/raw}?)"
done
mkdir -p "$WORK_DIR" "${RUN_DIRS[@]}"

# ---- pretrained base -------------------------------------------------------------------------
if [ -n "$init_given" ]; then
  [ -e "$INIT_CHECKPOINT" ] || die "INIT_CHECKPOINT=$INIT_CHECKPOINT does not exist"
elif [ "$PRETRAIN" = 1 ]; then
  PRETRAIN_STEP_ARGS=()
  [ "$PRETRAIN_STEPS" -gt 0 ] && PRETRAIN_STEP_ARGS=(--max_step "$PRETRAIN_STEPS")
  if ! done_stage pretrain "$WORK_DIR"; then
    log "pretrain (demo): train a random $MODEL_CARD fully on $TRAIN_SPLIT to stand in for GPT-2"
    # No validation: in the E2E and DART demos the valid split is the training data.
    python -m nlg.train --full_finetune --model_card "$MODEL_CARD" \
      --train_data "$DATA_DIR/$TRAIN_SPLIT.jsonl" \
      --train_batch_size "$BATCH" --lr "$PRETRAIN_LR" --max_epoch "$PRETRAIN_EPOCHS" "${PRETRAIN_STEP_ARGS[@]}" \
      --warmup_step "$WARMUP" --seq_len "$SEQ_LEN" --random_seed "$PRETRAIN_SEED" --label_smooth 0 \
      --save_interval "$SAVE_INTERVAL" --eval_interval 1000000 --log_interval 20 \
      --work_dir "$WORK_DIR/pretrain" --resume latest
    # only the model it ends with is used: the earlier checkpoints go (nlg.pipeline prune)
    python -m nlg.pipeline prune "$WORK_DIR/pretrain" >/dev/null
    $NLG plot "$WORK_DIR/pretrain" || echo "(no loss plot: matplotlib missing?)" >&2
    mark_done pretrain "$WORK_DIR"
  fi
  # --full_finetune checkpoints are whole models: the newest is the demo's "pretrained GPT-2".
  INIT_CHECKPOINT=$(newest_checkpoint "$WORK_DIR/pretrain")
else
  INIT_CHECKPOINT=$PRETRAINED_DIR/$MODEL_CARD
  if [ ! -f "$INIT_CHECKPOINT/config.json" ]; then
    log "download the pretrained $MODEL_CARD into $INIT_CHECKPOINT"
    scripts/download_pretrained.sh "$MODEL_CARD" "$INIT_CHECKPOINT" \
      || die "no pretrained checkpoint: set INIT_CHECKPOINT to a local GPT-2 (HF directory or .bin)"
    BASE_ID=$(base_identity)  # the downloaded files are what the record holds from now on
  fi
fi

# ---- per run directory: train -> select -> beam -> untrained -> decode -> score ---------------
MAX_STEP_ARGS=()
[ "$MAX_STEP" -gt 0 ] && MAX_STEP_ARGS=(--max_step "$MAX_STEP")
VALID_ARGS=()
[ -n "$VALID_SPLIT" ] && VALID_ARGS=(--valid_data "$DATA_DIR/$VALID_SPLIT.jsonl")
# The method's own flags: LoRA's shape for lora, else --method and its settings.
if [ "$METHOD" = lora ]; then
  METHOD_TRAIN_ARGS=(--lora_dim "$LORA_DIM" --lora_alpha "$LORA_ALPHA" --lora_dropout "$LORA_DROPOUT"
                     --lora_targets "$LORA_TARGETS")
else
  METHOD_TRAIN_ARGS=(--method "$METHOD")
  [ -z "$ADAPTER_DIM" ] || METHOD_TRAIN_ARGS+=(--adapter_dim "$ADAPTER_DIM")
  [ -z "$TOP_LAYERS" ] || METHOD_TRAIN_ARGS+=(--top_layers "$TOP_LAYERS")
  [ -z "$PREFIX_LEN" ] || METHOD_TRAIN_ARGS+=(--prefix_len "$PREFIX_LEN")
fi
BEAM_ARGS=(--beam "$BEAM" --length_penalty "$LENGTH_PENALTY" --no_repeat_ngram_size "$NO_REPEAT_NGRAM"
           --repetition_penalty "$REPETITION_PENALTY" --eval_len "$EVAL_LEN" --seq_len "$BEAM_SEQ_LEN"
           --batch_size "$BEAM_BATCH")
for eos in $EOS_IDS; do BEAM_ARGS+=(--eos_token_id "$eos"); done
beam_model_args() {  # the trained checkpoint for nlg beam (its method.json says what it is): a
  # whole model (full), or what the method trained, on the base model
  case "$METHOD" in
    full) printf '%s\n' --model_card "$MODEL_CARD" --checkpoint "$1" ;;
    *) printf '%s\n' --model_card "$MODEL_CARD" --init_checkpoint "$INIT_CHECKPOINT" --checkpoint "$1" ;;
  esac
}

decode_subsets() {  # decode_subsets RUN_DIR FORMATTED SUBSET...: RUN_DIR/predict.jsonl -> files
  local run=$1 formatted=$2 subset filter
  shift 2
  for subset in "$@"; do
    filter=()
    [ "$subset" = all ] || filter=(--filter "$subset")
    $NLG decode --sample_file "$run/predict.jsonl" --input_file "$formatted" "${DECODE_FLAGS[@]}" \
      "${filter[@]}" --output_ref_file "$(ref_path "$run" "$subset")" \
      --output_pred_file "$(pred_path "$run" "$subset")" "${VOCAB_ARGS[@]}"
  done
}
score_subsets() {  # score_subsets RUN_DIR SUBSET...: each subset's report and scores json
  local run=$1 subset
  shift
  for subset in "$@"; do
    [ "$#" = 1 ] || printf -- '-- %s\n' "$subset"
    $NLG score "$(ref_path "$run" "$subset")" "$(pred_path "$run" "$subset")" "${SCORE_FLAGS[@]}" \
      --json "$(scores_path "$run" "$subset")"
  done
}
scores_args() {  # scores_args RUN_DIR: SUBSET=SCORES_JSON for `nlg results`
  local subset
  for subset in $SUBSETS; do printf '%s=%s\n' "$subset" "$(scores_path "$1" "$subset")"; done
}
record_files() {  # record_files FLAG RUN_DIR: `--subset NAME SCORES REFERENCES PREDICTIONS` each
  local subset
  for subset in $SUBSETS; do
    printf '%s\n' "$1" "$subset" "$(scores_path "$2" "$subset")" "$(ref_path "$2" "$subset")" "$(pred_path "$2" "$subset")"
  done
}

select_checkpoint() {  # select_checkpoint RUN: RUN/selection.json by SELECT, on validation only
  local run=$1
  if [ "$SELECT" != valid_metric ]; then
    $NLG select "$run/$METHOD" --criterion "$SELECT" --out "$run/selection.json"
    return
  fi
  # Each candidate beam-searched on SELECT_SPLIT (VALID_LIMIT contexts) with the test settings,
  # decoded and scored by the suite; finished candidates (select/checkpoint-N/.done) are kept.
  local candidates=() scores=() checkpoint dir valid_data=$DATA_DIR/$SELECT_SPLIT.jsonl
  local valid_formatted=$DATA_DIR/${SELECT_SPLIT}_formatted.jsonl
  mapfile -t candidates < <($NLG select "$run/$METHOD" --list) || exit 2
  [ "${#candidates[@]}" -gt 0 ] || exit 2
  mkdir -p "$run/select"
  if [ "$VALID_LIMIT" -gt 0 ]; then
    limit_contexts "$valid_data" "$valid_formatted" "$VALID_LIMIT" \
      "$run/select/valid.jsonl" "$run/select/valid_formatted.jsonl"
    valid_data=$run/select/valid.jsonl valid_formatted=$run/select/valid_formatted.jsonl
  fi
  # A candidate's validation beam search is kept (select/checkpoint-N/.done-beam holds what it
  # was made from), so an interrupted selection does not search it again; decoding and scoring
  # are cheap and redone whenever the stage runs.
  local made_from
  made_from=$(stage_record train
              for name in SELECT_SPLIT VALID_LIMIT "${BEAM_NAMES[@]}"; do printf '%s=%s\n' "$name" "${!name-}"; done
              for file in $(stage_inputs select); do printf '%s=%s\n' "${file##*/}" "$(identity "$file")"; done)
  for checkpoint in "${candidates[@]}"; do
    dir=$run/select/${checkpoint##*/}
    if [ -f "$dir/.done-beam" ] && [ "$(cat "$dir/.done-beam")" != "$made_from" ]; then rm -rf "$dir"; fi
    if [ ! -f "$dir/.done-beam" ]; then
      log "select: beam-search $SELECT_SPLIT with $checkpoint (beam $BEAM)"
      mkdir -p "$dir"
      mapfile -t model_args < <(beam_model_args "$checkpoint")
      launch nlg.beam --data "$valid_data" "${model_args[@]}" "${BEAM_ARGS[@]}" --no_progress \
        --output_file "$dir/predict.jsonl"
      printf '%s\n' "$made_from" >"$dir/.done-beam"
    fi
    decode_subsets "$dir" "$valid_formatted" all
    score_subsets "$dir" all >/dev/null
    scores+=("${checkpoint##*/checkpoint-}=$(scores_path "$dir" all)")
  done
  $NLG select "$run/$METHOD" --criterion valid_metric --metric "$SELECT_METRIC" --scores "${scores[@]}" \
    --out "$run/selection.json"
}

SCORED=0  # run directories scored by this invocation (the seeds' table is then made again)
run_chain() {  # run_chain RUN: every per-run stage in RUN, seeded with RUN's seed
  local RUN=$1
  local seed
  seed=$(seed_of "$RUN")
  local SEED=$seed  # every stage below (and its record) sees the run's seed
  [ -z "$SEEDS" ] || log "seed $SEED: $RUN"
  if ! done_stage train "$RUN"; then
    log "train: $METHOD ($([ "$METHOD" = lora ] && echo "r=$LORA_DIM on $LORA_TARGETS, ")seed $SEED), $NPROC process(es)"
    launch nlg.train --model_card "$MODEL_CARD" --init_checkpoint "$INIT_CHECKPOINT" \
      --train_data "$DATA_DIR/$TRAIN_SPLIT.jsonl" "${VALID_ARGS[@]}" \
      --train_batch_size "$BATCH" --grad_acc "$GRAD_ACC" --seq_len "$SEQ_LEN" \
      --lr "$LR" --weight_decay "$WEIGHT_DECAY" --adam_beta2 "$ADAM_BETA2" --clip "$CLIP" \
      --scheduler "$SCHEDULER" --warmup_step "$WARMUP" --max_epoch "$EPOCHS" "${MAX_STEP_ARGS[@]}" \
      --label_smooth "$LABEL_SMOOTH" "${METHOD_TRAIN_ARGS[@]}" --random_seed "$SEED" \
      --save_interval "$SAVE_INTERVAL" --eval_interval "$EVAL_INTERVAL" \
      --work_dir "$RUN/$METHOD" --resume latest
    $NLG plot "$RUN/$METHOD" || echo "(no loss plot: matplotlib missing?)" >&2
    mark_done train "$RUN"
  fi

  if ! done_stage select "$RUN"; then
    if [ "$SELECT" = last ]; then log "select: the checkpoint to decode, the last one"
    else log "select: the checkpoint to decode, by $SELECT$([ "$SELECT" = valid_metric ] && echo " ($SELECT_METRIC)") on validation"; fi
    select_checkpoint "$RUN"
    mark_done select "$RUN"
  fi
  local CHECKPOINT
  CHECKPOINT=$(python -m nlg.pipeline chosen "$RUN/selection.json") || exit 1

  # The test subset is made by the beam stage only; decode reads what beam searched.
  local test_data=$DATA_DIR/test.jsonl test_formatted=$DATA_DIR/test_formatted.jsonl
  if [ "$TEST_LIMIT" -gt 0 ]; then
    test_data=$RUN/test_subset.jsonl test_formatted=$RUN/test_subset_formatted.jsonl
  fi
  if ! done_stage beam "$RUN"; then
    log "beam: beam $BEAM, length penalty $LENGTH_PENALTY, checkpoint $CHECKPOINT"
    [ "$TEST_LIMIT" = 0 ] || limit_contexts "$DATA_DIR/test.jsonl" "$DATA_DIR/test_formatted.jsonl" \
      "$TEST_LIMIT" "$test_data" "$test_formatted"
    mapfile -t model_args < <(beam_model_args "$CHECKPOINT")
    launch nlg.beam --data "$test_data" "${model_args[@]}" "${BEAM_ARGS[@]}" --output_file "$RUN/predict.jsonl"
    mark_done beam "$RUN"
  fi

  # untrained (demo): the same card with random weights, beam-searched alike
  if [ "$DEMO" = 1 ] && ! done_stage untrained "$RUN"; then
    log "untrained (demo): a random $MODEL_CARD beam-searched alike, what learning has to beat"
    mkdir -p "$RUN/untrained"
    launch nlg.beam --data "$test_data" --model_card "$MODEL_CARD" --seed "$SEED" "${BEAM_ARGS[@]}" \
      --no_progress --output_file "$RUN/untrained/predict.jsonl"
    mark_done untrained "$RUN"
  fi

  # decode: the one prediction file, once per subset (WebNLG: all, seen, unseen)
  if ! done_stage decode "$RUN"; then
    log "decode: predictions and references to the scorer's files ($SUBSETS)"
    decode_subsets "$RUN" "$test_formatted" $SUBSETS
    if [ "$DEMO" = 1 ]; then
      log "decode (demo): the untrained $MODEL_CARD"
      decode_subsets "$RUN/untrained" "$test_formatted" $SUBSETS
    fi
    mark_done decode "$RUN"
  fi

  # score, results.md and results.json, and the run record run.json
  if ! done_stage score "$RUN"; then
    log "score: nlg score $SCORE_ARGS ($SUBSETS)"
    score_subsets "$RUN" $SUBSETS
    local results_args record_args
    mapfile -t results_args < <(scores_args "$RUN")
    results_args=(--scores "${results_args[@]}")
    mapfile -t record_args < <(record_files --subset "$RUN")
    if [ "$DEMO" = 1 ]; then
      log "score (demo): the untrained $MODEL_CARD"
      score_subsets "$RUN/untrained" $SUBSETS >/dev/null
      results_args+=(--untrained)
      mapfile -t -O "${#results_args[@]}" results_args < <(scores_args "$RUN/untrained")
      mapfile -t -O "${#record_args[@]}" record_args < <(record_files --untrained "$RUN/untrained")
    fi
    stage_record score >"$RUN/.record-score.tmp"
    python -m nlg.pipeline record "$RUN" --dataset "$DATASET" --card "$MODEL_CARD" --seed "$SEED" \
      --settings "$RUN/.record-score.tmp" --checkpoint "$CHECKPOINT" "${record_args[@]}"
    rm -f "$RUN/.record-score.tmp"
    if [ "$METHOD" = lora ]; then  # the run beside the paper's LoRA rows
      $NLG results "$DATASET" --card "$MODEL_CARD" "${results_args[@]}" \
        --md "$RUN/results.md" --json "$RUN/results.json"
    else  # another method: labelled by method and size, beside every row of the paper's table
      $NLG results "$DATASET" --runs "$RUN" --md "$RUN/results.md" --json "$RUN/results.json"
    fi
    mark_done score "$RUN"
    SCORED=$((SCORED + 1))
  elif [ -z "$SEEDS" ]; then
    cat "$RUN/results.md"
  fi
}

for run in "${RUN_DIRS[@]}"; do run_chain "$run"; done

# ---- seeds: one table over the run directories (`nlg results --runs`) --------------------------
# Made again by every invocation: the table is over exactly this invocation's seeds.
if [ -n "$SEEDS" ]; then
  log "results: $DATASET over seeds $SEEDS"
  $NLG results "$DATASET" --runs "${RUN_DIRS[@]}" --md "$WORK_DIR/results.md" --json "$WORK_DIR/results.json"
fi
printf '\nresults: %s (results.json, run.json beside it)\n' "$WORK_DIR/results.md" >&2
