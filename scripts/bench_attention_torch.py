#!/usr/bin/env python3
"""PyTorch SDPA baseline for the attention kernels of the CUDA backend.

Times torch.nn.functional.scaled_dot_product_attention (bf16, whatever fused
kernel torch picks: flash or cuDNN on Hopper) at the same CLIP shapes and with
the same FLOP convention as `test_cuda_ops --bench`, and prints lines
    BENCH|torch <name>|<ms per call>|<TFLOP/s>
so that scripts/gpu_check.sh can put both side by side. Timing: CUDA events,
two warm-up calls, median of 5 repeats of `iters` calls. The inputs are read
from the packed (B, T, 3A) layout through strided views, as our kernels do.
"""
import sys


def main():
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001 - any import failure means no baseline
        print(f"torch not available: {e}")
        return 0
    if not torch.cuda.is_available():
        print("torch: no CUDA device")
        return 0
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    torch.manual_seed(0)
    shapes = [
        ("vit-b32", 256, 50, 12, False),
        ("vit-b16", 128, 197, 12, False),
        ("text", 256, 77, 8, True),
        ("pruned-text", 256, 77, 7, True),
    ]
    HS = 64

    def median_ms(fn, iters):
        fn()
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(5):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / iters)
        times.sort()
        return times[2]

    for name, B, T, NH, causal in shapes:
        A = NH * HS
        qkv = (torch.rand(B, T, 3 * A, device="cuda", dtype=torch.bfloat16) * 4 - 2).requires_grad_()
        dout = torch.rand(B, NH, T, HS, device="cuda", dtype=torch.bfloat16) * 2 - 1

        def heads(x):
            return x.view(B, T, NH, HS).transpose(1, 2)

        def fwd():
            q, k, v = qkv.split(A, dim=-1)
            return F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=causal)

        def fwd_bwd():
            out = fwd()
            out.backward(dout)

        flops = 4.0 * B * NH * T * T * HS * (0.5 if causal else 1.0)
        label = f"{name} B={B} T={T} NH={NH}{' causal' if causal else ''}"
        with torch.no_grad():
            ms = median_ms(fwd, 10)
        print(f"BENCH|torch attention_fwd {label}|{ms:.4f}|{flops / ms * 1e-9:.1f}")
        ms = median_ms(fwd_bwd, 5)
        print(f"BENCH|torch attention_fwd+bwd {label}|{ms:.4f}|{3.5 * flops / ms * 1e-9:.1f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
