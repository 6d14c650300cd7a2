#!/usr/bin/env python3
"""Model parity fixtures: two tiny random CLIPs computed by open_clip (fp32, CPU).

For each model in MODELS this writes, under tests/fixtures/parity/:
  <name>.json               the model config, open_clip schema, "quick_gelu" explicit
  <name>_model.safetensors  the state_dict, open_clip keys (logit_scale 0-dim)
  <name>_io.safetensors     inputs, features, logits, loss, every gradient, a
                            10-step AdamW training trace and the final weights
  <name>_hf/                the same weights as a Hugging Face CLIPModel
                            (config.json + model.safetensors), checked here
                            against open_clip before it is written

The tensors and their shapes are listed in tests/fixtures/parity/README.md.
Run through scripts/make_fixtures.py; deterministic: the same versions give
the same bytes.

Why the models are this small: every model is stored four times (weights,
gradients, final weights, HF copy) and the folder must stay under 6 MB, so a
model may have ~150k parameters. Head size is 64 (tinyclip's fixed head
size), so a multi-head tower needs width >= 128: tiny_quickgelu's text tower
has 2 heads; the other towers have one. Tower widths differ from each other
and from embed_dim so that a swapped dimension cannot go unnoticed; vocab
64 keeps the token table small (ids 1..61 random, 63 = EOT, 0 = padding).
"""
import argparse
import copy
import inspect
import json
import math
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

import open_clip
import safetensors
import safetensors.torch
import transformers
from open_clip_train.scheduler import cosine_lr

BATCH = 4
TRAIN_STEPS = 10
SEED = 20260101

# the recipe of the training trace (open_clip main.py / train.py semantics)
RECIPE = {
    "lr": 1e-3,
    "wd": 0.2,
    "beta1": 0.9,
    "beta2": 0.98,
    "eps": 1e-6,
    "warmup": 3,
    "steps": TRAIN_STEPS,
    "grad_clip": 1.0,
}

MODELS = {
    "tiny_gelu": {
        "embed_dim": 32,
        "quick_gelu": False,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
                       "head_width": 64, "mlp_ratio": 1.25},
        "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 64, "heads": 1,
                     "layers": 2, "mlp_ratio": 1.25},
    },
    "tiny_quickgelu": {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
                       "head_width": 64, "mlp_ratio": 0.5},
        "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 128, "heads": 2,
                     "layers": 1, "mlp_ratio": 0.5},
    },
}

# the batch of the io file puts the EOT at these positions (one row without padding)
EOT_POSITIONS = [5, 15, 9, 2]


def versions():
    return {
        "torch": torch.__version__,
        "open_clip_torch": open_clip.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def save_st(tensors, path, metadata):
    """safetensors.torch.save_file, but with the __metadata__ keys sorted: the
    writer emits them in hash-map order, which changes from run to run, and the
    fixtures must be byte-identical when regenerated with the same versions."""
    blob = safetensors.torch.save(tensors, metadata=metadata)
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", None)
    if meta is not None:
        header = {"__metadata__": dict(sorted(meta.items())), **header}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob[8 + n:])
    os.chmod(path, 0o644)


def make_tokens(gen, cfg, eot_positions):
    """(B, T) int32: random ids in [1, V-3] up to the EOT (V-1), zeros after it,
    so that argmax pooling (open_clip) and first-EOS pooling (HF) agree."""
    t = cfg["text_cfg"]["context_length"]
    v = cfg["text_cfg"]["vocab_size"]
    eot = v - 1
    rows = []
    for pos in eot_positions:
        row = torch.zeros(t, dtype=torch.int32)
        row[:pos] = torch.randint(1, v - 2, (pos,), generator=gen, dtype=torch.int32)
        row[pos] = eot
        rows.append(row)
    return torch.stack(rows)


def make_images(gen, cfg, batch):
    s = cfg["vision_cfg"]["image_size"]
    return torch.randn(batch, 3, s, s, generator=gen, dtype=torch.float32)


@torch.no_grad()
def randomise(model, gen):
    """moves every parameter away from its initialisation (LayerNorm gains,
    biases, class/positional embeddings, logit scale) so that a gradient or
    forward path that ignores one of them cannot agree by accident."""
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if name == "logit_scale":
            p.copy_(torch.tensor(2.0 + 1.5 * torch.rand((), generator=gen).item()))
        elif name.endswith(".weight") and ("ln" in name.split(".")[-2]):
            p.copy_(1.0 + 0.2 * noise)
        elif name.endswith("bias"):
            p.copy_(0.1 * noise)
        elif name in ("visual.class_embedding",):
            p.copy_(0.5 * noise)
        else:
            # keep open_clip's scale of initialisation, add 20% of it as noise
            std = p.std().item() if p.numel() > 1 else 0.02
            p.add_(0.2 * max(std, 1e-3) * noise)


def param_groups(model, wd):
    """open_clip_train/main.py: no weight decay for gains, biases, logit_scale."""
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    named = list(model.named_parameters())
    gain_or_bias = [p for n, p in named if exclude(n, p) and p.requires_grad]
    rest = [p for n, p in named if not exclude(n, p) and p.requires_grad]
    return [{"params": gain_or_bias, "weight_decay": 0.0},
            {"params": rest, "weight_decay": wd}]


def clip_forward(model, loss_fn, images, tokens):
    img = model.encode_image(images, normalize=True)
    txt = model.encode_text(tokens.long(), normalize=True)
    scale = model.logit_scale.exp()
    loss = loss_fn(img, txt, scale)
    return img, txt, scale, loss


def train_trace(model, loss_fn, images, tokens, dtype, recipe=None):
    """open_clip's training step, len(images) times, on a copy of `model`:
    schedule, forward, ClipLoss, backward, clip, AdamW, logit-scale clamp.
    returns (trained copy, losses before each update, lrs, pre-clip norms).
    recipe: RECIPE unless given."""
    r = recipe or RECIPE
    tm = copy.deepcopy(model).to(dtype)
    tm.zero_grad(set_to_none=True)
    opt = torch.optim.AdamW(param_groups(tm, r["wd"]), lr=r["lr"],
                            betas=(r["beta1"], r["beta2"]), eps=r["eps"])
    sched = cosine_lr(opt, r["lr"], r["warmup"], r["steps"])
    losses, lrs, norms = [], [], []
    for step, (bi, bt) in enumerate(zip(images, tokens)):
        lrs.append(sched(step))
        opt.zero_grad(set_to_none=True)
        _, _, _, l = clip_forward(tm, loss_fn, bi.to(dtype), bt)
        l.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(tm.parameters(), r["grad_clip"],
                                                          norm_type=2.0)))
        opt.step()
        with torch.no_grad():
            tm.logit_scale.clamp_(0, math.log(100))
        losses.append(l.item())
    return tm, losses, lrs, norms


# ---------------------------------------------------------------------------
# open_clip -> Hugging Face CLIPModel (the key mapping of docs/design.md §8.3)

def openclip_to_hf(sd, cfg):
    hf = {}

    def encoder(src, dst, layers):
        for i in range(layers):
            s = f"{src}.resblocks.{i}."
            d = f"{dst}.layers.{i}."
            qkv_w = sd[s + "attn.in_proj_weight"]      # (3C, C): rows Q, K, V
            qkv_b = sd[s + "attn.in_proj_bias"]
            for part, w, b in zip(("q", "k", "v"), qkv_w.chunk(3, dim=0), qkv_b.chunk(3, dim=0)):
                hf[d + f"self_attn.{part}_proj.weight"] = w
                hf[d + f"self_attn.{part}_proj.bias"] = b
            hf[d + "self_attn.out_proj.weight"] = sd[s + "attn.out_proj.weight"]
            hf[d + "self_attn.out_proj.bias"] = sd[s + "attn.out_proj.bias"]
            for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2")):
                hf[d + f"{b}.weight"] = sd[s + f"{a}.weight"]
                hf[d + f"{b}.bias"] = sd[s + f"{a}.bias"]
            for a, b in (("c_fc", "fc1"), ("c_proj", "fc2")):
                hf[d + f"mlp.{b}.weight"] = sd[s + f"mlp.{a}.weight"]
                hf[d + f"mlp.{b}.bias"] = sd[s + f"mlp.{a}.bias"]

    v = "vision_model."
    hf[v + "embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    hf[v + "embeddings.class_embedding"] = sd["visual.class_embedding"]
    hf[v + "embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    hf[v + "pre_layrnorm.weight"] = sd["visual.ln_pre.weight"]
    hf[v + "pre_layrnorm.bias"] = sd["visual.ln_pre.bias"]
    hf[v + "post_layernorm.weight"] = sd["visual.ln_post.weight"]
    hf[v + "post_layernorm.bias"] = sd["visual.ln_post.bias"]
    encoder("visual.transformer", v + "encoder", cfg["vision_cfg"]["layers"])
    hf["visual_projection.weight"] = sd["visual.proj"].t()          # (D, E) -> (E, D)

    t = "text_model."
    hf[t + "embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    hf[t + "embeddings.position_embedding.weight"] = sd["positional_embedding"]
    hf[t + "final_layer_norm.weight"] = sd["ln_final.weight"]
    hf[t + "final_layer_norm.bias"] = sd["ln_final.bias"]
    encoder("transformer", t + "encoder", cfg["text_cfg"]["layers"])
    hf["text_projection.weight"] = sd["text_projection"].t()        # (W, E) -> (E, W)
    hf["logit_scale"] = sd["logit_scale"]
    return {k: v.contiguous().clone() for k, v in hf.items()}


def hf_config(cfg):
    """CLIPConfig as transformers defines it (docs/design.md §8.4)."""
    vc, tc = cfg["vision_cfg"], cfg["text_cfg"]
    act = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    vocab = tc["vocab_size"]
    text_config = {
        "vocab_size": vocab,
        "hidden_size": tc["width"],
        "intermediate_size": int(tc["width"] * tc.get("mlp_ratio", 4.0)),
        "num_hidden_layers": tc["layers"],
        "num_attention_heads": tc["heads"],
        "max_position_embeddings": tc["context_length"],
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "projection_dim": cfg["embed_dim"],
        # pooling takes the first position holding eos_token_id; any value
        # other than 2 selects that rule in transformers >= 4.32
        "bos_token_id": vocab - 2,
        "eos_token_id": vocab - 1,
        "pad_token_id": 0,
    }
    vision_config = {
        "hidden_size": vc["width"],
        "intermediate_size": int(vc["width"] * vc.get("mlp_ratio", 4.0)),
        "num_hidden_layers": vc["layers"],
        "num_attention_heads": vc["width"] // vc.get("head_width", 64),
        "num_channels": 3,
        "image_size": vc["image_size"],
        "patch_size": vc["patch_size"],
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "projection_dim": cfg["embed_dim"],
    }
    return transformers.CLIPConfig(text_config=text_config, vision_config=vision_config,
                                   projection_dim=cfg["embed_dim"])


def features(out):
    """transformers 5 returns a model output whose pooler_output is projected; 4.x a tensor"""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def write_hf(model, cfg, images, tokens, img_ref, txt_ref, out_dir):
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    hf_sd = openclip_to_hf(sd, cfg)
    config = hf_config(cfg)
    hf_model = transformers.CLIPModel(config).eval()
    missing, unexpected = hf_model.load_state_dict(hf_sd, strict=False)
    if missing or unexpected:
        raise SystemExit(f"HF mapping: missing {missing}, unexpected {unexpected}")

    with tempfile.TemporaryDirectory() as tmp:
        kwargs = {}
        if "safe_serialization" in inspect.signature(hf_model.save_pretrained).parameters:
            kwargs["safe_serialization"] = True
        hf_model.save_pretrained(tmp, **kwargs)
        # check what was written, not the object in memory
        reloaded = transformers.CLIPModel.from_pretrained(tmp, attn_implementation="eager").eval()
        with torch.no_grad():
            hf_img = F.normalize(features(reloaded.get_image_features(pixel_values=images)), dim=-1)
            hf_txt = F.normalize(features(reloaded.get_text_features(input_ids=tokens.long())), dim=-1)
        for what, a, b in (("image", hf_img, img_ref), ("text", hf_txt, txt_ref)):
            err = (a - b).abs().max().item()
            if not err <= 1e-5:
                raise SystemExit(f"HF {what} features differ from open_clip by {err:.3g} (> 1e-5)")
            print(f"  hf {what} features: max |diff| vs open_clip {err:.3g}")
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.makedirs(out_dir)
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(os.path.join(tmp, f), os.path.join(out_dir, f))
    return hf_img, hf_txt


# ---------------------------------------------------------------------------

def build(name, cfg, out):
    print(f"{name}:")
    cfg_path = os.path.join(out, f"{name}.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    open_clip.add_model_config(cfg_path)

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + sum(map(ord, name)))
    model = open_clip.create_model(name, pretrained=None, precision="fp32", device="cpu")
    model.eval()  # no dropout is configured; eval() changes nothing numerically
    randomise(model, gen)

    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    keys = [n for n, _ in model.named_parameters()]
    if list(sd.keys()) != keys:
        raise SystemExit(f"{name}: state_dict keys are not exactly the parameters")
    if sd["logit_scale"].shape != torch.Size([]):
        raise SystemExit(f"{name}: logit_scale is not 0-dim")
    meta = {"format": "pt", "model": name}
    save_st(sd, os.path.join(out, f"{name}_model.safetensors"), meta)

    images = make_images(gen, cfg, BATCH)
    tokens = make_tokens(gen, cfg, EOT_POSITIONS)
    loss_fn = open_clip.ClipLoss()

    model.zero_grad(set_to_none=True)
    img, txt, scale, loss = clip_forward(model, loss_fn, images, tokens)
    loss.backward()
    io = {
        "images": images,
        "tokens": tokens,
        "image_features": img.detach(),
        "text_features": txt.detach(),
        "logits_per_image": (scale * img @ txt.t()).detach(),
        "loss": loss.detach().reshape(1),
    }
    for n, p in model.named_parameters():
        io["grad." + n] = p.grad.detach().clone()
    print(f"  loss {loss.item():.6f}, logit_scale {model.logit_scale.item():.6f}")

    hf_img, hf_txt = write_hf(model, cfg, images, tokens, img.detach(), txt.detach(),
                              os.path.join(out, f"{name}_hf"))
    io["hf_image_features"] = hf_img
    io["hf_text_features"] = hf_txt

    # training trace: a fresh copy of the same weights, one new batch per step
    ctx = cfg["text_cfg"]["context_length"]
    t_images, t_tokens = [], []
    for step in range(TRAIN_STEPS):
        t_images.append(make_images(gen, cfg, BATCH))
        pos = torch.randint(1, ctx, (BATCH,), generator=gen).tolist()
        t_tokens.append(make_tokens(gen, cfg, pos))
    tm, losses, lrs, norms = train_trace(model, loss_fn, t_images, t_tokens, torch.float32)
    # the same trace in float64: how far the fp32 reference itself is from exact
    # arithmetic (Adam amplifies rounding in tiny gradients), a yardstick for
    # the tolerance of a test against train_losses
    _, losses64, _, _ = train_trace(model, loss_fn, t_images, t_tokens, torch.float64)
    rel = max(abs(a - b) / abs(b) for a, b in zip(losses, losses64))
    print("  train losses " + " ".join(f"{x:.5f}" for x in losses))
    print(f"  fp32 vs fp64 trace: max relative loss difference {rel:.3g}")
    io["train_images"] = torch.stack(t_images)
    io["train_tokens"] = torch.stack(t_tokens)
    io["train_losses"] = torch.tensor(losses, dtype=torch.float32)
    io["train_losses_f64"] = torch.tensor(losses64, dtype=torch.float64)
    io["train_lrs"] = torch.tensor(lrs, dtype=torch.float32)
    io["train_grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    for n, p in tm.named_parameters():
        io["final." + n] = p.detach().clone()

    io_meta = {"model": name, "seed": str(SEED), "batch": str(BATCH),
               "loss": "open_clip.ClipLoss: (CE(logits_per_image) + CE(logits_per_text)) / 2",
               "schedule": "open_clip_train.scheduler.cosine_lr, set before each step 0..steps-1",
               "optimizer": "torch.optim.AdamW, groups: (ndim<2 or bn/ln/bias/logit_scale in name) wd=0, rest wd",
               "grad_clip_rule": "torch.nn.utils.clip_grad_norm_: g *= min(1, max_norm/(norm+1e-6))",
               "logit_scale_clamp": f"0,{math.log(100)!r}",
               "eot_token": str(cfg["text_cfg"]["vocab_size"] - 1)}
    io_meta.update({k: repr(v) if isinstance(v, float) else str(v) for k, v in RECIPE.items()})
    io_meta.update({"version." + k: v for k, v in versions().items()})
    io = {k: v.contiguous() for k, v in io.items()}
    save_st(io, os.path.join(out, f"{name}_io.safetensors"), io_meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures", "parity"))
    ap.add_argument("--only", choices=sorted(MODELS), help="build one model")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    for name, cfg in MODELS.items():
        if args.only and name != args.only:
            continue
        build(name, copy.deepcopy(cfg), out)


if __name__ == "__main__":
    main()
