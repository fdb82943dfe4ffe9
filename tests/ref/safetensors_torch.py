# PyTorch side of tests/test_safetensors.c (conversions_match_pytorch). Run by the test as
#   /usr/bin/python3 safetensors_torch.py TMPDIR
# 1. TMPDIR/st_torch_in.f32 holds raw fp32 values x; llamac wrote them as F16 and BF16 to
#    st_ours_f16.safetensors and st_ours_bf16.safetensors. Every stored byte must equal torch's own
#    conversion (x.to(float16) / x.to(bfloat16)); NaNs must stay NaNs.
# 2. Writes st_torch_f16.safetensors and st_torch_bf16.safetensors (by hand: there is no safetensors
#    package here) with "x" converted by torch and "x_f32" = torch's upcast of it, for the C side to read.
# Exit status 0 when all agree; otherwise one line per problem and status 1.
import json
import struct
import sys

import torch

tmp = sys.argv[1]
x = torch.frombuffer(bytearray(open(f"{tmp}/st_torch_in.f32", "rb").read()), dtype=torch.float32)
ok = True


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n].decode("utf-8"))
    return header, data[8 + n:]


def write_safetensors(path, tensors, metadata=None):
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = json.dumps(header).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


for dtype, name in ((torch.float16, "f16"), (torch.bfloat16, "bf16")):
    header, data = read_safetensors(f"{tmp}/st_ours_{name}.safetensors")
    e = header["x"]
    want_dtype = "F16" if dtype == torch.float16 else "BF16"
    if e["dtype"] != want_dtype or e["shape"] != [64, 64]:
        print(f"{name}: header entry {e}")
        ok = False
        continue
    b, en = e["data_offsets"]
    ours = torch.frombuffer(bytearray(data[b:en]), dtype=torch.int16)
    ref = x.to(dtype).view(torch.int16)
    ours_f = ours.view(dtype).float()
    nan = torch.isnan(x)
    if not torch.isnan(ours_f[nan]).all():
        print(f"{name}: a NaN input was not stored as NaN")
        ok = False
    diff = (ours != ref) & ~nan
    if diff.any():
        i = int(diff.nonzero()[0])
        print(f"{name}: {int(diff.sum())} values differ from torch, first at {i}: x={x[i].item()!r} "
              f"ours=0x{int(ours[i]) & 0xffff:04x} torch=0x{int(ref[i]) & 0xffff:04x}")
        ok = False
    h = x.to(dtype).reshape(64, 64)
    write_safetensors(f"{tmp}/st_torch_{name}.safetensors", {"x": h, "x_f32": h.float()}, {"format": "pt"})

sys.exit(0 if ok else 1)
