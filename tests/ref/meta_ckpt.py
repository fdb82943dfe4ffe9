"""Meta-format checkpoints for tests/test_meta.c, written by PyTorch itself.

For each case a random small LLaMA (GQA: dim 64, 2 layers, 4 heads, 2 kv heads) is drawn in float64 and
rounded to the case's storage dtype, then written twice:
  OUT/CASE/meta/  params.json + consolidated.00.pth, consolidated.01.pth: torch.save of Meta's state
                  dicts (Meta's names, q/k rows in Meta's interleaved RoPE order, each tensor split
                  along its model-parallel dimension; norms replicated)
  OUT/CASE/hf/    config.json + model.safetensors: the same weights in Hugging Face layout (rotate-half)
and Meta's own forward (model.py's complex-number RoPE on the interleaved pairs, float64) is run on
OUT/CASE/tokens.txt, its logits written to OUT/CASE/logits.f32 (T x V float32). Also OUT/evil/: a
params.json and a consolidated.00.pth whose data.pkl (protocol 2, written by hand) calls os.system;
and copies of OUT/l2/meta with one thing wrong (OUT/bad_NAME/, see make_bad); OUT/l2_deflated/ (the
same shards deflated by Python's zipfile); OUT/l2_zip64/ (offsets in zip64 extra fields); OUT/pklfuzz/NNN/: 300 shards whose data.pkl is mutated (the
zip and its CRCs rewritten to match), for the unpickler itself.

usage: /usr/bin/python3 meta_ckpt.py OUTDIR
"""
import collections
import io
import json
import math
import os
import random
import struct
import sys
import zipfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_llama import write_safetensors  # noqa: E402

CASES = {
    # LLaMA 1/2: embeddings split by columns, float32, vocab_size -1, LLaMA 1's rope.freqs buffer
    "l2": dict(dtype=torch.float32, embed_split=1, vocab=70, theta=10000.0, params_vocab=-1, rope_freqs=True),
    # Llama 3: embeddings split by rows, bfloat16, rope_theta 500000, vocab given
    "l3": dict(dtype=torch.bfloat16, embed_split=0, vocab=70, theta=500000.0, params_vocab=70, rope_freqs=False),
}
DIM, LAYERS, NH, KVH, MULT_OF, FFN_MULT, EPS = 64, 2, 4, 2, 32, 1.3, 1e-5
HS = DIM // NH
SHARDS = 2
TOKENS = [3, 17, 0, 36, 5, 5, 22, 9, 30, 1, 69, 44]


def ffn_hidden():
    h = int(2 * 4 * DIM / 3)
    h = int(FFN_MULT * h)
    return MULT_OF * ((h + MULT_OF - 1) // MULT_OF)


def meta_to_hf_rows(w, heads):
    """HF row h*HS + j*HS/2 + i = Meta row h*HS + 2i + j."""
    out = torch.empty_like(w)
    for h in range(heads):
        for i in range(HS // 2):
            for j in range(2):
                out[h * HS + j * HS // 2 + i] = w[h * HS + 2 * i + j]
    return out


def meta_forward(W, tokens, vocab, theta):
    """Meta's model.py (llama/model.py) in float64: interleaved pairs rotated as complex numbers."""
    T = len(tokens)
    freqs = 1.0 / (theta ** (torch.arange(0, HS, 2, dtype=torch.float64)[: HS // 2] / HS))
    ang = torch.outer(torch.arange(T, dtype=torch.float64), freqs)
    cis = torch.polar(torch.ones_like(ang), ang)  # (T, HS/2)

    def rope(x):  # x (T, heads, HS)
        xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * cis[:, None, :]).flatten(2)

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))

    x = W["tok_embeddings.weight"][torch.tensor(tokens)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(LAYERS):
        p = f"layers.{l}."
        h = rms(x, W[p + "attention_norm.weight"])
        q = rope((h @ W[p + "attention.wq.weight"].T).view(T, NH, HS))
        k = rope((h @ W[p + "attention.wk.weight"].T).view(T, KVH, HS))
        v = (h @ W[p + "attention.wv.weight"].T).view(T, KVH, HS)
        k = k.repeat_interleave(NH // KVH, dim=1)  # repeat_kv
        v = v.repeat_interleave(NH // KVH, dim=1)
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(HS) + mask, dim=-1) @ v
        x = x + att.transpose(0, 1).reshape(T, NH * HS) @ W[p + "attention.wo.weight"].T
        h = rms(x, W[p + "ffn_norm.weight"])
        f = torch.nn.functional.silu(h @ W[p + "feed_forward.w1.weight"].T) * (h @ W[p + "feed_forward.w3.weight"].T)
        x = x + f @ W[p + "feed_forward.w2.weight"].T
    x = rms(x, W["norm.weight"])
    return x @ W["output.weight"].T


def make_case(out, name, c, seed):
    torch.manual_seed(seed)
    F, V = ffn_hidden(), c["vocab"]
    shapes = {"tok_embeddings.weight": (V, DIM), "norm.weight": (DIM,), "output.weight": (V, DIM)}
    for l in range(LAYERS):
        p = f"layers.{l}."
        shapes.update({p + "attention.wq.weight": (NH * HS, DIM), p + "attention.wk.weight": (KVH * HS, DIM),
                       p + "attention.wv.weight": (KVH * HS, DIM), p + "attention.wo.weight": (DIM, NH * HS),
                       p + "feed_forward.w1.weight": (F, DIM), p + "feed_forward.w2.weight": (DIM, F),
                       p + "feed_forward.w3.weight": (F, DIM), p + "attention_norm.weight": (DIM,),
                       p + "ffn_norm.weight": (DIM,)})
    W = {}  # Meta layout, float64 holding values exactly representable in the storage dtype
    for n, s in shapes.items():
        if "norm" in n:
            w = 1.0 + 0.1 * torch.randn(s, dtype=torch.float64)
        elif n.startswith("tok_embeddings"):
            w = torch.randn(s, dtype=torch.float64)
        else:
            w = torch.randn(s, dtype=torch.float64) / math.sqrt(s[1])
        W[n] = w.to(c["dtype"]).to(torch.float64)

    # Meta directory: two model-parallel shards
    md = os.path.join(out, name, "meta")
    os.makedirs(md, exist_ok=True)
    for r in range(SHARDS):
        sd = collections.OrderedDict()
        for n, w in W.items():
            if "norm" in n:
                part = w
            else:
                if n.startswith("tok_embeddings"):
                    dim = c["embed_split"]
                elif any(k in n for k in ("wq", "wk", "wv", "w1", "w3", "output")):
                    dim = 0
                else:
                    dim = 1
                part = w.chunk(SHARDS, dim=dim)[r]
            sd[n] = part.to(c["dtype"]).contiguous().clone()
        if c["rope_freqs"]:
            sd["rope.freqs"] = (1.0 / (10000.0 ** (torch.arange(0, HS, 2).float() / HS))).to(c["dtype"])
        torch.save(sd, os.path.join(md, f"consolidated.{r:02d}.pth"))
    params = {"dim": DIM, "multiple_of": MULT_OF, "ffn_dim_multiplier": FFN_MULT, "n_heads": NH, "n_kv_heads": KVH,
              "n_layers": LAYERS, "norm_eps": EPS, "vocab_size": c["params_vocab"], "rope_theta": c["theta"]}
    with open(os.path.join(md, "params.json"), "w") as f:
        json.dump(params, f)

    # Hugging Face directory: the same values, HF names, rotate-half rows
    hd = os.path.join(out, name, "hf")
    os.makedirs(hd, exist_ok=True)
    H = {"model.embed_tokens.weight": W["tok_embeddings.weight"], "model.norm.weight": W["norm.weight"],
         "lm_head.weight": W["output.weight"]}
    for l in range(LAYERS):
        p, q = f"layers.{l}.", f"model.layers.{l}."
        H[q + "input_layernorm.weight"] = W[p + "attention_norm.weight"]
        H[q + "self_attn.q_proj.weight"] = meta_to_hf_rows(W[p + "attention.wq.weight"], NH)
        H[q + "self_attn.k_proj.weight"] = meta_to_hf_rows(W[p + "attention.wk.weight"], KVH)
        H[q + "self_attn.v_proj.weight"] = W[p + "attention.wv.weight"]
        H[q + "self_attn.o_proj.weight"] = W[p + "attention.wo.weight"]
        H[q + "post_attention_layernorm.weight"] = W[p + "ffn_norm.weight"]
        H[q + "mlp.gate_proj.weight"] = W[p + "feed_forward.w1.weight"]
        H[q + "mlp.up_proj.weight"] = W[p + "feed_forward.w3.weight"]
        H[q + "mlp.down_proj.weight"] = W[p + "feed_forward.w2.weight"]
    write_safetensors(os.path.join(hd, "model.safetensors"), H)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": DIM, "intermediate_size": F,
           "num_hidden_layers": LAYERS, "num_attention_heads": NH, "num_key_value_heads": KVH, "vocab_size": V,
           "rms_norm_eps": EPS, "rope_theta": c["theta"], "max_position_embeddings": 2048,
           "tie_word_embeddings": False}
    with open(os.path.join(hd, "config.json"), "w") as f:
        json.dump(cfg, f)

    logits = meta_forward(W, TOKENS, V, c["theta"]).float()
    open(os.path.join(out, name, "logits.f32"), "wb").write(logits.contiguous().numpy().tobytes())
    with open(os.path.join(out, name, "tokens.txt"), "w") as f:
        f.write(f"{len(TOKENS)} {V}\n" + " ".join(str(t) for t in TOKENS) + "\n")
    print(f"{name}: {len(W)} tensors, F {F}, V {V}, {SHARDS} shards -> {md}, {hd}")


def make_evil(out):
    """A torch.save-shaped zip whose data.pkl would run os.system('touch OUT/evil/PWNED') if unpickled."""
    d = os.path.join(out, "evil")
    os.makedirs(d, exist_ok=True)
    cmd = f"touch {d}/PWNED".encode()
    pkl = (b"\x80\x02" + b"cos\nsystem\nq\x00" + b"X" + struct.pack("<I", len(cmd)) + cmd + b"q\x01\x85q\x02Rq\x03.")
    with zipfile.ZipFile(os.path.join(d, "consolidated.00.pth"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("consolidated.00/data.pkl", pkl)
        z.writestr("consolidated.00/version", b"3\n")
    with open(os.path.join(d, "params.json"), "w") as f:
        json.dump({"dim": DIM, "n_layers": LAYERS, "n_heads": NH, "n_kv_heads": KVH, "vocab_size": 70,
                   "multiple_of": MULT_OF, "norm_eps": EPS}, f)


def make_bad(out):
    """Copies of OUT/l2/meta, each with one defect that torch.save itself can write."""
    src = os.path.join(out, "l2", "meta")
    shards = [torch.load(os.path.join(src, f"consolidated.{r:02d}.pth")) for r in range(SHARDS)]

    def write(name, edit):
        d = os.path.join(out, "bad_" + name)
        os.makedirs(d, exist_ok=True)
        sds = [collections.OrderedDict((k, v.clone()) for k, v in sd.items()) for sd in shards]
        edit(sds)
        for r, sd in enumerate(sds):
            torch.save(sd, os.path.join(d, f"consolidated.{r:02d}.pth"))
        with open(os.path.join(src, "params.json")) as f, open(os.path.join(d, "params.json"), "w") as g:
            g.write(f.read())

    def noncontig(sds):  # same shape and values, column-major storage (torch.save keeps the strides)
        w = sds[0]["layers.0.attention.wq.weight"]
        sds[0]["layers.0.attention.wq.weight"] = w.t().contiguous().t()

    def double(sds):
        sds[1]["layers.1.feed_forward.w2.weight"] = sds[1]["layers.1.feed_forward.w2.weight"].double()

    def norm_differs(sds):
        sds[1]["layers.1.ffn_norm.weight"][5] += 0.25

    def missing(sds):
        del sds[1]["output.weight"]

    def extra(sds):
        sds[0]["layers.0.attention.bias"] = torch.zeros(4)

    def wrong_shape(sds):
        sds[1]["layers.0.feed_forward.w1.weight"] = sds[1]["layers.0.feed_forward.w1.weight"][:100].clone()

    for name, edit in (("noncontig", noncontig), ("double", double), ("norm_differs", norm_differs),
                       ("missing", missing), ("extra", extra), ("wrong_shape", wrong_shape)):
        write(name, edit)


def make_deflated(out):
    """OUT/l2/meta re-zipped by Python's zipfile with every entry deflated (another writer than torch's)."""
    src, d = os.path.join(out, "l2", "meta"), os.path.join(out, "l2_deflated")
    os.makedirs(d, exist_ok=True)
    for r in range(SHARDS):
        name = f"consolidated.{r:02d}.pth"
        with zipfile.ZipFile(os.path.join(src, name)) as zi, \
                zipfile.ZipFile(os.path.join(d, name), "w", zipfile.ZIP_DEFLATED) as zo:
            for e in zi.infolist():
                zo.writestr(e.filename, zi.read(e.filename))
    with open(os.path.join(src, "params.json")) as f, open(os.path.join(d, "params.json"), "w") as g:
        g.write(f.read())


def make_pickle_fuzz(out, n=300):
    """A state dict with l2's keys (tiny tensors), torch.save'd; its data.pkl mutated n ways (byte flips,
    truncations, inserted bytes) and re-zipped with correct CRCs, so that only the unpickler can object."""
    keys = torch.load(os.path.join(out, "l2", "meta", "consolidated.00.pth")).keys()
    buf = io.BytesIO()
    torch.save(collections.OrderedDict((k, torch.zeros(2)) for k in keys), buf)
    zi = zipfile.ZipFile(buf)
    entries = {e.filename: zi.read(e.filename) for e in zi.infolist()}
    name = next(k for k in entries if k.endswith("/data.pkl"))
    pkl = entries[name]
    rng = random.Random(7)
    params = open(os.path.join(out, "l2", "meta", "params.json")).read()
    for i in range(n):
        p = bytearray(pkl)
        if i % 3 == 0:
            for _ in range(rng.randint(1, 4)):
                p[rng.randrange(len(p))] = rng.randrange(256)
        elif i % 3 == 1:
            p = p[:rng.randrange(len(p))]
        else:
            at = rng.randrange(len(p))
            p[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        d = os.path.join(out, "pklfuzz", f"{i:03d}")
        os.makedirs(d, exist_ok=True)
        with zipfile.ZipFile(os.path.join(d, "consolidated.00.pth"), "w", zipfile.ZIP_STORED) as z:
            for k, v in entries.items():
                z.writestr(k, bytes(p) if k == name else v)
        with open(os.path.join(d, "params.json"), "w") as f:
            f.write(params)


def make_zip64_offsets(out):
    """OUT/l2/meta with every central directory entry giving its local header offset through a zip64
    extra field (offset 0xffffffff), as torch writes entries beyond 4 GiB in real checkpoints."""
    src, d = os.path.join(out, "l2", "meta"), os.path.join(out, "l2_zip64")
    os.makedirs(d, exist_ok=True)
    for r in range(SHARDS):
        name = f"consolidated.{r:02d}.pth"
        data = open(os.path.join(src, name), "rb").read()
        eocd = data.rindex(b"PK\x05\x06")
        loc = eocd - 20
        assert data[loc:loc + 4] == b"PK\x06\x07"
        e64 = struct.unpack("<Q", data[loc + 8:loc + 16])[0]
        n, cd_size, cd_off = struct.unpack("<QQQ", data[e64 + 32:e64 + 56])
        cd, p = bytearray(), cd_off
        for _ in range(n):
            h = bytearray(data[p:p + 46])
            nlen, xlen, clen = struct.unpack("<HHH", h[28:34])
            name_b, extra, comment = data[p + 46:p + 46 + nlen], data[p + 46 + nlen:p + 46 + nlen + xlen], \
                data[p + 46 + nlen + xlen:p + 46 + nlen + xlen + clen]
            off = struct.unpack("<I", h[42:46])[0]
            assert xlen == 0
            extra = struct.pack("<HHQ", 1, 8, off)
            h[42:46] = b"\xff\xff\xff\xff"
            h[30:32] = struct.pack("<H", len(extra))
            cd += h + name_b + extra + comment
            p += 46 + nlen + xlen + clen
        new_e64 = cd_off + len(cd)
        rec = bytearray(data[e64:e64 + 56])
        rec[40:48] = struct.pack("<Q", len(cd))
        locator = bytearray(data[loc:loc + 20])
        locator[8:16] = struct.pack("<Q", new_e64)
        end = bytearray(data[eocd:])
        end[12:16] = struct.pack("<I", min(len(cd), 0xffffffff))
        with open(os.path.join(d, name), "wb") as f:
            f.write(data[:cd_off] + cd + rec + locator + end)
    with open(os.path.join(src, "params.json")) as f, open(os.path.join(d, "params.json"), "w") as g:
        g.write(f.read())


if __name__ == "__main__":
    out = sys.argv[1]
    for i, (name, c) in enumerate(CASES.items()):
        make_case(out, name, c, 2000 + i)
    make_evil(out)
    make_bad(out)
    make_deflated(out)
    make_pickle_fuzz(out)
    make_zip64_offsets(out)
