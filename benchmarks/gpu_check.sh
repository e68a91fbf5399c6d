#!/usr/bin/env bash
# The GPU figures in one short call, for whenever an accelerator is lent (issue 25): the search
# step, the hypernetwork, a member and the pipeline on CUDA, each under its own time limit so that
# the whole check ends within 8 minutes, results written to $OUT (the device runner's output folder)
# or benchmarks/results/gpu/. Tests never need it.
#
#   bash benchmarks/gpu_check.sh                        # Fashion-MNIST from .data/fashion-mnist or the Debian package
#   DATA_DIR=/path/to/fashion-mnist bash benchmarks/gpu_check.sh
#
# Last lines: every benchmark's RESULT line, prefixed with its name; a benchmark that ran out of time
# says so instead (exit status 124 in its file).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu}
data=${DATA_DIR:-}
if [ -z "$data" ]; then
  for d in .data/fashion-mnist /usr/share/datasets/fashion-mnist; do
    [ -d "$d" ] && data=$d && break
  done
fi
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device here; nothing measured" >&2
  exit 2
fi
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/device.txt" 2>&1
threads=$(nproc)
dd=${data:+--data-dir $data}
ds=${data:+--set data_dir=$data}
ss=${data:+--search-set data_dir=$data}

run() {  # name, seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s): $*" >&2
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  echo "exit $?" >> "$out/$name.txt"
}

run bench_search 75 python benchmarks/bench_search.py --device cuda --threads "$threads" --steps 20 --rounds 1 $dd
run bench_retrain 90 python benchmarks/bench_retrain.py --device cuda --skip-startup $ds
run bench_hypernet 100 python benchmarks/bench_hypernet.py --device cuda --seeds 1 --per-lambda 2 $dd
run bench_pipeline 170 python benchmarks/bench_pipeline.py $ss
for f in "$out"/bench_*.txt; do
  name=$(basename "$f" .txt)
  line=$(grep '^RESULT' "$f" | tail -1)
  echo "$name: ${line:-no RESULT ($(tail -1 "$f"))}"
done
