#!/usr/bin/env python3
"""Runs a `tinyclip convert --to onnx` folder in ONNX Runtime.

    onnx_run.py EXPORT_DIR [--pixels FILE] [--tokens FILE] --out FILE

--pixels: safetensors with one float tensor (N, 3, S, S), preprocessed as
preprocess_cfg.json says; --tokens: safetensors with one integer tensor
(M, context). The features are written like `tinyclip embed` writes them:
safetensors with image_features (N, E) and text_features (M, E), F32.
Used by tests/export/test_onnx_runtime.c; needs numpy and onnxruntime (scripts/setup
installs both into .venv/).
"""
import argparse
import json
import struct
import sys

import numpy as np
import onnxruntime as ort

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "F64": np.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def only_tensor(path):
    t = read_safetensors(path)
    if len(t) != 1:
        sys.exit(f"{path}: expected one tensor, found {len(t)}")
    return next(iter(t.values()))


def run(model_path, array):
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
             "tensor(int64)": np.int64}[inp.type]
    (out,) = sess.run(None, {inp.name: array.astype(dtype)})
    return out.astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export_dir")
    ap.add_argument("--pixels")
    ap.add_argument("--tokens")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = {}
    if a.pixels:
        out["image_features"] = run(f"{a.export_dir}/image_encoder.onnx", only_tensor(a.pixels))
    if a.tokens:
        out["text_features"] = run(f"{a.export_dir}/text_encoder.onnx", only_tensor(a.tokens))
    write_safetensors(a.out, out)
    print(f"onnxruntime {ort.__version__}: " +
          ", ".join(f"{k} {tuple(v.shape)}" for k, v in out.items()))


if __name__ == "__main__":
    main()
