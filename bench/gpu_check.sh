#!/usr/bin/env bash
# Every GPU check and measurement in one call, for a machine with one CUDA GPU (CI has none).
#
#   bench/gpu_check.sh SHARED_DIR OUT_DIR            # on the GPU: about 6 minutes, 9 at most
#   bench/gpu_check.sh --dry-run SHARED_DIR OUT_DIR  # the same parts on the CPU, tiny shapes
#
# The whole script stops within BUDGET seconds (default 540: the device tool's calls last 600
# at most), parts cut short or skipped when time runs out, and summary.md is always written.
#
# SHARED_DIR holds data/e2e/{valid,test}.txt and vocab/gpt2 (the layout of ../shared).
# OUT_DIR receives, whatever fails:
#   summary.md          every part's status and seconds, then the figures (bench/gpu_report.py)
#   gpu_check.log       everything printed
#   env.txt, tests.xml, train.json, latency.json, inductor.json, metrics_{none,graphs}.jsonl,
#   beam_*.log, predict_*.jsonl, ref.txt, pred.txt
# Parts, most important first; each runs under its own time limit and none stops the others:
#   env        the GPU, driver, torch and CUDA versions
#   tests      tests/test_gpu.py: CUDA equal to CPU; --compile graphs trains as the uncaptured
#              static steps do and as eager within bf16 noise, resumes exactly, never makes the
#              host wait, skips non-finite steps on the device, draws new dropout masks at every
#              replay; Inductor on CUDA; beam search unchanged by its early-stop check interval
#   bench      bench/train_throughput.py on GPT-2 M shapes, batch 8, E2E lengths: ms/step and
#              tokens/s of eager, graphs, padding to 512 and transformers + PEFT, MFU, the
#              paper's 26,290-step run projected, one validation pass timed
#   latency    bench/latency.py: the LoRA paper's Table 1, one forward pass of GPT-2 M at 32 x 512,
#              16 x 256 and 1 x 128 for base (= merged LoRA), unmerged LoRA, AdapterL and AdapterH
#              at the paper's sizes, 100 trials each, slowdowns beside the paper's (latency.json)
#   beam       `nlg beam` over the 630 E2E test contexts (beam 10, eval_len 64, random GPT-2 M
#              weights: rarely an eos, so every context runs all 64 steps, the slowest case) in
#              bf16 at batch 64 and 128, and in fp32 at batch 64
#   pipeline   `torchrun nlg.train` on GPT-2 M shapes with --compile none and graphs (300 steps
#              each, same flags): the real loop's speed and both loss curves; the graphs adapter
#              through nlg beam (bf16) and nlg decode
#   inductor   bench/train_throughput.py with --compile inductor (compiling GPT-2 M takes
#              minutes, so it goes last)
# Random weights throughout: no pretrained ones could be downloaded where this was written.
set -uo pipefail

dry=0
if [[ ${1:-} == --dry-run ]]; then dry=1; shift; fi
usage="usage: bench/gpu_check.sh [--dry-run] SHARED_DIR OUT_DIR"
shared=$(cd "${1:?$usage}" && pwd)
out=$(mkdir -p "${2:?$usage}" && cd "$2" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export NLG_SHARED_DIR=$shared NLG_VOCAB_DIR=$shared/vocab/gpt2 E2E_RAW_DIR=$shared/data/e2e
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log=$out/gpu_check.log
status=$out/status.tsv
: > "$status"

if ((dry)); then  # the CPU-runnable parts at toy size: checks the script, not the GPU
    device=cpu card=gpt2.tiny steps=3 warmup=1 block=1 eval_batches=5 train_steps=20 log_every=5
    methods=eager,static,padded,hf compiled=static inductor_steps=2 scale=${TIME_SCALE:-4} budget=${BUDGET:-3600}
    latency_args=(--card gpt2.tiny --shapes 2x32,1x16 --trials 3 --warmup 1)
else
    device=cuda card=gpt2.md steps=60 warmup=5 block=10 eval_batches=100 train_steps=300 log_every=50
    methods=eager,graphs,padded,hf compiled=graphs inductor_steps=30 scale=${TIME_SCALE:-1} budget=${BUDGET:-540}
    latency_args=()  # the paper's shapes and card
fi

part() {  # part NAME SECONDS COMMAND...: run under SECONDS x scale (less if the budget ends first)
    local name=$1 limit=$(($2 * scale)) start=$SECONDS code left=$((budget - SECONDS - 20))
    shift 2
    ((limit > left)) && limit=$left
    if ((limit < 10)); then
        echo "=== $name: skipped, the budget of $budget s is spent"
        printf '%s\tskipped\t0\n' "$name" >> "$status"
        return
    fi
    echo "=== $name (at most $limit s): $*"
    timeout --kill-after=5 "$limit" "$@"
    code=$?
    echo "=== $name: exit $code after $((SECONDS - start)) s"
    printf '%s\t%s\t%s\n' "$name" "$code" "$((SECONDS - start))" >> "$status"
}

{
    part env 60 bash -c "{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader;
        $py -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda,
            torch.cuda.get_device_name() if torch.cuda.is_available() else \"no CUDA\")'; } 2>&1 | tee '$out/env.txt'"

    part tests 300 "$py" -m pytest -q -p no:cacheprovider -rs --junitxml="$out/tests.xml" tests/test_gpu.py

    part bench 240 "$py" bench/train_throughput.py --device "$device" --card "$card" --methods "$methods" \
        --steps "$steps" --warmup "$warmup" --block "$block" --eval_batches "$eval_batches" --json "$out/train.json"

    part latency 90 "$py" bench/latency.py --device "$device" "${latency_args[@]}" --json "$out/latency.json"

    part data 60 "$py" -m nlg data e2e --raw-dir "$shared/data/e2e" --out-dir "$work/e2e"
    test_file=$work/e2e/test.jsonl
    if ((dry)) && [[ -f $test_file ]]; then head -n 200 "$test_file" > "$work/test_small.jsonl"; test_file=$work/test_small.jsonl; fi
    part base 120 "$py" -c "import sys, torch
from nlg.model import GPT, card_config
from nlg.weights import save_pretrained
torch.manual_seed(0)
with torch.device(sys.argv[2]):
    model = GPT(card_config(sys.argv[1]))
save_pretrained(model, sys.argv[3])" "$card" "$device" "$work/base"

    beam() {  # beam NAME DTYPE BATCH [ADAPTER]
        part "beam_$1" 180 "$py" -m torch.distributed.run --standalone --nproc_per_node=1 -m nlg.beam --data "$test_file" \
            --init_checkpoint "$work/base" ${4:+--lora_checkpoint "$4"} --beam 10 --length_penalty 0.8 \
            --no_repeat_ngram_size 4 --eos_token_id 628 --eval_len 64 --batch_size "$3" --dtype "$2" \
            --device "$device" --no_progress --output_file "$out/predict_$1.jsonl" 2>&1 | tee "$out/beam_$1.log"
    }
    beam bf16_b64 bfloat16 64
    beam bf16_b128 bfloat16 128
    beam fp32_b64 float32 64

    for mode in none "$compiled"; do
        part "train_$mode" 180 "$py" -m torch.distributed.run --standalone --nproc_per_node=1 -m nlg.train \
            --train_data "$work/e2e/valid.jsonl" --init_checkpoint "$work/base" --work_dir "$work/train_$mode" \
            --device "$device" --compile "$mode" --train_batch_size 8 --lr 2e-4 --warmup_step 50 \
            --max_step "$train_steps" --lora_dim 4 --lora_alpha 32 --lora_dropout 0.1 --label_smooth 0.1 \
            --log_interval "$log_every" --eval_interval 100000 --save_interval "$train_steps"
        cp "$work/train_$mode/metrics.jsonl" "$out/metrics_$mode.jsonl" 2>/dev/null
    done
    beam trained_bf16 bfloat16 64 "$work/train_$compiled/checkpoint-$train_steps"
    part decode 60 "$py" -m nlg decode --sample_file "$out/predict_trained_bf16.jsonl" \
        --input_file "$work/e2e/test_formatted.jsonl" --output_ref_file "$out/ref.txt" \
        --output_pred_file "$out/pred.txt" --allow_subset

    part inductor 300 "$py" bench/train_throughput.py --device "$device" --card "$card" --methods eager,inductor \
        --steps "$inductor_steps" --warmup "$warmup" --block "$block" --json "$out/inductor.json"

    "$py" bench/gpu_report.py "$out" && cat "$out/summary.md"
} 2>&1 | tee "$log"
