# Reference for tests/test_hf.c (forward_matches_pytorch_reference): Hugging Face's LlamaForCausalLM
# forward written out in plain PyTorch (float64), reading a checkpoint directory the way transformers
# does: config.json keys and defaults, model.safetensors (parsed by hand: no safetensors or transformers
# package here), [out, in] weights, rotate-half RoPE with rope_theta and "llama3"/"linear" rope_scaling,
# repeat_kv for grouped-query attention, tied embeddings when lm_head.weight is absent.
#   /usr/bin/python3 hf_llama_forward.py DIR TOKENS(comma-separated) OUT.f32
# writes the logits (T, V) as raw little-endian float32.
import json
import math
import struct
import sys

import torch

d, tokens, out = sys.argv[1], [int(t) for t in sys.argv[2].split(",")], sys.argv[3]
cfg = json.load(open(f"{d}/config.json"))
data = open(f"{d}/model.safetensors", "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
W = {}
for name, e in header.items():
    if name == "__metadata__":
        continue
    b, en = e["data_offsets"]
    W[name] = torch.frombuffer(bytearray(data[8 + n + b:8 + n + en]), dtype=dtypes[e["dtype"]]).reshape(e["shape"]).double()

C = cfg["hidden_size"]
L = cfg["num_hidden_layers"]
NH = cfg["num_attention_heads"]
KVH = cfg.get("num_key_value_heads") or NH
HS = cfg.get("head_dim") or C // NH
eps = cfg.get("rms_norm_eps", 1e-6)
theta = cfg.get("rope_theta", 10000.0)
T = len(tokens)

# RoPE frequencies, as transformers' rope init functions compute them
inv = 1.0 / (theta ** (torch.arange(0, HS, 2, dtype=torch.float64) / HS))
rs = cfg.get("rope_scaling")
if rs:
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        inv = inv / rs["factor"]
    elif kind == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wl, high_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        inv_l = torch.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = ~(wl < high_wl) * ~(wl > low_wl)
        inv = torch.where(medium, smoothed, inv_l)
freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
emb = torch.cat((freqs, freqs), dim=-1)
cos, sin = emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


x = W["model.embed_tokens.weight"][torch.tensor(tokens)]
mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
for l in range(L):
    p = f"model.layers.{l}."
    h = rms(x, W[p + "input_layernorm.weight"])
    q = (h @ W[p + "self_attn.q_proj.weight"].T).view(T, NH, HS).transpose(0, 1)
    k = (h @ W[p + "self_attn.k_proj.weight"].T).view(T, KVH, HS).transpose(0, 1)
    v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, KVH, HS).transpose(0, 1)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    k = k.repeat_interleave(NH // KVH, dim=0)  # repeat_kv: query head j uses kv head j // (NH / KVH)
    v = v.repeat_interleave(NH // KVH, dim=0)
    att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(HS) + mask, dim=-1) @ v
    x = x + att.transpose(0, 1).reshape(T, NH * HS) @ W[p + "self_attn.o_proj.weight"].T
    h = rms(x, W[p + "post_attention_layernorm.weight"])
    g = h @ W[p + "mlp.gate_proj.weight"].T
    u = h @ W[p + "mlp.up_proj.weight"].T
    x = x + (torch.nn.functional.silu(g) * u) @ W[p + "mlp.down_proj.weight"].T
x = rms(x, W["model.norm.weight"])
head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
logits = (x @ head.T).float()
open(out, "wb").write(logits.contiguous().numpy().tobytes())
