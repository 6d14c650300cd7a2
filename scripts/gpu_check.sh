#!/usr/bin/env bash
# the one prepared check for a GPU machine (docs/contributing.md, "The GPU check"). two halves:
#
#   scripts/gpu_check.sh --bundle [BUILD]     on the development machine
#       packs BUILD/tests/test_cuda_ops, BUILD/tests/test_cuda_model,
#       BUILD/tests/test_comm_nccl, BUILD/tinyclip and BUILD/tinyclip_faults
#       (the same program with test-only fault injection; when built) and the shared
#       libraries they link that a bare GPU machine lacks (OpenBLAS, cmocka,
#       libfyaml, ... everything but libc and the CUDA libraries), the BPE
#       vocabulary ($TINYCLIP_VOCAB, else third_party/vocab) and fmnist-small/
#       (the first 4096 train and 1000 test samples of Fashion-MNIST, from
#       $TC_FMNIST_SRC, else /usr/share/datasets/fashion-mnist; python3) into
#       BUILD/gpu_bundle/bundle.tar.xz. BUILD defaults to build-cuda; build it
#       first with -DTC_ENABLE_CUDA=ON. the folder BUILD/gpu_bundle is what
#       travels with the source tree (e.g. the device tool's carry).
#
#   scripts/gpu_check.sh [BUILD]              on the GPU machine
#       unpacks the bundle (or, without one, uses BUILD's binaries in place),
#       prints the GPU, runs the CUDA op tests (fp32 and bf16 against the CPU
#       reference), the whole model and 20 distillation steps against the CPU
#       backend (test_cuda_model), the NCCL collectives (test_comm_nccl: mpirun
#       -np min(GPUs, 2), one rank without MPI where mpirun is missing), a short
#       training run through the real scheduler (configs/experiments/
#       gpu-check.yaml on fmnist-small: teacher, then auto50 with its mask
#       phase and pruning) whole, then killed at auto50 step 30 and resumed,
#       whose final weights must match byte for byte (the logs of the model
#       test, NCCL and training steps are appended to test.log),
#       compute-sanitizer memcheck and racecheck on the quick mode of
#       test_cuda_ops (TC_CUDA_TEST_QUICK=1), then the benchmarks: the kernels
#       (test_cuda_ops --bench) beside PyTorch SDPA when python3 has torch with
#       CUDA (scripts/bench_attention_torch.py), the end-to-end benchmark when
#       the tinyclip binary offers `bench --backend cuda` and the same step in
#       PyTorch (eager, torch.compile) when open_clip imports, and prints a
#       short table last. every step runs under `timeout`; the whole script
#       stays under 8 minutes (TC_GPU_CHECK_BUDGET; a step that finds too
#       little time left is NOT RUN). without a GPU every step says SKIP or
#       NOT RUN and why. full logs (8 files at most: env, test, memcheck,
#       racecheck, bench, torch, e2e, summary) go to $OUT, else ./gpu_check_out.
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
  [ -x "$BUILD/tests/test_cuda_model" ] && cp "$BUILD/tests/test_cuda_model" "$STAGE/bin/"
  [ -x "$BUILD/tests/test_comm_nccl" ] && cp "$BUILD/tests/test_comm_nccl" "$STAGE/bin/"
  [ -x "$BUILD/tinyclip" ] && cp "$BUILD/tinyclip" "$STAGE/bin/"
  [ -x "$BUILD/tinyclip_faults" ] && cp "$BUILD/tinyclip_faults" "$STAGE/bin/"
  # the training step's inputs: the BPE vocabulary (the binary's built-in
  # path names this machine's source tree) and a small Fashion-MNIST folder
  # (a bare GPU machine has neither; the full dataset would add 30 MB)
  VOCAB=${TINYCLIP_VOCAB:-$ROOT/third_party/vocab/bpe_simple_vocab_16e6.txt.gz}
  if [ -f "$VOCAB" ]; then
    mkdir -p "$STAGE/vocab"
    cp "$VOCAB" "$STAGE/vocab/bpe_simple_vocab_16e6.txt.gz"
  else
    echo "gpu_check: no BPE vocabulary at $VOCAB (run scripts/setup): the bundle has no training run" >&2
  fi
  FMNIST_SRC=${TC_FMNIST_SRC:-/usr/share/datasets/fashion-mnist}
  mkdir -p "$STAGE/fmnist-small"
  # the first 4096 train and 1000 test samples, idx headers with the new
  # count: magic (0x803 images / 0x801 labels), count, then for images
  # rows and columns, all big-endian 32-bit; gzip as the Debian files
  if ! python3 - "$FMNIST_SRC" "$STAGE/fmnist-small" <<'EOF'; then
import gzip, struct, sys
src, dst = sys.argv[1], sys.argv[2]
for split, n in (("train", 4096), ("t10k", 1000)):
    for kind, magic, header, item in (("images-idx3-ubyte", 0x803, 16, 784),
                                      ("labels-idx1-ubyte", 0x801, 8, 1)):
        path = "%s/%s-%s.gz" % (src, split, kind)
        with gzip.open(path, "rb") as f:
            head = f.read(header)
            if len(head) != header or struct.unpack(">I", head[:4])[0] != magic:
                sys.exit("%s: not an idx file with magic %#x" % (path, magic))
            if struct.unpack(">I", head[4:8])[0] < n:
                sys.exit("%s: fewer than %d samples" % (path, n))
            body = f.read(n * item)
            if len(body) != n * item:
                sys.exit("%s: truncated" % path)
        with gzip.GzipFile("%s/%s-%s.gz" % (dst, split, kind), "wb", mtime=0) as g:
            g.write(head[:4] + struct.pack(">I", n) + head[8:] + body)
EOF
    echo "gpu_check: cannot write the Fashion-MNIST subset from $FMNIST_SRC (python3 and" \
      "dataset-fashion-mnist needed): the bundle has no training run" >&2
    rm -rf "$STAGE/fmnist-small"
  fi
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
  [ -x "$BUILD/tests/test_cuda_model" ] && ln -s "$BUILD/tests/test_cuda_model" "$BIN/"
  [ -x "$BUILD/tests/test_comm_nccl" ] && ln -s "$BUILD/tests/test_comm_nccl" "$BIN/"
  [ -x "$BUILD/tinyclip" ] && ln -s "$BUILD/tinyclip" "$BIN/"
  [ -x "$BUILD/tinyclip_faults" ] && ln -s "$BUILD/tinyclip_faults" "$BIN/"
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

# gpu_or_skip CMD...: runs CMD; where it fails because it finds no GPU, says
# so and exits 77 (SKIP) rather than failing. for binaries without a skip of
# their own (tinyclip); run as: step ... bash -c 'gpu_or_skip "$@"' gpu_or_skip CMD...
# shellcheck disable=SC2317 # called through bash -c
gpu_or_skip() {
  "$@" 2>&1 | tee "$WORK/gpu_or_skip.out"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ] && grep -q "no CUDA device" "$WORK/gpu_or_skip.out"; then
    echo "SKIP: $(grep -m1 -o 'no CUDA device.*' "$WORK/gpu_or_skip.out")"
    return 77
  fi
  return "$rc"
}
export -f gpu_or_skip
export WORK

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

# the whole model (features, every gradient) and 20 distillation steps in
# fp32 mode against the CPU backend; its log is appended to test.log
MODELLOG=$WORK/cuda_model.log
: >"$MODELLOG"
if [ -e "$BIN/test_cuda_model" ]; then
  step "cuda model vs cpu" "$MODELLOG" 60 env "$TCENV" "$BIN/test_cuda_model"
  passed=$(grep -c '^\[       OK \]' "$MODELLOG")
  failed=$(grep '^\[  FAILED  \] test_' "$MODELLOG" | sort -u | wc -l)
  ROWS[${#ROWS[@]}-1]="${ROWS[${#ROWS[@]}-1]} ${passed} ok, ${failed} failed $(grep -m1 '^SKIP:' "$MODELLOG")"
  cat "$MODELLOG" >>"$TESTLOG"
else
  ROWS+=("$(printf '%-34s %-9s %s' "cuda model vs cpu" "NOT RUN" "no test_cuda_model in the build")")
fi

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

# ---- end to end: tinyclip train through the real scheduler ----
# configs/experiments/gpu-check.yaml (a teacher from scratch, then auto50:
# mask phase, pruning at step 20, distillation) three times: whole into
# gpu-train-a; killed at auto50 step 30 into gpu-train-b; the same command
# again, which resumes b from its step-20 checkpoint. the final weights of
# both stages must be the same bytes. its log is appended to test.log
TRAINLOG=$WORK/train.log
: >"$TRAINLOG"
FMNIST_DIR=""
for d in "$WORK/fmnist-small" /usr/share/datasets/fashion-mnist; do
  [ -z "$FMNIST_DIR" ] && [ -f "$d/train-images-idx3-ubyte.gz" ] && FMNIST_DIR=$d
done
VOCAB=""
for v in "$WORK/vocab/bpe_simple_vocab_16e6.txt.gz" "${TINYCLIP_VOCAB:-}" \
  "$ROOT/third_party/vocab/bpe_simple_vocab_16e6.txt.gz"; do
  [ -z "$VOCAB" ] && [ -n "$v" ] && [ -f "$v" ] && VOCAB=$v
done
# one run of the experiment: train_run NAME OUTDIR [VAR=VALUE]...; its output
# goes to stdout (the step's log) and to $WORK/train-NAME.out. TRAIN_BIN: the
# program (tinyclip; tinyclip_faults for the run a fault kills).
# TC_GPU_CHECK_TRAIN_ARGS: more arguments for tinyclip train, word-split (e.g.
# "--set backend=cpu --set stages.0.steps=20" to try the step without a GPU)
TRAIN_ARGS=${TC_GPU_CHECK_TRAIN_ARGS:-}
# shellcheck disable=SC2317,SC2086 # called through bash -c; TRAIN_ARGS splits on purpose
train_run() {
  local name=$1 dir=$2
  shift 2
  echo "-- tinyclip train ($name) --out $dir $*"
  env "$TCENV" FMNIST_DIR="$FMNIST_DIR" TINYCLIP_VOCAB="$VOCAB" "$@" "$BIN/${TRAIN_BIN:-tinyclip}" train \
    "$ROOT/configs/experiments/gpu-check.yaml" --out "$dir" --plain $TRAIN_ARGS 2>&1 |
    tee "$WORK/train-$name.out"
  return "${PIPESTATUS[0]}" # tinyclip's, not tee's
}
# the three runs and the comparison; exit 77 (SKIP) where no GPU is found
# shellcheck disable=SC2317 # called through bash -c
train_kill_resume() {
  train_run a "$WORK/gpu-train-a"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    if grep -q "no CUDA device" "$WORK/train-a.out"; then
      echo "SKIP: $(grep -m1 -o 'no CUDA device.*' "$WORK/train-a.out")"
      return 77
    fi
    echo "the uninterrupted run failed (exit $rc)"
    return 1
  fi
  TRAIN_BIN=tinyclip_faults train_run b-killed "$WORK/gpu-train-b" TINYCLIP_FAULT=kill_at_step:30@auto50
  rc=$?
  echo "-- exit status of the killed run: $rc"
  if [ "$rc" -eq 0 ]; then
    echo "the run with TINYCLIP_FAULT=kill_at_step:30@auto50 was not killed"
    return 1
  fi
  train_run b "$WORK/gpu-train-b" || { echo "the resumed run failed"; return 1; }
  grep -q "resumed from" "$WORK/train-b.out" || { echo "the second run of b did not resume"; return 1; }
  local bad=0 st fa fb
  for st in teacher auto50; do
    fa=$WORK/gpu-train-a/$st/final/open_clip_model.safetensors
    fb=$WORK/gpu-train-b/$st/final/open_clip_model.safetensors
    if cmp "$fa" "$fb" >"$WORK/cmp.out" 2>&1; then
      echo "WEIGHTS stage $st: final weights bit-identical ($(wc -c <"$fa") bytes)"
    else
      echo "WEIGHTS stage $st: final weights differ ($(head -c 300 "$WORK/cmp.out" | sed "s|$WORK/||g"))"
      bad=1
    fi
  done
  return "$bad"
}
export -f train_run train_kill_resume
export TCENV BIN ROOT WORK FMNIST_DIR VOCAB TRAIN_ARGS
if [ ! -e "$BIN/tinyclip" ]; then
  ROWS+=("$(printf '%-34s %-9s %s' "train on the GPU, kill and resume" "NOT RUN" "no tinyclip in the build")")
elif [ ! -e "$BIN/tinyclip_faults" ]; then
  ROWS+=("$(printf '%-34s %-9s %s' "train on the GPU, kill and resume" "NOT RUN" \
    "no tinyclip_faults in the build (TC_FAULT_INJECTION=OFF)")")
elif [ -z "$FMNIST_DIR" ]; then
  ROWS+=("$(printf '%-34s %-9s %s' "train on the GPU, kill and resume" "NOT RUN" \
    "no Fashion-MNIST folder (bundle made without fmnist-small?)")")
elif [ -z "$VOCAB" ]; then
  ROWS+=("$(printf '%-34s %-9s %s' "train on the GPU, kill and resume" "NOT RUN" \
    "no BPE vocabulary (bundle made without one?)")")
else
  step "train on the GPU, kill and resume" "$TRAINLOG" 120 bash -c train_kill_resume
  # auto50's zero-shot top-1 (summary.json), the last img/s each stage's
  # progress printed, and the weight comparison
  top1=$(sed -n 's/.*"zeroshot_top1": *\([-0-9.]*\).*/\1/p' "$WORK/gpu-train-a/auto50/summary.json" 2>/dev/null)
  ips=""
  for st in teacher auto50; do
    v=$(grep "^stage $st \[" "$WORK/train-a.out" 2>/dev/null | tail -1 | sed -n 's/.*img\/s \([0-9.]*\).*/\1/p')
    [ -n "$v" ] && ips="$ips $st ${v} img/s,"
  done
  if grep -q '^WEIGHTS.*differ' "$TRAINLOG"; then
    same=$(grep '^WEIGHTS.*differ' "$TRAINLOG" | sed 's/^WEIGHTS //' | tr '\n' ';')
  elif [ "$(grep -c '^WEIGHTS.*bit-identical' "$TRAINLOG")" -eq 2 ]; then
    same="resumed bit-identical"
  else
    same="$(grep -m1 -E '^SKIP:|failed|not killed|did not resume' "$TRAINLOG")"
  fi
  ROWS[${#ROWS[@]}-1]="${ROWS[${#ROWS[@]}-1]} ${top1:+auto50 top-1 $(awk -v t="$top1" 'BEGIN { printf "%.1f%%", 100 * t }'),}${ips} ${same}"
  cat "$TRAINLOG" >>"$TESTLOG"
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
ROWS[${#ROWS[@]}-1]="${ROWS[${#ROWS[@]}-1]} $(grep -m1 '^SKIP:' "$BENCHLOG")"
# (the script itself exits 0 without torch, which would read as a pass)
if command -v python3 >/dev/null && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  step "pytorch SDPA baseline" "$TORCHLOG" 50 python3 "$ROOT/scripts/bench_attention_torch.py"
else
  echo "pytorch SDPA baseline: python3 with torch (CUDA) is not available" >>"$TORCHLOG"
  ROWS+=("$(printf '%-34s %-9s %s' "pytorch SDPA baseline" "NOT RUN" "no python3 with torch.cuda")")
fi

E2ELOG=$OUTD/e2e.log
: >"$E2ELOG"
if [ -e "$BIN/tinyclip" ] && timeout 20 env "$TCENV" "$BIN/tinyclip" bench --help 2>&1 | grep -qi cuda; then
  # teacher ViT-B/32 and a TinyCLIP student: inference, training and a distillation step
  NOTE="(tail of e2e.log below)"
  step "end-to-end: tinyclip bench" "$E2ELOG" 60 bash -c 'gpu_or_skip "$@"' gpu_or_skip \
    env "$TCENV" "$BIN/tinyclip" bench --backend cuda \
    --model "$ROOT/configs/models/ViT-B-32.json" \
    --model "$ROOT/configs/models/TinyCLIP-ViT-40M-32-Text-19M.json" \
    --teacher "$ROOT/configs/models/ViT-B-32.json" --batch 256 --steps 5 --warmup 2
  ROWS[${#ROWS[@]}-1]="${ROWS[${#ROWS[@]}-1]} $(grep -m1 '^SKIP:' "$E2ELOG")"
  # the distillation step again with the CUDA fast paths on (docs/cuda.md, "Fast paths");
  # tinyclip bench measures the FMA and the mma attention in each call
  step "end-to-end: tinyclip, fast paths" "$E2ELOG" 60 bash -c 'gpu_or_skip "$@"' gpu_or_skip \
    env "$TCENV" TINYCLIP_GEMM_PLANS=on TINYCLIP_GEMM_EPILOGUE=on TINYCLIP_CUDA_GRAPH=on \
    "$BIN/tinyclip" bench --backend cuda --mode train \
    --model "$ROOT/configs/models/TinyCLIP-ViT-40M-32-Text-19M.json" \
    --teacher "$ROOT/configs/models/ViT-B-32.json" --batch 256 --steps 5 --warmup 2
else
  echo "tinyclip bench --backend cuda: not available in this build" | tee -a "$E2ELOG"
  ROWS+=("$(printf '%-34s %-9s %s' "end-to-end: tinyclip bench" "NOT RUN" "not available")")
fi

# the same distillation step in PyTorch (open_clip, bf16 autocast), eager and
# torch.compile, on the same GPU in the same run, when open_clip imports; its
# log is appended to torch.log (8 files at most come back from $OUT)
TORCHE2E=$WORK/torch_e2e.log
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
cat "$TORCHE2E" >>"$TORCHLOG"

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
