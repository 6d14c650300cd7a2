# writes the seed corpus of fuzz_safetensors: files from the reference
# safetensors writer (torch) and hand-made hostile headers. run with a python
# that has torch and safetensors; the outputs are committed.
import os, struct
import torch
from safetensors.torch import save_file

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_safetensors")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
save_file({"a": torch.randn(2, 3), "b": torch.randn(4).half(), "c": torch.randn(2, 2).bfloat16(),
           "ids": torch.arange(6, dtype=torch.int64).view(2, 3), "s": torch.tensor(4.6)},
          f"{out}/mixed.safetensors", metadata={"format": "pt"})
save_file({"logit_scale": torch.tensor([2.5]), "z": torch.zeros(0, 3),
           "i": torch.arange(3, dtype=torch.int32)}, f"{out}/small.safetensors")
save_file({"x": torch.randn(3, dtype=torch.float64), "u": torch.ones(2, dtype=torch.uint8),
           "b": torch.tensor([True, False])}, f"{out}/f64.safetensors")


def raw(header, data=b""):
    h = header.encode()
    return struct.pack("<Q", len(h)) + h + data


def put(name, data):
    with open(f"{out}/{name}", "wb") as f:
        f.write(data)


put("overlap.bin", raw('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                       '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12)))
put("hole.bin", raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                    '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', bytes(12)))
put("overflow.bin", raw('{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],'
                        '"data_offsets":[0,4]}}', bytes(4)))
put("meta.bin", raw('{"__metadata__":{"k":"v","\\u00e9":"\\ud83d\\ude00"},'
                    '"t":{"dtype":"F16","shape":[],"data_offsets":[0,2]}}', b"\x00\x3c"))
put("huge_n.bin", struct.pack("<Q", 2**63) + b"{}")
put("seven.bin", b"\x02\0\0\0\0\0\0")
