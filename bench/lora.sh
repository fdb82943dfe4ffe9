#!/bin/bash
# A LoRA training step against a full fine-tuning step on the same model, batch and threads: tokens/s and
# peak RSS, each mode in its own process (bench/bench_lora.c).
# usage: bash bench/lora.sh [MODEL small-15m] [BATCH 8] [SEQ 256] [STEPS 5] [RANK 16] [TARGETS all]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-small-15m} B=${2:-8} T=${3:-256} STEPS=${4:-5} RANK=${5:-16} TARGETS=${6:-all}
BIN=build/bench/bench_lora
[ -x "$BIN" ] || { echo "build first: cmake --build build --target bench_lora" >&2; exit 1; }
full=$("$BIN" --mode full --model "$MODEL" --batch "$B" --seq "$T" --steps "$STEPS")
lora=$("$BIN" --mode lora --model "$MODEL" --batch "$B" --seq "$T" --steps "$STEPS" --rank "$RANK" --targets "$TARGETS")
read -r _ _ _ _ ft fm fn <<<"$full"
read -r _ _ _ _ lt lm ln <<<"$lora"
echo "model $MODEL, batch $B x $T, ${OMP_NUM_THREADS:-all} threads; LoRA rank $RANK on $TARGETS"
printf "  full fine-tuning: %8s tokens/s  peak RSS %6s MiB  %10s trainable\n" "$ft" "$fm" "$fn"
printf "  LoRA:             %8s tokens/s  peak RSS %6s MiB  %10s trainable\n" "$lt" "$lm" "$ln"
awk -v a="$lt" -v b="$ft" -v c="$lm" -v d="$fm" 'BEGIN { printf "  LoRA / full: %.2fx tokens/s, %.2fx memory\n", a / b, c / d }'
