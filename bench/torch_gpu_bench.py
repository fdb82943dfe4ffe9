"""The PyTorch peer of bench_gpu model (bench/gpu.sh runs both): the same LLaMA shapes and the same training
step on one GPU, in the usual mixed-precision recipe: fp32 parameters, bf16 autocast, SDPA causal
attention (the flash backend; GQA without copying k/v when torch has enable_gqa), fused AdamW, gradient
clipping at 1.0, optional activation checkpointing per block. SDPA runs on its FlashAttention backend only. q/k/v and gate/up are one matmul each, as in
llamac. --compile wraps the whole model (loss included) in torch.compile.

usage: python3 bench/torch_gpu_bench.py --name 1b --dim 2048 --layers 16 --heads 16 --kv-heads 4 --ffn 8192
           --vocab 32000 --batch 4 --seq 2048 [--tie] [--recompute] [--compile] [--steps 5] [--warmup 2]
Prints one line: "torch-eager|torch-compile NAME B T tokens_per_s step_ms peak_mem_gib".
With --attn-only (--batch --seq --heads --kv-heads --head-dim): SDPA forward and backward alone, the peer
of bench_gpu attn.
"""
import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

def sdpa_has_gqa(dev):
    """Whether SDPA takes k/v with fewer heads (enable_gqa, torch >= 2.5) on the flash backend. On the GPU the
    flash backend is the only one left enabled (main), so a configuration it cannot run fails loudly
    instead of falling back to the slow math path; without GQA support k/v are repeated per query head."""
    try:
        q = torch.zeros(1, 4, 64, 64, device=dev, dtype=torch.bfloat16, requires_grad=True)
        k = torch.zeros(1, 2, 64, 64, device=dev, dtype=torch.bfloat16, requires_grad=True)
        F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True).sum().backward()
        return True
    except (TypeError, RuntimeError, AttributeError):
        return False


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight.to(x.dtype)


def attend(q, k, v):  # causal; SDPA (torch >= 2.0), or the plain product on older torch (smoke tests only)
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    T = q.size(-2)
    s = (q @ k.transpose(-1, -2)) / q.size(-1) ** 0.5
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return s.softmax(-1) @ v


def rope(x, cos, sin):  # rotate-half, x (B, H, T, HS), cos/sin (T, HS/2)
    x1, x2 = x.chunk(2, dim=-1)
    c = torch.cat([cos, cos], -1).to(x.dtype)
    s = torch.cat([sin, sin], -1).to(x.dtype)
    return x * c + torch.cat([-x2, x1], -1) * s


class Block(nn.Module):
    def __init__(self, a, gqa):
        super().__init__()
        self.nh, self.kvh, self.hs, self.gqa = a.heads, a.kv_heads, a.dim // a.heads, gqa
        self.attn_norm, self.mlp_norm = RMSNorm(a.dim), RMSNorm(a.dim)
        self.wqkv = nn.Linear(a.dim, (a.heads + 2 * a.kv_heads) * self.hs, bias=False)
        self.wo = nn.Linear(a.heads * self.hs, a.dim, bias=False)
        self.w13 = nn.Linear(a.dim, 2 * a.ffn, bias=False)
        self.w2 = nn.Linear(a.ffn, a.dim, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        qkv = self.wqkv(self.attn_norm(x))
        q, k, v = qkv.split([self.nh * self.hs, self.kvh * self.hs, self.kvh * self.hs], dim=-1)
        q = rope(q.view(B, T, self.nh, self.hs).transpose(1, 2), cos, sin)
        k = rope(k.view(B, T, self.kvh, self.hs).transpose(1, 2), cos, sin)
        v = v.view(B, T, self.kvh, self.hs).transpose(1, 2)
        if self.gqa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.nh != self.kvh)
        else:
            r = self.nh // self.kvh
            y = attend(q, k.repeat_interleave(r, 1), v.repeat_interleave(r, 1))
        x = x + self.wo(y.transpose(1, 2).reshape(B, T, self.nh * self.hs))
        g, u = self.w13(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.w2(F.silu(g) * u)


class Llama(nn.Module):
    def __init__(self, a, gqa):
        super().__init__()
        self.emb = nn.Embedding(a.vocab, a.dim)
        self.blocks = nn.ModuleList([Block(a, gqa) for _ in range(a.layers)])
        self.norm = RMSNorm(a.dim)
        self.head = nn.Linear(a.dim, a.vocab, bias=False)
        if a.tie:
            self.head.weight = self.emb.weight
        self.recompute = a.recompute
        hs = a.dim // a.heads
        inv = 1.0 / (10000.0 ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs))
        ang = torch.outer(torch.arange(a.seq, dtype=torch.float32), inv)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, tok, tgt):
        x = self.emb(tok)
        for b in self.blocks:
            if self.recompute:
                x = checkpoint(b, x, self.cos, self.sin, use_reentrant=False)
            else:
                x = b(x, self.cos, self.sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), tgt.view(-1))


def attn_only(a, dev, gqa, reps=10):
    """SDPA (flash) forward and backward alone at the shape of bench_gpu attn, same FLOP count (causal:
    forward 4 B NH HS T(T+1)/2, backward 2.5x). Prints "sdpa B T NH KVH HS fwd_ms bwd_ms fwd_tflops
    bwd_tflops total_tflops"."""
    hs = a.head_dim
    q = torch.randn(a.batch, a.heads, a.seq, hs, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(a.batch, a.kv_heads, a.seq, hs, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(a.batch, a.kv_heads, a.seq, hs, device=dev, dtype=torch.bfloat16, requires_grad=True)
    r = a.heads // a.kv_heads

    def fwd():
        if gqa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=r > 1)
        return attend(q, k.repeat_interleave(r, 1), v.repeat_interleave(r, 1))

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    o = fwd()
    g = torch.randn_like(o)
    o.backward(g)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        o = fwd()
    sync()
    tf = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        o = fwd()
        o.backward(g)
    sync()
    tb = (time.perf_counter() - t0) / reps - tf
    ff = 4.0 * a.batch * a.heads * hs * a.seq * (a.seq + 1) / 2
    fb = 2.5 * ff
    print(f"sdpa {a.batch} {a.seq} {a.heads} {a.kv_heads} {hs} {tf * 1e3:.3f} {tb * 1e3:.3f} {ff / tf / 1e12:.1f} "
          f"{fb / tb / 1e12:.1f} {(ff + fb) / (tf + tb) / 1e12:.1f}")


def main():
    ap = argparse.ArgumentParser()
    for k, d in [("--dim", 768), ("--layers", 12), ("--heads", 12), ("--kv-heads", 12), ("--ffn", 2048),
                 ("--vocab", 32000), ("--batch", 4), ("--seq", 2048), ("--steps", 5), ("--warmup", 2)]:
        ap.add_argument(k, type=int, default=d)
    ap.add_argument("--name", default="model")
    ap.add_argument("--tie", action="store_true")
    ap.add_argument("--recompute", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script where there is no GPU")
    ap.add_argument("--attn-only", action="store_true", help="time SDPA alone (--head-dim, not --dim)")
    ap.add_argument("--head-dim", type=int, default=128)
    a = ap.parse_args()
    dev = a.device
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    torch.manual_seed(0)
    if dev == "cuda":  # SDPA on FlashAttention only (see sdpa_has_gqa)
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_math_sdp(False)
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
            torch.backends.cuda.enable_cudnn_sdp(False)
    gqa = sdpa_has_gqa(dev)
    if a.attn_only:
        attn_only(a, dev, gqa)
        return
    try:  # built on the device: at 7b the default initialisation on the host alone would take a minute
        with torch.device(dev):
            model = Llama(a, gqa)
    except (AttributeError, TypeError):  # torch < 2.0 (CPU smoke tests)
        model = Llama(a, gqa).to(dev)
    for n, p in model.named_parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            **({"fused": True} if dev == "cuda" else {}))
    fwd = torch.compile(model) if a.compile else model
    tok = torch.randint(0, a.vocab, (a.batch, a.seq), device=dev)
    tgt = torch.randint(0, a.vocab, (a.batch, a.seq), device=dev)

    def step():
        opt.zero_grad(set_to_none=False)
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = fwd(tok, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    total = 0.0
    for s in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        loss = step()
        sync()
        dt = time.perf_counter() - t0
        if s >= a.warmup:
            total += dt
        print(f"{a.name} step {s}: {dt * 1e3:.1f} ms (loss {loss.item():.4f})", file=sys.stderr)
    mode = "torch-compile" if a.compile else "torch-eager"
    tps = a.batch * a.seq * a.steps / total
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else 0.0
    print(f"{mode} {a.name} {a.batch} {a.seq} {tps:.1f} {total / a.steps * 1e3:.2f} {mem:.1f}"
          f"  # torch {torch.__version__}, {'sdpa flash' if dev == 'cuda' else 'attention on ' + dev}, "
          f"gqa {'native' if gqa else 'k/v repeated'}")


if __name__ == "__main__":
    main()
