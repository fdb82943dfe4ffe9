"""Checks llamac's merged LoRA export against its PEFT export, in PyTorch: for every adapted projection,
merged W == base W + (lora_alpha / r) B A (within float32 rounding), and every other tensor equals the
base. Reads safetensors with its own parser (torch_llama.py has only the writer).

usage: lora_merge_check.py BASE_HF_DIR PEFT_DIR MERGED_HF_DIR   (exit 0 when they agree)
"""
import json
import struct
import sys

import torch

DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=DT[v["dtype"]]).reshape(v["shape"])
        out[k] = t.to(torch.float64)
    return out


def main(base_dir, peft_dir, merged_dir):
    base = read(base_dir + "/model.safetensors")
    merged = read(merged_dir + "/model.safetensors")
    ad = read(peft_dir + "/adapter_model.safetensors")
    cfg = json.load(open(peft_dir + "/adapter_config.json"))
    scale = cfg["lora_alpha"] / cfg["r"]
    adapted = 0
    worst = 0.0
    for name, w in base.items():
        want = w.clone()
        key = "base_model.model." + name[: -len(".weight")]
        if key + ".lora_A.weight" in ad:
            want += scale * ad[key + ".lora_B.weight"] @ ad[key + ".lora_A.weight"]
            adapted += 1
        err = (merged[name] - want).abs().max().item() / max(want.abs().max().item(), 1e-30)
        worst = max(worst, err)
        if err > 1e-6:
            print(f"{name}: merged differs from base + scale * B A by {err:.3g}")
            return 1
    want = len(cfg["target_modules"]) * sum(1 for n in base if n.endswith("self_attn.q_proj.weight"))
    if adapted != want or adapted == 0:
        print(f"{adapted} adapted tensors, expected {want}")
        return 1
    print(f"lora merge: {adapted} adapted tensors, worst relative difference {worst:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
