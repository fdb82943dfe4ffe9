"""Reference loss and gradients for llamac's whole-model test, computed by PyTorch autograd.

For each case a random small LLaMA is built in PyTorch (float64, weights rounded to float32 values so
that both sides start from exactly the same numbers), written as a Hugging Face directory (config.json +
model.safetensors), and run on fixed tokens; the loss and every parameter's gradient are written to
ref.safetensors and tokens.txt. tests/test_model_ref.c loads the directory with llamac and compares.

The "packed" case is a window of several documents with a block-diagonal causal mask and positions that
restart at each document (docs, a fourth line of tokens.txt); before writing it, this script checks that
PyTorch's packed loss sum equals the sum of the documents run one by one (each alone, plain causal).

usage: /usr/bin/python3 gen_model_ref.py OUTDIR
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_llama import Llama, add_lora, write_safetensors  # noqa: E402

CASES = {
    # name: (config overrides, B, T, masked fraction)
    "gqa": (dict(num_attention_heads=4, num_key_value_heads=2), 2, 12, 0.0),
    "theta500k": (dict(rope_theta=500000.0, num_key_value_heads=4), 2, 12, 0.0),
    "tied": (dict(tie_word_embeddings=True, num_key_value_heads=1), 2, 10, 0.0),
    "masked": (dict(num_key_value_heads=2), 3, 9, 0.35),
    "packed": (dict(num_key_value_heads=2), 2, 16, 0.4),
    "lora": (dict(num_key_value_heads=2), 2, 12, 0.3),
}

# The "lora" case: adapters of rank 4, alpha 8 on q, v, o, up and down (PEFT's layout: adapter_model.safetensors
# and adapter_config.json beside the base weights); A and B random (B nonzero so that A gets gradients),
# every base weight frozen; ref.safetensors holds the loss and the gradients of the adapters only.
LORA_TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
LORA_R, LORA_ALPHA = 4, 8.0


def random_docs(B, T):
    """Document starts of each position: a new document at t = 0 and where a coin of 1/4 says so."""
    docs = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        for t in range(1, T):
            docs[b, t] = t if torch.rand(()) < 0.25 else docs[b, t - 1]
    return docs


def check_one_by_one(m, tokens, targets, docs):
    """The packed window's loss sum against each document run alone."""
    with torch.no_grad():
        packed = m(tokens, targets, docs, reduction="sum").item()
        alone = 0.0
        B, T = tokens.shape
        for b in range(B):
            for s in sorted(set(docs[b].tolist())):
                e = s
                while e < T and docs[b, e] == s:
                    e += 1
                alone += m(tokens[b:b + 1, s:e], targets[b:b + 1, s:e], reduction="sum").item()
    assert abs(packed - alone) <= 1e-9 * abs(alone), (packed, alone)
    return packed, alone


def main(out):
    for i, (name, (over, B, T, masked)) in enumerate(CASES.items()):
        torch.manual_seed(1000 + i)
        c = dict(hidden_size=32, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4,
                 vocab_size=61, rms_norm_eps=1e-5, max_position_embeddings=64, rope_theta=10000.0,
                 tie_word_embeddings=False, model_type="llama", architectures=["LlamaForCausalLM"])
        c.update(over)
        m = Llama(c, dtype=torch.float64)
        with torch.no_grad():
            for n, p in m.named_parameters():
                scale = 1.0 if "norm" in n else 0.3  # large enough that every gradient is far from zero
                p.copy_((1.0 + 0.1 * torch.randn_like(p)) if "norm" in n else scale * torch.randn_like(p))
                p.copy_(p.to(torch.float32).to(torch.float64))
        tokens = torch.randint(0, c["vocab_size"], (B, T))
        targets = torch.randint(0, c["vocab_size"], (B, T))
        if masked:
            targets[torch.rand(B, T) < masked] = -1
        docs = random_docs(B, T) if name == "packed" else None
        if docs is not None:
            packed, alone = check_one_by_one(m, tokens, targets, docs)
            print(f"{name}: packed loss sum {packed:.12f}, documents one by one {alone:.12f}")
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=1)
        state = m.hf_state()
        write_safetensors(os.path.join(d, "model.safetensors"), state)
        if name == "lora":
            adapters = add_lora(m, LORA_TARGETS, LORA_R, LORA_ALPHA)
            with torch.no_grad():
                for p in adapters.values():
                    p.copy_((0.3 * torch.randn_like(p)).to(torch.float32).to(torch.float64))
            write_safetensors(os.path.join(d, "adapter_model.safetensors"), adapters)
            with open(os.path.join(d, "adapter_config.json"), "w") as f:
                json.dump(dict(peft_type="LORA", task_type="CAUSAL_LM", r=LORA_R, lora_alpha=LORA_ALPHA,
                               lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none"), f, indent=1)
            state = adapters
        loss = m(tokens, targets, docs)
        loss.backward()
        grads = {"grad." + k: v.grad for k, v in state.items()}
        grads["loss"] = loss.detach().reshape(1)
        write_safetensors(os.path.join(d, "ref.safetensors"), grads)
        with open(os.path.join(d, "tokens.txt"), "w") as f:
            f.write(f"{B} {T} {loss.item():.17g}\n")
            f.write(" ".join(str(int(x)) for x in tokens.flatten()) + "\n")
            f.write(" ".join(str(int(x)) for x in targets.flatten()) + "\n")
            if docs is not None:
                f.write(" ".join(str(int(x)) for x in docs.flatten()) + "\n")
        print(f"{name}: loss {loss.item():.9f}, {len(state)} tensors -> {d}")


if __name__ == "__main__":
    main(sys.argv[1])
