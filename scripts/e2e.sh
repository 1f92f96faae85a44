#!/usr/bin/env bash
# The E2E experiment of the LoRA paper, end to end: data -> train -> beam -> decode -> score.
# Run `scripts/e2e.sh --help` for every setting.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/e2e.sh [--demo] [--from STAGE] [--help]

Reproduce the LoRA paper's E2E table: encode the data, fine-tune GPT-2 with LoRA (torchrun),
beam-search every distinct test context, decode to text files and score them with the E2E
metrics. Stages whose outputs exist are skipped, so re-running resumes; an interrupted
training run continues from its latest checkpoint.

options:
  --demo         small CPU demo: a randomly initialised GPT-2 (MODEL_CARD=gpt2.tiny) is first
                 pre-trained on the E2E valid split (a stand-in for GPT-2's pre-training, since
                 LoRA cannot teach a random frozen model), then LoRA-fine-tuned on it, decoded
                 with the paper's beam settings on every test context and scored beside the
                 same model untrained; about 10 minutes on 2 CPU cores; WORK_DIR defaults to
                 runs/demo; PRETRAIN_EPOCHS=3 PRETRAIN_LR=3e-3 PRETRAIN_STEPS=0 (0 = no cap)
  --from STAGE   rerun from STAGE (data, pretrain, train, beam, decode, score), discarding
                 that stage's and later stages' outputs
  --help         this text

settings (environment variables; defaults are the paper's recipe for GPT-2 medium):
  MODEL_CARD=gpt2.md        gpt2.sm | gpt2.md | gpt2.lg (gpt2.tiny in --demo)
  INIT_CHECKPOINT=          pretrained GPT-2 (HF directory or .bin); default
                            PRETRAINED_DIR/<card>, downloaded from huggingface.co when missing
  PRETRAINED_DIR=pretrained where downloaded checkpoints go
  WORK_DIR=runs/e2e-<card>  run directory (checkpoints, predictions, scores)
  DATA_DIR=data/e2e         encoded datasets
  E2E_RAW_DIR=              raw train/valid/test.txt; downloaded into data/e2e/raw when unset
  NLG_VOCAB_DIR=            GPT-2 encoder.json + vocab.bpe (else tiktoken's download)
  NPROC=<#GPUs or 1>        processes for torchrun
  TRAIN_SPLIT=train         split to train on (valid in --demo)
  LORA_DIM=4 LORA_ALPHA=32 LORA_DROPOUT=0.1 LORA_TARGETS=q,v
  LABEL_SMOOTH=0.1 LR=2e-4 WEIGHT_DECAY=0.01 BATCH=8 GRAD_ACC=1 EPOCHS=5 MAX_STEP=0
  WARMUP=500 SCHEDULER=linear SEQ_LEN=512 SEED=110 SAVE_INTERVAL=1000 EVAL_INTERVAL=2000
  BEAM=10 LENGTH_PENALTY=0.8 NO_REPEAT_NGRAM=4 REPETITION_PENALTY=1.0 EVAL_LEN=64
  BEAM_BATCH=16 EOS_IDS="628"  (space-separated; the paper stops on the blank line "\n\n")
  TEST_LIMIT=0              score only the first N distinct test contexts (0 = all)
  PYMTEVAL=1                BLEU/NIST as the paper's scoring command computes them (the
                            official script's -p); 0 = the official default, mteval-v13a.pl
  NLG="python -m nlg"       how to call nlg

outputs (in WORK_DIR): lora/ (checkpoint-*/ with adapter + training state, metrics.jsonl,
  loss.png), pretrain/ (--demo only), predict.jsonl, e2e_ref.txt, e2e_pred.txt, scores.json,
  results.md and results.json
EOF
}

DEMO=0
FROM=""
while [ $# -gt 0 ]; do
  case "$1" in
    --demo) DEMO=1 ;;
    --from) FROM="${2:?--from needs a stage}"; shift ;;
    --from=*) FROM="${1#--from=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "e2e.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
NLG=${NLG:-python -m nlg}
if [ "$DEMO" = 1 ]; then
  MODEL_CARD=${MODEL_CARD:-gpt2.tiny}
  WORK_DIR=${WORK_DIR:-runs/demo}
  TRAIN_SPLIT=${TRAIN_SPLIT:-valid}
  # The demo's base model is pre-trained here, so its LoRA recipe is scaled to a tiny model.
  LORA_DIM=${LORA_DIM:-8} LORA_ALPHA=${LORA_ALPHA:-16} LORA_TARGETS=${LORA_TARGETS:-q,v,o,fc}
  LR=${LR:-2e-3} BATCH=${BATCH:-16} EPOCHS=${EPOCHS:-1} WARMUP=${WARMUP:-50} SEQ_LEN=${SEQ_LEN:-128}
  PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-3} PRETRAIN_LR=${PRETRAIN_LR:-3e-3} PRETRAIN_STEPS=${PRETRAIN_STEPS:-0}
  BEAM_BATCH=${BEAM_BATCH:-32}
  SAVE_INTERVAL=${SAVE_INTERVAL:-200} EVAL_INTERVAL=${EVAL_INTERVAL:-200} LABEL_SMOOTH=${LABEL_SMOOTH:-0.0}
fi
MODEL_CARD=${MODEL_CARD:-gpt2.md}
WORK_DIR=${WORK_DIR:-runs/e2e-$MODEL_CARD}
DATA_DIR=${DATA_DIR:-data/e2e}
PRETRAINED_DIR=${PRETRAINED_DIR:-pretrained}
TRAIN_SPLIT=${TRAIN_SPLIT:-train}
LORA_DIM=${LORA_DIM:-4} LORA_ALPHA=${LORA_ALPHA:-32} LORA_DROPOUT=${LORA_DROPOUT:-0.1}
LORA_TARGETS=${LORA_TARGETS:-q,v} LABEL_SMOOTH=${LABEL_SMOOTH:-0.1}
LR=${LR:-2e-4} WEIGHT_DECAY=${WEIGHT_DECAY:-0.01} BATCH=${BATCH:-8} GRAD_ACC=${GRAD_ACC:-1}
EPOCHS=${EPOCHS:-5} MAX_STEP=${MAX_STEP:-0} WARMUP=${WARMUP:-500} SCHEDULER=${SCHEDULER:-linear}
SEQ_LEN=${SEQ_LEN:-512} SEED=${SEED:-110} SAVE_INTERVAL=${SAVE_INTERVAL:-1000}
EVAL_INTERVAL=${EVAL_INTERVAL:-2000}
BEAM=${BEAM:-10} LENGTH_PENALTY=${LENGTH_PENALTY:-0.8} NO_REPEAT_NGRAM=${NO_REPEAT_NGRAM:-4}
REPETITION_PENALTY=${REPETITION_PENALTY:-1.0} EVAL_LEN=${EVAL_LEN:-64} BEAM_BATCH=${BEAM_BATCH:-16}
EOS_IDS=${EOS_IDS:-628} TEST_LIMIT=${TEST_LIMIT:-0} PYMTEVAL=${PYMTEVAL:-1}
if [ -z "${NPROC:-}" ]; then
  NPROC=$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))' 2>/dev/null || echo 1)
fi
VOCAB_ARGS=()
[ -n "${NLG_VOCAB_DIR:-}" ] && VOCAB_ARGS=(--vocab "$NLG_VOCAB_DIR")

STAGES=(data pretrain train beam decode score)
log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'e2e.sh: %s\n' "$*" >&2; exit 1; }

# --from STAGE: forget the outputs of STAGE and everything after it.
if [ -n "$FROM" ]; then
  case " ${STAGES[*]} " in *" $FROM "*) ;; *) die "unknown stage '$FROM' (one of: ${STAGES[*]})" ;; esac
  past=0
  for stage in "${STAGES[@]}"; do
    [ "$stage" = "$FROM" ] && past=1
    [ "$past" = 1 ] && rm -f "$WORK_DIR/.done-$stage"
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

# ---- data ---------------------------------------------------------------------------------
if ! done_stage data; then
  log "data: encode E2E into $DATA_DIR"
  if [ -n "${E2E_RAW_DIR:-}" ]; then
    $NLG data e2e --raw-dir "$E2E_RAW_DIR" --out-dir "$DATA_DIR" "${VOCAB_ARGS[@]}"
  else
    $NLG data e2e --download --raw-dir "$DATA_DIR/raw" --out-dir "$DATA_DIR" "${VOCAB_ARGS[@]}"
  fi
  mark_done data
fi
for split in "$TRAIN_SPLIT" valid test; do
  [ -f "$DATA_DIR/$split.jsonl" ] || die "$DATA_DIR/$split.jsonl is missing (raw $split.txt not found?)"
done

# ---- pretrained base ----------------------------------------------------------------------
if [ "$DEMO" = 1 ]; then
  PRETRAIN_STEP_ARGS=()
  [ "$PRETRAIN_STEPS" -gt 0 ] && PRETRAIN_STEP_ARGS=(--max_step "$PRETRAIN_STEPS")
  if ! done_stage pretrain; then
    log "pretrain (demo): train a random $MODEL_CARD fully on $TRAIN_SPLIT to stand in for GPT-2"
    # No validation: in the demo the valid split is the training data.
    python -m nlg.train --full_finetune --model_card "$MODEL_CARD" \
      --train_data "$DATA_DIR/$TRAIN_SPLIT.jsonl" \
      --train_batch_size "$BATCH" --lr "$PRETRAIN_LR" --max_epoch "$PRETRAIN_EPOCHS" "${PRETRAIN_STEP_ARGS[@]}" \
      --warmup_step "$WARMUP" --seq_len "$SEQ_LEN" --random_seed "$SEED" --label_smooth 0 \
      --save_interval "$SAVE_INTERVAL" --eval_interval 1000000 --log_interval 20 \
      --work_dir "$WORK_DIR/pretrain" --resume latest
    mark_done pretrain
  fi
  # --full_finetune checkpoints are whole models: the newest is the demo's "pretrained GPT-2".
  INIT_CHECKPOINT=${INIT_CHECKPOINT:-$(ls -d "$WORK_DIR"/pretrain/checkpoint-* | sort -t- -k2 -n | tail -n 1)}
else
  if [ -z "${INIT_CHECKPOINT:-}" ]; then
    INIT_CHECKPOINT=$PRETRAINED_DIR/$MODEL_CARD
    if [ ! -f "$INIT_CHECKPOINT/config.json" ]; then
      log "download the pretrained $MODEL_CARD into $INIT_CHECKPOINT"
      scripts/download_pretrained.sh "$MODEL_CARD" "$INIT_CHECKPOINT" \
        || die "no pretrained checkpoint: set INIT_CHECKPOINT to a local GPT-2 (HF directory or .bin)"
    fi
  fi
fi

# ---- train --------------------------------------------------------------------------------
MAX_STEP_ARGS=()
[ "$MAX_STEP" -gt 0 ] && MAX_STEP_ARGS=(--max_step "$MAX_STEP")
if ! done_stage train; then
  log "train: LoRA r=$LORA_DIM on $LORA_TARGETS, $NPROC process(es)"
  launch nlg.train --model_card "$MODEL_CARD" --init_checkpoint "$INIT_CHECKPOINT" \
    --train_data "$DATA_DIR/$TRAIN_SPLIT.jsonl" --valid_data "$DATA_DIR/valid.jsonl" \
    --train_batch_size "$BATCH" --grad_acc "$GRAD_ACC" --seq_len "$SEQ_LEN" \
    --lr "$LR" --weight_decay "$WEIGHT_DECAY" --scheduler "$SCHEDULER" --warmup_step "$WARMUP" \
    --max_epoch "$EPOCHS" "${MAX_STEP_ARGS[@]}" --label_smooth "$LABEL_SMOOTH" \
    --lora_dim "$LORA_DIM" --lora_alpha "$LORA_ALPHA" --lora_dropout "$LORA_DROPOUT" \
    --lora_targets "$LORA_TARGETS" --random_seed "$SEED" \
    --save_interval "$SAVE_INTERVAL" --eval_interval "$EVAL_INTERVAL" \
    --work_dir "$WORK_DIR/lora" --resume latest
  $NLG plot "$WORK_DIR/lora" || echo "(no loss plot: matplotlib missing?)" >&2
  mark_done train
fi
ADAPTER=$(ls -d "$WORK_DIR"/lora/checkpoint-* 2>/dev/null | sort -t- -k2 -n | tail -n 1)
[ -n "$ADAPTER" ] || die "no checkpoint in $WORK_DIR/lora"

# ---- beam ---------------------------------------------------------------------------------
TEST_DATA=$DATA_DIR/test.jsonl
if [ "$TEST_LIMIT" -gt 0 ]; then
  # The first lines covering TEST_LIMIT distinct contexts, every reference of them included.
  python - "$TEST_DATA" "$WORK_DIR/test_subset.jsonl" "$TEST_LIMIT" \
    "$DATA_DIR/test_formatted.jsonl" "$WORK_DIR/test_subset_formatted.jsonl" <<'PY'
import sys
encoded, out, limit, formatted, out_formatted = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
lines, formatted_lines = open(encoded).readlines(), open(formatted).readlines()
seen, keep = [], 0
import json
for keep, line in enumerate(lines):
    context = json.dumps(json.loads(line)["context"])
    if context not in seen:
        if len(seen) == limit:
            break
        seen.append(context)
else:
    keep = len(lines)
open(out, "w").writelines(lines[:keep])
open(out_formatted, "w").writelines(formatted_lines[:keep])
PY
  TEST_DATA=$WORK_DIR/test_subset.jsonl
  TEST_FORMATTED=$WORK_DIR/test_subset_formatted.jsonl
else
  TEST_FORMATTED=$DATA_DIR/test_formatted.jsonl
fi
EOS_ARGS=()
for eos in $EOS_IDS; do EOS_ARGS+=(--eos_token_id "$eos"); done
if ! done_stage beam; then
  log "beam: beam $BEAM, length penalty $LENGTH_PENALTY, adapter $ADAPTER"
  launch nlg.beam --data "$TEST_DATA" --model_card "$MODEL_CARD" --init_checkpoint "$INIT_CHECKPOINT" \
    --lora_checkpoint "$ADAPTER" --beam "$BEAM" --length_penalty "$LENGTH_PENALTY" \
    --no_repeat_ngram_size "$NO_REPEAT_NGRAM" --repetition_penalty "$REPETITION_PENALTY" \
    "${EOS_ARGS[@]}" --eval_len "$EVAL_LEN" --batch_size "$BEAM_BATCH" \
    --output_file "$WORK_DIR/predict.jsonl"
  mark_done beam
fi

# ---- decode -------------------------------------------------------------------------------
if ! done_stage decode; then
  log "decode: predictions and references to text"
  $NLG decode --sample_file "$WORK_DIR/predict.jsonl" --input_file "$TEST_FORMATTED" \
    --output_ref_file "$WORK_DIR/e2e_ref.txt" --output_pred_file "$WORK_DIR/e2e_pred.txt" \
    "${VOCAB_ARGS[@]}"
  mark_done decode
fi

# ---- score --------------------------------------------------------------------------------
SCORE_ARGS=()
[ "$PYMTEVAL" = 1 ] && SCORE_ARGS=(-p)
if ! done_stage score; then
  log "score: BLEU, NIST, METEOR, ROUGE-L, CIDEr"
  $NLG score "$WORK_DIR/e2e_ref.txt" "$WORK_DIR/e2e_pred.txt" --json "$WORK_DIR/scores.json" "${SCORE_ARGS[@]}"
  UNTRAINED=()
  if [ "$DEMO" = 1 ]; then
    # The same card with random weights, decoded and scored alike: what learning has to beat.
    log "score (demo): an untrained $MODEL_CARD for comparison"
    python -m nlg.beam --data "$TEST_DATA" --model_card "$MODEL_CARD" --seed "$SEED" \
      --beam "$BEAM" --length_penalty "$LENGTH_PENALTY" --no_repeat_ngram_size "$NO_REPEAT_NGRAM" \
      "${EOS_ARGS[@]}" --eval_len "$EVAL_LEN" --batch_size "$BEAM_BATCH" --no_progress \
      --output_file "$WORK_DIR/untrained/predict.jsonl"
    $NLG decode --sample_file "$WORK_DIR/untrained/predict.jsonl" --input_file "$TEST_FORMATTED" \
      --output_ref_file "$WORK_DIR/untrained/e2e_ref.txt" \
      --output_pred_file "$WORK_DIR/untrained/e2e_pred.txt" "${VOCAB_ARGS[@]}"
    $NLG score "$WORK_DIR/untrained/e2e_ref.txt" "$WORK_DIR/untrained/e2e_pred.txt" \
      --json "$WORK_DIR/untrained/scores.json" "${SCORE_ARGS[@]}" >/dev/null
    UNTRAINED=("$WORK_DIR/untrained/scores.json")
  fi
  python scripts/results_table.py "$WORK_DIR/scores.json" "$WORK_DIR/results.md" "$MODEL_CARD" "${UNTRAINED[@]}"
  mark_done score
else
  cat "$WORK_DIR/results.md"
fi
