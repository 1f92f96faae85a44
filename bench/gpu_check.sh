#!/usr/bin/env bash
# Every GPU check in one call, for a machine with one CUDA GPU (CI has none).
#
#   bench/gpu_check.sh SHARED_DIR OUT_DIR
#
# SHARED_DIR holds data/e2e/{valid,test}.txt and vocab/gpt2 (the layout of ../shared);
# OUT_DIR receives gpu_check.log, the training metrics log, the beam predictions (fp32 and
# bf16) and the fp32 ones decoded to ref.txt / pred.txt, for `nlg score` on any machine.
# Runs, in order of importance, so a cut-off run still reports the first ones:
#   1. tests/test_gpu.py: CUDA logits, KV cache and beam search equal to the CPU's; bf16
#      training learns and resumes exactly.
#   2. the pipeline on GPT-2 M shapes (random weights: none can be downloaded where this was
#      written): nlg data -> torchrun nlg.train (bf16) -> torchrun nlg.beam over all 630 test
#      contexts, fp32 and bf16 -> nlg decode.
#   3. bench/train_throughput.py and bench/beam_throughput.py at their GPU settings.
# No step stops the others; each prints its exit status and seconds.
set -uo pipefail

shared=$(cd "${1:?usage: bench/gpu_check.sh SHARED_DIR OUT_DIR}" && pwd)
out=$(mkdir -p "${2:?usage: bench/gpu_check.sh SHARED_DIR OUT_DIR}" && cd "$2" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export NLG_SHARED_DIR=$shared NLG_VOCAB_DIR=$shared/vocab/gpt2 E2E_RAW_DIR=$shared/data/e2e
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
work=$(mktemp -d)
log=$out/gpu_check.log

step() {  # step NAME COMMAND...: run, log, report status and time; never abort the script
    local name=$1 start=$SECONDS
    shift
    echo "=== $name: $*"
    "$@"
    echo "=== $name: exit $? after $((SECONDS - start)) s"
}

{
    step env bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader;
        $py -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda)'"

    step tests "$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py

    step data "$py" -m nlg data e2e --raw-dir "$shared/data/e2e" --out-dir "$work/e2e"
    step base "$py" -c "import torch, sys
from nlg.model import GPT, card_config, save_pretrained
torch.manual_seed(0)
save_pretrained(GPT(card_config('gpt2.md')), sys.argv[1])" "$work/base"
    step train torchrun --standalone --nproc_per_node=1 -m nlg.train \
        --train_data "$work/e2e/valid.jsonl" --valid_data "$work/e2e/test.jsonl" \
        --init_checkpoint "$work/base" --work_dir "$work/train" --train_batch_size 8 \
        --lr 2e-4 --warmup_step 50 --max_step 300 --lora_dim 4 --lora_alpha 32 \
        --lora_dropout 0.1 --label_smooth 0.1 --log_interval 50 --eval_interval 300 \
        --save_interval 300
    cp "$work/train/metrics.jsonl" "$out/" 2>/dev/null
    for dtype in float32 bfloat16; do
        step "beam_$dtype" torchrun --standalone --nproc_per_node=1 -m nlg.beam \
            --data "$work/e2e/test.jsonl" --init_checkpoint "$work/base" \
            --lora_checkpoint "$work/train/checkpoint-300" --beam 10 --length_penalty 0.8 \
            --no_repeat_ngram_size 4 --eos_token_id 628 --eval_len 64 --batch_size 64 \
            --dtype "$dtype" --no_progress --output_file "$out/predict_$dtype.jsonl"
    done
    step decode "$py" -m nlg decode --sample_file "$out/predict_float32.jsonl" \
        --input_file "$work/e2e/test_formatted.jsonl" --output_ref_file "$out/ref.txt" \
        --output_pred_file "$out/pred.txt"
    step agree "$py" -c "import json, sys
a, b = ([json.loads(line)['predict'] for line in open(p)] for p in sys.argv[1:])
print(f'bf16 predictions equal to fp32: {sum(x == y for x, y in zip(a, b))} of {len(a)}')" \
        "$out/predict_float32.jsonl" "$out/predict_bfloat16.jsonl"

    step bench_train "$py" bench/train_throughput.py --device cuda --card gpt2.md --steps 50 --warmup 5
    step bench_beam "$py" bench/beam_throughput.py --device cuda --card gpt2.md --contexts 630 \
        --eval_len 64 --batch_size 64 --sample_lines 20 --hf_contexts 128 --rounds 2
} 2>&1 | tee "$log"
rm -rf "$work"
