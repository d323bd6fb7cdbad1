#!/usr/bin/env bash
# One script for the GPU check: install the carried wheels (the GPU machine has no package index), run the training
# benchmark, then a short real `accelerate launch train_sft.py` run of the fast AdamW recipe on the random-weight
# Qwen3-0.6B architecture. Results go to $OUT (the device tool's folder) or bench/results.
#   ../shared/device/wheels.sh; cp -r ../shared/data/{math500,qwen3-0.6b-base} .gpu_data/   (on the dev machine)
#   bash bench/run_gpu.sh                                                                      (on the GPU machine)
set -uo pipefail
OUT=${OUT:-bench/results}
DATA=${DATA:-.gpu_data}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

python3 bench/train_throughput.py --config_dir "$DATA/qwen3-0.6b-base" --data_dir "$DATA/math500" \
  --steps "${STEPS:-5}" --warmup_steps "${WARMUP:-2}" --output_dir "$OUT" 2>&1 | tee "$OUT/train_bench.log"

# The user's command, for a few steps: a random-weight model folder with the real tokenizer stands in for the Hub.
python3 - "$DATA/qwen3-0.6b-base" /tmp/qwen3-random <<'PY'
import sys, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
config = AutoConfig.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
model.save_pretrained(sys.argv[2]); AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
PY
timeout "${E2E_TIMEOUT:-120}" accelerate launch --config_file accelerate_configs/single_gpu.yaml train_sft.py \
  --config recipes/qwen3-0.6b-base/adamw.yaml --model_name_or_path /tmp/qwen3-random --dataset_name "$DATA/math500" \
  --max_train_samples 600 --max_eval_samples 64 --max_steps 6 --eval_steps 3 --logging_steps 1 \
  --save_strategy no --output_dir /tmp/gpu-adamw 2>&1 | tail -30 | tee "$OUT/train_sft_gpu.log"
cp /tmp/gpu-adamw/run_summary.json "$OUT/train_sft_gpu_run_summary.json" 2>/dev/null || echo "no run summary"
