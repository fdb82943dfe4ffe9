#!/usr/bin/env python3
"""Seeded mutation test of every untrusted input llamac reads, on the real binary (issue 10).

For each kind of input a valid file is made (or taken from the train_data fixture), then COUNT mutated
copies (seed fixed: the same copies every run) go through the command that reads it. Mutations: bit
flips, random bytes, truncation, a range deleted or duplicated, random or control bytes inserted, and for
text a 10 000-byte line. Each run must end with exit status 0 (the damage was harmless, or a damaged
checkpoint was refused by its checksum) or 1 with exactly one line on stderr, and never by a signal
(status >= 128: a crash) or a hang (a 120 s timeout counts as a failure).

usage: mutate.py LLAMAC SOURCE_DIR DATA_DIR WORK_DIR COUNT [KIND...]
kinds: ckpt ini manifest shard jsonl safetensors hfconfig
"""
import json, os, random, shutil, subprocess, sys

llamac, src, data, work, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
kinds = sys.argv[6:] or ["ckpt", "ini", "manifest", "shard", "jsonl", "safetensors", "hfconfig"]
ini = os.path.join(src, "tests/configs/tiny_run.ini")
work = os.path.join(work, "mutate")
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
env = dict(os.environ, OMP_NUM_THREADS="1")
quick = ["--set", "train.steps=2", "--set", "train.eval_every=0", "--set", "optim.warmup=0"]


def run(args, cwd=work):
    try:
        p = subprocess.run([llamac] + args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=120)
        return p.returncode if p.returncode >= 0 else 128 - p.returncode, p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return 999, "timeout"


def mutate(rng, b, text):
    b = bytearray(b)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        op = rng.randrange(8 if text else 6)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[i] = rng.randrange(256)
        elif op == 2:
            del b[i:]
        elif op == 3:
            del b[i:i + rng.randrange(1, 64)]
        elif op == 4:
            b[i:i] = b[i:i + rng.randrange(1, 64)]
        elif op == 5:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif op == 6:
            b[i:i] = bytes(rng.choice([0, 1, 7, 9, 10, 13, 27, 127, 255]) for _ in range(rng.randrange(1, 8)))
        else:
            b[i:i] = b"x" * 10000
        if not b:
            break
    return bytes(b)


def setup_ckpt():
    d = os.path.join(work, "base_run")
    st, err = run(["train", ini, "--set", "data.dir=" + data, "--set", "run.run_dir=" + d] + quick)
    assert st == 0, err
    return os.path.join(d, "ckpt/step_0000002.h5")


failures, stats = 0, {}
for kind in kinds:
    rng = random.Random("llamac-" + kind)
    n_ok = n_err = 0
    if kind == "ckpt":
        base = open(setup_ckpt(), "rb").read()
    elif kind == "ini":
        base = open(ini, "rb").read().replace(b"[data]\n", b"[data]\ndir = " + data.encode() + b"\n")
        base = base.replace(b"steps = 6", b"steps = 2").replace(b"eval_every = 3", b"eval_every = 0")
    elif kind == "manifest":
        base = open(os.path.join(data, "manifest.json"), "rb").read()
    elif kind == "shard":
        base = open(os.path.join(data, "shards/en_00000.h5"), "rb").read()
    elif kind == "jsonl":
        docs = [{"text": "Document %d: %s" % (i, "some words of text " * (i % 7 + 1)), "id": i} for i in range(60)]
        base = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode()
    elif kind in ("safetensors", "hfconfig"):
        hf = os.path.join(work, "base_hf")
        if not os.path.isdir(hf):
            if not os.path.isdir(os.path.join(work, "base_run")):
                setup_ckpt()
            st, err = run(["export", "--ckpt", os.path.join(work, "base_run"), "--out", hf, "--dtype", "f32"])
            assert st == 0, err
        base = open(os.path.join(hf, "model.safetensors" if kind == "safetensors" else "config.json"), "rb").read()
    else:
        sys.exit("unknown kind " + kind)
    for k in range(count):
        m = mutate(rng, base, kind in ("ini", "manifest", "jsonl", "hfconfig"))
        case = os.path.join(work, "case")
        shutil.rmtree(case, ignore_errors=True)
        os.makedirs(case)
        if kind == "ckpt":
            os.makedirs(os.path.join(case, "ckpt"))
            f = os.path.join(case, "ckpt/step_0000002.h5")
            open(f, "wb").write(m)
            args = ["eval", "--ckpt", f, "--data", data]
        elif kind == "ini":
            f = os.path.join(case, "run.ini")
            open(f, "wb").write(m)
            args = ["train", f, "--set", "run.run_dir=" + os.path.join(case, "run")]
        elif kind in ("manifest", "shard"):
            dd = os.path.join(case, "data")
            shutil.copytree(data, dd)
            name = "manifest.json" if kind == "manifest" else "shards/en_00000.h5"
            open(os.path.join(dd, name), "wb").write(m)
            args = ["train", ini, "--set", "data.dir=" + dd, "--set", "run.run_dir=" + os.path.join(case, "run")] + quick
        elif kind == "jsonl":
            f = os.path.join(case, "in.jsonl")
            open(f, "wb").write(m)
            args = ["prep", "--out", os.path.join(case, "out"), "--tokenizer", os.path.join(data, "tokenizer.model"),
                    "--input", "en:" + f, "--format", "jsonl", "--quiet", "--val-fraction", "0"]
        else:
            dd = os.path.join(case, "hf")
            shutil.copytree(os.path.join(work, "base_hf"), dd)
            open(os.path.join(dd, "model.safetensors" if kind == "safetensors" else "config.json"), "wb").write(m)
            args = ["inspect", "--hf", dd]
        st, err = run(args)
        lines = err.count("\n")
        if st == 0:
            n_ok += 1
        elif st == 1 and lines == 1:
            n_err += 1
        else:
            failures += 1
            keep = os.path.join(work, "failed_%s_%d" % (kind, k))
            shutil.copytree(case, keep)
            print("FAIL %s #%d: exit %d, %d stderr lines (kept in %s): %s" % (kind, k, st, lines, keep, err[:500]))
    stats[kind] = (n_ok, n_err)
    print("%-12s %d mutations: %d accepted (exit 0), %d refused with one line, %d failures" %
          (kind, count, n_ok, n_err, count - n_ok - n_err))
    sys.stdout.flush()
print("mutate.py: %d failures" % failures)
sys.exit(1 if failures else 0)
