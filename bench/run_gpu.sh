#!/usr/bin/env bash
# The GPU measurement of docs/benchmarks.md in one self-contained command, for a machine with one GPU, no package
# index and no ../shared: it installs the carried wheels, makes a random-weight Qwen3-0.6B folder with the real
# tokenizer, then runs
#   1. epochs: train_sft.py (the user's command, the real fast recipes) for ONE FULL EPOCH per method on the real
#      12k MATH train data, checkpoints and evaluation off, and the epoch table from the runs' run_summary.json;
#   2. bench:  bench/train_throughput.py over the configurations in BENCH_CONFIGS, in that order, for as long as
#      the time left allows (the rest are recorded as skipped).
# The epochs go first because a run stopped by its timeout leaves nothing, while the bench keeps every
# configuration it finished. Everything is written under bench/results/<device>_<date>/ (a new folder each run)
# and copied to $OUT/<device>_<date>/ when $OUT is set (the device tool brings back what is under $OUT).
#
# On the dev machine, from the repository root (both folders are git-ignored):
#   ../shared/device/wheels.sh                        # .whl/: transformers, trl, datasets, liger-kernel, ...
#   mkdir -p .gpu_data && cp -r ../shared/data/math500 ../shared/data/qwen3-0.6b-base .gpu_data/
# On the GPU machine, from the repository root (about 9.5 minutes on an H200; TOTAL_S caps it):
#   bash bench/run_gpu.sh
# A dry run of the same script on CPU (tiny smoke model and data, results under runs/bench/):
#   MODE=cpu-smoke bash bench/run_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-gpu}                       # gpu | cpu-smoke
PARTS=${PARTS:-epochs bench}            # any of: epochs bench (in this order)
EPOCH_METHODS=${EPOCH_METHODS:-adamw sgd lora}
case "$MODE" in
  gpu)
    TOTAL_S=${TOTAL_S:-570}             # the device tool runs one command for at most 600 s
    DATA=${DATA:-.gpu_data}
    EPOCH_TIMEOUT_S=${EPOCH_TIMEOUT_S:-adamw=150 sgd=150 lora=200}
    # Most decision-relevant first; what the time left does not reach is recorded as skipped (see the docs for the
    # follow-up command that measures the rest).
    # Each switch after its plain reference: the loss comparison needs both in the same run.
    BENCH_CONFIGS=${BENCH_CONFIGS:-fast/adamw fast+varlen/adamw fast+liger/adamw fast/lora \
fast+bf16base+nodropout/lora fast+varlen/lora fast/sgd fast+varlen/sgd fast+compile/adamw lean/adamw lean+mb4/adamw \
course lean/lora lean+mb4/lora fast+varlen+liger lean/sgd}
    BENCH_ARGS=${BENCH_ARGS:---steps 20 --warmup_steps 3}
    BENCH_OVERRIDES=${BENCH_OVERRIDES:-}  # extra train_sft.py arguments for the recipe configurations
    EPOCH_ARGS=${EPOCH_ARGS:---dataset_num_proc 8}  # parallel tokenisation: same data, shorter start-up
    LAUNCH=(accelerate launch --config_file accelerate_configs/single_gpu.yaml train_sft.py)
    ;;
  cpu-smoke)
    TOTAL_S=${TOTAL_S:-1500}
    DATA=${DATA:-}                      # empty: a folder laid out like .gpu_data, made from assets/smoke
    EPOCH_TIMEOUT_S=${EPOCH_TIMEOUT_S:-adamw=300 sgd=300 lora=300}
    BENCH_CONFIGS=${BENCH_CONFIGS:-course/sgd fast/sgd fast+varlen/sgd fast+liger/sgd}
    BENCH_ARGS=${BENCH_ARGS:---device cpu --tiny --steps 2 --warmup_steps 1}
    BENCH_OVERRIDES=${BENCH_OVERRIDES:---max_length 256}
    EPOCH_ARGS=${EPOCH_ARGS:---dataset_num_proc 2 --use_cpu true --bf16 false --dataloader_num_workers 0 \
--max_length 256 --max_train_samples 64}
    LAUNCH=(accelerate launch --config_file accelerate_configs/single_gpu.yaml --cpu train_sft.py)
    ;;
  *) echo "error: MODE must be gpu or cpu-smoke, not '$MODE'" >&2; exit 2 ;;
esac
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/run_gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failures=0

remaining() { echo $(( TOTAL_S - SECONDS )); }
# min(wanted, time left - reserve): a part never runs past the total.
part_timeout() { local left=$(( $(remaining) - ${2:-0} )); echo $(( $1 < left ? $1 : left )); }
timeout_of() { local pair; for pair in $EPOCH_TIMEOUT_S; do [ "${pair%%=*}" = "$1" ] && echo "${pair#*=}" && return; done; echo 150; }

install_wheels() {
  if compgen -G ".whl/*.whl" > /dev/null; then
    echo "== installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "error: the carried wheels did not install" >&2; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  elif [ "$MODE" = gpu ]; then
    echo "note: no .whl/ folder; using the installed packages (see ../shared/device/wheels.sh)"
  fi
}

smoke_data() {  # a folder laid out like .gpu_data, from the committed smoke assets
  mkdir -p "$WORK/data/qwen3-0.6b-base"
  cp -r assets/smoke/data "$WORK/data/math500"
  cp assets/smoke/model/{config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja} "$WORK/data/qwen3-0.6b-base/"
  DATA=$WORK/data
}

check_data() {
  if [ ! -f "$DATA/math500/train.jsonl" ] || [ ! -f "$DATA/qwen3-0.6b-base/config.json" ]; then
    echo "error: no data in '$DATA' (needs math500/train.jsonl and qwen3-0.6b-base/config.json with the tokenizer);" \
      "on the dev machine: mkdir -p .gpu_data && cp -r ../shared/data/math500 ../shared/data/qwen3-0.6b-base .gpu_data/" >&2
    exit 2
  fi
}

results_folder() {  # bench/results/<device>_<date> on the GPU, runs/bench/cpu-smoke_<device>_<date> on CPU; always new
  python3 - "$MODE" <<'PY'
import sys
from bench.common import COMMITTED_ROOT, SCRATCH_ROOT, device_slug, fresh_folder, utc_date
from mathsft.environment import device_name
name = f"{device_slug(device_name())}_{utc_date()}"
parent = COMMITTED_ROOT if sys.argv[1] == "gpu" else SCRATCH_ROOT
print(fresh_folder(parent, name if sys.argv[1] == "gpu" else f"cpu-smoke_{name}"))
PY
}

environment() {
  { date -u '+%Y-%m-%d %H:%M UTC'; echo "MODE=$MODE PARTS=$PARTS TOTAL_S=$TOTAL_S"; git log -1 --format='commit %H %s' 2>/dev/null
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    python3 -c "from mathsft.environment import device_name, library_versions; print(device_name(), library_versions())"
    python3 -c "import importlib.util as u; print('liger-kernel:', bool(u.find_spec('liger_kernel')))"
  } > "$RESULTS/environment.txt" 2>&1
  cat "$RESULTS/environment.txt"
}

run_epoch() {  # $1 = method: one full epoch of the fast recipe through the user's command
  local method=$1 dir="$WORK/epochs/$1" t rc start
  t=$(part_timeout "$(timeout_of "$method")" 5)
  mkdir -p "$dir"
  local cmd=("${LAUNCH[@]}" --config "recipes/qwen3-0.6b-base/$method.yaml" --model_name_or_path "$MODEL"
    --dataset_name "$DATA/math500" --num_train_epochs 1 --save_strategy no --eval_strategy no
    --disable_tqdm true --output_dir "$dir/run")  # the run's own folder; the logs stay beside it
  # shellcheck disable=SC2206
  cmd+=($EPOCH_ARGS)
  echo "${cmd[*]}" > "$dir/command.txt"
  if [ "$t" -lt 30 ]; then echo "== epoch $method: skipped, $(remaining) s left"; return; fi
  echo "== epoch $method (timeout ${t} s): ${cmd[*]}"
  start=$SECONDS
  timeout -k 15 "$t" "${cmd[@]}" > "$dir/train.log" 2>&1
  rc=$?
  echo "$rc $(( SECONDS - start ))" > "$dir/command_status.txt"
  tail -n 12 "$dir/train.log"
  echo "== epoch $method: exit code $rc after $(( SECONDS - start )) s"
  [ "$rc" -eq 0 ] || failures=$((failures + 1))
}

part_epochs() {
  local method
  for method in $EPOCH_METHODS; do run_epoch "$method"; done
  python3 bench/epoch_table.py --runs_dir "$WORK/epochs" --methods "$(echo $EPOCH_METHODS | tr ' ' ,)" \
    --output_dir "$RESULTS" || failures=$((failures + 1))
}

part_bench() {
  local t budget rc
  t=$(part_timeout 100000 5)
  budget=$(( t - 45 ))  # a configuration started just before the budget ends still has time to finish
  if [ "$budget" -lt 20 ]; then echo "== bench: skipped, $(remaining) s left"; return; fi
  # shellcheck disable=SC2206
  local cmd=(python3 bench/train_throughput.py --model "$MODEL" --data_dir "$DATA/math500" --output_dir "$RESULTS"
    --time_budget_s "$budget" --configs $BENCH_CONFIGS $BENCH_ARGS)
  [ -n "$BENCH_OVERRIDES" ] && cmd+=(--recipe_overrides "$BENCH_OVERRIDES")
  echo "== bench (budget ${budget} s, timeout ${t} s): ${cmd[*]}"
  timeout -k 15 "$t" "${cmd[@]}"
  rc=$?
  echo "== bench: exit code $rc"
  [ "$rc" -eq 0 ] || failures=$((failures + 1))
}

copy_out() {  # the device tool brings back at most 8 files, at most 2 folders down
  [ -n "${OUT:-}" ] || return 0
  local dest; dest="$OUT/$(basename "$RESULTS")"
  mkdir -p "$dest" && cp "$RESULTS"/* "$dest"/ && echo "== copied $(ls "$dest" | wc -l) files to $dest"
}

[ "$MODE" = cpu-smoke ] && [ -z "$DATA" ] && smoke_data
check_data
if [ "$MODE" = gpu ] && ! nvidia-smi -L > /dev/null 2>&1; then
  echo "error: MODE=gpu needs an NVIDIA GPU (nvidia-smi found none); on a CPU run MODE=cpu-smoke" >&2
  exit 2
fi
install_wheels
RESULTS=${RESULTS:-$(results_folder)} || exit 2
mkdir -p "$RESULTS"
exec > >(tee -a "$RESULTS/run_gpu.log") 2>&1
TEE_PID=$!
echo "== results: $RESULTS"
environment
MODEL="$WORK/qwen3-0.6b-random-bf16"
python3 bench/sources.py --config_dir "$DATA/qwen3-0.6b-base" --out "$MODEL" || exit 2
for part in $PARTS; do
  case "$part" in
    epochs) part_epochs ;;
    bench) part_bench ;;
    *) echo "error: unknown part '$part' (epochs, bench)"; exit 2 ;;
  esac
  copy_out
done
echo "== done in $SECONDS s with $failures failed part(s); results in $RESULTS"
[ -f "$RESULTS/epoch_table.md" ] && cat "$RESULTS/epoch_table.md"
exec >&- 2>&-
wait "$TEE_PID"  # the log is complete when the script returns
[ "$failures" -eq 0 ]
