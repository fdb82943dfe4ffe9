#!/usr/bin/env bash
# Fixture of tests/test_tokenizer_bpe.c: installs the npm package llama3-tokenizer-js (Meta's Llama 3
# vocabulary and merges) into the build tree, builds the demo corpus with llamac, and runs the oracle
# (llama3_tok.mjs) with Debian's nodejs.   llama3_tok.sh OUT_DIR LLAMAC_BINARY
set -euo pipefail
out=$1 llamac=$2 here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out"
pkg=$out/npm/node_modules/llama3-tokenizer-js
if [ ! -f "$pkg/package.json" ]; then
  npm install --no-audit --no-fund --silent --prefix "$out/npm" llama3-tokenizer-js@1.2.0
fi
[ -f "$out/corpus/en.txt" ] || "$llamac" prep --demo-corpus "$out/corpus" --no-install >/dev/null
[ -f "$out/docs.jsonl" ] || node "$here/llama3_tok.mjs" "$pkg" "$out/corpus" "$out"
