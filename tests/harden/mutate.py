#!/usr/bin/env python3
"""Seeded mutation test of every untrusted input llamac reads, on the real binary (issue 10).

For each kind of input a small valid one is made, then COUNT mutated copies (seeded: the same copies every
run) go through the command that reads it. Mutations: bit flips, random bytes, truncation, a range
deleted or duplicated, random or control bytes inserted, and for text a 10 000-byte line. Each run must
end with exit status 0 (the damage was harmless, or a damaged checkpoint was refused by its checksum) or
1 with exactly one line on stderr, and never by a signal (status >= 128: a crash) or a hang (a 120 s
timeout counts as a failure).

kinds (the inputs of issue 10) and the command that reads each:
  ckpt         a checkpoint                         llamac eval --ckpt FILE --data DIR
  ini          a run config                         llamac train RUN.ini
  manifest     a data directory's manifest.json     llamac train RUN.ini (data.dir = the case's copy)
  shard        a training shard; in 3 cases of 4 the manifest's sha256 is made to match, so that the
               hostile bytes reach libhdf5 and the loader's checks, else the hash must refuse it
  jsonl        a JSONL corpus                       llamac prep --format jsonl
  sft          JSONL fine-tuning records (chat, alpaca and prompt layouts)   llamac prep --sft plain
  safetensors  model.safetensors of a Hugging Face directory    llamac inspect --hf DIR
  hfconfig     its config.json                                  llamac inspect --hf DIR
  hfindex      model.safetensors.index.json of a sharded one    llamac inspect --hf DIR

The inputs are small on purpose (a 1-layer, dim-32 model; two sources of 60 short documents), so that a
run costs little more than starting llamac and mutations often hit headers and structure rather than
weights or tokens; JOBS runs (default: cores + 1, env LLAMAC_MUTATE_JOBS) go at once. A case's directory holds
only the mutated file; everything else is a symlink to the shared valid input. A failing case is kept
(WORK/mutate/failed_KIND_N) and printed with its seed and number: `mutate.py ... N+1 KIND` remakes it.

usage: mutate.py LLAMAC DATA_DIR WORK_DIR COUNT [KIND...]
  DATA_DIR: a directory from llamac prep, whose tokenizer.model the small inputs use.
"""
import concurrent.futures, json, os, random, resource, shutil, subprocess, sys, time

if len(sys.argv) < 5:
    sys.exit(__doc__)
llamac, data, work = (os.path.abspath(a) for a in sys.argv[1:4])
count = int(sys.argv[4])
all_kinds = ["ckpt", "ini", "manifest", "shard", "jsonl", "sft", "safetensors", "hfconfig", "hfindex"]
kinds = sys.argv[5:] or all_kinds
# one more run than cores: a run spends part of its time waiting on files (measured on 2 loaded cores: 2700
# runs 10-20% sooner than with 2 at a time)
jobs = int(os.environ.get("LLAMAC_MUTATE_JOBS", str((os.cpu_count() or 2) + 1)))
work = os.path.join(work, "mutate")
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
tokenizer = os.path.join(data, "tokenizer.model")
base_data = os.path.join(work, "data")
base_run = os.path.join(work, "base_run")
base_hf = os.path.join(work, "base_hf")
base_hf_sharded = os.path.join(work, "base_hf_sharded")

# The run every train-based kind starts from: one step of a 1-layer model, a checkpoint every step.
INI = """; the mutation test's run (tests/harden/mutate.py)
[run]
seed = 7
log_every = 1

[model]
name = mutate-test
dim = 32
n_layers = 1
n_heads = 2
n_kv_heads = 1
vocab_size = 512
multiple_of = 16
max_seq_len = 16

[data]
dir = %s

[train]
batch_size = 2
seq_len = 16
global_batch_tokens = 32
steps = 1
eval_every = 0
eval_batches = 1
ckpt_every = 1
keep_ckpts = 1

[optim]
lr = 3e-3
warmup = 0
""" % base_data


def run(args, cwd=work):
    try:
        p = subprocess.run([llamac] + args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=120)
        return p.returncode if p.returncode >= 0 else 128 - p.returncode, p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return 999, "timeout"


def setup(args, what):
    st, err = run(args)
    if st != 0:
        sys.exit("mutate.py: setting up %s failed (exit %d): %s" % (what, st, err))


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


def jsonl_docs(lang, n):
    words = {"en": "the of and a to in is you that it he was for on are as with his they".split(),
             "de": "der die und in den von zu das mit sich des auf für ist im dem nicht ein".split()}[lang]
    rng = random.Random("docs-" + lang)
    docs = [{"text": " ".join(rng.choice(words) for _ in range(rng.randrange(5, 40))), "id": i} for i in range(n)]
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode()


def sft_records(n):
    rng = random.Random("sft-records")
    words = "the of and a to in is you that it he was for on are as with his they".split()
    say = lambda: " ".join(rng.choice(words) for _ in range(rng.randrange(2, 12)))
    out = []
    for i in range(n):
        if i % 3 == 0:
            msgs = ([{"role": "system", "content": say()}] if i % 2 else []) + \
                   [{"role": "user", "content": say()}, {"role": "assistant", "content": say()}]
            out.append({"messages": msgs})
        elif i % 3 == 1:
            out.append({"instruction": say(), "input": say() if i % 2 else "", "output": say()})
        else:
            out.append({"prompt": say(), "response": say()})
    return "".join(json.dumps(r) + "\n" for r in out).encode()


def link_tree(frm, to, except_rel):
    """`to` mirrors `frm` with symlinks to its files, except except_rel (left for the caller to write)."""
    for d, _, files in os.walk(frm):
        rel = os.path.relpath(d, frm)
        os.makedirs(os.path.join(to, rel), exist_ok=True)
        for f in files:
            r = os.path.normpath(os.path.join(rel, f))
            if r != except_rel:
                os.symlink(os.path.join(d, f), os.path.join(to, r))


# The valid inputs, all small (see the docstring).
t_setup = time.time()
os.makedirs(os.path.join(work, "corpus"))
for lang in ("en", "de"):
    open(os.path.join(work, "corpus", lang + ".jsonl"), "wb").write(jsonl_docs(lang, 60))
setup(["prep", "--out", base_data, "--tokenizer", tokenizer, "--quiet", "--val-fraction", "0.2", "--threads", "1",
       "--input", "en:" + os.path.join(work, "corpus/en.jsonl"), "--input", "de:" + os.path.join(work, "corpus/de.jsonl")],
      "the data")
ini_path = os.path.join(work, "run.ini")
open(ini_path, "w").write(INI)
if {"ckpt", "safetensors", "hfconfig", "hfindex"} & set(kinds):
    setup(["train", ini_path, "--set", "run.run_dir=" + base_run], "the checkpoint")
    setup(["export", "--ckpt", base_run, "--out", base_hf, "--dtype", "f32"], "the Hugging Face directory")
    setup(["export", "--ckpt", base_run, "--out", base_hf_sharded, "--dtype", "f32", "--max-shard-size", "100KB"],
          "the sharded Hugging Face directory")
t_setup = time.time() - t_setup

manifest = open(os.path.join(base_data, "manifest.json"), "rb").read()
shard_rel = "shards/en_00000.h5"
shard = open(os.path.join(base_data, shard_rel), "rb").read()
bases = {  # kind: (the valid bytes, is it text)
    "ckpt": lambda: (open(os.path.join(base_run, "ckpt/step_0000001.h5"), "rb").read(), False),
    "ini": lambda: (INI.encode(), True),
    "manifest": lambda: (manifest, True),
    "shard": lambda: (shard, False),
    "jsonl": lambda: (jsonl_docs("en", 60), True),
    "sft": lambda: (sft_records(30), True),
    "safetensors": lambda: (open(os.path.join(base_hf, "model.safetensors"), "rb").read(), False),
    "hfconfig": lambda: (open(os.path.join(base_hf, "config.json"), "rb").read(), True),
    "hfindex": lambda: (open(os.path.join(base_hf_sharded, "model.safetensors.index.json"), "rb").read(), True),
}


def make_case(kind, k, m, rng):
    """Writes case k's files; returns (its directory, the llamac arguments, a note on the case)."""
    case = os.path.join(work, "case_%s_%d" % (kind, k))
    os.makedirs(case)
    note = ""
    if kind == "ckpt":
        os.makedirs(os.path.join(case, "ckpt"))
        f = os.path.join(case, "ckpt/step_0000001.h5")
        open(f, "wb").write(m)
        return case, ["eval", "--ckpt", f, "--data", base_data], note
    if kind == "ini":
        open(os.path.join(case, "run.ini"), "wb").write(m)
        return case, ["train", os.path.join(case, "run.ini"), "--set", "run.run_dir=" + os.path.join(case, "run")], note
    if kind in ("manifest", "shard"):
        dd = os.path.join(case, "data")
        link_tree(base_data, dd, "manifest.json")
        if kind == "manifest":
            open(os.path.join(dd, "manifest.json"), "wb").write(m)
        else:
            os.unlink(os.path.join(dd, shard_rel))
            open(os.path.join(dd, shard_rel), "wb").write(m)
            man = manifest
            if rng.randrange(4) != 0:  # the manifest vouches for the hostile shard: libhdf5 parses it
                import hashlib
                old, new = hashlib.sha256(shard).hexdigest(), hashlib.sha256(m).hexdigest()
                man = manifest.replace(old.encode(), new.encode())
                note = "manifest sha256 updated"
            else:
                note = "manifest sha256 stale"
            open(os.path.join(dd, "manifest.json"), "wb").write(man)
        return case, ["train", ini_path, "--set", "data.dir=" + dd, "--set", "run.run_dir=" + os.path.join(case, "run")], note
    if kind in ("jsonl", "sft"):
        f = os.path.join(case, "in.jsonl")
        open(f, "wb").write(m)
        extra = ["--sft", "plain", "--val-fraction", "0.1"] if kind == "sft" else ["--val-fraction", "0"]
        return case, ["prep", "--out", os.path.join(case, "out"), "--tokenizer", tokenizer, "--input", "en:" + f,
                      "--format", "jsonl", "--quiet", "--threads", "1"] + extra, note
    base = base_hf_sharded if kind == "hfindex" else base_hf
    name = {"safetensors": "model.safetensors", "hfconfig": "config.json", "hfindex": "model.safetensors.index.json"}[kind]
    dd = os.path.join(case, "hf")
    link_tree(base, dd, name)
    open(os.path.join(dd, name), "wb").write(m)
    return case, ["inspect", "--hf", dd], note


def check(kind, k, case, note, st, err, m, base):
    """None when case k behaved, else what went wrong."""
    lines = err.count("\n")
    if st == 0:
        # a stale hash over different bytes must be refused; anything else may be harmless
        if kind == "shard" and note.endswith("stale") and m != base:
            return "a shard whose bytes differ from its manifest's sha256 was accepted"
        return None
    if st == 1 and lines == 1:
        if kind == "shard" and note.endswith("stale") and "differs from the" not in err:
            return "a shard with a stale sha256 was not refused by the hash: " + err
        return None
    return "exit %d, %d stderr lines: %s" % (st, lines, err[:500])


failures, total_runs, t_all = 0, 0, time.time()
usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
pool = concurrent.futures.ThreadPoolExecutor(jobs)
for kind in kinds:
    if kind not in bases:
        sys.exit("mutate.py: unknown kind %s (kinds: %s)" % (kind, " ".join(all_kinds)))
    seed = "llamac-" + kind
    rng = random.Random(seed)
    base, text = bases[kind]()
    t0, u0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    cases = []
    for k in range(count):  # made in order, so the cases depend only on the seed, not on the jobs
        m = mutate(rng, base, text)
        case, args, note = make_case(kind, k, m, rng)
        cases.append((k, case, note, m, pool.submit(run, args)))
    n_ok = n_err = n_fail = 0
    for k, case, note, m, fut in cases:
        st, err = fut.result()
        why = check(kind, k, case, note, st, err, m, base)
        if why is None:
            n_ok += st == 0
            n_err += st != 0
            shutil.rmtree(case, ignore_errors=True)
        else:
            n_fail += 1
            keep = os.path.join(work, "failed_%s_%d" % (kind, k))
            os.rename(case, keep)
            print("FAIL %s case %d (seed '%s'%s; kept in %s): %s" % (kind, k, seed, ", " + note if note else "", keep, why))
    u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (u1.ru_utime + u1.ru_stime) - (u0.ru_utime + u0.ru_stime)
    failures += n_fail
    total_runs += count
    print("%-12s %d mutations: %d accepted (exit 0), %d refused with one line, %d failures; %.1f s, %.0f ms CPU per run"
          % (kind, count, n_ok, n_err, n_fail, time.time() - t0, 1000 * cpu / count))
    sys.stdout.flush()
pool.shutdown()
u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
print("mutate.py: %d runs in %.1f s (%d at a time; set-up %.1f s), %.0f s CPU in llamac; %d failures"
      % (total_runs, time.time() - t_all, jobs, t_setup,
         (u1.ru_utime + u1.ru_stime) - (usage0.ru_utime + usage0.ru_stime), failures))
sys.exit(1 if failures else 0)
