"""An independent LLaMA in PyTorch: the oracle llamac's model, loss and gradients are checked against.

Written from the LLaMA paper and Hugging Face's modeling_llama (rotate-half RoPE, repeat_kv for
grouped-query attention, RMSNorm computed in the working precision), with nothing taken from llamac.
Used by tests/ref/gen_model_ref.py (correctness, float64) and bench/torch_bench.py (speed, float32).
"""
import json
import math
import struct

import torch
import torch.nn.functional as F


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps, dtype):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(dim, dtype=dtype))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(torch.nn.Module):
    def __init__(self, c, dtype):
        super().__init__()
        d, hs = c["hidden_size"], c["head_dim"]
        self.nh, self.kvh, self.hs = c["num_attention_heads"], c["num_key_value_heads"], hs
        lin = lambda i, o: torch.nn.Linear(i, o, bias=False, dtype=dtype)
        self.input_layernorm = RMSNorm(d, c["rms_norm_eps"], dtype)
        self.q_proj, self.k_proj = lin(d, self.nh * hs), lin(d, self.kvh * hs)
        self.v_proj, self.o_proj = lin(d, self.kvh * hs), lin(self.nh * hs, d)
        self.post_attention_layernorm = RMSNorm(d, c["rms_norm_eps"], dtype)
        f = c["intermediate_size"]
        self.gate_proj, self.up_proj, self.down_proj = lin(d, f), lin(d, f), lin(f, d)

    def forward(self, x, cos, sin, mask):
        """cos, sin (T, hs) or (B, 1, T, hs); mask (T, T) or (B, 1, T, T), True where attention is barred."""
        B, T, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, self.nh, self.hs).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.kvh, self.hs).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.kvh, self.hs).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.kvh  # kv head j serves query heads j*rep .. j*rep+rep-1
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hs)
        att = torch.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, self.nh * self.hs)
        x = x + self.o_proj(y)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(torch.nn.Module):
    """c: a Hugging Face config.json dict (hidden_size, num_attention_heads, ...)."""

    def __init__(self, c, dtype=torch.float32):
        super().__init__()
        c = dict(c)
        c.setdefault("num_key_value_heads", c["num_attention_heads"])
        c.setdefault("head_dim", c["hidden_size"] // c["num_attention_heads"])
        c.setdefault("rope_theta", 10000.0)
        c.setdefault("tie_word_embeddings", False)
        self.c = c
        self.embed_tokens = torch.nn.Embedding(c["vocab_size"], c["hidden_size"], dtype=dtype)
        self.layers = torch.nn.ModuleList([Block(c, dtype) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"], dtype)
        if not c["tie_word_embeddings"]:
            self.lm_head = torch.nn.Linear(c["hidden_size"], c["vocab_size"], bias=False, dtype=dtype)
        hs = c["head_dim"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs))
        self.inv_freq = inv

    def forward(self, tokens, targets, docs=None, reduction="mean"):
        """docs (B, T), optional: the index in its row of the first token of each token's document (packed
        windows). Then the mask is block-diagonal causal (query i sees keys j with docs[i] <= j <= i) and
        the RoPE position of token t is t - docs[t], as if each document ran alone."""
        B, T = tokens.shape
        dtype = self.embed_tokens.weight.dtype
        if docs is None:
            pos = torch.arange(T, dtype=torch.float64)
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        else:
            pos = (torch.arange(T).unsqueeze(0) - docs).to(torch.float64)  # (B, T)
            i = torch.arange(T).view(1, T, 1)
            j = torch.arange(T).view(1, 1, T)
            mask = ~((j <= i) & (j >= docs.unsqueeze(-1))).unsqueeze(1)  # (B, 1, T, T)
        ang = pos.unsqueeze(-1) * self.inv_freq
        ang = torch.cat((ang, ang), dim=-1)
        if docs is not None:
            ang = ang.unsqueeze(1)  # (B, 1, T, hs): broadcast over heads
        cos, sin = ang.cos().to(dtype), ang.sin().to(dtype)
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        x = self.norm(x)
        w = self.embed_tokens.weight if self.c["tie_word_embeddings"] else self.lm_head.weight
        logits = x @ w.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1,
                               reduction=reduction)

    def hf_state(self):
        """Parameters by their Hugging Face names."""
        out = {}
        for name, p in self.named_parameters():
            for proj, group in (("q_proj", "self_attn"), ("k_proj", "self_attn"), ("v_proj", "self_attn"),
                                ("o_proj", "self_attn"), ("gate_proj", "mlp"), ("up_proj", "mlp"),
                                ("down_proj", "mlp")):
                name = name.replace("." + proj + ".", "." + group + "." + proj + ".")
            out[name if name.startswith("lm_head") else "model." + name] = p
        return out


class LoRALinear(torch.nn.Module):
    """A frozen Linear plus a LoRA update, as PEFT computes it: y = x W^T + (alpha / r) (x A^T) B^T."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        dtype = base.weight.dtype
        self.lora_A = torch.nn.Parameter(torch.zeros(r, base.in_features, dtype=dtype))
        self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, r, dtype=dtype))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.scale * ((x @ self.lora_A.t()) @ self.lora_B.t())


def add_lora(model, targets, r, alpha):
    """Wraps the projections named in targets (q_proj, ...) of every block; freezes everything else.
    Returns {PEFT tensor name: parameter}."""
    for p in model.parameters():
        p.requires_grad_(False)
    out = {}
    for i, layer in enumerate(model.layers):
        for name in targets:
            lin = LoRALinear(getattr(layer, name), r, alpha)
            setattr(layer, name, lin)
            group = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            prefix = f"base_model.model.model.layers.{i}.{group}.{name}"
            out[prefix + ".lora_A.weight"] = lin.lora_A
            out[prefix + ".lora_B.weight"] = lin.lora_B
    return out


def write_safetensors(path, tensors):
    """tensors: name -> torch tensor (stored as F32). The format: 8-byte LE header size, JSON header, data."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
