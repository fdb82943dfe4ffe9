#!/usr/bin/env bash
# The main job: set up (packages, build), then pretrain a small LLaMA from scratch on this machine's CPU
# on a multilingual corpus it prepares itself, print samples in several languages, and draw the loss.
#   demo/corpus/   9 languages of text from Debian's fortune packages (installed when missing)
#   demo/data/          tokenizer.model (BPE, 4096 pieces, trained here), HDF5 shards, manifest.json
#   runs/demo/          checkpoints, metrics.jsonl, loss.png
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
llamac=build/llamac

if [ ! -f demo/data/manifest.json ]; then
  $llamac prep --demo-corpus demo/corpus
  inputs=()
  for lang in en de ru bg es it pl cs pt; do inputs+=(--input "$lang:demo/corpus/$lang.txt"); done
  $llamac prep --out demo/data --train-tokenizer --vocab-size 4096 --sample-mb 8 "${inputs[@]}"
fi

rm -rf runs/demo  # the demo always starts from scratch; `llamac train` itself resumes a run_dir
$llamac train configs/runs/demo.ini

echo
echo "Samples (temperature 0.8, top-p 0.9):"
$llamac sample --ckpt runs/demo --max-tokens 40 --seed 7 \
  --prompt "The meaning of life is" --prompt "Die Wahrheit ist" --prompt "Жизнь — это" \
  --prompt "El amor es" --prompt "Życie jest"
echo
first=$(grep -m1 '"val_loss"' runs/demo/metrics.jsonl | sed 's/.*"val_loss": \([0-9.]*\).*/\1/')
last=$(grep '"val_loss"' runs/demo/metrics.jsonl | tail -1 | sed 's/.*"val_loss": \([0-9.]*\).*/\1/')
printf "validation loss: %.3f at the start, %.3f at the end\n" "$first" "$last"
echo "loss curves: runs/demo/loss.png; metrics: runs/demo/metrics.jsonl; checkpoints: runs/demo/ckpt/"
