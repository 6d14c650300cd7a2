#!/usr/bin/env bash
# the one prepared check for a GPU machine (docs/cuda.md, "Running the GPU
# check"): everything the first GPU run must tell, in one call of at most 10
# minutes. three modes:
#
#   scripts/gpu_check.sh --bundle [BUILD]     on the development machine
#       packs BUILD's binaries (BUILD/tests/test_cuda_ops, test_cuda_model,
#       test_comm_nccl, BUILD/tinyclip, and tinyclip_faults, the same program
#       with test-only fault injection, when the build has it) with the
#       shared libraries they link
#       that a bare GPU machine lacks (everything but libc and the CUDA
#       libraries), the BPE vocabulary, fmnist-small/ (the first 4096 train
#       and 1000 test samples of Fashion-MNIST) and the wheels open_clip
#       needs beyond PyTorch (third_party/wheels, from scripts/setup) into
#       BUILD/gpu_bundle/bundle.tar.xz. BUILD (default build-cuda) must be
#       a CUDA build. BUILD/gpu_bundle is what travels with the source tree.
#
#   scripts/gpu_check.sh --selftest [BUILD]   anywhere, no GPU needed (CI)
#       builds the bundle from BUILD and checks it: its contents, that every
#       bundled binary finds every library but the GPU machine's own, that
#       every wheel's requirements are bundled or on the GPU machine, that
#       bundle and source tree fit the 64 MiB that travel, that the steps'
#       time limits fit the budget, that every step's command exists, and
#       that the summary computes MFU right; prints the plan. exit 77
#       (skip) when BUILD has no CUDA binaries.
#
#   scripts/gpu_check.sh [BUILD]              on the GPU machine
#       unpacks the bundle (or uses BUILD's binaries in place), installs the
#       bundled wheels that python3 lacks into a temporary folder, checks
#       that every binary finds its libraries, then runs the steps of PLAN
#       below in order: quick correctness (CUDA ops fp32 and bf16 against the
#       CPU, the whole model, NCCL), benchmarks (kernels with the FMA and the
#       tensor-core attention beside PyTorch SDPA; the distillation step and
#       inference end to end with tinyclip's FMA and mma attention, the mma
#       attention with the CUDA fast paths on, PyTorch
#       eager and torch.compile), a training run killed and resumed, then the
#       sanitizers with the time that is left. every step runs under its own
#       limit; the limits add up to the budget (TC_GPU_CHECK_BUDGET, 540 s,
#       inside a 600 s call). a step that the budget cannot give its limit is
#       NOT RUN, which fails nothing; without a GPU every step says SKIP and
#       why. the summary table (step results, kernel ratios, end-to-end rows
#       with TFLOP/s and MFU) is printed last. logs, 8 files (env, test,
#       bench, torch, e2e, memcheck, racecheck, summary), go to $OUT, else
#       ./gpu_check_out.
#
# exit status: 0 when every step that ran passed (skips are not failures),
# 1 otherwise; 2 for a usage or bundle error.
# shellcheck disable=SC2317 # the step functions run through bash -c
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
START=$(date +%s)
BUDGET=${TC_GPU_CHECK_BUDGET:-540} # seconds, every step together
SETUP_RESERVE=20                   # unpacking, wheels, library checks before the first step
KILL_AFTER=3                       # a step that ignores SIGTERM is killed this much later
CALL_LIMIT=600                     # one command on the GPU machine
CARRY_LIMIT=$((64 * 1024 * 1024))  # what travels: the source tree and the bundle
MIN_STEP=15                        # a sanitizer run shorter than this is not started

# the plan: "id limit title", in run order. the limits of every step plus
# SETUP_RESERVE must fit BUDGET (the selftest checks it); the sanitizers run
# with whatever is left, at least their limit when nothing ran long
PLAN=(
  "ops 45 cuda ops vs cpu (fp32 + bf16; ResNet ops, cuDNN conv2d, head sizes 8..256)"
  "model 40 cuda model vs cpu"
  "nccl 25 NCCL collectives"
  "kernels 35 kernel benchmarks (FMA + mma; wgmma + tma on compute capability 9)"
  "sdpa 25 pytorch SDPA baseline"
  "e2e_fma 35 end to end: tinyclip, FMA attention"
  "e2e_mma 35 end to end: tinyclip, mma attention"
  "e2e_fast 30 end to end: tinyclip, mma attention, fast paths (plans, epilogues, graph)"
  "torch_eager 45 end to end: pytorch eager"
  "torch_compile 60 end to end: torch.compile"
  "train 80 train on the GPU, kill and resume"
  "memcheck 32 memcheck (quick test)"
  "racecheck 32 racecheck (quick test)"
)
SANITIZERS=" memcheck racecheck "
# the end-to-end model pair: a distillation step (and inference) at batch 256
E2E_STUDENT=configs/models/TinyCLIP-ViT-40M-32-Text-19M.json
E2E_TEACHER=configs/models/ViT-B-32.json
E2E_ARGS="--batch 256 --steps 5 --warmup 2 --mode both"
# paths inside the build folder
BINARIES="$(for t in test_cuda_ops test_cuda_model test_comm_nccl; do printf 'tests/%s ' $t; done)tinyclip"
# the kill of the training step needs it; a build with TC_FAULT_INJECTION=OFF has none
OPTIONAL_BINARIES="tinyclip_faults"
WHEELS_SRC=$ROOT/third_party/wheels
# what the GPU machine's python3 has (its image lists them) and open_clip's
# wheel may ask for; anything else a wheel needs must be bundled
GPU_PYTHON_HAS="torch torchvision numpy regex tqdm huggingface-hub safetensors timm"

die() {
  echo "gpu_check: $*" >&2
  exit 2
}

# what each step needs: bin/NAME from the bundle, tree/PATH from the
# source tree, wheel/MODULE bundled for python (the selftest checks them)
step_needs() {
  case $1 in
    ops | kernels | memcheck | racecheck) echo "bin/test_cuda_ops" ;;
    model) echo "bin/test_cuda_model" ;;
    nccl) echo "bin/test_comm_nccl" ;;
    sdpa) echo "tree/scripts/bench_attention_torch.py" ;;
    e2e_fma | e2e_mma | e2e_fast) echo "bin/tinyclip tree/$E2E_STUDENT tree/$E2E_TEACHER" ;;
    torch_eager | torch_compile)
      echo "tree/scripts/bench_torch.py tree/$E2E_STUDENT tree/$E2E_TEACHER wheel/open_clip wheel/ftfy wheel/wcwidth"
      ;;
    train) echo "bin/tinyclip bin/tinyclip_faults tree/configs/experiments/gpu-check.yaml fmnist vocab" ;;
  esac
}

# ---------------------------------------------------------------- bundle ----

# the first 4096 train and 1000 test samples: idx headers with the new
# count (magic 0x803 images / 0x801 labels, count, then for images rows and
# columns, all big-endian 32-bit), gzip as the Debian files
write_fmnist_small() { # SRC DST
  python3 - "$1" "$2" <<'EOF'
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
}

# the libraries a binary needs that the GPU machine provides itself: the C
# library family, the driver and the CUDA libraries (the toolkit, or the
# nvidia/*/lib folders of its PyTorch wheels)
gpu_machine_lib() {
  case $1 in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | ld-linux* | libresolv.so* | \
      libstdc++* | libgcc_s* | libcuda.so* | libcudart* | libcublas* | libcudnn* | libnccl* | \
      libnvidia* | linux-vdso*) return 0 ;;
  esac
  return 1
}

make_bundle() { # BUILD
  local build=$1 dest=$1/gpu_bundle stage b lib
  [ -x "$build/tests/test_cuda_ops" ] || die "$build/tests/test_cuda_ops not found: make a CUDA build first"
  local vocab=${TINYCLIP_VOCAB:-$ROOT/third_party/vocab/bpe_simple_vocab_16e6.txt.gz}
  [ -f "$vocab" ] || die "no BPE vocabulary at $vocab (run scripts/setup)"
  ls "$WHEELS_SRC"/open_clip_torch-*.whl >/dev/null 2>&1 || die "no wheels in $WHEELS_SRC (run scripts/setup)"
  stage=$(mktemp -d)
  mkdir -p "$stage/bin" "$stage/lib" "$stage/vocab" "$stage/fmnist-small" "$stage/wheels"
  for b in $BINARIES; do
    [ -x "$build/$b" ] || { rm -rf "$stage"; die "$build/$b not found: build every target first"; }
    cp "$build/$b" "$stage/bin/"
  done
  for b in $OPTIONAL_BINARIES; do
    if [ -x "$build/$b" ]; then cp "$build/$b" "$stage/bin/"; else echo "gpu_check: no $build/$b: the bundle has none"; fi
  done
  cp "$vocab" "$stage/vocab/bpe_simple_vocab_16e6.txt.gz"
  cp "$WHEELS_SRC"/*.whl "$stage/wheels/"
  write_fmnist_small "${TC_FMNIST_SRC:-/usr/share/datasets/fashion-mnist}" "$stage/fmnist-small" || {
    rm -rf "$stage"
    die "cannot write the Fashion-MNIST subset (python3 and dataset-fashion-mnist needed)"
  }
  for b in "$stage"/bin/*; do
    ldd "$b" | awk '/=> \//{print $3}'
  done | sort -u | while read -r lib; do
    gpu_machine_lib "$(basename "$lib")" || cp -L "$lib" "$stage/lib/"
  done
  mkdir -p "$dest"
  XZ_OPT=${XZ_OPT:--3 -T0} tar -C "$stage" -cJf "$dest/bundle.tar.xz" . || {
    rm -rf "$stage"
    die "cannot write $dest/bundle.tar.xz"
  }
  rm -rf "$stage"
  echo "gpu_check: wrote $dest/bundle.tar.xz ($(du -h "$dest/bundle.tar.xz" | cut -f1))"
}

if [ "${1:-}" = "--bundle" ]; then
  make_bundle "${2:-$ROOT/build-cuda}"
  tar -tJf "${2:-$ROOT/build-cuda}/gpu_bundle/bundle.tar.xz" | sed 's/^/  /'
  exit 0
fi

# ------------------------------------------------------------- selftest ----

print_plan() {
  local sum=0 e id limit title
  printf '%-14s %6s  %s\n' "step" "limit" "what"
  for e in "${PLAN[@]}"; do
    read -r id limit title <<<"$e"
    printf '%-14s %5ss  %s%s\n' "$id" "$limit" "$title" \
      "$(case $SANITIZERS in *" $id "*) echo " (with what is left)" ;; esac)"
    sum=$((sum + limit))
  done
  echo "steps $sum s + setup $SETUP_RESERVE s = $((sum + SETUP_RESERVE)) s of a $BUDGET s budget" \
    "(one call: $CALL_LIMIT s)"
}

selftest() { # BUILD
  local build=$1 fails=0 tmp e id limit title need sum=0
  if [ ! -x "$build/tests/test_cuda_ops" ]; then
    echo "SKIP: $build has no CUDA build (no $build/tests/test_cuda_ops): there is nothing to bundle"
    exit 77
  fi
  bad() {
    echo "FAIL: $*"
    fails=$((fails + 1))
  }
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" EXIT
  echo "== the bundle, from $build"
  (make_bundle "$build") || bad "the bundle could not be made"
  local bundle=$build/gpu_bundle/bundle.tar.xz
  [ -f "$bundle" ] || { echo "FAIL: no bundle"; exit 1; }
  tar -C "$tmp" -xJf "$bundle" || bad "the bundle does not unpack"
  for b in $BINARIES $OPTIONAL_BINARIES; do
    [ -x "$tmp/bin/$(basename "$b")" ] || bad "bundle: bin/$(basename "$b") missing"
  done
  [ -s "$tmp/vocab/bpe_simple_vocab_16e6.txt.gz" ] || bad "bundle: no vocabulary"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -s "$tmp/fmnist-small/$f.gz" ] || bad "bundle: fmnist-small/$f.gz missing"
  done
  count() { find "$1" -mindepth 1 -maxdepth 1 | wc -l; }
  [ "$(count "$tmp/lib")" -gt 0 ] || bad "bundle: no libraries"
  echo "   $(count "$tmp/bin") binaries, $(count "$tmp/lib") libraries, $(count "$tmp/wheels") wheels"

  echo "== every binary finds every library but the GPU machine's own"
  local b missing
  for b in "$tmp"/bin/*; do
    missing=$(env LD_LIBRARY_PATH="$tmp/lib" ldd "$b" 2>&1 | awk '/not found/{print $1}' |
      while read -r lib; do gpu_machine_lib "$lib" || echo "$lib"; done | tr '\n' ' ')
    if [ -n "$missing" ]; then bad "$(basename "$b") lacks $missing"; else echo "   $(basename "$b"): ok"; fi
  done

  echo "== wheels: open_clip's requirements are bundled or on the GPU machine"
  python3 - "$tmp/wheels" "$GPU_PYTHON_HAS" <<'EOF' || bad "the wheels do not cover what open_clip imports"
import glob, re, sys, zipfile
folder, machine = sys.argv[1], set(sys.argv[2].split())
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
wheels = {}
for path in glob.glob(folder + "/*.whl"):
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    name = norm(re.search(r"^Name: (.+)$", text, re.M).group(1))
    reqs = [norm(re.match(r"[A-Za-z0-9_.-]+", r).group(0))
            for r in re.findall(r"^Requires-Dist: (.+)$", text, re.M) if "extra ==" not in r]
    wheels[name] = reqs
have = set(wheels) | {norm(m) for m in machine}
ok = "open-clip-torch" in wheels
for name, reqs in sorted(wheels.items()):
    lack = [r for r in reqs if r not in have]
    print("   %s: needs %s%s" % (name, ", ".join(reqs) or "nothing",
                                "; MISSING " + ", ".join(lack) if lack else ""))
    ok = ok and not lack
sys.exit(0 if ok else 1)
EOF

  echo "== size: what travels (the source tree and the bundle)"
  local tree
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    tree=$(git -C "$ROOT" ls-files -co --exclude-standard -z | (cd "$ROOT" && xargs -0 stat -c %s 2>/dev/null) |
      awk '{s += $1} END {print s + 0}')
  else
    tree=$(du -sb --exclude='build*' "$ROOT" | cut -f1)
  fi
  local size=$(($(stat -c %s "$bundle") + tree))
  echo "   tree $((tree / 1024)) KiB + bundle $(($(stat -c %s "$bundle") / 1024)) KiB = $((size / 1024)) KiB of $((CARRY_LIMIT / 1024)) KiB"
  [ "$size" -le "$CARRY_LIMIT" ] || bad "tree and bundle are $size bytes, over $CARRY_LIMIT"

  echo "== the plan fits the budget"
  for e in "${PLAN[@]}"; do
    read -r id limit title <<<"$e"
    sum=$((sum + limit))
  done
  [ $((sum + SETUP_RESERVE)) -le "$BUDGET" ] || bad "step limits $sum s + setup $SETUP_RESERVE s exceed the $BUDGET s budget"
  # every step may overrun its limit by KILL_AFTER before it is killed
  [ $((BUDGET + ${#PLAN[@]} * KILL_AFTER + 10)) -le "$CALL_LIMIT" ] ||
    bad "a $BUDGET s budget leaves too little of the $CALL_LIMIT s call"

  echo "== every step's command exists"
  local listing
  listing=$(for w in "$tmp"/wheels/*.whl; do unzip -l "$w"; done 2>/dev/null)
  for e in "${PLAN[@]}"; do
    read -r id limit title <<<"$e"
    for need in $(step_needs "$id"); do
      case $need in
        bin/*) [ -x "$tmp/$need" ] || bad "$id: $need is not in the bundle" ;;
        tree/*) [ -f "$ROOT/${need#tree/}" ] || bad "$id: ${need#tree/} is not in the tree" ;;
        wheel/*) grep -q " ${need#wheel/}/__init__.py$" <<<"$listing" ||
          bad "$id: no bundled wheel provides ${need#wheel/}" ;;
        fmnist) [ -s "$tmp/fmnist-small/train-images-idx3-ubyte.gz" ] || bad "$id: no fmnist-small" ;;
        vocab) [ -s "$tmp/vocab/bpe_simple_vocab_16e6.txt.gz" ] || bad "$id: no vocabulary" ;;
      esac
    done
    [ "$(type -t "step_$id")" = function ] || bad "$id: no step_$id in this script"
  done
  # the quick-correctness step covers what the model breadth added: the
  # ResNet ops (cuDNN conv2d, BatchNorm, pools, attention pool, a whole
  # ResNet CLIP) and the attention cases with head sizes 8..256
  for t in test_attention test_attention_mma test_attention_wgmma test_attention_tma \
    test_patch_embed test_conv2d test_batchnorm test_relu_avgpool test_attnpool test_resnet_model; do
    grep -a "$t" "$tmp/bin/test_cuda_ops" >/dev/null || bad "ops: test_cuda_ops has no $t"
  done
  # (grep without -q reads to the end: with pipefail an early exit would fail the pipe)
  env LD_LIBRARY_PATH="$tmp/lib" "$tmp/bin/tinyclip" bench --help 2>&1 | grep -- "--backend.*cuda" >/dev/null ||
    bad "tinyclip bench offers no --backend cuda"
  for f in bench_torch.py bench_attention_torch.py gpu_check_summary.py; do
    python3 -m py_compile "$ROOT/scripts/$f" 2>/dev/null || bad "scripts/$f does not compile"
  done
  # the yaml of the training step parses and plans (the binary runs here)
  env LD_LIBRARY_PATH="$tmp/lib" FMNIST_DIR="$tmp/fmnist-small" "$tmp/bin/tinyclip" train \
    "$ROOT/configs/experiments/gpu-check.yaml" --dry-run >/dev/null 2>&1 || bad "train: gpu-check.yaml --dry-run fails"

  echo "== the summary's MFU arithmetic"
  printf '%s\n' '{"framework":"tinyclip","model":"m","mode":"distill","batch":256,"images_per_s":1000.0,"step_ms":256.0,"gflop_per_sample":35.69}' >"$tmp/a.jsonl"
  printf '%s\n' '{"framework":"pytorch","model":"m","mode":"distill","batch":256,"images_per_s":500.0,"step_ms":512.0}' >"$tmp/b.jsonl"
  local out
  out=$(python3 "$ROOT/scripts/gpu_check_summary.py" --gpu "NVIDIA H100 80GB HBM3" \
    --e2e "tinyclip FMA=$tmp/a.jsonl" --e2e "pytorch eager=$tmp/b.jsonl")
  echo "$out" | sed 's/^/   /'
  # 1000 img/s x 35.69 GFLOP = 35.69 TFLOP/s, 3.6% of 989.4; PyTorch half of both, 2.00x
  grep -q "^tinyclip FMA .* 35.7 *3.6% *2.00$" <<<"$out" || bad "summary: the tinyclip row's TFLOP/s, MFU or ratio is wrong"
  grep -q "^pytorch eager .* 17.8 *1.8% *1.00$" <<<"$out" || bad "summary: the PyTorch row's TFLOP/s, MFU or ratio is wrong"

  echo "== the plan"
  print_plan
  if [ "$fails" -gt 0 ]; then
    echo "gpu_check selftest: $fails problem(s)"
    exit 1
  fi
  echo "gpu_check selftest: ok"
  exit 0
}

# ------------------------------------------------------------- the steps ----
# each runs in `bash -c` under timeout, its output going to the step's log;
# exit 77 means SKIP (the message says why)

# runs CMD; where it fails because it finds no GPU, says SKIP and exits 77
gpu_or_skip() {
  "$@" 2>&1 | tee "$WORK/gpu_or_skip.out"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ] && grep -q "no CUDA device" "$WORK/gpu_or_skip.out"; then
    echo "SKIP: $(grep -m1 -o 'no CUDA device.*' "$WORK/gpu_or_skip.out")"
    return 77
  fi
  return "$rc"
}

torch_cuda_or_skip() { # MODULES: the python modules the step needs besides torch
  local m
  for m in torch "$@"; do
    env PYTHONPATH="$PYSITE" python3 -c "import $m" 2>/dev/null || {
      echo "SKIP: python3 cannot import $m"
      return 77
    }
  done
  python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null || {
    echo "SKIP: torch sees no GPU"
    return 77
  }
}

# test_attention_mma, test_attention_wgmma and test_attention_tma select the
# tensor-core attention themselves (backends made with TINYCLIP_ATTENTION's
# mma, wgmma and tma choices), so one run of test_cuda_ops covers the FMA, mma
# and (on compute capability 9) wgmma and TMA-fed kernels, as do the
# sanitizer runs
step_ops() { env "$TCENV" "$BIN/test_cuda_ops"; }
step_model() { env "$TCENV" "$BIN/test_cuda_model"; }
step_nccl() { env "$TCENV" "$BIN/test_comm_nccl"; }
step_kernels() { env "$TCENV" "$BIN/test_cuda_ops" --bench; }
step_sdpa() {
  torch_cuda_or_skip || return 77
  python3 "$ROOT/scripts/bench_attention_torch.py"
}
e2e_tinyclip() { # LABEL [VAR=VALUE]: one tinyclip bench, its JSON lines kept for the summary
  local label=$1
  shift
  echo "-- tinyclip bench ($label)"
  # shellcheck disable=SC2086 # E2E_ARGS splits on purpose
  gpu_or_skip env "$TCENV" "$@" "$BIN/tinyclip" bench --backend cuda --model "$ROOT/$E2E_STUDENT" \
    --teacher "$ROOT/$E2E_TEACHER" $E2E_ARGS --json | tee "$WORK/e2e-$label.jsonl"
  return "${PIPESTATUS[0]}"
}
# tinyclip bench names its attention kernel (--attention) and the fast
# paths the environment switched on in every line (docs/cuda.md, "Fast paths")
step_e2e_fma() { e2e_tinyclip fma TINYCLIP_ATTENTION=fma; }
step_e2e_mma() { e2e_tinyclip mma TINYCLIP_ATTENTION=mma; }
step_e2e_fast() {
  e2e_tinyclip fast TINYCLIP_ATTENTION=mma TINYCLIP_GEMM_PLANS=on TINYCLIP_GEMM_EPILOGUE=on \
    TINYCLIP_CUDA_GRAPH=on
}
e2e_torch() { # LABEL [--compile]
  local label=$1
  shift
  torch_cuda_or_skip open_clip || return 77
  echo "-- bench_torch.py ($label)"
  # shellcheck disable=SC2086 # E2E_ARGS splits on purpose
  env PYTHONPATH="$PYSITE" python3 "$ROOT/scripts/bench_torch.py" --device cuda --bf16 "$@" \
    --model "$ROOT/$E2E_STUDENT" --teacher "$ROOT/$E2E_TEACHER" $E2E_ARGS 2>&1 |
    tee "$WORK/e2e-$label.jsonl"
  return "${PIPESTATUS[0]}"
}
step_torch_eager() { e2e_torch eager --eager; }
step_torch_compile() { e2e_torch compile --compile; }

# configs/experiments/gpu-check.yaml (a teacher from scratch, then auto50:
# mask phase, pruning at step 20, distillation) three times: whole into
# gpu-train-a; killed at auto50 step 30 into gpu-train-b; the same command
# again, which resumes b from its step-20 checkpoint. the final weights of
# both stages must be the same bytes. the killed run is tinyclip_faults (the
# program with test-only fault injection), the others tinyclip (TRAIN_BIN).
# TC_GPU_CHECK_TRAIN_ARGS: more arguments for tinyclip train (e.g. "--set
# backend=cpu" without a GPU)
train_run() { # NAME OUTDIR [VAR=VALUE]...
  local name=$1 dir=$2
  shift 2
  echo "-- ${TRAIN_BIN:-tinyclip} train ($name) --out $dir $*"
  # shellcheck disable=SC2086 # TRAIN_ARGS splits on purpose
  env "$TCENV" FMNIST_DIR="$FMNIST_DIR" TINYCLIP_VOCAB="$VOCAB" "$@" "$BIN/${TRAIN_BIN:-tinyclip}" train \
    "$ROOT/configs/experiments/gpu-check.yaml" --out "$dir" --plain $TRAIN_ARGS 2>&1 |
    tee "$WORK/train-$name.out"
  return "${PIPESTATUS[0]}"
}
step_train() {
  [ -x "$BIN/tinyclip_faults" ] || { echo "SKIP: no tinyclip_faults in the build (TC_FAULT_INJECTION=OFF)"; return 77; }
  [ -n "$FMNIST_DIR" ] || { echo "SKIP: no Fashion-MNIST folder"; return 77; }
  [ -n "$VOCAB" ] || { echo "SKIP: no BPE vocabulary"; return 77; }
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
sanitizer() { # TOOL ARGS...
  local tool=$1
  shift
  [ -n "$SAN" ] || { echo "SKIP: compute-sanitizer not found"; return 77; }
  env "$TCENV" TC_CUDA_TEST_QUICK=1 "$SAN" --tool "$tool" "$@" --error-exitcode 99 "$BIN/test_cuda_ops"
}
step_memcheck() { sanitizer memcheck; }
step_racecheck() { sanitizer racecheck --racecheck-report hazard; }

# the row's notes, from its log
step_note() { # ID LOG
  local log=$2
  case $1 in
    ops | model)
      echo "$(grep -c '^\[       OK \]' "$log") ok, $(grep '^\[  FAILED  \] test_' "$log" | sort -u | wc -l) failed $(grep -m1 '^SKIP:' "$log")"
      ;;
    nccl) echo "$(grep -m1 'GPU(s): world' "$log") $(grep -m1 -o 'nccl-check: [a-zA-Z]*' "$log") $(grep -m1 '^SKIP' "$log")" ;;
    e2e_fma | e2e_mma | e2e_fast)
      echo "gemm fallbacks: $(sed -n 's/.*"gemm_fallbacks":\([0-9]*\).*/\1/p' "$WORK/e2e-${1#e2e_}.jsonl" 2>/dev/null |
        awk '{s += $1; n++} END {print n ? s : "-"}') $(grep -m1 '^SKIP:' "$log")"
      ;;
    train)
      local top1 ips="" st v same
      top1=$(sed -n 's/.*"zeroshot_top1": *\([-0-9.]*\).*/\1/p' "$WORK/gpu-train-a/auto50/summary.json" 2>/dev/null)
      for st in teacher auto50; do
        v=$(grep "^stage $st \[" "$WORK/train-a.out" 2>/dev/null | tail -1 | sed -n 's/.*img\/s \([0-9.]*\).*/\1/p')
        [ -n "$v" ] && ips="$ips $st ${v} img/s,"
      done
      if grep -q '^WEIGHTS.*differ' "$log"; then
        same=$(grep '^WEIGHTS.*differ' "$log" | sed 's/^WEIGHTS //' | tr '\n' ';')
      elif [ "$(grep -c '^WEIGHTS.*bit-identical' "$log")" -eq 2 ]; then
        same="resumed bit-identical"
      else
        same=$(grep -m1 -E '^SKIP:|failed|not killed|did not resume' "$log")
      fi
      echo "${top1:+auto50 top-1 $(awk -v t="$top1" 'BEGIN { printf "%.1f%%", 100 * t }'),}${ips} ${same}"
      ;;
    memcheck) echo "$(grep -o 'ERROR SUMMARY: [0-9]* error[s]*' "$log" | tail -1) $(grep -m1 '^SKIP:' "$log")" ;;
    racecheck)
      echo "$(grep -o 'RACECHECK SUMMARY: [0-9]* hazard[s]* displayed[^)]*)' "$log" | tail -1) $(grep -m1 '^SKIP:' "$log")"
      ;;
    *) grep -m1 '^SKIP:' "$log" ;;
  esac
}

if [ "${1:-}" = "--selftest" ]; then
  selftest "${2:-$ROOT/build-cuda}"
fi
case ${1:-} in -*) die "unknown option $1 (--bundle, --selftest, or a build folder)" ;; esac

# ------------------------------------------------------------- GPU side -----
BUILD=${1:-$ROOT/build-cuda}
OUTD=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUTD" || die "cannot create $OUTD"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# our binaries get their own library path (TCLIBS); python and the system
# tools keep theirs, so an older bundled libz cannot shadow the system's
TCLIBS=$WORK/needed
mkdir -p "$TCLIBS"
BIN=$WORK/bin
LDCACHE=$(ldconfig -p 2>/dev/null)
if [ -f "$BUILD/gpu_bundle/bundle.tar.xz" ]; then
  tar -C "$WORK" -xJf "$BUILD/gpu_bundle/bundle.tar.xz" || die "cannot unpack the bundle"
  # a bundled library is used only where the machine has none of that soname
  for lib in "$WORK"/lib/*; do
    [ -e "$lib" ] || continue
    grep -q "^[[:space:]]*$(basename "$lib") " <<<"$LDCACHE" || ln -s "$lib" "$TCLIBS/"
  done
else
  mkdir -p "$BIN"
  for b in $BINARIES $OPTIONAL_BINARIES; do [ -x "$BUILD/$b" ] && ln -s "$BUILD/$b" "$BIN/"; done
fi
[ -e "$BIN/test_cuda_ops" ] || die "no test_cuda_ops in $BUILD (make a CUDA build, then --bundle)"

TCLIBPATH=$TCLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# CUDA libraries a binary wants but the loader cannot find: look in the
# toolkit and in the pip wheels that PyTorch brings (nvidia/*/lib). cuDNN is
# opened at run time (dlopen), so ldd cannot see that it is missing
lacks_libs() {
  local b
  for b in "$BIN"/*; do env LD_LIBRARY_PATH="$TCLIBPATH" ldd "$b" 2>&1 | grep "not found" >/dev/null && return 0; done
  return 1
}
if lacks_libs || ! grep -q "libcudnn\.so\.9 " <<<"$LDCACHE"; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib; do
    [ -d "$d" ] && TCLIBPATH=$TCLIBPATH:$d
  done
  if command -v python3 >/dev/null; then
    for site in $(python3 -c 'import site; print(" ".join(site.getsitepackages()+[site.getusersitepackages()]))' 2>/dev/null); do
      for d in "$site"/nvidia/*/lib "$site"/nvidia/cu*/lib; do [ -d "$d" ] && TCLIBPATH=$TCLIBPATH:$d; done
    done
  fi
fi
TCENV="LD_LIBRARY_PATH=$TCLIBPATH"

# the bundled wheels whose module python3 cannot import yet, into a
# temporary folder (PYTHONPATH of the PyTorch steps only)
PYSITE=$WORK/site
mkdir -p "$PYSITE"
PYNOTE=""
if command -v python3 >/dev/null; then
  for w in "$WORK"/wheels/*.whl; do
    [ -e "$w" ] || continue
    mod=$(basename "$w" | sed 's/-.*//; s/^open_clip_torch$/open_clip/')
    python3 -c "import $mod" 2>/dev/null && continue
    if PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --no-index \
      --no-deps --no-compile --no-cache-dir --target "$PYSITE" "$w" \
      >>"$WORK/pip.log" 2>&1; then
      PYNOTE="$PYNOTE $mod"
    else
      PYNOTE="$PYNOTE $mod(install failed)"
    fi
  done
fi

FMNIST_DIR=""
for d in "$WORK/fmnist-small" /usr/share/datasets/fashion-mnist; do
  [ -z "$FMNIST_DIR" ] && [ -f "$d/train-images-idx3-ubyte.gz" ] && FMNIST_DIR=$d
done
VOCAB=""
for v in "$WORK/vocab/bpe_simple_vocab_16e6.txt.gz" "${TINYCLIP_VOCAB:-}" \
  "$ROOT/third_party/vocab/bpe_simple_vocab_16e6.txt.gz"; do
  [ -z "$VOCAB" ] && [ -n "$v" ] && [ -f "$v" ] && VOCAB=$v
done
SAN=$(command -v compute-sanitizer || true)
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer /opt/nvidia/compute-sanitizer; do
  [ -z "$SAN" ] && [ -x "$d/compute-sanitizer" ] && SAN=$d/compute-sanitizer
done
TRAIN_ARGS=${TC_GPU_CHECK_TRAIN_ARGS:-}
export -f gpu_or_skip torch_cuda_or_skip e2e_tinyclip e2e_torch train_run sanitizer \
  step_ops step_model step_nccl step_kernels step_sdpa step_e2e_fma step_e2e_mma step_e2e_fast \
  step_torch_eager step_torch_compile step_train step_memcheck step_racecheck
export TCENV BIN ROOT WORK FMNIST_DIR VOCAB TRAIN_ARGS PYSITE SAN E2E_STUDENT E2E_TEACHER E2E_ARGS

# ---- the machine, and every binary's libraries ----
ENVLOG=$OUTD/env.log
LIBNOTE=""
{
  echo "date: $(date -u)"
  echo "host: $(uname -a)"
  nvidia-smi 2>&1 || echo "nvidia-smi failed"
  echo "library path for our binaries: $TCLIBPATH"
  echo "wheels installed for python3:${PYNOTE:- none needed}"
  [ -f "$WORK/pip.log" ] && cat "$WORK/pip.log"
  for b in "$BIN"/*; do
    echo "-- ldd $(basename "$b")"
    env LD_LIBRARY_PATH="$TCLIBPATH" ldd "$b" 2>&1
  done
} >"$ENVLOG" 2>&1
for b in "$BIN"/*; do
  miss=$(env LD_LIBRARY_PATH="$TCLIBPATH" ldd "$b" 2>&1 | awk '/not found/{print $1}' | tr '\n' ' ')
  [ -n "$miss" ] && LIBNOTE="$LIBNOTE $(basename "$b"): $miss;"
done
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
GPU_NAME=${GPU%%,*}
echo "GPU: ${GPU:-unknown (nvidia-smi failed)}"

# ---- the steps ----
declare -A LOGS=([ops]=test [model]=test [nccl]=test [train]=test [kernels]=bench [sdpa]=torch
  [torch_eager]=torch [torch_compile]=torch [e2e_fma]=e2e [e2e_mma]=e2e [e2e_fast]=e2e [memcheck]=memcheck
  [racecheck]=racecheck)
for f in test bench torch e2e memcheck racecheck; do : >"$OUTD/$f.log"; done
ROWS=()
FAILED=0
row() { ROWS+=("$(printf '%-36s %-9s %5s  %s' "$1" "$2" "$3" "$4")"); }
if [ -n "$LIBNOTE" ]; then
  row "libraries of every binary" FAIL "" "not found:$LIBNOTE"
  FAILED=1
else
  row "libraries of every binary" PASS "" "$(find "$BIN" -mindepth 1 -maxdepth 1 | wc -l) binaries${PYNOTE:+; wheels installed:$PYNOTE}"
fi
nominal_left=0 # the limits of the steps still to come
for e in "${PLAN[@]}"; do
  read -r id limit title <<<"$e"
  nominal_left=$((nominal_left + limit))
done
for e in "${PLAN[@]}"; do
  read -r id limit title <<<"$e"
  left=$((BUDGET - ($(date +%s) - START)))
  nominal_left=$((nominal_left - limit))
  case $SANITIZERS in
    *" $id "*)
      # with what is left: the other sanitizer still to come keeps its limit
      lim=$((left - nominal_left))
      [ "$lim" -lt "$limit" ] && [ "$left" -ge "$limit" ] && lim=$limit
      [ "$lim" -gt "$left" ] && lim=$left
      ;;
    *) lim=$limit ;;
  esac
  if [ "$lim" -lt "$MIN_STEP" ] || [ "$left" -lt "$lim" ]; then
    row "$title" "NOT RUN" "" "time budget: ${left}s left, the step needs ${lim}s"
    continue
  fi
  log=$OUTD/${LOGS[$id]}.log
  steplog=$WORK/step-$id.log
  echo "== $title (limit ${lim}s)" >"$steplog"
  t0=$(date +%s)
  timeout --kill-after=$KILL_AFTER "$lim" bash -c "step_$id" >>"$steplog" 2>&1
  rc=$?
  dt=$(($(date +%s) - t0))
  note=$(step_note "$id" "$steplog" | tr -s ' ' | head -c 300)
  case $rc in
    0) res=PASS ;;
    77) res=SKIP ;;
    124 | 137)
      # a sanitizer runs with what is left: running out of it is not a failure
      case $SANITIZERS in
        *" $id "*) res="CUT" note="the time budget ran out after ${lim}s; $note" ;;
        *) res=TIMEOUT FAILED=1 ;;
      esac
      ;;
    *) res="FAIL($rc)" FAILED=1 ;;
  esac
  row "$title" "$res" "${dt}s" "$note"
  cat "$steplog" >>"$log"
done

# ---- the table, last ----
{
  echo
  echo "==== gpu_check summary: ${GPU:-unknown GPU}, $(($(date +%s) - START))s of a ${BUDGET}s budget ===="
  printf '%-36s %-9s %5s  %s\n' "step" "result" "time" "notes"
  for r in "${ROWS[@]}"; do echo "$r"; done
  echo
  e2e=()
  for l in fma mma fast eager compile; do
    case $l in
      fma | mma) label="tinyclip $l" ;;
      fast) label="tinyclip mma+fast" ;;
      eager) label="pytorch eager" ;;
      *) label="torch.compile" ;;
    esac
    [ -s "$WORK/e2e-$l.jsonl" ] && e2e+=(--e2e "$label=$WORK/e2e-$l.jsonl")
  done
  python3 "$ROOT/scripts/gpu_check_summary.py" --gpu "${GPU_NAME:-unknown}" --kernels "$OUTD/bench.log" \
    --torch-kernels "$OUTD/torch.log" "${e2e[@]}" 2>&1 || echo "(the summary script failed)"
  echo "logs: $OUTD"
} | tee "$OUTD/summary.txt"

exit $FAILED
