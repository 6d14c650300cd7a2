#!/usr/bin/env python3
"""The PyTorch side of `tinyclip bench`: the same models, built by open_clip, on
random inputs, doing the same work per iteration, timed the same way.

  train    one training step, as `tinyclip bench --mode train` does it: lr
           schedule (warm-up 10, cosine), both towers forward, ClipLoss,
           backward, global-norm clipping (5.0), AdamW with open_clip's two
           parameter groups, logit-scale clamp to [0, ln 100]
  distill  with --teacher: the teacher's features under no_grad, the student
           trained on the affinity-mimicking loss (soft cross-entropy on the
           image->text and text->image similarity rows, logit scales fixed
           at 50), as `tinyclip bench --teacher` does
  infer    encode_image under no_grad (eval mode)

One JSON line per (model, mode):
  {"framework":"pytorch","model":...,"mode":...,"batch":...,"threads":...,
   "images_per_s":...,"step_ms":..., "device":..., "precision":..., "compile":...}

Usage:
  bench_torch.py --model configs/models/ViT-B-32.json --batch 32 --threads 2 \\
      --steps 5 --warmup 1 --mode train
  bench_torch.py --model ... --device cuda --bf16 --compile

Needs torch and open_clip_torch (scripts/requirements-fixtures.txt). Models
with tinyclip's per-layer extension (pruned, irregular widths) cannot be
built by open_clip and are refused; ResNet image towers (vision_cfg.layers a
list of stage depths) are open_clip's own.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import open_clip

WARMUP_STEPS = 10     # lr warm-up of the benchmarked step (tinyclip bench uses 10)
GRAD_CLIP = 5.0       # global-norm clipping of the benchmarked step (tinyclip bench: 5.0)
FIXED_SCALE = 50.0    # distillation: student and teacher logit scales


def load_config(path):
    with open(path) as f:
        cfg = json.load(f)
    cfg = cfg.get("model_cfg", cfg)  # open_clip_config.json wraps it
    for tower in ("vision_cfg", "text_cfg"):
        for k, v in cfg.get(tower, {}).items():
            # vision_cfg.layers as four stage depths is open_clip's ModifiedResNet
            if isinstance(v, list) and not (tower == "vision_cfg" and k == "layers"):
                raise SystemExit(f"bench_torch: {path}: {tower}.{k} is a per-layer list (an irregular "
                                 "tinyclip model); open_clip cannot build it")
    return cfg


def build_model(path, device, cfg):
    """registers the config under its file stem, as open_clip does for its own"""
    name = os.path.splitext(os.path.basename(path))[0]
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, name + ".json")
        with open(p, "w") as f:
            json.dump(cfg, f)
        open_clip.add_model_config(p)
        model = open_clip.create_model(name, pretrained=None, precision="fp32", device=device)
    return name, model


def random_inputs(cfg, batch, device, gen):
    s = cfg["vision_cfg"].get("image_size", 224)
    t = cfg["text_cfg"].get("context_length", 77)
    v = cfg["text_cfg"].get("vocab_size", 49408)
    images = torch.randn(batch, 3, s, s, generator=gen)
    tokens = torch.zeros(batch, t, dtype=torch.long)
    eot = v - 1
    hi = min(v - 2, 49405)
    for b in range(batch):
        pos = int(torch.randint(1, t, (1,), generator=gen))
        tokens[b, 0] = 49406 if v > 49406 else 0
        tokens[b, 1:pos] = torch.randint(1, hi + 1, (pos - 1,), generator=gen)
        tokens[b, pos] = eot
    return images.to(device), tokens.to(device)


def param_groups(model, wd):
    """open_clip_train/main.py: no weight decay for gains, biases, logit_scale"""
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": wd}]


def cosine_lr(base, warmup, total, step):
    """open_clip_train/scheduler.py cosine_lr"""
    if step < warmup:
        return base * (step + 1) / warmup
    e, es = step - warmup, max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base


def soft_ce(logits, target_logits):
    return -(F.softmax(target_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(1).mean()


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, warmup, steps, device):
    for _ in range(warmup):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(device)
    return time.perf_counter() - t0


def autocast(args, device):
    if args.bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def bench_train(args, device, cfg, model, teacher):
    model.train()
    total = args.warmup + args.steps
    opt = torch.optim.AdamW(param_groups(model, 0.2), lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
    clip_loss = open_clip.ClipLoss()
    gen = torch.Generator().manual_seed(3)
    images, tokens = random_inputs(cfg, args.batch, device, gen)
    if teacher is not None:
        teacher.eval()
        model.logit_scale.requires_grad_(False)

    def forward_loss(images, tokens):
        with autocast(args, device):
            img = model.encode_image(images, normalize=True)
            txt = model.encode_text(tokens, normalize=True)
            if teacher is None:
                return clip_loss(img, txt, model.logit_scale.exp())
            with torch.no_grad():
                t_img = teacher.encode_image(images, normalize=True)
                t_txt = teacher.encode_text(tokens, normalize=True)
            s = FIXED_SCALE * img @ txt.t()
            t = FIXED_SCALE * t_img @ t_txt.t()
            return 0.5 * (soft_ce(s, t) + soft_ce(s.t(), t.t()))

    fwd = torch.compile(forward_loss) if args.compile else forward_loss
    state = {"step": 0}

    def step():
        lr = cosine_lr(5e-4, WARMUP_STEPS, total, state["step"])
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = fwd(images, tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        with torch.no_grad():
            if teacher is None:
                model.logit_scale.clamp_(0, math.log(100))
        state["step"] += 1

    return timed(step, args.warmup, args.steps, device)


def bench_infer(args, device, cfg, model):
    model.eval()
    gen = torch.Generator().manual_seed(3)
    images, _ = random_inputs(cfg, args.batch, device, gen)

    def encode(images):
        with autocast(args, device):
            return model.encode_image(images, normalize=True)

    enc = torch.compile(encode) if args.compile else encode

    def step():
        with torch.no_grad():
            enc(images)

    return timed(step, args.warmup, args.steps, device)


def main():
    ap = argparse.ArgumentParser(description="open_clip benchmark matching `tinyclip bench`")
    ap.add_argument("--model", action="append", required=True,
                    help="model config JSON, open_clip schema (repeat for several)")
    ap.add_argument("--teacher", help="teacher config: benchmark a distillation step")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch default)")
    ap.add_argument("--steps", type=int, default=5, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    ap.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
    ap.add_argument("--json", action="store_true",
                    help="accepted for symmetry with tinyclip bench; the output is always JSON")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--compile", action="store_true", help="torch.compile the forward (and loss)")
    g.add_argument("--eager", dest="compile", action="store_false", help="eager mode (default)")
    args = ap.parse_args()
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        ap.error("--batch and --steps must be positive, --warmup >= 0")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("bench_torch: --device cuda but torch sees no GPU")
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as in tinyclip's fp32 mode
        torch.backends.cudnn.allow_tf32 = False
    threads = torch.get_num_threads()

    teacher = None
    teacher_name = None
    if args.teacher:
        tcfg = load_config(args.teacher)
        teacher_name, teacher = build_model(args.teacher, device, tcfg)
        for p in teacher.parameters():
            p.requires_grad_(False)

    modes = ["train", "infer"] if args.mode == "both" else [args.mode]
    for path in args.model:
        cfg = load_config(path)
        for mode in modes:
            torch.manual_seed(1)
            name, model = build_model(path, device, cfg)
            if mode == "train":
                seconds = bench_train(args, device, cfg, model, teacher)
            else:
                seconds = bench_infer(args, device, cfg, model)
            out = {
                "framework": "pytorch",
                "model": name,
                "mode": "distill" if (mode == "train" and teacher is not None) else mode,
                "batch": args.batch,
                "threads": threads,
                "images_per_s": round(args.batch * args.steps / seconds, 3),
                "step_ms": round(1e3 * seconds / args.steps, 3),
                "device": str(device),
                "precision": "bf16-autocast" if args.bf16 else "fp32",
                "compile": bool(args.compile),
                "params": sum(p.numel() for p in model.parameters()),
                "torch": torch.__version__,
                "open_clip": open_clip.__version__,
            }
            if out["mode"] == "distill":
                out["teacher"] = teacher_name
            print(json.dumps(out), flush=True)
            del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
