#!/usr/bin/env python3
"""Writes the image-transform parity fixtures into tests/fixtures/images/.

Run with /opt/tcvenv/bin/python (pillow, torch, torchvision, open_clip_torch,
scikit-image for its public-domain sample photos: astronaut, coffee, chelsea).

For every test image it stores the image file itself and the output of
open_clip's eval transform for sizes 224 and 97 *before* ToTensor/Normalize,
as raw uint8 (S, S, 3) files; a few RandomResizedCrop-style resized crops
with explicit (top, left, height, width); and, for small images, the full
PIL decode (Image.open(p).convert('RGB')). The script checks that the stored
uint8 values reproduce open_clip's normalised tensor before writing.

The images are converted to RGB first, as open_clip's webdataset pipeline
does (decode("pilrgb")): PIL resizes palette images with NEAREST and RGBA
with premultiplied alpha, so transforming the raw mode would differ.

Versions used: see the 'versions' line written to manifest.txt.
"""
import io
import os
import struct
import sys
import zlib

import numpy as np
import open_clip
import PIL
import skimage
import skimage.data
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "images")
SIZES = (224, 97)


def png16_rgb(arr16):
    """a 16-bit RGB PNG written by hand (PIL cannot write one)."""
    h, w, _ = arr16.shape
    raw = b"".join(b"\x00" + arr16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def make_images():
    astronaut = Image.fromarray(skimage.data.astronaut())
    coffee = Image.fromarray(skimage.data.coffee())  # 600x400
    chelsea = Image.fromarray(skimage.data.chelsea())  # 451x300
    imgs = {}

    def save(name, im, **kw):
        b = io.BytesIO()
        im.save(b, **kw)
        imgs[name] = b.getvalue()

    # photo-sized colour JPEG, 4:2:0 (PIL's default subsampling at quality 90)
    save("coffee_500x375.jpg", coffee.crop((33, 0, 567, 400)).resize((500, 375), Image.LANCZOS),
         format="JPEG", quality=90)
    # odd size, 4:4:4, portrait
    save("astronaut_301x403.jpg", astronaut.crop((60, 0, 442, 512)).resize((301, 403), Image.LANCZOS),
         format="JPEG", quality=92, subsampling=0)
    # native odd size 451x300
    save("chelsea_451x300.jpg", chelsea, format="JPEG", quality=85)
    # grayscale JPEG
    save("astronaut_gray_157x211.jpg",
         astronaut.convert("L").resize((157, 211), Image.LANCZOS), format="JPEG", quality=90)
    # CMYK JPEG (Adobe marker, inverted, as Pillow writes it)
    save("chelsea_cmyk_120x80.jpg", chelsea.resize((120, 80), Image.LANCZOS).convert("CMYK"),
         format="JPEG", quality=90)
    # RGBA PNG with a varying alpha channel
    rgba = chelsea.resize((173, 131), Image.LANCZOS).convert("RGBA")
    a = np.array(rgba)
    a[..., 3] = (np.arange(173)[None, :] * 255 // 172).astype(np.uint8)
    save("chelsea_rgba_173x131.png", Image.fromarray(a, "RGBA"), format="PNG")
    # palette PNG with a tRNS entry
    pal = coffee.resize((150, 100), Image.LANCZOS).quantize(colors=64)
    save("coffee_palette_150x100.png", pal, format="PNG", transparency=3)
    # gray + alpha PNG
    la = astronaut.convert("L").resize((64, 96), Image.LANCZOS).convert("LA")
    save("astronaut_la_64x96.png", la, format="PNG")
    # 16-bit RGB PNG
    rgb16 = np.array(chelsea.resize((64, 48), Image.LANCZOS)).astype(np.uint16) * 257
    rgb16[::3, ::5, 1] += 77  # low bytes that must be ignored
    imgs["chelsea_rgb16_64x48.png"] = png16_rgb(rgb16)
    # 8-bit RGB PNG at an odd size (not subsampled: checks the resampler alone)
    save("astronaut_rgb_255x199.png", astronaut.resize((255, 199), Image.LANCZOS), format="PNG")
    return imgs


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    imgs = make_images()
    lines = ["# versions pillow=%s torch=%s torchvision=%s open_clip=%s scikit-image=%s" % (
        PIL.__version__, torch.__version__, torchvision.__version__, open_clip.__version__,
        skimage.__version__)]
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
    for name, data in sorted(imgs.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        im = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = im.size
        stem = name.rsplit(".", 1)[0]
        if w * h <= 200 * 200:
            dec = np.asarray(im, dtype=np.uint8)
            fn = "%s.decode.rgb" % stem
            dec.tofile(os.path.join(OUT, fn))
            lines.append("decode %s %d %d %s" % (name, w, h, fn))
        for s in SIZES:
            pre = open_clip.image_transform(s, is_train=False)  # the real open_clip pipeline
            ref = pre(im)
            # the same steps up to (not including) ToTensor
            u8 = F.center_crop(F.resize(im, s, interpolation=InterpolationMode.BICUBIC), s)
            arr = np.asarray(u8.convert("RGB"), dtype=np.uint8)
            again = (torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255 - mean) / std
            if not torch.equal(again, ref):
                sys.exit("%s %d: uint8 round trip does not reproduce open_clip" % (name, s))
            fn = "%s.eval%d.rgb" % (stem, s)
            arr.tofile(os.path.join(OUT, fn))
            lines.append("eval %s %d %s" % (name, s, fn))
    # RandomResizedCrop's resize step with fixed crops (top, left, height, width)
    crops = [("coffee_500x375.jpg", 10, 17, 361, 470, 224),
             ("chelsea_451x300.jpg", 3, 40, 290, 371, 224),
             ("astronaut_gray_157x211.jpg", 5, 2, 199, 150, 97)]
    for name, t, l, hh, ww, s in crops:
        im = Image.open(io.BytesIO(imgs[name])).convert("RGB")
        out = F.resized_crop(im, t, l, hh, ww, [s, s], interpolation=InterpolationMode.BICUBIC)
        arr = np.asarray(out, dtype=np.uint8)
        fn = "%s.crop%d_%d_%d_%d_%d.rgb" % (name.rsplit(".", 1)[0], t, l, hh, ww, s)
        arr.tofile(os.path.join(OUT, fn))
        lines.append("crop %s %d %d %d %d %d %s" % (name, t, l, hh, ww, s, fn))
    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %d files, %.2f MB" % (len(os.listdir(OUT)), total / 1e6))


if __name__ == "__main__":
    main()
