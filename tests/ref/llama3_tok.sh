#!/usr/bin/env bash
# Fixture of tests/test_tokenizer_bpe.c: installs the npm packages llama3-tokenizer-js (Meta's Llama 3
# vocabulary and merges) and tiktoken (JS/WASM bindings of OpenAI's Rust tiktoken) into the build tree,
# builds the demo corpus with llamac, and runs the two oracles with Debian's nodejs: llama3_tok.mjs
# (tokenizer.model, tokenizer.json, docs.jsonl) and tiktoken_tok.mjs (tiktoken_ids.jsonl, from that
# tokenizer.model).   llama3_tok.sh OUT_DIR LLAMAC_BINARY
set -euo pipefail
out=$1 llamac=$2 here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out"
pkgs=()
[ -f "$out/npm/node_modules/llama3-tokenizer-js/package.json" ] || pkgs+=(llama3-tokenizer-js@1.2.0)
[ -f "$out/npm/node_modules/tiktoken/package.json" ] || pkgs+=(tiktoken@1.0.22)
if [ ${#pkgs[@]} -gt 0 ]; then
  npm install --no-audit --no-fund --silent --prefix "$out/npm" "${pkgs[@]}"
fi
[ -f "$out/corpus/en.txt" ] || "$llamac" prep --demo-corpus "$out/corpus" --no-install >/dev/null
[ -f "$out/docs.jsonl" ] || node "$here/llama3_tok.mjs" "$out/npm/node_modules/llama3-tokenizer-js" "$out/corpus" "$out"
[ -f "$out/tiktoken_ids.jsonl" ] && [ "$out/tiktoken_ids.jsonl" -nt "$out/docs.jsonl" ] ||
  node "$here/tiktoken_tok.mjs" "$out/npm/node_modules/tiktoken" "$out"
