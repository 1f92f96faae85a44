#!/usr/bin/env bash
# The LoRA paper's GPT-2 experiments on E2E, WebNLG 2017 and DART, end to end:
# data -> train -> beam -> decode -> score. Run `scripts/reproduce.sh --help` for every setting.
set -euo pipefail

STAGES=(data pretrain train beam untrained decode score)

usage() {
  cat <<'EOF'
usage: scripts/reproduce.sh DATASET [--demo] [--from STAGE] [--help]      DATASET: e2e | webnlg | dart

Reproduce one of the LoRA paper's GPT-2 tables: encode the dataset, fine-tune GPT-2 with LoRA
(torchrun), beam-search every distinct test context once, decode the predictions into the
scorer's files (WebNLG: once per category set, all / seen / unseen, from the same predictions)
and score each, ending with results.md and results.json beside the paper's numbers for GPT-2 M
and L. The paper's settings come from the dataset's module (`nlg recipe DATASET`); stages whose
outputs exist are skipped, so re-running resumes, and interrupted training continues from its
latest checkpoint.

options:
  --demo         CPU demo: a random gpt2.tiny is first trained fully on the training split (a
                 stand-in for GPT-2's pre-training: LoRA cannot teach a random frozen model),
                 then LoRA-tuned on it, beam-searched on every test context and scored beside
                 the same card untrained. webnlg trains on its 2017 train split (18,025 pairs)
                 and dart on its dev split (6,980 pairs; its train split is not on the
                 development machines), both 1,000 pre-training and 300 LoRA steps of 8 pairs,
                 then beam 5 over 48 tokens: about 15 minutes on 2 cores for WebNLG's 1,862 test
                 contexts, about 21 minutes for DART's 4,159. e2e trains on its valid split (4,672
                 pairs; 3 epochs of pre-training, 1 of LoRA) and decodes with the paper's beam
                 settings, about 10 minutes. Demo settings below apply where the environment
                 sets none.
  --from STAGE   rerun from STAGE (data, pretrain, train, beam, untrained, decode, score),
                 discarding that stage's and later stages' outputs (pretrain and untrained are
                 demo stages)
  --help         this text

settings (environment variables):
  MODEL_CARD=gpt2.md        gpt2.sm | gpt2.md | gpt2.lg (gpt2.tiny in --demo)
  INIT_CHECKPOINT=          pretrained GPT-2 (HF directory or .bin); default
                            PRETRAINED_DIR/<card>, downloaded from huggingface.co when missing
                            (--demo: the pretrain stage's last checkpoint; given, no pretrain)
  PRETRAINED_DIR=pretrained where downloaded checkpoints go
  WORK_DIR=runs/DATASET-<card>   run directory (runs/DATASET-demo in --demo)
  DATA_DIR=data/DATASET     encoded dataset
  E2E_RAW_DIR= WEBNLG_RAW_DIR= DART_RAW_DIR=
                            the dataset's raw files (`nlg data DATASET --help`); when unset,
                            the paper's files are downloaded into DATA_DIR/raw
  NLG_VOCAB_DIR=            GPT-2 encoder.json + vocab.bpe (else tiktoken's download)
  NPROC=<#GPUs or 1>        processes for torchrun
  TRAIN_SPLIT=train         split to train on
  VALID_SPLIT=valid         split to validate on while training (empty: no validation)
  MAX_STEP=0                stop training after N steps (0: EPOCHS decide)
  SAVE_INTERVAL=1000 EVAL_INTERVAL=2000   training checkpoints and validation, in steps
  BEAM_BATCH=16             contexts per beam-search batch
  TEST_LIMIT=0              decode only N distinct test contexts, evenly spread over the test
                            set, every reference of them kept (0 = all)
  NLG="python -m nlg"       how to call nlg

  the paper's recipe, from nlg/datasets/DATASET.py: each NAME=value of `nlg recipe DATASET`,
  unless the environment (or --demo) sets NAME; SUBSETS, DECODE_ARGS and SCORE_ARGS are
  space-separated (SCORE_ARGS= scores E2E with mteval-v13a instead of the paper's -p):
RECIPE_TABLE

  --demo (where unset): MODEL_CARD=gpt2.tiny TRAIN_SPLIT=valid (webnlg: train; dart: VALID_SPLIT=)
    LoRA scaled to a tiny model: LORA_DIM=8 LORA_ALPHA=16 LORA_TARGETS=q,v,o,fc LR=2e-3
    LABEL_SMOOTH=0.0 BATCH=16 (webnlg, dart: 8) WARMUP=50 SAVE_INTERVAL=200 EVAL_INTERVAL=200 BEAM_BATCH=32
    pre-training: PRETRAIN_LR=3e-3 PRETRAIN_EPOCHS=3 (webnlg: 1) PRETRAIN_STEPS=0 (webnlg, dart: 1000; 0 = no cap)
    e2e: EPOCHS=1 SEQ_LEN=128
    webnlg, dart: EPOCHS=1 MAX_STEP=300 EVAL_INTERVAL=300 BEAM=5 EVAL_LEN=48 BEAM_BATCH=64

outputs (in WORK_DIR): lora/ (checkpoint-*/ with adapter + training state, metrics.jsonl,
  loss.png), pretrain/ and untrained/ (--demo), predict.jsonl, per subset (SUFFIX: none for
  all, _seen, _unseen) DATASET_refSUFFIX (E2E: e2e_ref.txt; WebNLG, DART: a folder of
  reference0..5), DATASET_predSUFFIX.txt and scoresSUFFIX.json, results.md and results.json
EOF
}

die() { printf 'reproduce.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '\n== %s  [%dm%02ds]\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)) >&2; }

DATASET=""
DEMO=0
FROM=""
HELP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --demo) DEMO=1 ;;
    --from) FROM="${2:?--from needs a stage}"; shift ;;
    --from=*) FROM="${1#--from=}" ;;
    -h|--help) HELP=1 ;;
    -*) echo "reproduce.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$DATASET" ] || { echo "reproduce.sh: one DATASET only (see --help)" >&2; exit 2; }
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
  "") echo "reproduce.sh: which dataset? e2e, webnlg or dart (see --help)" >&2; exit 2 ;;
  *) echo "reproduce.sh: unknown dataset '$DATASET' (one of: e2e, webnlg, dart)" >&2; exit 2 ;;
esac
if [ -n "$FROM" ]; then
  case " ${STAGES[*]} " in
    *" $FROM "*) ;;
    *) echo "reproduce.sh: unknown stage '$FROM' (one of: ${STAGES[*]})" >&2; exit 2 ;;
  esac
fi

# ---- settings: the environment, then the demo's, then the paper's recipe ---------------------
if [ "$DEMO" = 1 ]; then
  MODEL_CARD=${MODEL_CARD:-gpt2.tiny}
  WORK_DIR=${WORK_DIR:-runs/$DATASET-demo}
  # The demo's base model is pre-trained here, so its LoRA recipe is scaled to a tiny model.
  LORA_DIM=${LORA_DIM:-8} LORA_ALPHA=${LORA_ALPHA:-16} LORA_TARGETS=${LORA_TARGETS:-q,v,o,fc}
  LR=${LR:-2e-3} LABEL_SMOOTH=${LABEL_SMOOTH:-0.0} WARMUP=${WARMUP:-50}
  PRETRAIN_LR=${PRETRAIN_LR:-3e-3}
  case "$DATASET" in
    webnlg|dart)
      # On 2 cores the tiny model's cost is its 50,257-word head: 0.35 s a step of 8 pairs,
      # and beam 10 decodes about 7 test contexts/s. These settings fit WebNLG's training, both
      # beam searches and scoring in ~15 min; 1,000 steps of 8 pairs learn to copy names from
      # the triples (validation loss 3.2), 500 of 16 do not yet (4.2).
      BATCH=${BATCH:-8} PRETRAIN_STEPS=${PRETRAIN_STEPS:-1000}
      EPOCHS=${EPOCHS:-1} MAX_STEP=${MAX_STEP:-300} EVAL_INTERVAL=${EVAL_INTERVAL:-300}
      BEAM=${BEAM:-5} EVAL_LEN=${EVAL_LEN:-48} BEAM_BATCH=${BEAM_BATCH:-64} ;;
    e2e) SEQ_LEN=${SEQ_LEN:-128} ;;
  esac
  case "$DATASET" in
    webnlg) TRAIN_SPLIT=${TRAIN_SPLIT:-train} PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-1} ;;
    dart) VALID_SPLIT=${VALID_SPLIT-} ;;  # it trains on valid: no validation on its own data
  esac
  TRAIN_SPLIT=${TRAIN_SPLIT:-valid} PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-3} PRETRAIN_STEPS=${PRETRAIN_STEPS:-0}
  EPOCHS=${EPOCHS:-1} BATCH=${BATCH:-16} BEAM_BATCH=${BEAM_BATCH:-32}
  SAVE_INTERVAL=${SAVE_INTERVAL:-200} EVAL_INTERVAL=${EVAL_INTERVAL:-200}
fi
# One NAME=value line per setting of the paper's recipe; a variable already set keeps its value.
recipe=$($NLG recipe "$DATASET") || die "could not read the recipe: \`$NLG recipe $DATASET\` failed"
while IFS= read -r line; do
  name=${line%%=*}
  [ -n "${!name+set}" ] || printf -v "$name" '%s' "${line#*=}"
done <<<"$recipe"
read -ra DECODE_FLAGS <<<"$DECODE_ARGS"
read -ra SCORE_FLAGS <<<"$SCORE_ARGS"

MODEL_CARD=${MODEL_CARD:-gpt2.md}
WORK_DIR=${WORK_DIR:-runs/$DATASET-$MODEL_CARD}
DATA_DIR=${DATA_DIR:-data/$DATASET}
PRETRAINED_DIR=${PRETRAINED_DIR:-pretrained}
TRAIN_SPLIT=${TRAIN_SPLIT:-train} VALID_SPLIT=${VALID_SPLIT-valid}
MAX_STEP=${MAX_STEP:-0} SAVE_INTERVAL=${SAVE_INTERVAL:-1000} EVAL_INTERVAL=${EVAL_INTERVAL:-2000}
BEAM_BATCH=${BEAM_BATCH:-16} TEST_LIMIT=${TEST_LIMIT:-0}
RAW_ENV=$(printf '%s_RAW_DIR' "$DATASET" | tr '[:lower:]' '[:upper:]')  # E2E_RAW_DIR, ...
raw_dir=${!RAW_ENV:-}
if [ -z "${NPROC:-}" ]; then
  NPROC=$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))' 2>/dev/null || echo 1)
fi
VOCAB_ARGS=()
[ -n "${NLG_VOCAB_DIR:-}" ] && VOCAB_ARGS=(--vocab "$NLG_VOCAB_DIR")

# ---- stages: a marker file each; --from STAGE removes the outputs from STAGE on --------------
stage_outputs() {  # what each stage writes in WORK_DIR (data writes DATA_DIR, rewritten whole)
  case "$1" in
    pretrain) echo pretrain ;;
    train) echo lora ;;
    beam) echo predict.jsonl ;;
    untrained) echo untrained ;;
    decode) echo "${DATASET}"_ref* "${DATASET}"_pred*.txt untrained/"${DATASET}"_* ;;
    score) echo scores*.json untrained/scores*.json results.md results.json ;;
  esac
}
if [ -n "$FROM" ]; then
  past=0
  for stage in "${STAGES[@]}"; do
    [ "$stage" = "$FROM" ] && past=1
    [ "$past" = 1 ] || continue
    rm -f "$WORK_DIR/.done-$stage"
    if [ -d "$WORK_DIR" ]; then
      (cd "$WORK_DIR" && for output in $(stage_outputs "$stage"); do rm -rf -- "$output"; done)
    fi
  done
fi
mkdir -p "$WORK_DIR"
done_stage() { [ -f "$WORK_DIR/.done-$1" ]; }
mark_done() { touch "$WORK_DIR/.done-$1"; }

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

# Files of one subset (all, seen, unseen) of a run directory.
suffix() { [ "$1" = all ] || printf '_%s' "$1"; }
ref_path() { printf '%s/%s_ref%s' "$1" "$DATASET" "$(suffix "$2")"; [ "$DATASET" = e2e ] && printf .txt; true; }
pred_path() { printf '%s/%s_pred%s.txt' "$1" "$DATASET" "$(suffix "$2")"; }
scores_path() { printf '%s/scores%s.json' "$1" "$(suffix "$2")"; }

# ---- data ------------------------------------------------------------------------------------
if ! done_stage data; then
  log "data: encode $DATASET into $DATA_DIR"
  if [ -n "$raw_dir" ]; then
    $NLG data "$DATASET" --raw-dir "$raw_dir" --out-dir "$DATA_DIR" "${VOCAB_ARGS[@]}"
  else
    $NLG data "$DATASET" --download --raw-dir "$DATA_DIR/raw" --out-dir "$DATA_DIR" "${VOCAB_ARGS[@]}"
  fi
  mark_done data
fi
for split in "$TRAIN_SPLIT" $VALID_SPLIT test; do
  [ -f "$DATA_DIR/$split.jsonl" ] || die "$DATA_DIR/$split.jsonl is missing (no raw $split split in ${raw_dir:-$DATA_DIR/raw}?)"
done

# ---- pretrained base -------------------------------------------------------------------------
if [ -n "${INIT_CHECKPOINT:-}" ]; then
  [ -e "$INIT_CHECKPOINT" ] || die "INIT_CHECKPOINT=$INIT_CHECKPOINT does not exist"
elif [ "$DEMO" = 1 ]; then
  PRETRAIN_STEP_ARGS=()
  [ "$PRETRAIN_STEPS" -gt 0 ] && PRETRAIN_STEP_ARGS=(--max_step "$PRETRAIN_STEPS")
  if ! done_stage pretrain; then
    log "pretrain (demo): train a random $MODEL_CARD fully on $TRAIN_SPLIT to stand in for GPT-2"
    # No validation: in the E2E and DART demos the valid split is the training data.
    python -m nlg.train --full_finetune --model_card "$MODEL_CARD" \
      --train_data "$DATA_DIR/$TRAIN_SPLIT.jsonl" \
      --train_batch_size "$BATCH" --lr "$PRETRAIN_LR" --max_epoch "$PRETRAIN_EPOCHS" "${PRETRAIN_STEP_ARGS[@]}" \
      --warmup_step "$WARMUP" --seq_len "$SEQ_LEN" --random_seed "$SEED" --label_smooth 0 \
      --save_interval "$SAVE_INTERVAL" --eval_interval 1000000 --log_interval 20 \
      --work_dir "$WORK_DIR/pretrain" --resume latest
    mark_done pretrain
  fi
  # --full_finetune checkpoints are whole models: the newest is the demo's "pretrained GPT-2".
  INIT_CHECKPOINT=$(newest_checkpoint "$WORK_DIR/pretrain")
else
  INIT_CHECKPOINT=$PRETRAINED_DIR/$MODEL_CARD
  if [ ! -f "$INIT_CHECKPOINT/config.json" ]; then
    log "download the pretrained $MODEL_CARD into $INIT_CHECKPOINT"
    scripts/download_pretrained.sh "$MODEL_CARD" "$INIT_CHECKPOINT" \
      || die "no pretrained checkpoint: set INIT_CHECKPOINT to a local GPT-2 (HF directory or .bin)"
  fi
fi

# ---- train -----------------------------------------------------------------------------------
MAX_STEP_ARGS=()
[ "$MAX_STEP" -gt 0 ] && MAX_STEP_ARGS=(--max_step "$MAX_STEP")
VALID_ARGS=()
[ -n "$VALID_SPLIT" ] && VALID_ARGS=(--valid_data "$DATA_DIR/$VALID_SPLIT.jsonl")
if ! done_stage train; then
  log "train: LoRA r=$LORA_DIM on $LORA_TARGETS, $NPROC process(es)"
  launch nlg.train --model_card "$MODEL_CARD" --init_checkpoint "$INIT_CHECKPOINT" \
    --train_data "$DATA_DIR/$TRAIN_SPLIT.jsonl" "${VALID_ARGS[@]}" \
    --train_batch_size "$BATCH" --grad_acc "$GRAD_ACC" --seq_len "$SEQ_LEN" \
    --lr "$LR" --weight_decay "$WEIGHT_DECAY" --adam_beta2 "$ADAM_BETA2" --clip "$CLIP" \
    --scheduler "$SCHEDULER" --warmup_step "$WARMUP" --max_epoch "$EPOCHS" "${MAX_STEP_ARGS[@]}" \
    --label_smooth "$LABEL_SMOOTH" --lora_dim "$LORA_DIM" --lora_alpha "$LORA_ALPHA" \
    --lora_dropout "$LORA_DROPOUT" --lora_targets "$LORA_TARGETS" --random_seed "$SEED" \
    --save_interval "$SAVE_INTERVAL" --eval_interval "$EVAL_INTERVAL" \
    --work_dir "$WORK_DIR/lora" --resume latest
  $NLG plot "$WORK_DIR/lora" || echo "(no loss plot: matplotlib missing?)" >&2
  mark_done train
fi
ADAPTER=$(newest_checkpoint "$WORK_DIR/lora")
[ -n "$ADAPTER" ] || die "no checkpoint in $WORK_DIR/lora"

# ---- beam ------------------------------------------------------------------------------------
TEST_DATA=$DATA_DIR/test.jsonl
TEST_FORMATTED=$DATA_DIR/test_formatted.jsonl
if [ "$TEST_LIMIT" -gt 0 ]; then
  # TEST_LIMIT distinct contexts spread evenly over the test set (so WebNLG's seen and unseen
  # categories are both there), with every line of them, in the files' order.
  python - "$TEST_DATA" "$TEST_FORMATTED" "$TEST_LIMIT" \
    "$WORK_DIR/test_subset.jsonl" "$WORK_DIR/test_subset_formatted.jsonl" <<'PY'
import json, sys
encoded, formatted, limit, out_encoded, out_formatted = sys.argv[1:]
encoded_lines, formatted_lines = open(encoded).readlines(), open(formatted).readlines()
contexts = [json.loads(line)["context"] for line in formatted_lines]
distinct = list(dict.fromkeys(contexts))
count = min(int(limit), len(distinct))
chosen = {distinct[i * len(distinct) // count] for i in range(count)}
keep = [i for i, context in enumerate(contexts) if context in chosen]
open(out_encoded, "w").writelines(encoded_lines[i] for i in keep)
open(out_formatted, "w").writelines(formatted_lines[i] for i in keep)
PY
  TEST_DATA=$WORK_DIR/test_subset.jsonl
  TEST_FORMATTED=$WORK_DIR/test_subset_formatted.jsonl
fi
BEAM_ARGS=(--beam "$BEAM" --length_penalty "$LENGTH_PENALTY" --no_repeat_ngram_size "$NO_REPEAT_NGRAM"
           --repetition_penalty "$REPETITION_PENALTY" --eval_len "$EVAL_LEN" --seq_len "$BEAM_SEQ_LEN"
           --batch_size "$BEAM_BATCH")
for eos in $EOS_IDS; do BEAM_ARGS+=(--eos_token_id "$eos"); done
if ! done_stage beam; then
  log "beam: beam $BEAM, length penalty $LENGTH_PENALTY, adapter $ADAPTER"
  launch nlg.beam --data "$TEST_DATA" --model_card "$MODEL_CARD" --init_checkpoint "$INIT_CHECKPOINT" \
    --lora_checkpoint "$ADAPTER" "${BEAM_ARGS[@]}" --output_file "$WORK_DIR/predict.jsonl"
  mark_done beam
fi

# ---- untrained (demo): the same card with random weights, beam-searched alike ----------------
if [ "$DEMO" = 1 ] && ! done_stage untrained; then
  log "untrained (demo): a random $MODEL_CARD beam-searched alike, what learning has to beat"
  mkdir -p "$WORK_DIR/untrained"
  launch nlg.beam --data "$TEST_DATA" --model_card "$MODEL_CARD" --seed "$SEED" "${BEAM_ARGS[@]}" \
    --no_progress --output_file "$WORK_DIR/untrained/predict.jsonl"
  mark_done untrained
fi

# ---- decode: the one prediction file, once per subset (WebNLG: all, seen, unseen) ------------
decode_subsets() {  # decode_subsets RUN_DIR: RUN_DIR/predict.jsonl -> each subset's files
  local subset filter
  for subset in $SUBSETS; do
    filter=()
    [ "$subset" = all ] || filter=(--filter "$subset")
    $NLG decode --sample_file "$1/predict.jsonl" --input_file "$TEST_FORMATTED" "${DECODE_FLAGS[@]}" \
      "${filter[@]}" --output_ref_file "$(ref_path "$1" "$subset")" \
      --output_pred_file "$(pred_path "$1" "$subset")" "${VOCAB_ARGS[@]}"
  done
}
if ! done_stage decode; then
  log "decode: predictions and references to the scorer's files ($SUBSETS)"
  decode_subsets "$WORK_DIR"
  if [ "$DEMO" = 1 ]; then
    log "decode (demo): the untrained $MODEL_CARD"
    decode_subsets "$WORK_DIR/untrained"
  fi
  mark_done decode
fi

# ---- score -----------------------------------------------------------------------------------
score_subsets() {  # score_subsets RUN_DIR: each subset's report and scores json
  local subset
  for subset in $SUBSETS; do
    [ "$SUBSETS" = all ] || printf -- '-- %s\n' "$subset"
    $NLG score "$(ref_path "$1" "$subset")" "$(pred_path "$1" "$subset")" "${SCORE_FLAGS[@]}" \
      --json "$(scores_path "$1" "$subset")"
  done
}
scores_args() {  # scores_args RUN_DIR: SUBSET=SCORES_JSON for `nlg results`
  local subset
  for subset in $SUBSETS; do printf '%s=%s\n' "$subset" "$(scores_path "$1" "$subset")"; done
}
if ! done_stage score; then
  log "score: nlg score $SCORE_ARGS ($SUBSETS)"
  score_subsets "$WORK_DIR"
  mapfile -t RESULTS_ARGS < <(scores_args "$WORK_DIR")
  RESULTS_ARGS=(--scores "${RESULTS_ARGS[@]}")
  if [ "$DEMO" = 1 ]; then
    log "score (demo): the untrained $MODEL_CARD"
    score_subsets "$WORK_DIR/untrained" >/dev/null
    RESULTS_ARGS+=(--untrained)
    mapfile -t -O "${#RESULTS_ARGS[@]}" RESULTS_ARGS < <(scores_args "$WORK_DIR/untrained")
  fi
  $NLG results "$DATASET" --card "$MODEL_CARD" "${RESULTS_ARGS[@]}" \
    --md "$WORK_DIR/results.md" --json "$WORK_DIR/results.json"
  mark_done score
else
  cat "$WORK_DIR/results.md"
fi
