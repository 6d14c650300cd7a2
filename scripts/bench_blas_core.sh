#!/usr/bin/env bash
# the cost of pinning OpenBLAS to one kernel family: the training step of
# the demo's teacher and a distillation step of its quarter student, with
# the family OpenBLAS picks for this CPU and with each family named on the
# command line (OPENBLAS_CORETYPE), in alternating rounds; per family the
# median images/s (wall clock) and the median CPU seconds of a whole bench
# process (user + system, from /usr/bin/time; less disturbed than the wall
# clock when other work shares the machine).
#   scripts/bench_blas_core.sh [ROUNDS] [FAMILY...]
#   defaults: 5 rounds; SkylakeX Haswell
#   TINYCLIP=path/to/tinyclip (default ./build/tinyclip), THREADS (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
TINYCLIP=${TINYCLIP:-./build/tinyclip}
THREADS=${THREADS:-2}
ROUNDS=${1:-5}
[ $# -gt 0 ] && shift
if [ $# -gt 0 ]; then FAMILIES=(default "$@"); else FAMILIES=(default SkylakeX Haswell); fi
M=configs/models
out=$(mktemp)
trap 'rm -f "$out" "$out.t" "$out.j"' EXIT

one() { # family kind -> "images_per_s cpu_seconds"
  local fam=$1 kind=$2 args
  if [ "$kind" = train ]; then
    args=(--model $M/fmnist-teacher.json)
  else
    args=(--model $M/fmnist-student-quarter.json --teacher $M/fmnist-teacher.json)
  fi
  local env=(env)
  [ "$fam" != default ] && env+=(OPENBLAS_CORETYPE="$fam")
  "${env[@]}" /usr/bin/time -f '%U %S' -o "$out.t" "$TINYCLIP" bench "${args[@]}" --batch 128 \
    --threads "$THREADS" --steps 4 --warmup 1 --mode train --json >"$out.j" 2>/dev/null
  local ips cpu
  ips=$(sed -n 's/.*"images_per_s":\([0-9.]*\).*/\1/p' "$out.j" | tail -1)
  cpu=$(awk '{print $1 + $2}' "$out.t")
  echo "$ips $cpu"
}

for r in $(seq "$ROUNDS"); do
  for fam in "${FAMILIES[@]}"; do
    for kind in train distill; do
      echo "$fam $kind $(one "$fam" "$kind")" >>"$out"
    done
  done
done

echo "OpenBLAS kernel families, $ROUNDS rounds, $THREADS threads, batch 128 ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
printf '%-10s %-8s %14s %18s %12s\n' family step "median img/s" "median CPU s/run" "CPU/default"
python3 - "$out" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for fam, kind, ips, cpu in rows:
    med.setdefault((fam, kind), ([], []))
    med[(fam, kind)][0].append(float(ips))
    med[(fam, kind)][1].append(float(cpu))
for (fam, kind), (ips, cpu) in med.items():
    base = statistics.median(med[("default", kind)][1])
    print(f"{fam:10s} {kind:8s} {statistics.median(ips):14.1f} {statistics.median(cpu):18.2f}"
          f" {statistics.median(cpu) / base:12.3f}")
EOF
