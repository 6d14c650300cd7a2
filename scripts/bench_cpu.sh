#!/usr/bin/env bash
# tinyclip against PyTorch (open_clip) on this CPU, back to back, same
# threads and batch; prints one markdown row per measurement with the ratio.
#   scripts/bench_cpu.sh [THREADS] [PYTHON]
# needs a build in build/ and a Python with torch + open_clip (see
# scripts/requirements-fixtures.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-2}
PY=${2:-/opt/tcvenv/bin/python}
BIN=${TINYCLIP:-./build/tinyclip}
run() { # model batch mode [teacher]
  local model=$1 batch=$2 mode=$3 teacher=${4:-}
  local targs=() pargs=()
  if [ -n "$teacher" ]; then targs=(--teacher "configs/models/$teacher.json"); pargs=(--teacher "configs/models/$teacher.json"); fi
  local ours theirs
  ours=$($BIN bench --model "configs/models/$model.json" "${targs[@]}" --batch "$batch" --threads "$THREADS" \
           --warmup 2 --steps 5 --mode "$mode" --json | tail -1)
  theirs=$("$PY" scripts/bench_torch.py --model "configs/models/$model.json" "${pargs[@]}" --batch "$batch" \
           --threads "$THREADS" --warmup 2 --steps 5 --mode "$mode" 2>/dev/null | tail -1)
  "$PY" - "$model" "$batch" "$mode" "$teacher" "$ours" "$theirs" <<'PYEOF'
import json, sys
model, batch, mode, teacher, ours, theirs = sys.argv[1:7]
a, b = json.loads(ours)["images_per_s"], json.loads(theirs)["images_per_s"]
name = f"{model} <- {teacher}" if teacher else model
print(f"| {name} | {mode if not teacher else 'distill'} | {batch} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
PYEOF
}
echo "| model | mode | batch | tinyclip img/s | pytorch img/s | ratio |"
echo "|---|---|---|---|---|---|"
run fmnist-teacher 128 train
run fmnist-teacher 128 infer
run fmnist-student-quarter 128 train
run fmnist-student-quarter 128 train fmnist-teacher
run TinyCLIP-ViT-8M-16-Text-3M 16 train
run TinyCLIP-ViT-8M-16-Text-3M 32 infer
