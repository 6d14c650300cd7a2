#!/usr/bin/env bash
# the one prepared check for a GPU machine (DESIGN.md §10). two halves:
#
#   scripts/gpu_check.sh --bundle [BUILD]     on the development machine
#       packs BUILD/tests/test_cuda_ops, BUILD/tests/test_comm_nccl,
#       BUILD/tinyclip (when built) and the shared libraries they link that a
#       bare GPU machine lacks (OpenBLAS, cmocka, libfyaml, ... everything but
#       libc and the CUDA libraries) into
#       BUILD/gpu_bundle/bundle.tar.xz. BUILD defaults to build-cuda; build it
#       first with -DTC_ENABLE_CUDA=ON. the folder BUILD/gpu_bundle is what
#       travels with the source tree (e.g. the device tool's carry).
#
#   scripts/gpu_check.sh [BUILD]              on the GPU machine
#       unpacks the bundle (or, without one, uses BUILD's binaries in place),
#       prints the GPU, runs the CUDA op tests (fp32 and bf16 against the CPU
#       reference), the NCCL collectives (test_comm_nccl: mpirun -np
#       min(GPUs, 2), one rank without MPI where mpirun is missing; its log
#       goes into test.log), compute-sanitizer memcheck and racecheck on the
#       quick mode of test_cuda_ops (TC_CUDA_TEST_QUICK=1), the kernel benchmarks
#       (test_cuda_ops --bench) beside PyTorch SDPA when python3 has torch
#       (scripts/bench_attention_torch.py), the end-to-end benchmark when the
#       tinyclip binary offers `bench --backend cuda`, and prints a short table
#       last. every step runs under `timeout`; the whole script stays under
#       8 minutes. full logs (8 files at most) go to $OUT, else ./gpu_check_out.
#
# exit status: 0 when every step that ran passed (skips are not failures), 1 otherwise.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
START=$(date +%s)
BUDGET=${TC_GPU_CHECK_BUDGET:-465} # seconds for all steps together (8 minutes minus margin)

die() {
  echo "gpu_check: $*" >&2
  exit 2
}

# ---------------------------------------------------------------- bundle ----
if [ "${1:-}" = "--bundle" ]; then
  BUILD=${2:-$ROOT/build-cuda}
  [ -x "$BUILD/tests/test_cuda_ops" ] || die "$BUILD/tests/test_cuda_ops not found: build it first"
  DEST=$BUILD/gpu_bundle
  STAGE=$(mktemp -d)
  trap 'rm -rf "$STAGE"' EXIT
  mkdir -p "$STAGE/bin" "$STAGE/lib"
  cp "$BUILD/tests/test_cuda_ops" "$STAGE/bin/"
  [ -x "$BUILD/tests/test_comm_nccl" ] && cp "$BUILD/tests/test_comm_nccl" "$STAGE/bin/"
  [ -x "$BUILD/tinyclip" ] && cp "$BUILD/tinyclip" "$STAGE/bin/"
  for bin in "$STAGE"/bin/*; do
    ldd "$bin" | awk '/=> \//{print $3}'
  done | sort -u | while read -r lib; do
    case $(basename "$lib") in
      # the GPU machine's own: libc family, the driver and the big CUDA libraries
      libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | ld-linux* | libresolv.so* | \
        libcuda.so* | libcublas* | libcudnn* | libnccl* | libnvidia* | libstdc++* | libgcc_s*) continue ;;
    esac
    cp -L "$lib" "$STAGE/lib/"
  done
  mkdir -p "$DEST"
  tar -C "$STAGE" -cJf "$DEST/bundle.tar.xz" .
  echo "gpu_check: wrote $DEST/bundle.tar.xz ($(du -h "$DEST/bundle.tar.xz" | cut -f1)):"
  tar -tJf "$DEST/bundle.tar.xz" | sed 's/^/  /'
  exit 0
fi

# ------------------------------------------------------------- GPU side -----
BUILD=${1:-$ROOT/build-cuda}
OUTD=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUTD" || die "cannot create $OUTD"
SUMMARY=$OUTD/summary.txt
: >"$SUMMARY"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# our binaries get their own library path (TCLIBS); python and the system
# tools keep theirs, so an older bundled libz cannot shadow the system's
TCLIBS=$WORK/needed
mkdir -p "$TCLIBS"
if [ -f "$BUILD/gpu_bundle/bundle.tar.xz" ]; then
  tar -C "$WORK" -xJf "$BUILD/gpu_bundle/bundle.tar.xz" || die "cannot unpack the bundle"
  BIN=$WORK/bin
  # a bundled library is used only where the machine has none of that soname
  for lib in "$WORK"/lib/*; do
    [ -e "$lib" ] || continue
    ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$(basename "$lib") " || ln -s "$lib" "$TCLIBS/"
  done
else
  BIN=$WORK/bin
  mkdir -p "$BIN"
  [ -x "$BUILD/tests/test_cuda_ops" ] && ln -s "$BUILD/tests/test_cuda_ops" "$BIN/"
  [ -x "$BUILD/tests/test_comm_nccl" ] && ln -s "$BUILD/tests/test_comm_nccl" "$BIN/"
  [ -x "$BUILD/tinyclip" ] && ln -s "$BUILD/tinyclip" "$BIN/"
fi
TEST=$BIN/test_cuda_ops
[ -e "$TEST" ] || die "no test_cuda_ops in $BUILD (build with -DTC_ENABLE_CUDA=ON, then --bundle)"

TCLIBPATH=$TCLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# CUDA libraries the binaries want but the loader cannot find: look in the
# toolkit and in the pip wheels that PyTorch brings (nvidia/*/lib). cuDNN is
# opened at run time (dlopen), so ldd cannot see that it is missing
if env LD_LIBRARY_PATH="$TCLIBPATH" ldd "$TEST" | grep -q "not found" ||
  ! ldconfig -p 2>/dev/null | grep -q "libcudnn\.so\.9 "; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib; do
    [ -d "$d" ] && TCLIBPATH=$TCLIBPATH:$d
  done
  if command -v python3 >/dev/null; then
    for site in $(python3 -c 'import site; print(" ".join(site.getsitepackages()+[site.getusersitepackages()]))' 2>/dev/null); do
      for d in "$site"/nvidia/*/lib; do [ -d "$d" ] && TCLIBPATH=$TCLIBPATH:$d; done
    done
  fi
fi
# our binaries (and the tools that wrap them) run as: env "$TCENV" binary ...
TCENV="LD_LIBRARY_PATH=$TCLIBPATH"

remaining() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME LOGFILE LIMIT CMD...: runs CMD under timeout, appends a summary row
declare -a ROWS=()
FAILED=0
step() {
  local name=$1 log=$2 limit=$3
  shift 3
  local left
  left=$(remaining)
  if [ "$left" -lt 15 ]; then
    ROWS+=("$(printf '%-34s %-9s %s' "$name" "NOT RUN" "time budget spent")")
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0
  t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*" >>"$log"
  timeout --kill-after=5 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  local dt
  dt=$(($(date +%s) - t0))
  local res
  case $rc in
    0) res=PASS ;;
    77) res=SKIP ;;
    124 | 137) res=TIMEOUT ; FAILED=1 ;;
    *) res="FAIL($rc)" ; FAILED=1 ;;
  esac
  ROWS+=("$(printf '%-34s %-9s %4ss  %s' "$name" "$res" "$dt" "${NOTE:-}")")
  NOTE=""
}

# ---- the GPU ----
ENVLOG=$OUTD/env.log
{
  echo "date: $(date -u)"
  echo "host: $(uname -a)"
  nvidia-smi 2>&1 || echo "nvidia-smi failed"
  echo "library path for our binaries: $TCLIBPATH"
  env "$TCENV" ldd "$TEST"
} >"$ENVLOG" 2>&1
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
echo "GPU: ${GPU:-unknown (nvidia-smi failed)}"

# ---- correctness ----
TESTLOG=$OUTD/test.log
: >"$TESTLOG"
# test_attention_mma selects the tensor-core attention itself (TINYCLIP_ATTENTION=mma
# per call), so this one run covers the FMA and the mma kernels, as do the sanitizer runs
step "cuda ops vs cpu (fp32 + bf16)" "$TESTLOG" 120 env "$TCENV" "$TEST"
passed=$(grep -c '^\[       OK \]' "$TESTLOG")
failed=$(grep '^\[  FAILED  \] test_' "$TESTLOG" | sort -u | wc -l)
ROWS[${#ROWS[@]}-1]="${ROWS[${#ROWS[@]}-1]} ${passed} ok, ${failed} failed $(grep -m1 '^SKIP:' "$TESTLOG")"

# every collective of the NCCL comm on device buffers; its log is appended to
# test.log (no file of its own: what comes back from $OUT is limited in files)
NCCLLOG=$WORK/nccl.log
: >"$NCCLLOG"
if [ -e "$BIN/test_comm_nccl" ]; then
  step "NCCL collectives" "$NCCLLOG" 150 env "$TCENV" "$BIN/test_comm_nccl"
  ROWS[${#ROWS[@]}-1]="${ROWS[${#ROWS[@]}-1]} $(grep -m1 'GPU(s): world' "$NCCLLOG") $(grep -m1 -o 'nccl-check: [a-zA-Z]*' "$NCCLLOG") $(grep -m1 '^SKIP' "$NCCLLOG")"
  cat "$NCCLLOG" >>"$TESTLOG"
else
  ROWS+=("$(printf '%-34s %-9s %s' "NCCL collectives" "NOT RUN" "no test_comm_nccl in the build")")
fi

SAN=$(command -v compute-sanitizer || true)
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer /opt/nvidia/compute-sanitizer; do
  [ -z "$SAN" ] && [ -x "$d/compute-sanitizer" ] && SAN=$d/compute-sanitizer
done
MEMLOG=$OUTD/memcheck.log
RACELOG=$OUTD/racecheck.log
: >"$MEMLOG"
: >"$RACELOG"
if [ -n "$SAN" ]; then
  step "memcheck (quick test)" "$MEMLOG" 75 env "$TCENV" TC_CUDA_TEST_QUICK=1 \
    "$SAN" --tool memcheck --error-exitcode 99 "$TEST"
  ROWS[${#ROWS[@]}-1]="${ROWS[${#ROWS[@]}-1]} $(grep -o 'ERROR SUMMARY: [0-9]* error[s]*' "$MEMLOG" | tail -1)"
  step "racecheck (quick test)" "$RACELOG" 90 env "$TCENV" TC_CUDA_TEST_QUICK=1 \
    "$SAN" --tool racecheck --racecheck-report hazard --error-exitcode 99 "$TEST"
  ROWS[${#ROWS[@]}-1]="${ROWS[${#ROWS[@]}-1]} $(grep -o 'RACECHECK SUMMARY: [0-9]* hazard[s]* displayed[^)]*)' "$RACELOG" | tail -1)"
else
  ROWS+=("$(printf '%-34s %-9s %s' "compute-sanitizer" "NOT RUN" "not found")")
fi

# ---- benchmarks ----
BENCHLOG=$OUTD/bench.log
TORCHLOG=$OUTD/torch.log
: >"$BENCHLOG"
: >"$TORCHLOG"
step "kernel benchmarks (bf16)" "$BENCHLOG" 50 env "$TCENV" "$TEST" --bench
if command -v python3 >/dev/null; then
  step "pytorch SDPA baseline" "$TORCHLOG" 50 python3 "$ROOT/scripts/bench_attention_torch.py"
else
  ROWS+=("$(printf '%-34s %-9s %s' "pytorch SDPA baseline" "NOT RUN" "no python3")")
fi

E2ELOG=$OUTD/e2e.log
: >"$E2ELOG"
if [ -e "$BIN/tinyclip" ] && timeout 20 env "$TCENV" "$BIN/tinyclip" bench --help 2>&1 | grep -qi cuda; then
  # teacher ViT-B/32 and a TinyCLIP student: inference, training and a distillation step
  NOTE="(tail of e2e.log below)"
  step "end-to-end: tinyclip bench" "$E2ELOG" 60 env "$TCENV" "$BIN/tinyclip" bench --backend cuda \
    --model "$ROOT/configs/models/ViT-B-32.json" \
    --model "$ROOT/configs/models/TinyCLIP-ViT-40M-32-Text-19M.json" \
    --teacher "$ROOT/configs/models/ViT-B-32.json" --batch 256 --steps 5 --warmup 2
else
  echo "tinyclip bench --backend cuda: not available in this build" | tee -a "$E2ELOG"
  ROWS+=("$(printf '%-34s %-9s %s' "end-to-end: tinyclip bench" "NOT RUN" "not available")")
fi

# the same distillation step in PyTorch (open_clip, bf16 autocast), eager and
# torch.compile, on the same GPU in the same run, when open_clip imports
TORCHE2E=$OUTD/torch_e2e.log
: >"$TORCHE2E"
if command -v python3 >/dev/null && python3 -c "import open_clip, torch; assert torch.cuda.is_available()" 2>/dev/null; then
  for flag in --eager --compile; do
    step "end-to-end: pytorch $flag" "$TORCHE2E" 150 python3 "$ROOT/scripts/bench_torch.py" \
      --device cuda --bf16 $flag --mode train \
      --model "$ROOT/configs/models/TinyCLIP-ViT-40M-32-Text-19M.json" \
      --teacher "$ROOT/configs/models/ViT-B-32.json" --batch 256 --steps 5 --warmup 2
  done
else
  echo "pytorch end-to-end: python3 with torch (CUDA) and open_clip is not available" | tee -a "$TORCHE2E"
  ROWS+=("$(printf '%-34s %-9s %s' "end-to-end: pytorch" "NOT RUN" "no open_clip/torch.cuda")")
fi

# ---- the table, last ----
{
  echo
  echo "==== gpu_check summary: ${GPU:-unknown GPU}, $(($(date +%s) - START))s ===="
  printf '%-34s %-9s %s\n' "step" "result" "time  notes"
  for r in "${ROWS[@]}"; do echo "$r"; done
  echo
  printf '%-58s %9s %8s %9s %8s %6s\n' "kernel (bf16)" "ours ms" "TFLOP/s" "torch ms" "TFLOP/s" "ratio"
  awk -F'|' '
    FNR == NR && /^BENCH\|torch / { n = $2; sub(/^torch /, "", n); tms[n] = $3; ttf[n] = $4; next }
    FNR != NR && /^BENCH\|/ {
      n = $2
      k = n
      sub(/ \[mma\]$/, "", k) # the tensor-core attention lines compare with the same SDPA line
      if (k in tms && $3 + 0 > 0)
        printf "%-58s %9s %8s %9s %8s %6.2f\n", n, $3, $4, tms[k], ttf[k], tms[k] / $3
      else
        printf "%-58s %9s %8s %9s %8s %6s\n", n, $3, $4, "-", "-", "-"
    }' "$TORCHLOG" "$BENCHLOG"
  echo "(ratio = torch time / our time: above 1 means ours is faster)"
  if [ -s "$E2ELOG" ]; then
    echo
    echo "end-to-end (tail of e2e.log):"
    tail -n 12 "$E2ELOG"
  fi
  if [ -s "$TORCHE2E" ]; then
    echo "pytorch end-to-end (JSON lines):"
    grep '^{' "$TORCHE2E" || tail -n 4 "$TORCHE2E"
  fi
  echo "logs: $OUTD"
} | tee -a "$SUMMARY"

exit $FAILED
