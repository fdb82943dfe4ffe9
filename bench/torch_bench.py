"""Forward+backward throughput of the same LLaMA in PyTorch (float32, CPU), the peer of bench_model.

usage: /usr/bin/python3 bench/torch_bench.py --model small-15m --batch 8 --seq 256 --steps 5 --threads 2
Prints one line: "torch MODEL B T tokens_per_s peak_rss_mib".
"""
import argparse
import configparser
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
from torch_llama import Llama  # noqa: E402


def preset(name):
    """Reads configs/models/NAME.ini into a Hugging Face style config dict (same rules as llamac)."""
    p = configparser.ConfigParser()
    p.read(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "models", name + ".ini"))
    m = p["model"]
    d, nh = int(m["dim"]), int(m["n_heads"])
    mult = int(m.get("multiple_of", "256"))
    h = int(2 * 4 * d / 3)
    if "ffn_dim_multiplier" in m:
        h = int(float(m["ffn_dim_multiplier"]) * h)
    f = mult * ((h + mult - 1) // mult)
    return dict(hidden_size=d, num_hidden_layers=int(m["n_layers"]), num_attention_heads=nh,
                num_key_value_heads=int(m.get("n_kv_heads", nh)), vocab_size=int(m["vocab_size"]),
                intermediate_size=int(m.get("ffn_hidden", f)), rms_norm_eps=float(m.get("norm_eps", "1e-5")),
                rope_theta=float(m.get("rope_theta", "10000")),
                tie_word_embeddings=m.get("tie_embeddings", "false") == "true")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small-15m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c = preset(a.model)
    m = Llama(c)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.02)
    tok = torch.randint(0, c["vocab_size"], (a.batch, a.seq))
    tgt = torch.randint(0, c["vocab_size"], (a.batch, a.seq))
    total = 0.0
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        m.zero_grad(set_to_none=False)
        loss = m(tok, tgt)
        loss.backward()
        dt = time.perf_counter() - t0
        if s >= a.warmup:
            total += dt
        print(f"step {s}: {dt:.3f} s (loss {loss.item():.4f})", file=sys.stderr)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"torch {a.model} {a.batch} {a.seq} {a.batch * a.seq * a.steps / total:.1f} {rss:.1f}")


if __name__ == "__main__":
    main()
