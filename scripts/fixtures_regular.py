#!/usr/bin/env python3
"""Fixtures of an open_clip-regular pruned student: open_clip and transformers
load tinyclip's conversions of it, and their features are stored.

Writes tests/fixtures/regular/:
  open_clip/   `tinyclip convert STUDENT open_clip --to open_clip`
               (open_clip_model.safetensors, open_clip_config.json)
  hf/          `tinyclip convert STUDENT hf --to hf`: config.json,
               model.safetensors, preprocessor_config.json (the tokenizer
               files, 1.5 MB of CLIP vocabulary, are left out: the model
               does not read them)
  pixels.safetensors  pixel_values (4, 3, 32, 32) F32, preprocessed
  tokens.safetensors  input_ids (4, 12) I64: ids 1..61, the end of text
                      (63, the largest id) once per row, zeros after it
  io.safetensors      openclip_{image,text}_features: open_clip 3.3.0,
                      create_model_and_transforms('local-dir:open_clip'),
                      encode_*(normalize=True); hf_{image,text}_features:
                      CLIPModel.from_pretrained('hf'), image_embeds /
                      text_embeds; all (4, 48) F32, fp32 on the CPU

The student (tests/testutil.c tc_test_pruned_student, regular): a random
teacher of 3 layers per tower, width 128 in 2 heads, MLP 256, pruned with
tied (regular) masks to 30% of its prunable size: width 64, one head, MLP
180 in every layer. tests/engine/test_openclip_regular.c writes it when
TC_WRITE_REGULAR_STUDENT names a folder; that test then checks that a fresh
conversion equals these files and that `tinyclip embed` gives the stored
features to 1e-5.

Needs a build: TINYCLIP_BIN (default build/tinyclip) and TC_TEST_BIN
(default build/tests/test_openclip_regular). Run through
scripts/make_fixtures.py; deterministic.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch

import open_clip
import transformers

from fixtures_model import save_st  # safetensors with sorted metadata: reruns are byte-identical

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures", "regular")
TINYCLIP = os.environ.get("TINYCLIP_BIN", os.path.join(ROOT, "build", "tinyclip"))
TEST_BIN = os.environ.get("TC_TEST_BIN",
                          os.path.join(ROOT, "build", "tests", "test_openclip_regular"))
BATCH = 4
SEED = 20261207


def run(cmd, env=None):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"fixtures_regular: {' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def inputs(cfg):
    g = torch.Generator().manual_seed(SEED)
    S = cfg["vision_cfg"]["image_size"]
    T = cfg["text_cfg"]["context_length"]
    V = cfg["text_cfg"]["vocab_size"]
    pixels = torch.randn(BATCH, 3, S, S, generator=g) * 1.5
    ids = torch.zeros(BATCH, T, dtype=torch.int64)
    for b, eot in enumerate([5, T - 1, 9, 2]):
        ids[b, :eot] = torch.randint(1, V - 2, (eot,), generator=g)
        ids[b, eot] = V - 1
    return pixels, ids


def main():
    for p in (TINYCLIP, TEST_BIN):
        if not os.path.exists(p):
            sys.exit(f"fixtures_regular: {p} not found: build tinyclip and its tests first")
    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        student = os.path.join(tmp, "student")
        run([TEST_BIN], env=dict(os.environ, TC_WRITE_REGULAR_STUDENT=student))
        if os.path.exists(OUT):
            shutil.rmtree(OUT)
        os.makedirs(OUT)
        oc = os.path.join(OUT, "open_clip")
        run([TINYCLIP, "convert", student, oc, "--to", "open_clip"])
        hf_tmp = os.path.join(tmp, "hf")
        run([TINYCLIP, "convert", student, hf_tmp, "--to", "hf"])
        hf = os.path.join(OUT, "hf")
        os.makedirs(hf)
        for f in ("config.json", "model.safetensors", "preprocessor_config.json"):
            shutil.copy(os.path.join(hf_tmp, f), hf)

    model, _, _ = open_clip.create_model_and_transforms("local-dir:" + oc)
    model.eval()
    with open(os.path.join(oc, "open_clip_config.json")) as f:
        cfg = json.load(f)["model_cfg"]
    pixels, ids = inputs(cfg)
    with torch.no_grad():
        oc_img = model.encode_image(pixels, normalize=True)
        oc_txt = model.encode_text(ids, normalize=True)
        hfm = transformers.CLIPModel.from_pretrained(hf)
        hfm.eval()
        o = hfm(input_ids=ids, pixel_values=pixels)
        hf_img, hf_txt = o.image_embeds, o.text_embeds
    d_img = (oc_img - hf_img).abs().max().item()
    d_txt = (oc_txt - hf_txt).abs().max().item()
    print(f"fixtures_regular: open_clip vs transformers: image {d_img:.3g}, text {d_txt:.3g}")
    if d_img > 1e-5 or d_txt > 1e-5:
        sys.exit("fixtures_regular: open_clip and transformers disagree on the student")

    meta = {"format": "pt", "open_clip": open_clip.__version__,
            "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}
    save_st({"pixel_values": pixels.contiguous()}, os.path.join(OUT, "pixels.safetensors"), meta)
    save_st({"input_ids": ids.contiguous()}, os.path.join(OUT, "tokens.safetensors"), meta)
    save_st({
        "openclip_image_features": oc_img.contiguous(),
        "openclip_text_features": oc_txt.contiguous(),
        "hf_image_features": hf_img.contiguous(),
        "hf_text_features": hf_txt.contiguous(),
    }, os.path.join(OUT, "io.safetensors"), meta)
    n = sum(p.numel() for p in model.parameters())
    print(f"fixtures_regular: wrote {os.path.relpath(OUT, ROOT)} ({n} parameters; features "
          f"{tuple(oc_img.shape)})")


if __name__ == "__main__":
    main()
