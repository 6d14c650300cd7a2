#!/usr/bin/env python3
"""The benchmark tables at the end of scripts/gpu_check.sh.

Kernels: the `BENCH|name|ms|TFLOP/s` lines of `test_cuda_ops --bench` beside
the `BENCH|torch name|ms|TFLOP/s` lines of scripts/bench_attention_torch.py
(a line tagged " [mma]", " [wgmma]" or " [tma]", the tensor-core attention, is put beside
the same SDPA line).

End to end: the JSON lines of `tinyclip bench --json` and of
scripts/bench_torch.py, one file per labelled run (--e2e LABEL=FILE). The
FLOPs per sample are tinyclip's (engine/flops.h, printed by the bench as
gflop_per_sample); a PyTorch row of the same model and mode uses the same
count, so every row's TFLOP/s and MFU are comparable. MFU divides by the
GPU's dense bf16 tensor-core peak from NVIDIA's data sheets (the benchmarks
run bf16); an unknown GPU gets no MFU.

Usage:
  gpu_check_summary.py --gpu "NVIDIA H100 80GB HBM3" --kernels bench.log \\
      --torch-kernels torch.log --e2e "tinyclip FMA=e2e-fma.jsonl" ...
"""
import argparse
import json
import sys

# dense bf16 tensor-core peaks, TFLOP/s (data sheets; no sparsity). the
# first name that appears in the GPU's name wins: more specific names first
PEAKS_BF16 = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM5
    ("H200 NVL", 835.0),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.0),
)


def peak_tflops(gpu):
    for name, peak in PEAKS_BF16:
        if name in gpu:
            return peak
    return None


def kernel_table(bench_path, torch_path, out):
    torch_ms = {}
    for line in read_lines(torch_path):
        f = line.split("|")
        if line.startswith("BENCH|torch ") and len(f) >= 4:
            torch_ms[f[1][len("torch "):]] = (f[2], f[3])
    rows = [line.split("|") for line in read_lines(bench_path) if line.startswith("BENCH|")]
    if not rows:
        print("kernel benchmarks: no BENCH lines (the step did not run or failed)", file=out)
        return
    print("%-58s %9s %8s %9s %8s %6s" % ("kernel (bf16)", "ours ms", "TFLOP/s", "torch ms",
                                         "TFLOP/s", "ratio"), file=out)
    for f in rows:
        if len(f) < 4:
            continue
        name = f[1]
        key = name
        for tag in (" [mma]", " [wgmma]", " [tma]"):
            if name.endswith(tag):
                key = name[: -len(tag)]
        t = torch_ms.get(key)
        if t and float(f[2]) > 0:
            ratio = "%6.2f" % (float(t[0]) / float(f[2]))
            print("%-58s %9s %8s %9s %8s %s" % (name, f[2], f[3], t[0], t[1], ratio), file=out)
        else:
            print("%-58s %9s %8s %9s %8s %6s" % (name, f[2], f[3], "-", "-", "-"), file=out)
    print("(ratio = torch time / our time: above 1 means ours is faster)", file=out)


def read_lines(path):
    if not path:
        return []
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip("\n") for line in f]
    except OSError:
        return []


def read_json_rows(path):
    rows = []
    for line in read_lines(path):
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


def e2e_table(runs, gpu, out):
    peak = peak_tflops(gpu)
    groups = {}  # (model, mode) -> [(label, row)]
    order = []
    for label, path in runs:
        for r in read_json_rows(path):
            key = (r.get("model", "?"), r.get("mode", "?"))
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append((label, r))
    if not order:
        print("end to end: no result (the steps did not run or failed)", file=out)
        return
    print("%-16s %-52s %6s %10s %9s %12s %8s %6s %8s" % (
        "end to end", "model (mode)", "batch", "images/s", "ms/step", "GFLOP/sample", "TFLOP/s",
        "MFU", "vs eager"), file=out)
    for key in order:
        rows = groups[key]
        gflop = next((r["gflop_per_sample"] for _, r in rows if "gflop_per_sample" in r), None)
        eager = next((r["images_per_s"] for label, r in rows if label == "pytorch eager"), None)
        for label, r in rows:
            ips = float(r.get("images_per_s", 0.0))
            tflops = ips * gflop / 1e3 if gflop is not None else None
            mfu = "%5.1f%%" % (100.0 * tflops / peak) if tflops is not None and peak else "     -"
            vs = "%8.2f" % (ips / eager) if eager else "       -"
            teacher = ""
            if key[1].startswith("distill") and r.get("teacher"):
                teacher = " <- " + r["teacher"].split("/")[-1].replace(".json", "")
            name = "%s (%s%s)" % (key[0], key[1], teacher)
            print("%-16s %-52s %6s %10.1f %9.2f %12s %8s %s %s" % (
                label, name[:52], r.get("batch", "?"), ips, float(r.get("step_ms", 0.0)),
                "%.3f" % gflop if gflop is not None else "-",
                "%.1f" % tflops if tflops is not None else "-", mfu, vs), file=out)
    if peak:
        print("(MFU: model FLOPs per sample (engine/flops.h) x images/s over %.1f TFLOP/s, the "
              "dense bf16 peak of %s)" % (peak, gpu), file=out)
    else:
        print("(MFU: no peak known for GPU '%s')" % gpu, file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", default="", help="the GPU's name as nvidia-smi prints it")
    ap.add_argument("--kernels", help="test_cuda_ops --bench output")
    ap.add_argument("--torch-kernels", help="scripts/bench_attention_torch.py output")
    ap.add_argument("--e2e", action="append", default=[], metavar="LABEL=FILE",
                    help="JSON lines of one end-to-end run (repeat)")
    args = ap.parse_args()
    runs = []
    for spec in args.e2e:
        label, sep, path = spec.partition("=")
        if not sep:
            ap.error("--e2e wants LABEL=FILE, got %r" % spec)
        runs.append((label, path))
    if args.kernels is not None:
        kernel_table(args.kernels, args.torch_kernels, sys.stdout)
        print()
    e2e_table(runs, args.gpu, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
