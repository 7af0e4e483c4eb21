#!/usr/bin/env bash
# The GPU checks of issue #17 (item 5) as one prepared script, to run on a CUDA machine within a few
# minutes of device time:
#
#     bash benchmarks/gpu.sh OUT_DIR          # OUT_DIR receives every figure as JSON, plus gpu.log
#
# 1. the CUDA tests (pytest -m gpu: bf16 autocast fine-tune + eval through the CLI, bf16 logits against
#    fp32, gradient checkpointing exact in fp32 and bf16), about 1 minute;
# 2. benchmarks/finetune_speed.py --device cuda: lowres (bf16 autocast, its length buckets) against
#    transformers + peft (the CTC example's fp16 + GradScaler, group_by_length), base size, about 2 minutes;
# 3. benchmarks/adapt_speed.py --device cuda: the adapt objective against Wav2Vec2ForPreTraining, base
#    size, about 1 minute.
#
# Each step runs under `timeout` so that one stuck step cannot use up the lease; a failed step is reported
# and the next one runs. Nothing is downloaded: every model is a random checkpoint written by the scripts.
# The figures go into benchmarks/README.md ("GPU") with the GPU's name, which nvidia-smi writes first.
set -u
out=${1:?usage: bash benchmarks/gpu.sh OUT_DIR}
mkdir -p "$out"
py=${PYTHON:-python}
export PYTHONPATH=${PYTHONPATH:-$(pwd)}
log="$out/gpu.log"
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo "== $name: $*" | tee -a "$log"
    local t0=$SECONDS
    timeout "$limit" "$@" >>"$log" 2>&1
    echo "== $name: exit $? after $((SECONDS - t0)) s" | tee -a "$log"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; uptime; } >>"$log" 2>&1
step tests 180 "$py" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
step finetune_speed 240 "$py" benchmarks/finetune_speed.py --device cuda --size base --batch 8 --steps 40 \
    --pool 64 --work "$out/ftb" --json "$out/finetune_speed_cuda.json"
step adapt_speed 150 "$py" benchmarks/adapt_speed.py --device cuda --size base --batch 8 --seconds 10 \
    --rounds 20 --work "$out/adb" --json "$out/adapt_speed_cuda.json"
rm -rf "$out/ftb" "$out/adb"
tail -n 40 "$log"
