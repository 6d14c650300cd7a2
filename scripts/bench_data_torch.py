#!/usr/bin/env python3
"""Single-core data-pipeline baseline: PIL decode + open_clip's train transform
(RandomResizedCrop(S, scale=(0.9, 1.0), bicubic) -> RGB -> ToTensor ->
Normalize) + open_clip's tokenizer, the per-sample work `tinyclip bench --data`
times in C.

It writes 500x375 JPEGs (quality 90) made from the fixture photos to a
directory, times the PyTorch pipeline over them with torch.set_num_threads(1),
and, when --tinyclip names the binary, runs `tinyclip bench --data --images DIR`
on the same files right after and prints the ratio. Both count thread CPU
time (time.thread_time / CLOCK_THREAD_CPUTIME_ID), so a busy machine does not
skew the ratio.

usage: /opt/tcvenv/bin/python scripts/bench_data_torch.py [--n 1000] [--tinyclip build/tinyclip]
"""
import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time

import open_clip
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures", "images")
WORDS = ["dog", "cat", "coffee cup", "astronaut", "red car", "mountain lake", "bowl of soup",
         "street at night"]


def make_jpegs(out_dir):
    photos = ["coffee_500x375.jpg", "chelsea_451x300.jpg", "astronaut_301x403.jpg",
              "astronaut_rgb_255x199.png"]
    k = 0
    for p in photos:
        im = Image.open(os.path.join(FIX, p)).convert("RGB")
        w, h = im.size
        for v in range(4):
            cw = w * (10 - v) // 10
            ch = cw * 3 // 4
            if ch > h:
                ch = h
                cw = ch * 4 // 3
            top, left = (h - ch) * v // 4, (w - cw) * (3 - v) // 4
            crop = im.crop((left, top, left + cw, top + ch)).resize((500, 375), Image.BICUBIC)
            crop.save(os.path.join(out_dir, "img%02d.jpg" % k), quality=90)
            k += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", help="directory for the JPEGs (default: a temporary one)")
    ap.add_argument("--tinyclip", help="tinyclip binary to run on the same images")
    a = ap.parse_args()
    torch.set_num_threads(1)
    d = a.images or tempfile.mkdtemp(prefix="tc-bench-data-")
    os.makedirs(d, exist_ok=True)
    if not any(f.endswith(".jpg") for f in os.listdir(d)):
        make_jpegs(d)
    files = sorted(f for f in os.listdir(d) if f.endswith(".jpg"))
    blobs = [open(os.path.join(d, f), "rb").read() for f in files]
    pre = open_clip.image_transform(a.size, is_train=True)  # RandomResizedCrop(0.9-1) etc.
    tok = open_clip.get_tokenizer("ViT-B-32")
    # caption i: the same template sentences the C bench builds (content barely matters)
    caps = ["a photo of a %s." % WORDS[i % len(WORDS)] for i in range(len(WORDS))]
    t_dec = t_aug = t_tok = 0.0
    for rnd in range(2):  # warm-up round over the images, then the timed one
        count = len(blobs) if rnd == 0 else a.n
        t_dec = t_aug = t_tok = 0.0
        for i in range(count):
            t0 = time.thread_time()
            im = Image.open(io.BytesIO(blobs[i % len(blobs)]))
            im.load()
            t1 = time.thread_time()
            x = pre(im)
            t2 = time.thread_time()
            ids = tok([caps[i % len(caps)]])
            t3 = time.thread_time()
            t_dec += t1 - t0
            t_aug += t2 - t1
            t_tok += t3 - t2
    assert x.shape == (3, a.size, a.size) and ids.shape == (1, 77)
    total = t_dec + t_aug + t_tok
    py = a.n / total
    print("torch bench: %d samples, %d JPEGs in %s, RandomResizedCrop %d, 1 thread, CPU time (PIL %s, torch %s)"
          % (a.n, len(blobs), d, a.size, Image.__version__, torch.__version__))
    print("  decode    %8.1f us/sample" % (1e6 * t_dec / a.n))
    print("  augment   %8.1f us/sample" % (1e6 * t_aug / a.n))
    print("  tokenize  %8.1f us/sample" % (1e6 * t_tok / a.n))
    print("  total     %8.1f samples/s per core" % py)
    if a.tinyclip:
        out = subprocess.run([a.tinyclip, "bench", "--data", "--images", d, "--n", str(a.n),
                              "--size", str(a.size)], capture_output=True, text=True)
        sys.stdout.write(out.stdout)
        sys.stderr.write(out.stderr)
        m = re.search(r"total\s+([0-9.]+) samples/s", out.stdout)
        if m:
            c = float(m.group(1))
            print("ratio tinyclip / torch: %.2fx (%.1f vs %.1f samples/s per core)" % (c / py, c, py))


if __name__ == "__main__":
    main()
