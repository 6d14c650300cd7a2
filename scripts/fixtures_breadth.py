#!/usr/bin/env python3
"""Model-breadth parity fixtures: ResNet image towers (open_clip ModifiedResNet)
and attention heads that are not 64 wide, computed by open_clip (fp32, CPU).

Writes, under tests/fixtures/breadth/ (tables in its README.md):
  <name>.json, <name>_model.safetensors, <name>_io.safetensors
      for the small random CLIPs in MODELS: a ResNet-tower CLIP (tiny_rn) and
      two ViT CLIPs whose heads are 80 / 32 (tiny_hw80) and 104 / 80
      (tiny_hw104) wide (vision / text). the io file holds the tokens, the
      features, the ClipLoss and every gradient (train mode), a 10-step AdamW
      trace and, for the ResNet, the BatchNorm running statistics after one
      forward and after the 10 steps.
  rn50_formula.safetensors
      an RN50-shaped model whose weights are not stored: every value is the
      formula below, implemented identically in tests/testutil.c. holds the
      formula images, token rows, and open_clip's eval-mode features.
  rn50_keys.json       open_clip's RN50 state_dict: key, shape, dtype, in order
  param_counts.json    open_clip's parameter counts of the big configs

Size: weights are stored as F16 (every value was rounded to fp16 first and
the reference computed from the rounded fp32 values, so F16 storage loses
nothing) and images are not stored at all: they are formula tensors
(formula_images), so the folder stays near 2 MB.

The weight formula (exact in float32 by construction, so Python and C agree
bit for bit): for the tensor named NAME with FNV-1a-64 hash h, element i
(0-based), z = h + (i + 1) * 0x9E3779B97F4A7C15 (mod 2^64) is mixed with
splitmix64's finaliser; k = z >> 41 (23 bits); x = 2 k / 2^23 - 1 in [-1, 1);
the value is float32(a + b x) with b a power of two (so b x is exact), where
(a, b) depends on the tensor (formula_rule).

Run through scripts/make_fixtures.py. `--check-export DIR` instead loads an
open_clip-layout directory written by `tinyclip convert`/`train` from the RN50
formula weights in open_clip (local-dir:) and compares its features with the
fixture.
"""
import argparse
import copy
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import open_clip
from fixtures_model import (BATCH, EOT_POSITIONS, RECIPE, SEED, TRAIN_STEPS, clip_forward,
                            make_tokens, randomise, save_st, train_trace, versions)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MODELS = {
    # stages [1, 2, 1, 1]: every stage's first block has a downsample branch
    # (stride 2 in stages 2-4, a channel change in stage 1) and stage 2 has an
    # identity block; 64 px images end in a 2x2 map (5 attention-pool tokens,
    # 128 channels, 2 heads of 64)
    "tiny_rn": {
        "embed_dim": 32,
        "quick_gelu": False,
        "vision_cfg": {"image_size": 64, "layers": [1, 2, 1, 1], "width": 4, "patch_size": None},
        "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 64, "heads": 2,
                     "layers": 1, "mlp_ratio": 0.5},
    },
    "tiny_hw80": {
        "embed_dim": 32,
        "quick_gelu": False,
        "vision_cfg": {"image_size": 16, "patch_size": 4, "width": 160, "head_width": 80,
                       "layers": 1, "mlp_ratio": 0.25},
        "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 64, "heads": 2,
                     "layers": 1, "mlp_ratio": 0.5},
    },
    "tiny_hw104": {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 16, "patch_size": 4, "width": 104, "head_width": 104,
                       "layers": 1, "mlp_ratio": 0.5},
        "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 80, "heads": 1,
                     "layers": 2, "mlp_ratio": 0.5},
    },
}

# learning rates other than RECIPE's: at 1e-3 the ResNet's trace is chaotic
# (BatchNorm over 16 values per channel in the last stage, ReLUs switching):
# fp32 and fp64 runs of open_clip itself part by 1.5e-3 within 10 steps
LR = {"tiny_rn": 1e-4}

# configs whose parameter counts `tinyclip inspect` must reproduce; the
# TinyCLIP ResNets are not in open_clip: their shipped configs are added
COUNT_MODELS = ["RN50", "TinyCLIP-ResNet-30M-Text-29M", "TinyCLIP-ResNet-19M-Text-19M",
                "ViT-L-14", "ViT-H-14", "ViT-g-14", "ViT-bigG-14"]

# token rows of the RN50 formula model (CLIP BPE ids: <start> a photo of a cat <end>, ...)
RN50_TOKENS = [[49406, 320, 1125, 539, 320, 2368, 49407],
               [49406, 550, 3307, 539, 320, 1929, 530, 518, 2117, 49407]]


def f16_exact(module):
    """rounds every float parameter and buffer to a value fp16 represents"""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())


@torch.no_grad()
def randomise_rn(model, gen):
    """fixtures_model's rule for every parameter (the text tower as in the ViT
    fixtures), then the ResNet tower's BatchNorms, which that rule would leave
    near their initialisation (bn3 gains start at 0 in open_clip, running
    statistics at 0 and 1): gains 1 + 0.2 N, shifts 0.1 N, running means
    0.1 N, running variances 0.5 + U, 5 batches tracked"""
    randomise(model, gen)
    for name, p in model.visual.named_parameters():
        if ".bn" in "." + name or "downsample.1" in name:
            noise = torch.randn(p.shape, generator=gen)
            p.copy_((1.0 + 0.2 * noise) if name.endswith("weight") else 0.1 * noise)
    for name, b in model.visual.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.1 * torch.randn(b.shape, generator=gen))
        elif name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=gen))
        elif name.endswith("num_batches_tracked"):
            b.fill_(5)


def make_images(cfg, name, batch):
    """formula images (not stored): 32-pixel squares for a ResNet, patches for a ViT"""
    v = cfg["vision_cfg"]
    block = 32 if isinstance(v["layers"], list) else v["patch_size"]
    return formula_images(name, batch, v["image_size"], block)


def buffers(model):
    return {n: b.detach().clone() for n, b in model.named_buffers()
            if n.startswith("visual.")}


def build(name, cfg, out):
    print(f"{name}:")
    cfg_path = os.path.join(out, f"{name}.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    open_clip.add_model_config(cfg_path)
    resnet = isinstance(cfg["vision_cfg"]["layers"], list)

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + sum(map(ord, name)))
    model = open_clip.create_model(name, pretrained=None, precision="fp32", device="cpu")
    (randomise_rn if resnet else randomise)(model, gen)
    f16_exact(model)
    initial = copy.deepcopy(model)

    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    stored = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    save_st(stored, os.path.join(out, f"{name}_model.safetensors"),
            {"format": "pt", "model": name})

    images = make_images(cfg, "images", BATCH)
    tokens = make_tokens(gen, cfg, EOT_POSITIONS)
    loss_fn = open_clip.ClipLoss()
    io = {"tokens": tokens}

    # eval mode (BatchNorm on its running statistics): the features of embed
    model.eval()
    with torch.no_grad():
        io["image_features"] = model.encode_image(images, normalize=True)
        io["text_features"] = model.encode_text(tokens.long(), normalize=True)

    # train mode (BatchNorm on the batch statistics): loss and every gradient
    model.train()
    model.zero_grad(set_to_none=True)
    img, txt, scale, loss = clip_forward(model, loss_fn, images, tokens)
    loss.backward()
    io["image_features_train"] = img.detach()
    io["loss"] = loss.detach().reshape(1)
    for n, p in model.named_parameters():
        io["grad." + n] = p.grad.detach().clone()
    for n, b in buffers(model).items():
        io["after1." + n] = b.float()
    print(f"  loss {loss.item():.6f}")

    # training trace from the initial weights, train mode, one batch per step
    ctx = cfg["text_cfg"]["context_length"]
    t_images, t_tokens = [], []
    for step in range(TRAIN_STEPS):
        t_images.append(make_images(cfg, f"train_images.{step}", BATCH))
        pos = torch.randint(1, ctx, (BATCH,), generator=gen).tolist()
        t_tokens.append(make_tokens(gen, cfg, pos))
    initial.train()
    recipe = dict(RECIPE, lr=LR[name]) if name in LR else RECIPE
    tm, losses, lrs, norms = train_trace(initial, loss_fn, t_images, t_tokens, torch.float32,
                                         recipe)
    _, losses64, _, _ = train_trace(initial, loss_fn, t_images, t_tokens, torch.float64, recipe)
    rel = max(abs(a - b) / abs(b) for a, b in zip(losses, losses64))
    print("  train losses " + " ".join(f"{x:.5f}" for x in losses))
    print(f"  fp32 vs fp64 trace: max relative loss difference {rel:.3g}")
    io["train_tokens"] = torch.stack(t_tokens)
    io["train_losses"] = torch.tensor(losses, dtype=torch.float32)
    io["train_losses_f64"] = torch.tensor(losses64, dtype=torch.float64)
    io["train_lrs"] = torch.tensor(lrs, dtype=torch.float32)
    io["train_grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    for n, b in buffers(tm).items():
        io["final." + n] = b.float()

    meta = {"model": name, "seed": str(SEED), "batch": str(BATCH),
            "images": "formula images 'images' and 'train_images.<step>' (formula_images)",
            "features": "image_features/text_features: eval mode (BatchNorm running statistics)",
            "train_mode": "loss, grad.*, image_features_train, after1.*, train_*: model.train()",
            "eot_token": str(cfg["text_cfg"]["vocab_size"] - 1)}
    meta.update({k: repr(v) if isinstance(v, float) else str(v) for k, v in recipe.items()})
    meta.update({"version." + k: v for k, v in versions().items()})
    save_st({k: v.contiguous() for k, v in io.items()},
            os.path.join(out, f"{name}_io.safetensors"), meta)


# ---------------------------------------------------------------------------
# the RN50 formula model

M64 = (1 << 64) - 1


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for c in s.encode():
        h = ((h ^ c) * 0x100000001B3) & M64
    return h


def formula_x(name, n):
    """x in [-1, 1) for elements 0..n-1 of the tensor `name` (float64, exact)"""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(fnv1a64(name)) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    k = (z >> np.uint64(41)).astype(np.float64)
    return 2.0 * k / 8388608.0 - 1.0


def pow2_scale(fan_in):
    """4 * 2^-e, e the smallest integer with 4^e >= fan_in: 2 to 4 times 1/sqrt(fan_in)"""
    e = 0
    while (1 << (2 * e)) < fan_in:
        e += 1
    return 4.0 * 2.0 ** -e


def formula_rule(name, shape):
    """(a, b) of value = a + b x; None: the tensor is all zeros"""
    ndim = len(shape)
    norm = "bn" in name or "ln_" in name or ".downsample.1." in name
    if name.endswith("num_batches_tracked"):
        return None
    if name.endswith("running_var"):
        return 1.25, 0.25
    if name.endswith("running_mean"):
        return 0.0, 1.0 / 8
    if name == "logit_scale":
        return 2.5, 0.0
    if ndim <= 1:
        if norm and name.endswith(".weight"):
            last = name.endswith("bn3.weight") or name.endswith("downsample.1.weight")
            return (0.25, 1.0 / 16) if last and ".layer" in name else (1.0, 1.0 / 8)
        if norm:
            return 0.0, 1.0 / 16
        return 0.0, 1.0 / 32
    if name.endswith("positional_embedding"):
        return 0.0, 1.0 / 64
    if name.endswith("token_embedding.weight"):
        return 0.0, 1.0 / 32
    fan_in = shape[0] if name == "text_projection" else int(np.prod(shape[1:]))
    return 0.0, pow2_scale(fan_in)


def formula_tensor(name, shape):
    n = int(np.prod(shape)) if len(shape) else 1
    rule = formula_rule(name, shape)
    if rule is None:
        return np.zeros(n, dtype=np.float32).reshape(shape)
    a, b = rule
    return (a + b * formula_x(name, n)).astype(np.float32).reshape(shape)


def formula_images(name, n, size, block):
    """(n, 3, size, size) images: a smooth part, constant on block x block
    squares (a ResNet averages iid pixels away in its pools), plus an eighth
    of per-pixel detail: float32(coarse[y / block, x / block] + fine[y, x] / 8)
    of the formula tensors NAME.coarse and NAME"""
    g = size // block
    coarse = formula_x(name + ".coarse", n * 3 * g * g).reshape(n, 3, g, g)
    fine = formula_x(name, n * 3 * size * size).reshape(n, 3, size, size)
    up = np.repeat(np.repeat(coarse, block, axis=2), block, axis=3)
    return torch.from_numpy((up + fine / 8).astype(np.float32))


def rn50_formula(out):
    print("rn50_formula:")
    model = open_clip.create_model("RN50", pretrained=None, precision="fp32", device="cpu")
    sd = model.state_dict()
    keys = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
            for k, v in sd.items()]
    with open(os.path.join(out, "rn50_keys.json"), "w") as f:
        json.dump(keys, f, indent=0)
        f.write("\n")
    new = {}
    for k, v in sd.items():
        t = torch.from_numpy(formula_tensor(k, tuple(v.shape)))
        new[k] = t.to(v.dtype) if not v.is_floating_point() else t
    model.load_state_dict(new)
    model.eval()
    images = formula_images("image", 2, 224, 32)
    tokens = torch.zeros(2, 77, dtype=torch.int32)
    for r, row in enumerate(RN50_TOKENS):
        tokens[r, :len(row)] = torch.tensor(row, dtype=torch.int32)
    with torch.no_grad():
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(tokens.long(), normalize=True)
        raw = model.encode_image(images)
    print(f"  image feature norms before normalising {raw.norm(dim=-1).tolist()}")
    io = {"tokens": tokens, "image_features": img, "text_features": txt}
    meta = {"model": "RN50", "formula": "scripts/fixtures_breadth.py formula_rule; images: "
            "formula tensor 'image' (2, 3, 224, 224)", "mode": "eval"}
    meta.update({"version." + k: v for k, v in versions().items()})
    save_st(io, os.path.join(out, "rn50_formula.safetensors"), meta)


def param_counts(out):
    print("param_counts:")
    for n in ("TinyCLIP-ResNet-30M-Text-29M", "TinyCLIP-ResNet-19M-Text-19M"):
        open_clip.add_model_config(os.path.join(ROOT, "configs", "models", n + ".json"))
    counts = {}
    for name in COUNT_MODELS:
        with torch.device("meta"):
            m = open_clip.create_model(name, pretrained=None, device="meta")
        total = sum(p.numel() for p in m.parameters())
        vision = sum(p.numel() for p in m.visual.parameters())
        counts[name] = {"total": total, "vision": vision, "text": total - vision - 1}
        print(f"  {name}: {total:,} (vision {vision:,})")
    with open(os.path.join(out, "param_counts.json"), "w") as f:
        json.dump(counts, f, indent=2)
        f.write("\n")


def check_export(directory, out):
    """an exported RN50 formula model loads in open_clip with the fixture's features"""
    model, _, _ = open_clip.create_model_and_transforms("local-dir:" + os.path.abspath(directory))
    model.eval()
    from safetensors.torch import load_file
    ref = load_file(os.path.join(out, "rn50_formula.safetensors"))
    images = formula_images("image", 2, 224, 32)
    with torch.no_grad():
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(ref["tokens"].long(), normalize=True)
    ei = (img - ref["image_features"]).abs().max().item()
    et = (txt - ref["text_features"]).abs().max().item()
    print(f"open_clip local-dir:{directory}: image features max |diff| {ei:.3g}, text {et:.3g}")
    return 0 if ei <= 1e-5 and et <= 1e-5 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "breadth"))
    ap.add_argument("--only", help="comma-separated subset of: " +
                    ", ".join(list(MODELS) + ["rn50_formula", "param_counts"]))
    ap.add_argument("--check-export", metavar="DIR")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = os.path.normpath(args.out)
    if args.check_export:
        return check_export(args.check_export, out)
    os.makedirs(out, exist_ok=True)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    only = set(args.only.split(",")) if args.only else None
    for name, cfg in MODELS.items():
        if not only or name in only:
            build(name, copy.deepcopy(cfg), out)
    if not only or "rn50_formula" in only:
        rn50_formula(out)
    if not only or "param_counts" in only:
        param_counts(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
